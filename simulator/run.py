"""The front door: a :class:`~simulator.config.RunConfig` in, a :class:`Run` out.

    >>> r = run(RunConfig(model="mnist-mlp", chip="gc200"))
    >>> r.report["model"]["name"], r.report["memory"]["fits"], r.report["sim"]["cycles"] > 0
    ('mnist-mlp', True, True)

One chip (or several used as one graph, ``mode="spread"``): load the op graph, apply
recomputation, lower it to vertices (:func:`compiler.lower.lower`), apply offload and
gradient accumulation, compile the program, plan memory, simulate with the
:class:`~simulator.engine.Engine`.  Several chips running separate graphs (shard, pipeline,
replicate): :func:`simulator.multichip.run_multichip`.  Both give the same report shape
(``model``, ``chip``, ``memory``, ``sim``, ``timing``; plus ``graph`` for one graph and
``multichip`` for several), serialised by :meth:`Run.to_json`.

When the model does not fit, ``memory.suggestions`` lists options that would make it
fit (:mod:`simulator.advisor`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

import models
from compiler import transforms
from compiler.executable import compile_program
from compiler.kvcache import stream_kv_cache
from compiler.lower import lower
from compiler.memory import NON_JSON_KEYS, memory_report, oom_message
from compiler.program import Execute, leaves
from compiler.recompute import recompute as apply_recompute
from compiler.recompute import recompute_summary

from .advisor import suggestions
from .config import RunConfig
from .engine import Engine
from .multichip import run_multichip
from .report import json_text


@dataclass
class Compiled:
    """One compiled graph: the op graph, the lowering, the executable, its memory plan and
    report, and (after simulation) the engine's :class:`~simulator.report.SimReport`."""
    opgraph: object
    lowered: object
    exe: object
    chip: object
    memory: dict
    report: dict
    sim: object = None
    config: RunConfig | None = None


@dataclass
class Run:
    """The result of :func:`run`: the configuration, the report (nested dicts) and what
    produced it: ``compiled`` for one graph, ``multichip`` (the multi-chip simulation, and
    ``stage_memory`` when asked) for several."""
    config: RunConfig
    report: dict
    compiled: Compiled | None = None
    multichip: object = None
    stage_memory: list | None = field(default=None, repr=False)

    @property
    def sim(self):
        """The simulation behind the report (engine report or multi-chip simulation), or None."""
        return self.compiled.sim if self.compiled is not None else self.multichip

    def to_json(self, path=None, indent=2) -> str:
        """The report as JSON (numpy values made plain); written to ``path`` when given."""
        text = json_text(self.report, indent=indent)    # ReportError on Infinity / NaN: not JSON
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def chrome_trace(self, path=None) -> dict:
        """The run as Chrome trace-event JSON (open it in Perfetto)."""
        sim = self.sim
        if sim is None:
            raise ValueError("this run was compiled, not simulated: no trace")
        return sim.chrome_trace(path)


def _config(config, options) -> RunConfig:
    if isinstance(config, RunConfig):
        return config.replace(**options) if options else config
    return RunConfig(model=config, **options)


def run(config, *, simulate=True, stage_detail=False, workers=None, strict=False, **options) -> Run:
    """Compile and (by default) simulate one run configuration, on one chip or several.

    ``config``: a :class:`RunConfig`, or a model (then ``options`` are the configuration's
    fields).  ``simulate=False`` compiles and plans memory only (one graph).  Several chips
    (:func:`simulator.multichip.run_multichip`): ``stage_detail`` keeps each stage's per-tile
    bytes and liveness curve in ``Run.stage_memory`` (for the views), ``workers`` processes
    compile the stages, ``strict`` refuses a model with fewer layers than stages.
    """
    cfg = _config(config, options)
    if cfg.multichip:
        rep = run_multichip(cfg, stage_detail=stage_detail, workers=workers, strict=strict)
        sim = rep.pop("_sim")
        return Run(cfg, rep, multichip=sim, stage_memory=rep.pop("_stage_memory", None))
    c = build(cfg, simulate=simulate)
    return Run(cfg, c.report, compiled=c)





