"""Several chips: sharding, pipelining, replication and pipelined replicas.

:func:`run_multichip` compiles a model for ``ipus`` chips and simulates one or
more training (or inference) steps:

* ``mode="shard"``: the layers are split over the chips (compiler/partition.py)
  and the whole batch runs through them in turn: one chip works at a time.
* ``mode="pipeline"``: the same stages, but the batch is cut into
  ``micro_batches`` that flow through the stages (the stages come from the
  placement, or from ``layers_per_chip`` / ``pipeline_splits``); a training step is the
  1F1B schedule (``schedule="1f1b"``: fill with forwards, then one forward /
  one backward in the steady state, then drain the backwards) or GPipe's
  (``schedule="gpipe"``: all forwards, then all backwards).  Gradients are
  accumulated over the micro-batches; the optimizer runs once per step.
* ``mode="replicate"``: ``replicas`` data-parallel copies, each on
  ``ipus / replicas`` chips (1 by default) with ``batch`` samples per weight
  update, in ``micro_batches`` micro-batches run one after the other (gradient
  accumulation); the gradients are all-reduced over the chip-to-chip links
  (ring: each chip sends ``2 (R - 1) / R`` x its gradient bytes) once per
  weight update, before the update.
* ``mode="pipeline+replicate"``: ``replicas`` pipelines of ``ipus / replicas``
  stages; stage ``s`` of every replica all-reduces with its peers.
* ``mode="tensor"`` / ``"pipeline+tensor"``: every stage is a group of chips that each compile
  their slice of a transformer (:mod:`models.tensor_parallel`), all-reducing partial sums.
* ``mode="expert"`` / ``"pipeline+expert"``: every stage is a group of ``X``
  chips that each hold ``experts / X`` whole experts of a mixture of experts and run
  ``micro-batch / X`` of the sequences (:mod:`models.expert_parallel`); each MoE layer's
  dispatch and combine are all-to-alls over the group's links
  (:meth:`~simulator.links.Network.all_to_all`); training mirrors them backward and
  all-reduces the gradients of the weights the group's chips all hold before the update.
* ``replicated_tensor_sharding``: instead of the all-reduce, a reduce-scatter of
  the gradients, the update of each replica's ``1/R`` of the weights (its
  ``1/R`` of the optimizer state, in streaming memory with ``offload``), then an
  all-gather of the updated weights; each chip holds ``1/R`` of the state.

Recomputation (``recompute``, ``recompute_checkpoints``) is applied to the whole
graph before it is cut (the recomputed ops run in the backward phase of their
layer's stage); ``offload`` is applied to each stage's program; the available
memory proportion is one value or one per stage.

How the time is computed: every stage is lowered and compiled for ONE chip at
the micro-batch size with the existing ``lower()`` / ``compile_program()``,
and its program is run once in the BSP :class:`~simulator.engine.Engine`
(timing mode, with an infinitely fast host so that only on-chip work counts).
The engine's supersteps are grouped by phase (forward, backward, update), so
each stage has a forward, a backward and an update time, with their compute /
sync / exchange split.  Then a second SimPy model runs one process per chip:
each process waits for its inputs (activations from the previous stage,
gradients from the next one, host data from its host link's prefetch
buffers), holds the chip for the stage's phase time, and sends its outputs
over the links of :mod:`simulator.links` after a cross-chip sync
(``chip.sync_cycles_multi_chip``).  Supersteps are never re-simulated per
micro-batch.  Host streams have ``host_buffers`` buffers (prefetch): the host
moves the next micro-batch while the chip computes; the report says which
fraction of the host transfer time was hidden.

The throughput ``sim.samples_per_second`` is ``steps x batch x replicas`` over the whole
simulated time (``samples_per_second_per_replica`` and ``_per_chip`` beside it): host I/O, pipeline fill and drain, syncs, all-reduce and the
optimizer included, as a user would measure it.

    >>> cfg = RunConfig(model="mnist-mlp", ipus=2, mode="pipeline", micro_batches=2, batch=8, train=True)
    >>> r = run_multichip(cfg)
    >>> r["multichip"]["stages"], r["multichip"]["micro_batches"], len(r["sim"]["per_ipu"])
    (2, 2, 2)
    >>> r["sim"]["link_bytes"] > 0 and r["sim"]["samples_per_second"] > 0
    True
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import simpy

import models
from compiler import hostmem, intervals, transforms
from compiler.executable import compile_program
from compiler.kvcache import stream_kv_cache
from compiler.lower import lower
from compiler.memory import execute_order, memory_report, step_names, worst_tiles
from compiler.partition import even_vs_auto, partition
from compiler.recompute import layer_names, unknown_layer
from compiler.recompute import recompute as apply_recompute
from hardware.dtypes import DTYPE_BYTES
from models.opgraph import OpGraph
from models.expert_parallel import all_to_all_ops
from models.tensor_parallel import allreduce_ops, head_ops

from .config import MODES as _ALL_MODES
from .config import RunConfig
from .engine import Engine
from .links import HostLink, Network

#: the modes that run separate graphs on the chips ("spread" is one graph over all their tiles)
MODES = tuple(m for m in _ALL_MODES if m != "spread")
_PHASE_OF = {"fwd": "fwd", "loss": "fwd", "recompute": "bwd", "bwd": "bwd", "update": "update"}


# -- one stage on one chip --------------------------------------------------------------------
@dataclass
class StageTiming:
    """A stage's executable run once in the engine, its supersteps grouped by phase."""
    index: int
    cycles: dict                   # phase -> cycles (fwd, bwd, update)
    split: dict                    # phase -> {"compute", "sync", "exchange"}
    steps: dict                    # phase -> [(name, kind, rel_start, dur)] for the trace
    vertices: int = 0
    edges: int = 0
    supersteps: int = 0
    memory: dict = field(default_factory=dict)
    lower_s: float = 0.0
    sim_s: float = 0.0
    flops: float = 0.0
    detail: dict | None = None     # per-tile bytes and liveness curve (``time_stage(detail=True)``)
    state_bytes: int = 0           # optimizer state on the chip (bytes, all tiles)
    offload: dict | None = None    # what transforms.offload moved to streaming memory


def _no_host_chip(chip):
    """The chip with an infinitely fast host: stage inputs arrive over IPU-Links, modelled here."""
    return chip.replace(host_link_bytes_per_s=1e18, host_link_latency_s=0.0)


#: points kept of a stage's liveness curve in its detail (the peak of every bucket is kept)
DETAIL_CURVE_POINTS = 1500


def _stage_detail(m, exe, chip) -> dict:
    """The few arrays of a stage's memory report that the views need, as float32 (a stage can be big:
    its liveness, allocation and executable are dropped)."""
    per_tile = {k: np.asarray(v, dtype=np.float32) for k, v in m["per_tile"].items()
                if k != "not_always_live_lower_bound"}
    curve = np.asarray(m.get("liveness_curve", []), dtype=np.float64)
    n = curve.size
    if n > DETAIL_CURVE_POINTS:       # bucket maxima: the peak survives the thinning
        edges = np.linspace(0, n, DETAIL_CURVE_POINTS + 1).astype(np.int64)
        x = np.array([lo + int(np.argmax(curve[lo:hi])) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo])
    else:
        x = np.arange(n)
    try:
        all_names = step_names(exe.program, exe.graph.compute_sets)
        names = [all_names[i] if i < len(all_names) else "" for i in x.tolist()]
    except Exception:   # noqa: BLE001 - names are only hover text
        names = [""] * x.size
    return {"per_tile": per_tile, "sram_bytes_per_tile": int(m["sram_bytes_per_tile"]),
            "tiles": int(chip.tiles), "curve_steps": x.astype(np.int32), "curve_bytes": curve[x].astype(np.float32),
            "curve_names": names, "steps": int(n), "peak_step": int(m.get("peak_step", 0)),
            "peak_step_name": m.get("peak_step_name", ""), "always_live_bytes": int(m.get("always_live_bytes", 0)),
            "not_always_live_peak_bytes": int(m.get("not_always_live_peak_bytes", 0))}


