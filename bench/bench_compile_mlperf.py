"""Compile speed and host memory of the MLPerf ResNet-50 training graphs, per phase (issue 12).

    .venv/bin/python bench/bench_compile_mlperf.py                   # both configurations
    .venv/bin/python bench/bench_compile_mlperf.py --only b20 --batch 4   # one, smaller batch
    .venv/bin/python bench/bench_compile_mlperf.py --only b20 --profile /tmp/p.prof
    .venv/bin/python bench/bench_compile_mlperf.py --only b20 --dump /tmp/b20.json   # results, to compare
    .venv/bin/python bench/bench_compile_mlperf.py --only bert       # BERT-Large pipeline, phases per stage

Configurations (``simulator.run.build`` with ``simulate=True``):

* ``b20``: ResNet-50 training, micro-batch 20, fp16 with fp16 partials, recomputation of
  blocks, GC200, available memory proportion 0.15 (MLPerf v1.0's logged run);
* ``b16``: the same at micro-batch 16 with the default proportion;
* ``bert`` (only with ``--only bert``): the preset ``mlperf-v1.0-bert-large-pod16`` (4-chip
  pipeline x 4 replicas, :func:`simulator.multichip.run_multichip`), its stages compiled one
  after the other in this process (``workers=1``) so that each stage's phases are measured:
  the phases are printed per stage, plus "multichip" (load, partition, the pipeline's
  simulation and report).  ``bench/bench_mlperf.py`` times the same run as a user has it
  (stages compiled in parallel processes).

Each configuration runs in a fresh process, so that its peak RSS is its own.  Phases
(wall seconds, and the highest RSS sampled while the phase ran, every 5 ms):
load (model + recomputation), lower (planners, transforms), finalize (sorting the edges
into CSR), checks (``check_graph``), exchange (runs of the mappings, compute set and copy
plans), liveness, allocation (first fit, both orders), tile peaks, vertex state, the rest
of the memory report, simulate; "other" is what the wall time has beyond them.  Vertex state
runs on another thread beside liveness and allocation (compiler/memory.py): it is printed on its
own line, its time overlapping theirs.  ``IPUSIM_THREADS=1`` runs everything in one thread.  A graph
that does not fit asks the advisor for suggestions, which loads the model again: that
load is charged to "load", at the RSS of that moment.
Targets (issue 12): b20 compile + simulate under 20 s; BERT-Large pipeline under 60 s.

``--dump`` writes what must not change when the compiler gets faster: the report (without
its timings), every per-tile memory array, and the simulation's cycles.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import compiler.checks as checks_mod  # noqa: E402
import compiler.executable as exe_mod  # noqa: E402
import compiler.graph as graph_mod  # noqa: E402
import compiler.memory as mem_mod  # noqa: E402
import simulator.multichip as mc_mod  # noqa: E402
import simulator.run as run_mod  # noqa: E402
from simulator.config import RunConfig  # noqa: E402
from simulator.report import jsonable  # noqa: E402

CONFIGS = {
    "b20": dict(model="resnet50", train=True, batch=20, dtype="fp16", partials="fp16", recompute="blocks",
                chip="gc200", available_memory_proportion=0.15),
    "b16": dict(model="resnet50", train=True, batch=16, dtype="fp16", partials="fp16", recompute="blocks",
                chip="gc200"),
}
PHASES = ("load", "lower", "finalize", "checks", "exchange", "liveness", "allocation", "tile_peaks",
          "vertex_state", "memory_rest", "simulate")


class Phases:
    """Wall seconds and peak RSS per phase; nested phases are charged to the inner one."""

    def __init__(self):
        self.sec = dict.fromkeys(PHASES, 0.0)
        self.rss = dict.fromkeys(PHASES, 0)
        self.stack = []
        self.beside = {}       # phase -> seconds run on another thread, overlapping the others
        self.t = None
        self._stop = False
        self._cur = None
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def _rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop:
            cur = self._cur
            if cur is not None:
                r = self._rss()
                if r > self.rss[cur]:
                    self.rss[cur] = r
            time.sleep(0.005)

    def _switch(self, name):
        now = time.perf_counter()
        if self.stack and self.t is not None:
            self.sec[self.stack[-1]] += now - self.t
        self.t = now
        if name is not None:
            self.rss[name] = max(self.rss[name], self._rss())
        self._cur = name

    def wrap(self, name, fn):
        def inner(*a, **k):
            if threading.current_thread() is not threading.main_thread():
                # a phase run beside the main thread's (memory_report's vertex state): its own
                # wall time, overlapping the main thread's phases (not part of their sum)
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    self.beside[name] = self.beside.get(name, 0.0) + time.perf_counter() - t
            self._switch(name)
            self.stack.append(name)
            try:
                return fn(*a, **k)
            finally:
                self._switch(self.stack[-2] if len(self.stack) > 1 else None)
                self.stack.pop()
        return inner


def instrument(ph: Phases):
    run_mod.models.load = ph.wrap("load", run_mod.models.load)
    run_mod.apply_recompute = ph.wrap("load", run_mod.apply_recompute)
    run_mod.lower = ph.wrap("lower", run_mod.lower)      # (transforms is one module: wrapped for both)
    for name in ("offload", "accumulate"):
        setattr(run_mod.transforms, name, ph.wrap("lower", getattr(run_mod.transforms, name)))
    graph_mod.Graph.finalize = ph.wrap("finalize", graph_mod.Graph.finalize)
    checks_mod.check_graph = ph.wrap("checks", checks_mod.check_graph)
    for name in ("runs_of_mapping", "plan_compute_exchange", "plan_copies"):
        setattr(exe_mod, name, ph.wrap("exchange", getattr(exe_mod, name)))
    run_mod.memory_report = ph.wrap("memory_rest", run_mod.memory_report)
    mem_mod.liveness = ph.wrap("liveness", mem_mod.liveness)
    mem_mod.best_allocation = ph.wrap("allocation", mem_mod.best_allocation)
    mem_mod.Liveness.tile_peaks = ph.wrap("tile_peaks", mem_mod.Liveness.tile_peaks)
    mem_mod.vertex_state = ph.wrap("vertex_state", mem_mod.vertex_state)
    run_mod.Engine.run = ph.wrap("simulate", run_mod.Engine.run)
    mc_mod.lower = ph.wrap("lower", mc_mod.lower)
    mc_mod.memory_report = ph.wrap("memory_rest", mc_mod.memory_report)


def bert(profile, dump_path):
    """The BERT-Large preset with its stages compiled in turn here, phases per stage."""
    cfg = RunConfig.preset("mlperf-v1.0-bert-large-pod16")
    ph = Phases()
    instrument(ph)
    per_stage = []
    time_stage = mc_mod.time_stage

    def timed(stage, chip, **kw):
        before = dict(ph.sec)
        t = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        out = time_stage(stage, chip, **kw)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        per_stage.append(({p: ph.sec[p] - before[p] for p in PHASES}, time.perf_counter() - t,
                          (r1.ru_maxrss * 1024, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime,
                           r1.ru_minflt - r0.ru_minflt)))
        return out

    mc_mod.time_stage = timed
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    rep = mc_mod.run_multichip(cfg, workers=1)
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    wall = time.perf_counter() - t0
    ph._stop = True
    rep.pop("_sim", None)
    s = rep["sim"]
    print("bert: preset mlperf-v1.0-bert-large-pod16, stages compiled one after the other (workers=1)")
    print(f"  {s['samples_per_second_per_replica']:.1f} samples/s per replica; peak tile "
          + " / ".join(f"{st['memory']['peak_tile_bytes']:,}" for st in rep["multichip"]["per_stage"]) + " B")
    print(f"  {'phase':<13}" + "".join(f"{'stage ' + str(i):>10}" for i in range(len(per_stage))) + f"{'all':>10}")
    for p in PHASES:
        vals = [d[p] for d, _, _ in per_stage]
        print(f"  {p:<13}" + "".join(f"{v:10.2f}" for v in vals) + f"{sum(vals):10.2f}")
    stage_total = [w for _, w, _ in per_stage]
    print(f"  {'stage other':<13}" + "".join(f"{w - sum(d.values()):10.2f}" for d, w, _ in per_stage))
    print(f"  {'stage total':<13}" + "".join(f"{w:10.2f}" for w in stage_total) + f"{sum(stage_total):10.2f}")
    print(f"  {'max RSS GiB':<13}" + "".join(f"{r[0] / 2**30:10.2f}" for _, _, r in per_stage))
    print(f"  {'user CPU s':<13}" + "".join(f"{r[1]:10.2f}" for _, _, r in per_stage))
    print(f"  {'system CPU s':<13}" + "".join(f"{r[2]:10.2f}" for _, _, r in per_stage))
    print(f"  {'page faults':<13}" + "".join(f"{r[3]:10,}" for _, _, r in per_stage))
    for p, sec in ph.beside.items():
        print(f"  ({p} {sec:.2f} s on another thread, beside the phases above)")
    print(f"  {'multichip':<13} {wall - sum(stage_total):7.2f} s (load, partition, pipeline simulation, report)")
    print(f"  {'total':<13} {wall:7.2f} s (stages in turn; target < 60 s with the stages in parallel)")
    if dump_path:
        rep.pop("timing", None)
        with open(dump_path, "w") as f:
            json.dump(jsonable(rep), f, sort_keys=True)


def dump(c, path):
    rep = {k: v for k, v in c.report.items() if k != "timing"}
    out = {"report": jsonable(rep),
           "per_tile": {k: np.asarray(v).tolist() for k, v in c.memory["per_tile"].items()},
           "liveness_curve": np.asarray(c.memory["liveness_curve"]).tolist(),
           "allocation_peak": np.asarray(c.memory["allocation"].peak).tolist(),
           "allocation_offsets_sum": int(np.asarray(c.memory["allocation"].offsets).sum())}
    with open(path, "w") as f:
        json.dump(out, f, sort_keys=True)


def one(name, batch, profile, dump_path):
    cfg = dict(CONFIGS[name])
    if batch:
        cfg["batch"] = batch
    ph = Phases()
    instrument(ph)
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    c = run_mod.build(RunConfig(**cfg), simulate=True)
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    wall = time.perf_counter() - t0
    ph._stop = True
    g, m = c.report["graph"], c.report["memory"]
    print(f"{name} {cfg}")
    print(f"  graph: {g['vertices']:,} vertices, {g['edges']:,} edges, {g['compute_sets']:,} compute sets; "
          f"peak tile {m['peak_tile_bytes']:,} B ({'fits' if m['fits'] else 'DOES NOT FIT'}); "
          f"{c.report['sim']['cycles']:,} cycles")
    for p in PHASES:
        print(f"  {p:<13} {ph.sec[p]:7.2f} s   peak RSS {ph.rss[p] / 2**30:6.2f} GiB")
    for p, sec in ph.beside.items():
        print(f"  ({p} {sec:.2f} s on another thread, beside the phases above)")
    print(f"  {'other':<13} {wall - sum(ph.sec.values()):7.2f} s")
    print(f"  {'total':<13} {wall:7.2f} s   peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:6.2f} GiB"
          + (f"   (target < 20 s: {'met' if wall < 20 else 'MISSED'})" if name == "b20" and not batch else ""))
    if dump_path:
        dump(c, dump_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=list(CONFIGS) + ["bert"], help="one configuration, in this process")
    ap.add_argument("--batch", type=int, help="override the micro-batch (profiling at a smaller size)")
    ap.add_argument("--profile", help="cProfile output file (with --only)")
    ap.add_argument("--dump", help="JSON of the results that must not change (with --only)")
    a = ap.parse_args()
    if a.only == "bert":
        bert(a.profile, a.dump)
        return
    if a.only:
        one(a.only, a.batch, a.profile, a.dump)
        return
    for name in CONFIGS:
        cmd = [sys.executable, os.path.abspath(__file__), "--only", name]
        if a.batch:
            cmd += ["--batch", str(a.batch)]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