def build(config, *, simulate=False, **options) -> Compiled:
    """Compile (and optionally simulate) one graph: one chip, or ``ipus`` chips as one graph.

    ``config``: a :class:`RunConfig`, or a model (then ``options`` are the configuration's
    fields), e.g. ``build("mnist-mlp", batch=4, train=True)``.
    """
    cfg = _config(config, options)
    t0 = time.perf_counter()
    chip_obj = cfg.get_chip()
    # --batch samples per weight update, in M micro-batches: the graph is one micro-batch, accumulated M times
    batch, ipus, offload, recompute = cfg.batch, cfg.ipus, cfg.offload, cfg.recompute_mode
    accumulate = cfg.layout()[2]
    micro = batch // accumulate
    og0 = models.load(cfg.model, batch=micro, train=cfg.train, optimizer=cfg.optimizer, model_kw=cfg.model_kw)
    training = any(og0.op(n)["phase"] != "fwd" for n in og0.graph)
    if recompute != "none" and not training:
        raise ValueError("recompute: recomputation needs a training graph (--train)")
    if accumulate > 1 and not training:
        raise ValueError(f"micro_batches: accumulating gradients over {accumulate} micro-batches needs a training "
                         f"graph (--train); for inference --batch is what one run computes")
    if "optimizer" in offload and not training:
        raise ValueError("offload: --offload optimizer needs a training graph (--train)")
    og = apply_recompute(og0, recompute, cfg.recompute_checkpoints)
    t1 = time.perf_counter()
    funcs = cfg.functions and "weights" not in offload
    low = lower(og, chip_obj, dtype=cfg.dtype, partials=cfg.partials, ipus=ipus,
                available_memory_proportion=cfg.proportion_of_stage(0), use_functions=funcs, fuse=cfg.fuse)
    info = {}
    if offload:
        info["offload"] = transforms.offload(low, offload)
    kv = stream_kv_cache(low)          # a decoder whose KV cache is in streaming memory
    if kv:
        info["kv_cache"] = kv
    if accumulate > 1:
        info["accumulate"] = transforms.accumulate(low, accumulate)
    exe = compile_program(low.graph, low.program)
    mem = memory_report(exe)
    t2 = time.perf_counter()
    executed = static_vertices_executed(exe)
    if cfg.suggest and not mem["fits"]:
        mem["suggestions"] = suggestions(cfg, og0, mem, chip_obj, rebuild=build)
    else:
        mem["suggestions"] = []
    report = {
        "model": {"name": og0.name, "params": int(og0.params()), "flops": int(og.flops()), "ops": len(og),
                  "batch": batch, "micro_batch": micro, "train": bool(training), "dtype": cfg.dtype,
                  "partials": low.partials, "recompute": recompute, "accumulate": accumulate,
                  "offload": list(offload), "samples_per_step": batch},
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
    pub = models.published_graph(cfg.model if isinstance(cfg.model, str) else og.name, cfg.train)
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
    c = Compiled(og, low, exe, chip_obj, mem, report, config=cfg)
    if simulate:
        t3 = time.perf_counter()
        rep = Engine(exe, chip_obj, ipus=ipus).run()
        rep.samples = batch
        c.sim = rep
        report["sim"] = rep.to_dict()
        report["timing"]["simulate_s"] = time.perf_counter() - t3
    return c


def fusion_savings(low, chip) -> dict:
    """Supersteps kernel fusion removed from one run of the program, and the cycles
    that saves as an estimate: each removed superstep would have cost at least a
    sync (its compute moved into the producer's vertices)."""
    saved = 0
    for name, plan in low.plans.items():
        if "fused_into" in plan:    # applied by its producer: one sync saved each time it runs
            saved += low.calls.get(low.op_function.get(name), 1)
    return {"supersteps_saved": saved, "cycles_saved_estimate": saved * chip.sync_cycles}


def static_vertices_executed(exe) -> int:
    """Vertices run by one execution of the program (Repeat and Call multiply)."""
    return sum(mult * exe.compute[p.compute_set.id].vertices for p, mult in leaves(exe.program)
               if isinstance(p, Execute))