def stash_bytes_per_tile(live, exe) -> np.ndarray:
    """Per tile, the not-always-live bytes live across a training stage's forward / backward
    boundary (after its last forward or loss step): what one micro-batch keeps for its
    backward pass (with recomputation, the checkpoints), and so what each further
    micro-batch in flight in a pipeline adds (PopART's stash)."""
    css = exe.graph.compute_sets
    order = execute_order(exe.program)
    fwd = [i for i, c in enumerate(order) if c >= 0 and (css[c].phase or "fwd") in ("fwd", "loss")]
    out = np.zeros(live.num_tiles)
    if not fwd or fwd[-1] + 1 >= live.nsteps:
        return out
    b = fwd[-1]
    across = intervals.unique(live.iv_item[(live.iv_start <= b) & (live.iv_end > b)])
    sel = np.isin(live.pair_item, across)
    np.add.at(out, live.pair_tile[sel], live.pair_bytes[sel])
    return out


def _add_per_tile(m, extra, category, label):
    """Add ``extra`` bytes per tile to ``category`` of a memory report's per-tile figures (shown
    as ``label`` too) and to everything derived from them."""
    pt = m["per_tile"]
    pt[category] = pt[category] + extra
    pt[label] = extra
    tot = pt["total"] = pt["total"] + extra
    sram = m["sram_bytes_per_tile"]
    m["worst_tiles"] = worst_tiles(pt, tot, 5, {label: extra})
    m["by_category"][category] = int(round(pt[category].sum()))
    m["total_bytes"] = int(tot.sum())
    m["peak_tile"] = int(np.argmax(tot))
    m["peak_tile_bytes"] = int(tot.max())
    m["fits"] = bool(tot.max() <= sram)
    m["oom_tiles"] = int((tot > sram).sum())


def _add_stash(m, extra):
    """A pipeline's stash (activations, so not-always-live), ``extra`` bytes per tile."""
    _add_per_tile(m, extra, "not_always_live_variables", "pipeline_stash")


def _add_kv_caches(m, extra):
    """The other micro-batches' KV caches of an inference over several (always live), ``extra``
    bytes per tile."""
    _add_per_tile(m, extra, "always_live_variables", "other_micro_batches_kv_cache")


def _state_bytes_per_tile(graph) -> np.ndarray:
    """Bytes of optimizer state (variables of kind ``state``) on each tile of a lowered graph."""
    out = np.zeros(graph.num_tiles, np.int64)
    for v in graph.variables:
        if v.kind != "state" or v.id not in graph.tile_map:
            continue
        _, tiles = graph.tile_map.runs(v.id)
        lens = graph.tile_map.run_lengths(v.id)
        keep = tiles >= 0
        np.add.at(out, tiles[keep], lens[keep] * DTYPE_BYTES.get(v.dtype, 4))
    return out


def kv_cache_bytes_per_tile(graph) -> np.ndarray:
    """Bytes of the KV cache (every ``*_cache`` variable of a lowered graph, the unread rest
    included) on each tile of SRAM (none of a cache kept in streaming memory)."""
    out = np.zeros(graph.num_tiles, np.float64)
    for vid, v in enumerate(graph.variables):
        if "_cache" not in v.name or "/" in v.name or getattr(v, "offloaded", False):
            continue
        r = graph.tile_map.runs(vid)
        if r is None:
            continue
        _, tl = r
        ln = graph.tile_map.run_lengths(vid)
        ok = tl >= 0
        np.add.at(out, tl[ok], ln[ok] * DTYPE_BYTES[v.dtype])
    return out


def _holds(stage, m, kv, state, dtype) -> dict:
    """What one chip of a stage holds, in bytes over all its tiles: weights (in SRAM unless
    offloaded), KV cache, optimizer state, activations and temporaries (the not-always-live
    space allocated), code (vertex, exchange, control) and vertex state."""
    cat = m.get("by_category", {})
    return {"weights_bytes": int(stage.graph.params() * DTYPE_BYTES.get(dtype, 4)),
            "kv_cache_bytes": int(kv.sum()), "kv_cache_bytes_per_tile_max": int(kv.max()) if kv.size else 0,
            "optimizer_state_bytes": int(state.sum()),
            "activations_bytes": int(cat.get("not_always_live_variables", 0)),
            "code_bytes": int(sum(cat.get(k, 0) for k in ("vertex_code", "exchange_code", "control_code"))),
            "vertex_state_bytes": int(cat.get("vertex_state", 0))}


def time_stage(stage, chip, *, dtype="fp32", partials=None, available_memory_proportion=0.6,
               use_functions=True, memory=True, detail=False, offload=(), shards=1,
               micro_batches=1, in_flight=1) -> StageTiming:
    """Lower, compile and run one stage graph on one chip (see the module docstring).

    ``detail=True`` (with ``memory``) keeps the stage's per-tile bytes by category and its
    liveness curve (thinned to :data:`DETAIL_CURVE_POINTS`) in ``StageTiming.detail``.
    ``offload``: optimizer state and / or weights kept in streaming memory (:func:`compiler.transforms.offload`).
    ``shards``: replicated tensor sharding over this many replicas: each chip keeps 1/shards of the
    optimizer state, so the always-live state bytes of every tile shrink by that much in the memory
    figures (the update phase is scaled in :func:`run_multichip`).
    ``micro_batches > 1`` (training): every weight gradient is added to an accumulator right
    after it is computed (:func:`compiler.transforms.accumulate` without its loop: the
    program stays one micro-batch), and the accumulators are memory the chip holds all along.
    (Inference: each micro-batch's sequences have their own KV cache, held all along, so the
    graph's cache counts ``micro_batches`` times in the memory figures.)
    ``in_flight``: micro-batches whose forward pass has run and backward pass has not, at
    most, in the schedule (1F1B: ``min(stages - s, M)``); each beyond the first holds what
    one micro-batch holds between its forward and its backward pass (:func:`stash_bytes_per_tile`).
    """
    with hostmem.reuse_freed_memory():       # speed only (a stage makes and drops gigabytes of temporaries)
        return _time_stage(stage, chip, dtype=dtype, partials=partials,
                           available_memory_proportion=available_memory_proportion, use_functions=use_functions,
                           memory=memory, detail=detail, offload=offload, shards=shards,
                           micro_batches=micro_batches, in_flight=in_flight)


def _time_stage(stage, chip, *, dtype, partials, available_memory_proportion, use_functions, memory, detail,
                offload, shards, micro_batches, in_flight) -> StageTiming:
    t0 = time.perf_counter()
    g = stage.graph
    low = lower(g, chip, dtype=dtype, partials=partials, ipus=1,
                available_memory_proportion=available_memory_proportion,
                use_functions=use_functions and "weights" not in offload)
    moved = transforms.offload(low, offload) if offload else None
    stream_kv_cache(low)          # a decoder whose KV cache is in streaming memory (compiler/kvcache.py)
    training = any(g.op(n)["phase"] == "update" for n in g.graph)
    if training and micro_batches > 1:
        transforms.accumulate(low, micro_batches, loop=False)
    state = _state_bytes_per_tile(low.graph)
    exe = compile_program(low.graph, low.program)
    mem = {}
    info = None
    if memory:
        try:
            m = memory_report(exe)
            if training and in_flight > 1:
                _add_stash(m, stash_bytes_per_tile(m["liveness"], exe) * (in_flight - 1))
            kv = kv_cache_bytes_per_tile(low.graph)
            if not training and micro_batches > 1 and kv.any():
                # inference over M micro-batches (generate's pipelines): each has its own sequences,
                # so its own KV cache, all held at once; the graph holds one micro-batch's
                _add_kv_caches(m, kv * (micro_batches - 1))
                kv = kv * micro_batches
            mem = {"fits": bool(m["fits"]), "peak_tile_bytes": int(m["peak_tile_bytes"]),
                   "total_bytes": int(m.get("total_bytes", 0)),
                   "sram_bytes_per_tile": int(m["sram_bytes_per_tile"]), "oom_tiles": int(m.get("oom_tiles", 0)),
                   "worst_tiles": [{k: (int(v) if isinstance(v, (int, float)) else v) for k, v in w.items()}
                                   for w in m.get("worst_tiles", [])[:5]],
                   "optimizer_state_bytes": int(state.sum()), "optimizer_state_offloaded": "optimizer" in offload,
                   "holds": _holds(stage, m, kv, state, dtype)}
            if shards > 1:
                _shard_memory(mem, m, state, shards, "optimizer" in offload)
            if detail:
                info = _stage_detail(m, exe, chip)
            del m
        except Exception as e:   # the memory planner is optional for timing
            mem = {"error": f"{type(e).__name__}: {e}"}
    t1 = time.perf_counter()
    rep = Engine(exe, _no_host_chip(chip)).run()
    t2 = time.perf_counter()
    css = low.graph.compute_sets
    # phase of every step: a compute set's op phase; a stream copy by its tensor; others inherit
    tensor_phase = {}
    for n in g.graph:
        d = g.op(n)
        for t in d["outputs"]:
            tensor_phase[t] = _PHASE_OF.get(d["phase"], "fwd")
    first_use = {}
    for n in g.ops():
        for t in g.op(n)["inputs"]:
            first_use.setdefault(t, _PHASE_OF.get(g.op(n)["phase"], "fwd"))
    steps = rep.steps
    phases = []
    cur = "fwd"
    for s in steps:
        if s["cs"] is not None:
            cur = _PHASE_OF.get(css[s["cs"]].phase or "fwd", "fwd")
            phases.append(cur)
        elif s["name"].startswith("stream "):
            t = s["name"][7:]
            phases.append(tensor_phase.get(t) or first_use.get(t, cur))
        else:
            phases.append(cur)
    cycles = {"fwd": 0.0, "bwd": 0.0, "update": 0.0}
    split = {p: {"compute": 0.0, "sync": 0.0, "exchange": 0.0} for p in cycles}
    trace = {p: [] for p in cycles}
    ends = [s["start"] for s in steps[1:]] + [rep.cycles]
    for s, ph, end in zip(steps, phases, ends):
        dur = max(end - s["start"], 0.0)
        rel = cycles[ph]
        cycles[ph] += dur
        split[ph]["compute"] += s["compute"]
        split[ph]["sync"] += s["sync"]
        split[ph]["exchange"] += dur - s["compute"] - s["sync"]   # exchange + control + host distribution
        t = rel
        for kind, d in (("compute", s["compute"]), ("sync", s["sync"]),
                        ("exchange", dur - s["compute"] - s["sync"])):
            if d > 0:
                trace[ph].append((s["name"], kind, t, d))
                t += d
    return StageTiming(stage.index, cycles, split, trace, vertices=low.graph.num_vertices, edges=low.graph.num_edges,
                       supersteps=rep.supersteps, memory=mem, lower_s=t1 - t0, sim_s=t2 - t1,
                       flops=rep.flops_executed, detail=info, state_bytes=int(state.sum()), offload=moved)


