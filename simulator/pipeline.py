"""End to end: a model name or ONNX file -> op graph -> vertices -> simulation -> report.

    >>> rep = compile_model("mnist-mlp", chip="gc200", simulate=True)
    >>> rep["model"]["name"], rep["memory"]["fits"], rep["sim"]["cycles"] > 0
    ('mnist-mlp', True, True)

Memory options (see docs/memory.md): ``recompute`` (none | blocks | sqrt |
all, training), ``accumulate`` (gradient accumulation over N micro-batches of
``batch``), ``offload`` (``"optimizer"`` and / or ``"weights"`` kept in
streaming memory), ``dtype`` (fp32 | fp16 | int8) and ``partials``.  When the
model does not fit, ``memory.suggestions`` lists options that would make it
fit, each with its estimated peak tile bytes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from compiler.executable import compile_program
from compiler.lower import lower
from compiler.memory import NON_JSON_KEYS, estimate_tiles, memory_report, oom_message, opgraph_memory
from compiler.recompute import recompute as apply_recompute
from compiler.recompute import recompute_summary
from compiler import transforms

from hardware.chips import get_chip
from hardware.dtypes import DTYPE_BYTES
from .engine import Engine

#: suggestions estimated (not recompiled) count as fitting below this fraction of a tile
ESTIMATE_MARGIN = 0.95


@dataclass
class Compiled:
    opgraph: object
    lowered: object
    exe: object
    chip: object
    memory: dict
    report: dict
    sim: object = None


def load_model(model, *, batch=1, train=False, optimizer="sgd", dtype="fp32", model_kw=None):
    import models
    if isinstance(model, str) and (model.endswith(".onnx") or "/" in model):
        og = models.load_onnx(model, batch=batch)
        if train:
            og = models.make_training_graph(og, optimizer=optimizer)
        return og
    if callable(model) and not hasattr(model, "graph"):      # a builder: batch -> forward OpGraph
        og = model(batch=batch)
        return models.make_training_graph(og, optimizer=optimizer) if train else og
    if not isinstance(model, str):
        return model
    return models.get_model(model, batch=batch, train=train, optimizer=optimizer, **dict(model_kw or {}))


def _offload_tuple(offload):
    if not offload:
        return ()
    if isinstance(offload, str):
        offload = [x for x in offload.replace("+", ",").split(",") if x]
    return tuple(offload)


# Graph sizes Poplar's compiler produced for the same networks (shared/reference/published-figures.md)
PUBLISHED_GRAPHS = {
    ("resnet50", False): {"vertices": 3.22e6, "edges": 6.21e6,
                          "source": "Graphcore, 'Inside an AI brain', Feb 2017 (ResNet-50 inference)"},
    ("alexnet", True): {"vertices": 18.7e6, "edges": 115.8e6,
                        "source": "Graphcore, 'Inside an AI brain', Feb 2017 (AlexNet training loop)"},
}


def published_graph(name, train) -> dict | None:
    """Poplar's published graph size for this model, with ours beside it when known."""
    return PUBLISHED_GRAPHS.get((str(name).lower(), bool(train)))


def compile_model(model, **kw) -> dict:
    """Compile (and optionally simulate) a model; return the report as nested dicts (see :func:`build`)."""
    return build(model, **kw).report