def _shard_memory(mem, m, state, shards, offloaded):
    """Replicated tensor sharding in a stage's memory figures: each replica keeps 1 / ``shards`` of the
    optimizer state.  On the chip (not offloaded) the state is always live, so every tile loses
    ``(1 - 1/shards)`` of its state bytes; offloaded, the chip only ever holds the loaded shard and
    streaming memory keeps 1 / ``shards`` of it (the peak tile is not lowered: the update's load is
    not where it is)."""
    keep = 1.0 / shards
    mem["replicated_tensor_sharding"] = {"replicas": shards, "optimizer_state_bytes_per_replica":
                                         int(state.sum() * keep)}
    if offloaded:
        mem["replicated_tensor_sharding"]["streaming_memory_bytes"] = int(state.sum() * keep)
        return
    total = np.asarray(m["per_tile"]["total"], np.float64)
    sharded = total - state * (1.0 - keep)
    sram = mem["sram_bytes_per_tile"]
    mem["unsharded_peak_tile_bytes"] = mem["peak_tile_bytes"]
    mem["peak_tile_bytes"] = int(min(mem["peak_tile_bytes"], sharded.max() + (mem["peak_tile_bytes"] - total.max())))
    mem["oom_tiles"] = int((sharded > sram).sum())
    mem["fits"] = bool(mem["peak_tile_bytes"] <= sram)


_WORKER_MEMORY = []


def _worker_init():
    """A stage worker process keeps the memory its stages free, from one stage to the next (it
    ends with the pool): the next stage reuses it rather than faulting in fresh pages."""
    cm = hostmem.reuse_freed_memory()
    cm.__enter__()
    _WORKER_MEMORY.append(cm)      # held, so that it is not closed (and the memory trimmed) early


def _time_one(args):
    stage, chip, kw, threads = args
    # the processes share the CPUs: each compiles with its share of threads (compiler/parallel.py)
    os.environ.setdefault("IPUSIM_THREADS", str(threads))
    return time_stage(stage, chip, **kw)


def stage_workers(stages, kw, workers=None) -> int:
    """Processes to compile ``stages`` in: ``workers`` when given (at most one per stage), else one per
    CPU (at most one per stage) while the host-memory estimates of the largest stages that would
    compile at once (:func:`compiler.hostmem.estimate_bytes`, what each lowering checks) fit in the
    memory available; fewer where they do not (a BERT-Large stage takes several GB)."""
    n = len(stages)
    if workers:
        return max(1, min(n, int(workers)))
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    w = max(1, min(n, cpus))
    have, _ = hostmem.available_bytes()
    if w > 1 and have is not None:
        outlined = kw.get("use_functions", True) and "weights" not in kw.get("offload", ())
        est = sorted((hostmem.estimate_bytes(st.graph, outlined) for st in stages), reverse=True)
        while w > 1 and sum(est[:w]) > have:
            w -= 1
    return w