def build(model, *, chip="gc200", batch=1, train=False, optimizer="sgd", dtype="fp32", partials=None,
          ipus=1, available_memory_proportion=0.6, simulate=False, use_functions=True,
          recompute="none", accumulate=1, offload=(), model_kw=None, suggest=True,
          verify_suggestions=False, fuse=True) -> Compiled:
    """Compile (and optionally simulate) ``model``.

    ``recompute``: none | blocks | sqrt | all (training graphs); ``accumulate``:
    micro-batches of ``batch`` per weight update; ``offload``: "optimizer",
    "weights" or both (a tuple, or "optimizer,weights"); ``model_kw``: the
    built-in model's own options (``image_size``, ``layers``...);
    ``suggest``: when it does not fit, estimate what would;
    ``verify_suggestions``: recompile each suggestion instead of estimating.
    """
    t0 = time.perf_counter()
    chip_obj = get_chip(chip)
    offload = _offload_tuple(offload)
    accumulate = int(accumulate or 1)
    if accumulate < 1:
        raise ValueError(f"accumulate must be >= 1, got {accumulate}")
    og0 = load_model(model, batch=batch, train=train, optimizer=optimizer, dtype=dtype, model_kw=model_kw)
    training = any(og0.op(n)["phase"] != "fwd" for n in og0.graph)
    if recompute not in (None, "none") and not training:
        raise ValueError("--recompute needs a training graph (--train)")
    if accumulate > 1 and not training:
        raise ValueError("--accumulate needs a training graph (--train)")
    if "optimizer" in offload and not training:
        raise ValueError("--offload optimizer needs a training graph (--train)")
    og = apply_recompute(og0, recompute or "none")
    t1 = time.perf_counter()
    funcs = use_functions and "weights" not in offload
    low = lower(og, chip_obj, dtype=dtype, partials=partials, ipus=ipus,
                available_memory_proportion=available_memory_proportion, use_functions=funcs, fuse=fuse)
    info = {}
    if offload:
        info["offload"] = transforms.offload(low, offload)
    if accumulate > 1:
        info["accumulate"] = transforms.accumulate(low, accumulate)
    exe = compile_program(low.graph, low.program)
    mem = memory_report(exe)
    t2 = time.perf_counter()
    executed = static_vertices_executed(exe)
    opts = {"batch": batch, "dtype": dtype, "partials": partials, "ipus": ipus, "recompute": recompute or "none",
            "accumulate": accumulate, "offload": offload}
    if suggest and not mem["fits"]:
        mem["suggestions"] = suggestions(model, og0, mem, chip_obj, opts, train=train, optimizer=optimizer,
                                         model_kw=model_kw, verify=verify_suggestions,
                                         available_memory_proportion=available_memory_proportion)
    else:
        mem["suggestions"] = []
    report = {
        "model": {"name": og0.name, "params": int(og0.params()), "flops": int(og.flops()), "ops": len(og),
                  "batch": batch, "train": bool(training), "dtype": dtype, "partials": low.partials,
                  "recompute": opts["recompute"], "accumulate": accumulate, "offload": list(offload),
                  "samples_per_step": batch * accumulate},
        "chip": {"name": chip_obj.name, "ipus": ipus, "tiles": low.graph.num_tiles,
                 "sram_bytes_per_tile": chip_obj.sram_bytes_per_tile, "clock_hz": chip_obj.clock_hz},
        "graph": {"vertices": low.graph.num_vertices, "vertices_executed": executed,
                  "edges": low.graph.num_edges, "compute_sets": len(low.graph.compute_sets),
                  "variables": len(low.graph.variables), "functions": len(low.graph.functions),
                  "function_calls": sum(low.calls.values()),
                  "tiles_used": int((np.bincount(exe.arrays.vertex_tile, minlength=1) > 0).sum())
                  if low.graph.num_vertices else 0,
                  "arrays_bytes": exe.arrays.nbytes},
        "memory": {k: v for k, v in mem.items() if k not in NON_JSON_KEYS},
        "timing": {"load_s": t1 - t0, "compile_s": t2 - t1},
    }
    pub = published_graph(model if isinstance(model, str) else og.name, train)
    if pub:
        report["graph"]["published"] = dict(pub, ratio_vertices=report["graph"]["vertices_executed"] / pub["vertices"],
                                            ratio_edges=report["graph"]["edges"] / pub["edges"])
    report["graph"]["fused_ops"] = sum(1 for p in low.plans.values() if "fused_into" in p)
    report["graph"]["fusion"] = fusion_savings(low, chip_obj)
    if og is not og0:
        report["memory"]["recompute"] = recompute_summary(og0, og) | {"mode": recompute}
    report["memory"].update(info)
    msg = oom_message(mem)
    if msg:
        report["memory"]["message"] = msg
    c = Compiled(og, low, exe, chip_obj, mem, report)
    if simulate:
        t3 = time.perf_counter()
        eng = RemoteAwareEngine(exe, chip_obj, ipus=ipus)
        rep = eng.run()
        rep.samples = batch * accumulate
        c.sim = rep
        report["sim"] = rep.to_dict() | {"remote_bytes": eng.remote_bytes, "remote_cycles": eng.remote_cycles}
        report["timing"]["simulate_s"] = time.perf_counter() - t3
    return c