def _time_stages(stages, chip, kw, workers=None):
    """Time every stage; several processes when there are several stages, CPUs and memory
    (:func:`stage_workers`)."""
    n = len(stages)
    workers = stage_workers(stages, kw, workers)
    amp = kw.get("available_memory_proportion", 0.6)
    fl = kw.get("in_flight", 1)
    kws = [dict(kw, available_memory_proportion=amp[i] if isinstance(amp, tuple) else amp,
                in_flight=fl[i] if isinstance(fl, tuple) else fl) for i in range(n)]
    ctx = None
    if workers > 1 and n > 1:
        try:
            ctx = mp.get_context("fork")
        except ValueError:    # no fork on this platform: in this process
            pass
    if ctx is None:
        with hostmem.reuse_freed_memory():      # one stage after another reuses the memory the last freed
            return [time_stage(st, chip, **k) for st, k in zip(stages, kws)]
    # biggest stages first, so the pool stays busy
    order = sorted(range(n), key=lambda i: -len(stages[i].graph))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as ex:
        per = max(1, (os.cpu_count() or 1) // workers)
        res = list(ex.map(_time_one, [(stages[i], chip, kws[i], per) for i in order]))
    out = [None] * n
    for i, r in zip(order, res):
        out[i] = r
    return out


# -- the run ----------------------------------------------------------------------------------
def run_multichip(config: RunConfig, *, steps=2, host_buffers=2, compare_even=False, trace=None, cuts=None,
                  workers=None, memory=True, stage_detail=False, strict=False) -> dict:
    """Compile and simulate a run configuration on ``config.ipus`` chips; return the report dict.

    ``config.model``: a built-in name, an ONNX path, a builder ``batch -> OpGraph``, or an
    :class:`OpGraph` (then taken as ONE micro-batch: its batch must be ``config.batch /
    micro-batches``).  ``config.batch``: samples per replica per weight update.
    ``config.placement``: ``"auto"`` (balanced by dynamic programming under the memory
    limit) or ``"even"`` (same number of layers per stage); the report always carries both
    estimates.  The keywords are how the simulation runs, not what is run:
    ``steps`` simulated, ``host_buffers`` per host stream (prefetch);
    ``compare_even=True`` also simulates the other placement and reports its throughput;
    ``trace``: path of a Chrome trace-event JSON file; ``cuts``: stage boundaries given by hand;
    ``workers``: processes compiling the stages in parallel (default: one per stage, at most
    the machine's CPU count, fewer where their host-memory estimates do not fit: :func:`stage_workers`); ``memory=False`` skips the per-stage memory report (faster);
    ``stage_detail=True`` adds ``report["_stage_memory"]``: per stage, its per-tile bytes by
    category and its (thinned) liveness curve (see :func:`time_stage`); private like ``_sim``;
    ``strict=True``: a model with fewer layers than the stages asked for raises ValueError
    (by default it runs on fewer chips; ``multichip.stages_requested`` says how many were asked).
    """
    t0 = time.perf_counter()
    cfg = config
    if cfg.mode not in MODES:
        raise ValueError(f"mode: {cfg.mode!r} runs one graph (simulator.run.build); "
                         f"several graphs need one of {', '.join(MODES)}")
    defaults = RunConfig()
    unsupported = [f for f in ("fuse", "verify_suggestions") if getattr(cfg, f) != getattr(defaults, f)]
    if unsupported:
        raise ValueError(f"{unsupported[0]}: not supported with --mode {cfg.mode} (separate graphs per chip); "
                         f"use it on one chip or with --mode spread")
    chip = cfg.get_chip()
    mode, batch, dtype = cfg.mode, cfg.batch, cfg.dtype
    S, R, M = cfg.layout()
    T = cfg.tensor_degree
    X = cfg.expert_degree
    micro = batch // M
    model = cfg.model
    if T * X > 1 and (isinstance(model, OpGraph) or callable(model)):
        raise ValueError(f"mode: --mode {mode} builds each chip's slice of a transformer by name or config.json; "
                         f"got an op graph or a builder")
    if X > 1 and X - 1 > chip.links_per_chip:
        raise ValueError(f"expert_parallel: the all-to-all of --expert-parallel {X} sends from every chip to the "
                         f"{X - 1} others over direct links, more than a {chip.name}'s links_per_chip "
                         f"{chip.links_per_chip} (at most {chip.links_per_chip + 1} chips per expert-parallel group)")
    if isinstance(model, OpGraph):
        if model.batch != micro:
            raise ValueError(f"an OpGraph is one micro-batch: its batch {model.batch} != batch / "
                             f"micro-batches = {micro}")
        og = model
    else:
        og = _load(cfg, micro, T, X)
    training = any(og.op(n)["phase"] != "fwd" for n in og.graph)
    if not training:
        for name, bad in (("recompute", cfg.recompute_mode != "none"), ("offload", "optimizer" in cfg.offload),
                          ("micro_batches", M > 1 and mode == "replicate")):
            if bad:
                raise ValueError(f"{name}: needs a training graph (--train)")
    if cfg.recompute_mode != "none":
        og = apply_recompute(og, cfg.recompute_mode, cfg.recompute_checkpoints)
    pipelined = mode in ("pipeline", "pipeline+replicate", "pipeline+tensor", "pipeline+expert")
    if cuts is None:
        cuts = stage_cuts(og, S, cfg.layers_per_chip, cfg.pipeline_splits)
    part = partition(og, S, chip, placement=cfg.placement, dtype=dtype, pipelined=pipelined, micro_batches=M,
                     cuts=cuts)
    S_asked, S = S, len(part.stages)
    if strict and S < S_asked:
        raise ValueError(f"{og.name} splits into at most {S} stages (one layer or more each), not {S_asked}: "
                         f"use at most {S * R} chips for {R} replica{'s' if R > 1 else ''} in mode {mode}")
    t1 = time.perf_counter()
    rts = R if (cfg.replicated_tensor_sharding and training) else 1
    amp = cfg.available_memory_proportion
    if isinstance(amp, tuple) and len(amp) != S:
        raise ValueError(f"available_memory_proportion: {len(amp)} values for {S} stages ({og.name} has "
                         f"fewer layers than chips)")
    kw = dict(dtype=dtype, partials=cfg.partials, available_memory_proportion=amp,
              use_functions=cfg.functions, memory=memory, detail=bool(stage_detail and memory),
              offload=tuple(cfg.offload) if training else (), shards=rts, micro_batches=M,
              in_flight=tuple((min(S - s, M) if cfg.schedule == "1f1b" else M) if pipelined else 1
                              for s in range(S)))
    timings = _time_stages(part.stages, chip, kw, workers)
    if rts > 1:
        for tm in timings:
            _shard_update(tm, rts)
    t2 = time.perf_counter()
    schedule = cfg.schedule
    coll = tensor_collectives(og, part, T, dtype, training) if T > 1 else \
        expert_collectives(og, part, X, dtype, training)
    sim = _MultiChipSim(part, timings, chip, S=S, R=R, M=M, training=training, steps=int(steps),
                        schedule=schedule if pipelined else "1f1b", host_buffers=host_buffers, dtype=dtype,
                        sharded=rts > 1, T=T * X, collectives=coll, mesh=X > 1)
    sim.run()
    t3 = time.perf_counter()
    report = _report(og, part, timings, sim, chip, mode=mode, S=S, R=R, M=M, batch=batch, micro=micro,
                     training=training, dtype=dtype, steps=int(steps), schedule=schedule)
    report["multichip"]["stages_requested"] = S_asked
    if T > 1:
        report["multichip"]["tensor_parallel"] = _tensor_report(cfg, og, part, coll, T, M, int(steps), sim)
    if X > 1:
        report["multichip"]["expert_parallel"] = _expert_report(cfg, og, part, coll, X, M, micro, int(steps), sim)
    report["multichip"]["replicated_tensor_sharding"] = rts > 1
    report["model"].update(recompute=cfg.recompute_mode, offload=list(cfg.offload), optimizer=cfg.optimizer)
    if stage_detail:
        report["_stage_memory"] = [t.detail for t in timings]
        for t in timings:
            t.detail = None
    report["multichip"]["placement"]["comparison"] = even_vs_auto(og, S, chip, dtype=dtype, micro_batches=M,
                                                                  pipelined=pipelined)
    if compare_even and S > 1:
        other = "even" if cfg.placement == "auto" else "auto"
        r2 = run_multichip(cfg.replace(model=og, chip=chip, micro_batches=M, placement=other, recompute="none",
                                       recompute_checkpoints=(), layers_per_chip=(), pipeline_splits=()), steps=steps,
                           host_buffers=host_buffers, workers=workers, memory=memory)
        report["multichip"]["placement"]["simulated"] = {
            cfg.placement: {"cuts": part.cuts, "samples_per_second": report["sim"]["samples_per_second"],
                            "step_cycles": report["sim"]["step_cycles"]},
            other: {"cuts": r2["multichip"]["placement"]["cuts"],
                    "samples_per_second": r2["sim"]["samples_per_second"],
                    "step_cycles": r2["sim"]["step_cycles"]}}
    report["timing"] = {"load_partition_s": t1 - t0, "stages_wall_s": t2 - t1,
                        "compile_cpu_s": sum(t.lower_s for t in timings),
                        "stage_engine_cpu_s": sum(t.sim_s for t in timings), "multichip_sim_s": t3 - t2,
                        "total_s": time.perf_counter() - t0}
    if trace:
        sim.chrome_trace(trace)
    report["_sim"] = sim
    return report


def _load(cfg, micro, T, X=1):
    """The op graph one chip compiles: the model, or with ``T`` tensor-parallel chips its 1/T slice
    (the builder option ``tensor_parallel``, :mod:`models.tensor_parallel`), or with ``X``
    expert-parallel chips its ``experts / X`` experts and ``micro / X`` sequences (the builder
    option ``expert_parallel``, :mod:`models.expert_parallel`)."""
    if X > 1:
        kw = dict(cfg.model_kw or {}) | {"expert_parallel": X}
        try:
            return models.load(cfg.model, batch=micro // X, train=cfg.train, optimizer=cfg.optimizer, model_kw=kw)
        except models.ModelError as e:
            if "unknown" in str(e) and "expert_parallel" in str(e):
                raise ValueError(f"mode: --mode {cfg.mode} spreads a mixture of experts' experts over the chips; "
                                 f"{cfg.model} is not a decoder with experts (Mixtral, or a config.json with "
                                 f"num_local_experts)") from None
            raise ValueError(f"expert_parallel: {e}") from None
    if T == 1:
        return models.load(cfg.model, batch=micro, train=cfg.train, optimizer=cfg.optimizer, model_kw=cfg.model_kw)
    kw = dict(cfg.model_kw or {}) | {"tensor_parallel": T}
    try:
        return models.load(cfg.model, batch=micro, train=cfg.train, optimizer=cfg.optimizer, model_kw=kw)
    except models.ModelError as e:
        if "unknown" in str(e) and "tensor_parallel" in str(e):
            raise ValueError(f"mode: --mode {cfg.mode} splits attention heads and MLP features; {cfg.model} is "
                             f"not a transformer (GPT-2, Llama, Mixtral, BERT or a config.json)") from None
        raise ValueError(f"tensor_parallel: {e}") from None


def tensor_collectives(og, part, T, dtype, training) -> dict:
    """Per stage and phase, the bytes of each all-reduce a tensor-parallel group runs per
    micro-batch, in order: ``{stage: {"fwd": [bytes...], "bwd": [bytes...]}}`` (empty for T = 1).

    Forward: every op of :func:`models.tensor_parallel.allreduce_ops` (embedding lookup,
    attention output projection, MLP second matmul: partial sums of ``tokens x hidden``);
    training adds the vocabulary-parallel cross-entropy's statistics (3 fp32 numbers per token)
    and, backward, the same all-reduces mirrored (the input gradients of the attention, the MLP
    and the head; the embedding's gradient needs none: each chip updates its own rows)."""
    if T <= 1:
        return {}
    eb = DTYPE_BYTES.get(dtype, 4)
    stage_of = {o: st.index for st in part.stages for o in st.ops}
    out = {st.index: {"fwd": [], "bwd": []} for st in part.stages}
    tokens = 0
    for n in allreduce_ops(og):
        t = og.tensors[og.op(n)["outputs"][0]]
        tokens = max(tokens, t.size // t.shape[-1])
        out[stage_of[n]]["fwd"].append(t.size * eb)
        if training and og.op(n)["op"] != "Gather":
            out[stage_of[n]]["bwd"].insert(0, t.size * eb)
    if training:
        for n in head_ops(og):
            x = og.tensors[og.op(n)["inputs"][1]]
            out[stage_of[n]]["bwd"].insert(0, x.size * eb)
        loss = [o for o in og.ops() if og.op(o)["phase"] == "loss"]
        if loss and head_ops(og):
            out[stage_of[loss[0]]]["fwd"].append(3 * 4 * tokens)
    return out


def expert_collectives(og, part, X, dtype, training) -> dict:
    """Per stage and phase, the collectives an expert-parallel group of ``X`` chips runs per
    micro-batch, in order: ``{stage: {"fwd": [("all-to-all", bytes)...], "bwd": [...]}}`` (empty
    for X = 1): every op of :func:`models.expert_parallel.all_to_all_ops` (a MoE layer's dispatch
    and combine), ``bytes`` the buffer each chip holds (``experts x capacity x hidden``
    elements), of which each chip sends ``(X - 1) / X``.  Training mirrors them backward (the
    combine's gradient goes back to the experts' chips, the dispatch's to the tokens' chips), in
    reverse order."""
    if X <= 1:
        return {}
    eb = DTYPE_BYTES.get(dtype, 4)
    stage_of = {o: st.index for st in part.stages for o in st.ops}
    out = {st.index: {"fwd": [], "bwd": []} for st in part.stages}
    for n in all_to_all_ops(og):
        t = og.tensors[og.op(n)["outputs"][0]]
        out[stage_of[n]]["fwd"].append(("all-to-all", t.size * eb))
        if training:
            out[stage_of[n]]["bwd"].insert(0, ("all-to-all", t.size * eb))
    return out


def _expert_report(cfg, og, part, coll, X, M, micro, steps, sim) -> dict:
    """The expert-parallel section of the report: the group, the model's size beside one chip's,
    and the all-to-alls per micro-batch and per step."""
    full = models.load(cfg.model, batch=1, model_kw=cfg.model_kw)
    routes = [full.op(n) for n in full.ops() if full.op(n)["op"] == "TopKRoute"]
    experts = int(full.tensors[routes[0]["inputs"][0]].shape[-1]) if routes else 0
    items = [b for c in coll.values() for ph in ("fwd", "bwd") for _, b in c[ph]]
    n_fwd = sum(len(c["fwd"]) for c in coll.values())
    n_bwd = sum(len(c["bwd"]) for c in coll.values())
    per_chip = sum(Network.all_to_all_bytes_per_chip(b, X) for b in items)
    return {"degree": X, "groups": len(part.stages), "experts": experts, "experts_per_chip": experts // X,
            "sequences_per_chip_per_micro_batch": micro // X,
            "params_full_model": int(full.params()),
            "params_per_chip": [int(st.params) for st in part.stages],
            "attention": "replicated (data-parallel: each chip runs micro-batch / X sequences and holds their "
                         "KV cache)",
            "router": "replicated (each chip routes its own tokens)",
            "all_to_alls_per_micro_batch": {"fwd": n_fwd, "bwd": n_bwd},
            "all_to_all_bytes_per_chip": sorted({int(b) for b in items}),
            "link_bytes_sent_per_chip_per_micro_batch": per_chip,
            "link_bytes_per_step": int(sim.expert_bytes / steps) if steps else 0,
            "all_to_all_cycles_per_step": sim.expert_cycles / steps if steps else 0.0,
            "all_to_all_seconds_per_step": sim.chip.seconds(sim.expert_cycles / steps) if steps else 0.0,
            "formula": "each all-to-all: every chip sends (X - 1) / X of its buffer, 1 / X to each other chip "
                       "of the group at once (links.Network.all_to_all)",
            "replicated_gradient_bytes": [int(b) for b in sim.group_grad_bytes],
            "gradient_allreduce_bytes_per_step": int(sim.group_grad_sent / steps) if steps else 0,
            "gradient_allreduce_seconds_per_step": sim.chip.seconds(sim.group_grad_cycles / steps) if steps else 0.0,
            "micro_batches": M}


def _tensor_report(cfg, og, part, coll, T, M, steps, sim) -> dict:
    """The tensor-parallel section of the report: the group, the model's full size beside one
    chip's, and the all-reduces per micro-batch and per step."""
    full = models.load(cfg.model, batch=1, model_kw=cfg.model_kw).params()
    n_fwd = sum(len(c["fwd"]) for c in coll.values())
    n_bwd = sum(len(c["bwd"]) for c in coll.values())
    b_fwd = sum(sum(c["fwd"]) for c in coll.values())
    b_bwd = sum(sum(c["bwd"]) for c in coll.values())
    eb = DTYPE_BYTES.get(cfg.dtype, 4)
    layer = [og.tensors[og.op(n)["outputs"][0]].size * eb for n in allreduce_ops(og) if og.op(n)["op"] != "Gather"]
    per_chip = Network.allreduce_bytes_per_chip
    return {"degree": T, "groups": len(part.stages), "params_full_model": int(full),
            "params_per_chip": [int(st.params) for st in part.stages],
            "embedding": "vocabulary-parallel (ceil(vocab / T) rows per chip)",
            "experts": "column-split (intermediate / T features of every expert per chip)",
            "allreduces_per_micro_batch": {"fwd": n_fwd, "bwd": n_bwd},
            "allreduce_bytes_per_micro_batch": {"fwd": int(b_fwd), "bwd": int(b_bwd)},
            "allreduce_bytes_per_layer_fwd": int(sum(layer[:2])) if layer else 0,
            "link_bytes_sent_per_chip_per_micro_batch": per_chip(b_fwd + b_bwd, T),
            "link_bytes_per_step": int(sim.tensor_bytes / steps) if steps else 0,
            "allreduce_cycles_per_step": sim.tensor_cycles / steps if steps else 0.0,
            "allreduce_seconds_per_step": sim.chip.seconds(sim.tensor_cycles / steps) if steps else 0.0,
            "micro_batches": M}


def stage_cuts(og, stages, layers_per_chip=(), pipeline_splits=()):
    """The first unit (forward layer) of each stage, from block counts per stage or from the layers
    after which a stage ends; None when neither is given (the placement chooses).  ValueError
    naming the option for a count or a name the model does not have."""
    if not layers_per_chip and not pipeline_splits:
        return None
    units = layer_names(og, blocks=False)
    pos = {u: i for i, u in enumerate(units)}
    fwd = [o for o in og.ops() if og.op(o)["phase"] == "fwd"]
    blocks = []                        # block -> [first unit, last unit]
    span = {}
    for o in fwd:
        d = og.op(o)
        b = d["block"]
        if b is None:
            continue
        if b not in span:
            blocks.append(b)
            span[b] = [pos[d["layer"]], pos[d["layer"]]]
        span[b][0] = min(span[b][0], pos[d["layer"]])
        span[b][1] = max(span[b][1], pos[d["layer"]])
    if layers_per_chip:
        if len(layers_per_chip) != stages:
            raise ValueError(f"layers_per_chip: {len(layers_per_chip)} stages given, the run has {stages}")
        if sum(layers_per_chip) != len(blocks):
            have = (f"{len(blocks)} repeated blocks ({blocks[0]} .. {blocks[-1]})" if blocks else
                    "no repeated blocks (name the splits with --pipeline-splits)")
            raise ValueError(f"layers_per_chip: {','.join(map(str, layers_per_chip))} adds up to "
                             f"{sum(layers_per_chip)}, but {og.name} has {have}")
        cuts, k = [0], 0
        for n in layers_per_chip[:-1]:
            k += n
            cuts.append(span[blocks[k]][0])
        return cuts
    if len(pipeline_splits) != stages - 1:
        raise ValueError(f"pipeline_splits: {len(pipeline_splits)} splits make {len(pipeline_splits) + 1} stages, "
                         f"the run has {stages}")
    cuts = [0]
    for name in pipeline_splits:
        if name in pos:
            after = pos[name]
        elif name in span:
            after = span[name][1]
        else:
            raise unknown_layer(og, "pipeline_splits", name)
        if after + 1 <= cuts[-1] or after + 1 >= len(units):
            raise ValueError(f"pipeline_splits: {name!r} does not start a new, non-empty stage (the splits "
                             f"must follow the model's order and leave layers for the last stage)")
        cuts.append(after + 1)
    return cuts


def _shard_update(tm, shards):
    """Replicated tensor sharding: each replica updates 1 / ``shards`` of the weights (and streams
    1 / ``shards`` of the offloaded optimizer state), so the update phase takes 1 / ``shards`` of
    its time (all of it element-wise work and stream copies)."""
    k = 1.0 / shards
    tm.cycles["update"] *= k
    tm.split["update"] = {key: v * k for key, v in tm.split["update"].items()}
    tm.steps["update"] = [(n, kind, rel * k, d * k) for n, kind, rel, d in tm.steps["update"]]


class _Replay:
    """A phase's supersteps run from ``start``, named ``label name``: their chip events, made when
    asked.  With tensor-parallel all-reduces (``seg``: cycles between two, ``shift``: all-reduce
    cycles before each segment) each superstep moves past the all-reduces before it."""
    __slots__ = ("start", "steps", "label", "seg", "shift", "ncoll")

    def __init__(self, start, steps, label, seg=None, shift=None, ncoll=0):
        self.start, self.steps, self.label = start, steps, label
        self.seg, self.shift, self.ncoll = seg, shift, ncoll

    def events(self):
        start, label = self.start, self.label
        if self.seg is None:
            return [(start + rel, d, f"{label} {name}", kind) for name, kind, rel, d in self.steps]
        seg, shift, n = self.seg, self.shift, self.ncoll
        return [(start + rel + shift[min(int(rel // seg), n) if seg > 0 else 0], d, f"{label} {name}", kind)
                for name, kind, rel, d in self.steps]


class _MultiChipSim:
    """The SimPy model of several chips (one process per chip)."""

    def __init__(self, part, timings, chip, *, S, R, M, training, steps, schedule, host_buffers, dtype,
                 sharded=False, T=1, collectives=None, mesh=False):
        self.part, self.timings, self.chip = part, timings, chip
        self.sharded = sharded
        # expert parallelism: the group's chips exchange all-to-all (every pair linked), not in a ring
        self.mesh = bool(mesh)
        self.expert_bytes = 0.0
        self.expert_cycles = 0.0
        # tensor parallelism: every stage is a group of T identical chips (ids chip_id .. chip_id + T - 1);
        # one process per group runs the stage, its all-reduces run on the group's ring of links
        self.T, self.collectives = int(T), collectives or {}
        self.tensor_bytes = 0.0
        self.tensor_cycles = 0.0
        self.tensor_stage_cycles = defaultdict(float)     # stage -> all-reduce cycles (all replicas, steps)
        self.S, self.R, self.M, self.training, self.steps = S, R, M, training, steps
        self.schedule, self.host_buffers, self.dtype = schedule, max(int(host_buffers), 1), dtype
        self.elem_bytes = 2 if dtype == "fp16" else 4
        src = part.source
        # per stage: transfers by (phase, dst), host inputs / outputs (bytes per micro-batch)
        self.sends = defaultdict(lambda: defaultdict(int))     # (s, phase) -> {dst: bytes}
        self.recvs = defaultdict(set)                          # (s, phase) -> {src stages}
        for t in part.transfers:
            self.sends[(t["src"], t["phase"])][t["dst"]] += t["bytes"]
            self.recvs[(t["dst"], t["phase"])].add(t["src"])
        self.host_in, self.host_out = [0] * S, [0] * S
        for st in part.stages:
            for t, srcst in st.inputs_from.items():
                if srcst == -1:
                    ti = src.tensors[t]
                    self.host_in[st.index] += ti.size * (self.elem_bytes if ti.dtype.startswith(("fp", "bf")) else 4)
            for t, dsts in st.outputs_to.items():
                if -1 in dsts:
                    ti = src.tensors[t]
                    self.host_out[st.index] += ti.size * (self.elem_bytes if ti.dtype.startswith(("fp", "bf")) else 4)
        self.grad_bytes = [st.params * self.elem_bytes for st in part.stages]
        # expert parallelism, training: the weights every chip of a group holds (all but its experts)
        # are data-parallel over the group, their gradients all-reduced before each update
        self.group_grad_bytes = [0] * S
        if self.mesh and training:
            for st in part.stages:
                experts = sum(t.size for t in st.graph.tensors.values()
                              if t.kind == "param" and t.inplace_of is None and ".experts." in t.name)
                self.group_grad_bytes[st.index] = (st.params - experts) * self.elem_bytes
        self.group_grad_sent = 0.0
        self.group_grad_cycles = 0.0

    def chip_id(self, r, s):
        return (r * self.S + s) * self.T

    @property
    def chip_events(self) -> list:
        """Per chip, its events ``(start, dur, name, kind)`` in the order they happened (each phase's
        supersteps replayed from its stage's timing); built on first use, for the trace and views."""
        if self._expanded is None:
            self._expanded = [[e for rec in evs for e in (rec.events() if type(rec) is _Replay else (rec,))]
                              for evs in self._events]
        return self._expanded

    def run(self):
        env = self.env = simpy.Environment()
        S, R = self.S, self.R
        pairs = set()
        T = self.T
        for r in range(R):
            for (s, ph), dsts in self.sends.items():
                for d in dsts:
                    for t in range(T):    # each chip of a group sends its copy to its peer of the next
                        pairs.add((self.chip_id(r, s) + t, self.chip_id(r, d) + t))
            for s in range(S if T > 1 else 0):
                c = self.chip_id(r, s)
                for t in range(T):
                    if self.mesh:
                        pairs.update((c + t, c + u) for u in range(T) if u != t)
                    else:
                        pairs.add((c + t, c + (t + 1) % T))
        if R > 1:
            for s in range(S):
                for r in range(R):
                    pairs.add((self.chip_id(r, s), self.chip_id((r + 1) % R, s)))
        self.net = Network(env, self.chip, sorted(pairs)) if pairs else None
        n = S * R * T
        self.host = [HostLink(env, self.chip, i) for i in range(n)]
        self.stat = [defaultdict(float) for _ in range(n)]
        # (start, dur, name, kind) per chip; a phase's supersteps as one _Replay each, expanded
        # when chip_events is read (a BERT-Large pipeline replays millions of them)
        self._events = [[] for _ in range(n)]
        self._expanded = None
        self.arrivals = defaultdict(env.event)
        self.host_wait = 0.0
        self.host_xfer = 0.0
        self.host_bytes = 0
        self.allreduce_bytes = 0.0
        self.barriers = {}
        self.feeds, self.drains = {}, {}
        total = self.steps * self.M
        for r in range(R):
            for s in range(S):
                c = self.chip_id(r, s)
                if self.host_in[s]:
                    store = simpy.Store(env, capacity=self.host_buffers)
                    slots = simpy.Container(env, capacity=self.host_buffers, init=self.host_buffers)
                    self.feeds[c] = (store, slots)
                    env.process(self._feeder(c, self.host_in[s], total, store, slots))
                if self.host_out[s]:
                    store = simpy.Store(env, capacity=self.host_buffers)
                    self.drains[c] = store
                    env.process(self._drainer(c, self.host_out[s], total, store))
        self.procs = [env.process(self._chip(r, s)) for r in range(R) for s in range(S)]
        self.drained = [env.event() for _ in range(n)]
        env.run()
        self.cycles = float(env.now)

    # -- host ---------------------------------------------------------------------------------
    def _feeder(self, c, nbytes, count, store, slots):
        for i in range(count):
            yield slots.get(1)
            t = yield from self.host[c].transfer(nbytes, f"in {i}")
            self.host_xfer += t
            self.host_bytes += nbytes
            yield store.put(t)

    def _drainer(self, c, nbytes, count, store):
        for i in range(count):
            yield store.get()
            t = yield from self.host[c].transfer(nbytes, f"out {i}")
            self.host_xfer += t
            self.host_bytes += nbytes

    # -- one chip -------------------------------------------------------------------------------
    def _busy(self, c, dur, name, kind):
        if dur > 0:
            self._events[c].append((self.env.now, dur, name, kind))
            self.stat[c][kind] += dur
            yield self.env.timeout(dur)

    def _phase(self, c, s, ph, label):
        """Run stage ``s``'s phase ``ph`` once: the engine's supersteps, replayed for the trace.
        With tensor parallelism the phase's all-reduces cut it into equal segments, each
        all-reduce a ring collective on the group's links (:meth:`Network.allreduce`)."""
        tm = self.timings[s]
        env = self.env
        start = env.now
        coll = self.collectives.get(s, {}).get(ph, ()) if self.T > 1 else ()
        for kind, v in tm.split[ph].items():
            self.stat[c][kind] += v
        if not coll:
            self._events[c].append(_Replay(start, tm.steps[ph], label))
            yield env.timeout(tm.cycles[ph])
            return
        seg = tm.cycles[ph] / (len(coll) + 1)
        shift = [0.0]                  # all-reduce cycles before each segment
        ring = [c + t for t in range(self.T)]
        for i, nb in enumerate(coll):
            yield env.timeout(seg)
            t0 = env.now
            if isinstance(nb, tuple):        # ("all-to-all", bytes): expert parallelism
                nb = nb[1]
                yield env.process(self.net.all_to_all(ring, nb, f"expert all-to-all s{s} {label} {i}"))
                d = env.now - t0
                self._events[c].append((t0, d, f"{label} expert all-to-all {i}", "link"))
                self.stat[c]["expert_all_to_all"] += d
                self.expert_cycles += d
                self.expert_bytes += Network.all_to_all_bytes_per_chip(nb, self.T) * self.T
            else:
                yield env.process(self.net.allreduce(ring, nb, f"tensor all-reduce s{s} {label} {i}",
                                                     self.elem_bytes))
                d = env.now - t0
                self._events[c].append((t0, d, f"{label} tensor all-reduce {i}", "link"))
                self.stat[c]["tensor_allreduce"] += d
                self.tensor_cycles += d
                self.tensor_bytes += Network.allreduce_bytes_per_chip(nb, self.T) * self.T
            self.tensor_stage_cycles[s] += d       # a group's collectives (all-reduces, all-to-alls)
            shift.append(shift[-1] + d)
        yield env.timeout(seg)
        self._events[c].append(_Replay(start, tm.steps[ph], label, seg, shift, len(coll)))

    def _wait(self, c, ev, what):
        t0 = self.env.now
        res = yield ev
        w = self.env.now - t0
        if w > 0:
            self._events[c].append((t0, w, what, "idle"))
            self.stat[c]["idle"] += w
        return res

    def _send(self, r, s, ph, key):
        env = self.env
        c = self.chip_id(r, s)
        for dst, nbytes in sorted(self.sends.get((s, ph), {}).items()):
            yield from self._busy(c, self.chip.sync_cycles_multi_chip, "cross-chip sync", "sync")
            t0 = env.now
            d = self.chip_id(r, dst)
            if self.T > 1:      # every chip of the group sends to its peer, all at once
                yield env.all_of([env.process(self.net.send(c + t, d + t, nbytes, f"{ph} {key} s{s}->s{dst}"))
                                  for t in range(self.T)])
            else:
                yield from self.net.send(c, d, nbytes, f"{ph} {key} s{s}->s{dst}")
            self._events[c].append((t0, env.now - t0, f"send {ph} to stage {dst}", "link"))
            self.stat[c]["link"] += env.now - t0
            self.arrivals[(r, key, s, dst, ph)].succeed()

    def _fwd(self, r, s, step, m):
        c = self.chip_id(r, s)
        key = (step, m)
        if c in self.feeds:
            store, slots = self.feeds[c]
            t0 = self.env.now
            yield store.get()
            w = self.env.now - t0
            self.host_wait += w
            if w > 0:
                self._events[c].append((t0, w, f"host input {step}.{m}", "host"))
                self.stat[c]["host"] += w
            slots.put(1)
        for src in sorted(self.recvs.get((s, "fwd"), ())):
            yield from self._wait(c, self.arrivals[(r, key, src, s, "fwd")], f"wait activations {step}.{m}")
        yield from self._phase(c, s, "fwd", f"F{step}.{m}")
        yield from self._send(r, s, "fwd", key)
        if c in self.drains and not self.training:
            yield from self._put_out(c, step, m)

    def _put_out(self, c, step, m):
        t0 = self.env.now
        yield self.drains[c].put(m)
        w = self.env.now - t0
        if w > 0:
            self.host_wait += w
            self.stat[c]["host"] += w
            self._events[c].append((t0, w, f"host output {step}.{m}", "host"))

    def _bwd(self, r, s, step, m):
        c = self.chip_id(r, s)
        key = (step, m)
        for src in sorted(self.recvs.get((s, "bwd"), ())):
            yield from self._wait(c, self.arrivals[(r, key, src, s, "bwd")], f"wait gradients {step}.{m}")
        yield from self._phase(c, s, "bwd", f"B{step}.{m}")
        yield from self._send(r, s, "bwd", key)
        if c in self.drains:
            yield from self._put_out(c, step, m)

    def _order(self, s):
        M, S = self.M, self.S
        if not self.training:
            return [("F", m) for m in range(M)]
        if self.schedule == "gpipe":
            return [("F", m) for m in range(M)] + [("B", m) for m in range(M)]
        warm = min(S - s - 1, M)
        out = [("F", m) for m in range(warm)]
        for i in range(M - warm):
            out += [("F", warm + i), ("B", i)]
        out += [("B", m) for m in range(M - warm, M)]
        return out

    def _allreduce(self, r, s, step, kind="allreduce"):
        """Barrier of stage ``s``'s replicas, then one ring collective (run by the last to arrive):
        ``allreduce`` of the gradients, or with replicated tensor sharding its halves,
        ``reduce_scatter`` of the gradients before the update and ``all_gather`` of the weights after."""
        env = self.env
        key = (s, step, kind)
        b = self.barriers.get(key)
        if b is None:
            b = self.barriers[key] = {"n": 0, "done": env.event()}
        b["n"] += 1
        c = self.chip_id(r, s)
        t0 = env.now
        if b["n"] == self.R:
            ring = [self.chip_id(q, s) for q in range(self.R)]
            op = getattr(self.net, kind)
            res = yield env.process(op(ring, self.grad_bytes[s], f"{kind.replace('_', '-')} s{s} step {step}",
                                       self.elem_bytes))
            sent = Network.allreduce_bytes_per_chip(self.grad_bytes[s], self.R) * self.R
            self.allreduce_bytes += sent if kind == "allreduce" else sent / 2
            b["done"].succeed(res)
        link_c, sync_c, red_c = yield b["done"]
        waited = env.now - t0 - (link_c + sync_c + red_c)
        if waited > 0:
            self._events[c].append((t0, waited, "wait replicas", "idle"))
            self.stat[c]["idle"] += waited
        t = env.now - (link_c + sync_c + red_c)
        self._events[c].append((t, link_c + sync_c + red_c, kind.replace("_", "-"), "link"))
        self.stat[c]["allreduce"] += link_c + sync_c + red_c

    def _group_allreduce(self, r, s, step):
        """Expert parallelism, training: the ring all-reduce of the replicated weights' gradients
        over the group's chips (data-parallel outside the experts), before the update."""
        env = self.env
        c = self.chip_id(r, s)
        nb = self.group_grad_bytes[s]
        t0 = env.now
        yield env.process(self.net.allreduce([c + t for t in range(self.T)], nb, f"expert-group all-reduce s{s} "
                                             f"step {step}", self.elem_bytes))
        d = env.now - t0
        self._events[c].append((t0, d, "group gradient all-reduce", "link"))
        self.stat[c]["allreduce"] += d
        self.group_grad_cycles += d
        self.group_grad_sent += Network.allreduce_bytes_per_chip(nb, self.T) * self.T

    def _chip(self, r, s):
        for step in range(self.steps):
            for kind, m in self._order(s):
                if kind == "F":
                    yield from self._fwd(r, s, step, m)
                else:
                    yield from self._bwd(r, s, step, m)
            if self.training:       # once per weight update, after all the micro-batches
                if self.mesh and self.group_grad_bytes[s]:
                    yield from self._group_allreduce(r, s, step)
                if self.R > 1:
                    yield from self._allreduce(r, s, step, "reduce_scatter" if self.sharded else "allreduce")
                yield from self._phase(self.chip_id(r, s), s, "update", f"U{step}")
                if self.R > 1 and self.sharded:
                    yield from self._allreduce(r, s, step, "all_gather")

    # -- results ----------------------------------------------------------------------------------
    def per_ipu(self):
        out = []
        for r in range(self.R):
            for s in range(self.S):
                c = self.chip_id(r, s)
                st = self.stat[c]
                busy = st["compute"] + st["sync"] + st["exchange"] + st["link"] + st["allreduce"] + \
                    st["tensor_allreduce"] + st["expert_all_to_all"]
                row = {"ipu": c, "stage": s, "replica": r,
                       "cycles": self.cycles,
                       "compute_cycles": st["compute"], "sync_cycles": st["sync"],
                       "exchange_cycles": st["exchange"], "link_cycles": st["link"],
                       "allreduce_cycles": st["allreduce"], "idle_cycles": st["idle"],
                       "host_wait_cycles": st["host"], "busy_cycles": busy,
                       "utilisation": busy / self.cycles if self.cycles else 0.0,
                       "compute_utilisation": st["compute"] / self.cycles if self.cycles else 0.0}
                if self.T == 1:
                    out.append(row)
                    continue
                if self.mesh:
                    row["all_to_all_cycles"] = st["expert_all_to_all"]
                else:
                    row["tensor_allreduce_cycles"] = st["tensor_allreduce"]
                for t in range(self.T):     # the chips of a group run alike
                    out.append(row | {"ipu": c + t, ("expert_rank" if self.mesh else "tensor_rank"): t})
        return out

    def link_stats(self):
        if self.net is None:
            return []
        return [{"link": l.name, "lanes": l.lanes, "bytes": l.bytes, "busy_cycles": l.busy_cycles,
                 "wait_cycles": l.wait_cycles,
                 "utilisation": l.busy_cycles / self.cycles if self.cycles else 0.0}
                for l in self.net.links.values() if l.bytes]

    def chrome_trace(self, path=None) -> dict:
        """Trace-event JSON: one process per chip (compute / sync / exchange / link / host / idle
        tracks), one process for the links and one for the host links."""
        us = 1e6 / self.chip.clock_hz
        kinds = ("compute", "sync", "exchange", "link", "host", "idle")
        ev = []
        n = self.S * self.R * self.T
        for c in range(n):
            g, t = divmod(c, self.T)
            r, s = divmod(g, self.S)
            name = f"IPU {c} (stage {s}, replica {r})" if self.T == 1 else \
                f"IPU {c} (stage {s}, {'expert' if self.mesh else 'tensor'} rank {t})"
            ev.append({"ph": "M", "name": "process_name", "pid": c, "args": {"name": name}})
            for tid, k in enumerate(kinds):
                ev.append({"ph": "M", "name": "thread_name", "pid": c, "tid": tid, "args": {"name": k}})
            for start, dur, name, kind in self.chip_events[c - t]:     # a group's chips run alike
                ev.append({"ph": "X", "name": name, "cat": kind, "pid": c, "tid": kinds.index(kind),
                           "ts": start * us, "dur": dur * us})
        lp = n
        ev.append({"ph": "M", "name": "process_name", "pid": lp, "args": {"name": "IPU-Links"}})
        links = list(self.net.links.values()) if self.net else []
        for tid, l in enumerate(links):
            ev.append({"ph": "M", "name": "thread_name", "pid": lp, "tid": tid, "args": {"name": l.name}})
            for start, dur, label, nb in l.events:
                ev.append({"ph": "X", "name": label, "cat": "link", "pid": lp, "tid": tid, "ts": start * us,
                           "dur": dur * us, "args": {"bytes": nb}})
        hp = n + 1
        ev.append({"ph": "M", "name": "process_name", "pid": hp, "args": {"name": "host links"}})
        for tid, h in enumerate(self.host):
            ev.append({"ph": "M", "name": "thread_name", "pid": hp, "tid": tid, "args": {"name": h.name}})
            for start, dur, label, nb in h.events:
                ev.append({"ph": "X", "name": label, "cat": "host", "pid": hp, "tid": tid, "ts": start * us,
                           "dur": dur * us, "args": {"bytes": nb}})
        trace = {"traceEvents": ev, "displayTimeUnit": "ns"}
        if path:
            with open(path, "w") as f:
                json.dump(trace, f)
        return trace


def _report(og, part, timings, sim, chip, *, mode, S, R, M, batch, micro, training, dtype, steps, schedule):
    per = sim.per_ipu()
    cycles = sim.cycles
    seconds = chip.seconds(cycles)
    link_bytes = sum(l.bytes for l in sim.net.links.values()) if sim.net else 0
    hidden = 1.0 if sim.host_xfer <= 0 else max(0.0, 1.0 - sim.host_wait / sim.host_xfer)
    stage_rows = []
    for st, tm in zip(part.stages, timings):
        stage_rows.append({"stage": st.index, "ipus": [sim.chip_id(r, st.index) + t for r in range(R) for t in range(sim.T)],
                           "first_layer": st.units[0] if st.units else None,
                           "last_layer": st.units[-1] if st.units else None,
                           "layers": len(st.units), "ops": len(st.ops), "params": int(st.params),
                           "est_cycles": st.est_cycles, "fwd_cycles": tm.cycles["fwd"],
                           "bwd_cycles": tm.cycles["bwd"], "update_cycles": tm.cycles["update"],
                           "vertices": tm.vertices, "edges": tm.edges, "supersteps": tm.supersteps, "memory": tm.memory,
                           "host_in_bytes": sim.host_in[st.index], "host_out_bytes": sim.host_out[st.index],
                           "grad_bytes": sim.grad_bytes[st.index] if training else 0})
    busiest = max(range(S), key=lambda s: timings[s].cycles["fwd"] + timings[s].cycles["bwd"])
    ideal_step = M * (timings[busiest].cycles["fwd"] + timings[busiest].cycles["bwd"]) + \
        timings[busiest].cycles["update"] + sim.tensor_stage_cycles[busiest] / (steps * R)
    step_cycles = cycles / steps
    # every chip of a tensor- or expert-parallel group (sim.T of them) runs its own slice: a stage's
    # timing is one chip's, so its FLOPs count once per chip of the group
    flops = sum(t.flops for t in timings) * M * R * sim.T * steps
    fits = all(t.memory.get("fits", True) for t in timings)
    return {
        "model": {"name": og.name, "params": int(og.params()), "flops_per_micro_batch": int(og.flops()),
                  "batch": batch, "micro_batch": micro, "samples_per_step": batch * R,
                  "train": bool(training), "dtype": dtype},
        "chip": {"name": chip.name, "ipus": S * R * sim.T, "tiles_per_ipu": chip.tiles, "clock_hz": chip.clock_hz},
        "multichip": {"mode": mode, "stages": S, "replicas": R, "micro_batches": M, "schedule": schedule,
                      "steps": steps, "placement": part.summary() | {"method": part.placement},
                      "per_stage": stage_rows, "transfers": part.transfers,
                      "links": sim.link_stats()},
        "memory": {"fits": fits, "peak_tile_bytes": max((t.memory.get("peak_tile_bytes", 0) for t in timings),
                                                        default=0),
                   "sram_bytes_per_tile": int(chip.sram_bytes_per_tile),
                   "oom_tiles": sum(t.memory.get("oom_tiles", 0) for t in timings) * R * sim.T},
        "sim": {"cycles": cycles, "seconds": seconds, "step_cycles": step_cycles,
                "step_seconds": chip.seconds(step_cycles),
                "samples_per_second": steps * batch * R / seconds if seconds else 0.0,
                "samples_per_second_per_replica": steps * batch / seconds if seconds else 0.0,
                "samples_per_second_per_chip": steps * batch * R / seconds / (S * R * sim.T) if seconds else 0.0,
                "compute_cycles": sum(p["compute_cycles"] for p in per),
                "sync_cycles": sum(p["sync_cycles"] for p in per),
                "exchange_cycles": sum(p["exchange_cycles"] for p in per),
                "link_cycles": sum(p["link_cycles"] for p in per),
                "allreduce_cycles": sum(p["allreduce_cycles"] for p in per),
                "idle_cycles": sum(p["idle_cycles"] for p in per),
                "per_ipu": per, "link_bytes": int(link_bytes), "allreduce_bytes": int(sim.allreduce_bytes),
                "host_bytes": int(sim.host_bytes * sim.T), "host_transfer_cycles": sim.host_xfer,
                "host_wait_cycles": sim.host_wait, "hidden_transfer_fraction": hidden,
                "bubble_fraction": 1.0 - ideal_step / step_cycles if step_cycles else 0.0,
                "ideal_step_cycles": ideal_step, "flops_executed": flops,
                "achieved_flops_per_second": flops / seconds if seconds else 0.0,
                "mean_utilisation": sum(p["utilisation"] for p in per) / len(per)},
    }