# -- suggestions when a model does not fit -------------------------------------------------
def suggestions(model, og, mem, chip, opts, *, train, optimizer, model_kw=None, verify=False,
                available_memory_proportion=0.6, max_combo=4) -> list:
    """Options that would make the model fit, with the estimated peak tile bytes of each.

    Estimate (default): the op graph's always-live bytes and peak of live
    activation bytes (:func:`compiler.memory.opgraph_memory`) are computed for
    the current options and for each candidate, and their ratios scale the
    per-tile categories of the real compile (:func:`compiler.memory.estimate_tiles`);
    milliseconds per candidate.  ``verify=True`` recompiles each candidate.
    """
    sram = chip.sram_bytes_per_tile
    #: an estimate "fits" only with this margin left for its error (a recompile needs none)
    margin = 1.0 if verify else ESTIMATE_MARGIN
    training = any(og.op(n)["phase"] != "fwd" for n in og.graph)

    def opgraph_for(o):
        g = og
        if o["batch"] != opts["batch"]:
            if isinstance(model, str) or callable(model):
                g = load_model(model, batch=o["batch"], train=train, optimizer=optimizer, model_kw=model_kw)
            else:
                return None
        return apply_recompute(g, o["recompute"]) if training else g

    def est(o):
        g = opgraph_for(o)
        if g is None:
            return None
        return opgraph_memory(g, o["dtype"], o["offload"])

    base = est(opts)

    def estimate(o):
        if verify:
            try:
                c = build(model, chip=chip, batch=o["batch"], train=train, optimizer=optimizer, dtype=o["dtype"],
                          partials=o["partials"], ipus=o["ipus"], recompute=o["recompute"],
                          accumulate=o["accumulate"], offload=o["offload"], model_kw=model_kw, suggest=False,
                          available_memory_proportion=available_memory_proportion)
            except ValueError as e:      # the option does not compile (yet): say so, never crash the report
                return float("inf"), -1, f"recompile failed: {e.args[0] if e.args else e}"
            t = c.memory["per_tile"]["total"]
            return float(t.max()), int((t > sram).sum()), "recompiled"
        e = est(o)
        if e is None:
            return None
        rb = DTYPE_BYTES.get(o["dtype"], 4) / DTYPE_BYTES.get(opts["dtype"], 4)
        t = estimate_tiles(mem, r_always=e["always"] / max(base["always"], 1),
                           r_live=e["peak"] / max(base["peak"], 1),
                           r_exchange=(o["batch"] / opts["batch"]) * rb, r_state=e["ops"] / max(base["ops"], 1),
                           r_all=opts["ipus"] / o["ipus"])
        return float(t.max()), int((t > sram).sum()), "estimate (op-graph liveness scaled by this compile's per-tile categories)"

    def candidates(o):
        out = []
        if training:
            for m in ("blocks", "sqrt", "all"):
                if o["recompute"] == "none" or (o["recompute"] != m and m == "all"):
                    out.append((f"--recompute {m}", {"recompute": m}))
        b = o["batch"]
        while b > 1:
            b //= 2
            k = o["batch"] // b * o["accumulate"]
            if training:
                out.append((f"--batch {b} --accumulate {k}", {"batch": b, "accumulate": k}))
            else:
                out.append((f"--batch {b}", {"batch": b}))
        if o["dtype"] == "fp32":
            out.append(("--dtype fp16", {"dtype": "fp16"}))
        elif o["dtype"] == "fp16" and not training:
            out.append(("--dtype int8", {"dtype": "int8"}))
        if training and "optimizer" not in o["offload"]:
            out.append(("--offload optimizer", {"offload": tuple(o["offload"]) + ("optimizer",)}))
        if "weights" not in o["offload"]:
            out.append(("--offload weights", {"offload": tuple(o["offload"]) + ("weights",)}))
        for k in (2, 4):
            out.append((f"--ipus {o['ipus'] * k} --mode spread (more chips)", {"ipus": o["ipus"] * k}))
        return out

    res = []
    for label, ch in candidates(opts):
        o = dict(opts) | ch
        r = estimate(o)
        if r is None:
            continue
        res.append({"option": label, "args": ch, "peak_tile_bytes": int(min(r[0], 2**62)), "oom_tiles": r[1],
                    "fits": r[0] <= sram * margin, "saving_bytes": int(mem["peak_tile_bytes"] - min(r[0], 2**62)),
                    "method": r[2]})
    # of the batch sizes, keep the largest that fits (or the smallest tried)
    batches = [s for s in res if s["option"].startswith("--batch")]
    keep_b = next((s for s in batches if s["fits"]), batches[-1] if batches else None)
    out = [s for s in res if not s["option"].startswith("--batch") or s is keep_b]
    if not any(s["fits"] for s in out):
        # combine: greedily add the option that saves most until it fits
        o, label, last = dict(opts), [], None
        for _ in range(max_combo):
            best = None
            for lab, ch in candidates(o):
                if lab.startswith("--ipus"):
                    continue
                r = estimate(dict(o) | ch)
                if r is not None and (best is None or r[0] < best[0][0]):
                    best = (r, lab, ch)
            if best is None:
                break
            o |= best[2]
            label.append(best[1])
            last = best
            if best[0][0] <= sram * margin:
                break
        if label:
            r = last[0]
            out.append({"option": " ".join(label), "args": {k: o[k] for k in o if o[k] != opts[k]},
                        "peak_tile_bytes": int(min(r[0], 2**62)), "oom_tiles": r[1], "fits": r[0] <= sram * margin,
                        "saving_bytes": int(mem["peak_tile_bytes"] - min(r[0], 2**62)), "method": r[2]})
    out.sort(key=lambda s: (not s["fits"], -s["saving_bytes"] if not s["fits"] else 0))
    return out


# -- timing of streaming-memory (remote) copies ----------------------------------------------
class RemoteAwareEngine(Engine):
    """The engine, plus streams marked ``remote`` (compiler.transforms.offload).

    A remote copy is synchronous: the program waits while the bytes move
    between the streaming memory and the chip at ``streaming_memory_bytes_per_s``
    (the host link's rate and latency where the chip has no streaming memory),
    one transfer at a time, then spreads / gathers them over the tiles at the
    exchange rate.
    """

    remote_bytes = 0
    remote_cycles = 0.0

    def _stream_state(self, s, count=0):
        if getattr(s, "remote", False):
            return None
        return super()._stream_state(s, count)

    def _stream_copy(self, p, plan):
        if not getattr(plan.stream, "remote", False):
            yield from super()._stream_copy(p, plan)
            return
        import simpy
        env, chip = self.env, self.chip
        res = getattr(self, "_remote_res", None)
        if res is None or res._env is not env:
            res = self._remote_res = simpy.Resource(env, capacity=1)
        start = env.now
        rate = chip.streaming_memory_bytes_per_s or chip.host_link_bytes_per_s
        nbytes = plan.stream.nbytes
        with res.request() as req:
            yield req
            t = chip.cycles(chip.host_link_latency_s + nbytes / rate)
            yield env.timeout(t)
        waited = env.now - start
        dist = float(plan.bytes_per_tile.max()) / chip.exchange_bytes_per_cycle_per_tile if plan.bytes_per_tile.size else 0.0
        yield env.timeout(dist)
        self.remote_bytes += nbytes
        self.remote_cycles += t
        self.report.add_step(f"remote {plan.stream.name}", start, 0.0, 0.0, dist, host_wait=waited)
        if self.functional:
            self.functional.stream_copy(plan)


def fusion_savings(low, chip) -> dict:
    """Supersteps kernel fusion removed from one run of the program, and the cycles
    that saves as an estimate: each removed superstep would have cost at least a
    sync (its compute moved into the producer's vertices)."""
    saved = 0
    for name, plan in low.plans.items():
        if "fused_into" in plan:
            bt = low.opgraph.op(name).get("block_type")
            saved += low.calls.get(bt, 1) if bt in low.functions else 1
    return {"supersteps_saved": saved, "cycles_saved_estimate": saved * chip.sync_cycles}


def static_vertices_executed(exe) -> int:
    """Vertices run by one execution of the program (Repeat and Call multiply)."""
    from compiler.program import Execute, leaves
    return sum(mult * exe.compute[p.compute_set.id].vertices for p, mult in leaves(exe.program)
               if isinstance(p, Execute))
