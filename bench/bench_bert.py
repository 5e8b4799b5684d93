"""BERT compile size and speed (issue 12): what the matmul planner makes of BERT graphs.

    .venv/bin/python bench/bench_bert.py                 # bert-base and 2-layer bert-large, one chip
    .venv/bin/python bench/bench_bert.py --only base     # one configuration, in this process
    .venv/bin/python bench/bench_bert.py --full          # also the MLPerf BERT-Large pod16 preset (~10 GB)

Configurations (``simulator.run.build`` with ``simulate=True``), each in a fresh process so
that its peak RSS is its own:

* ``base``: bert-base training, batch 1, fp16 with fp16 partials, GC200;
* ``large2``: bert-large cut to 2 layers, batch 2, fp16, LAMB, GC200.

Printed: vertices, edges, compile seconds, peak RSS, peak tile bytes and the vertex
state of that tile (and the largest per tile), simulated cycles.  ``--full`` runs
``simulator.run.run(RunConfig.preset("mlperf-v1.0-bert-large-pod16"), workers=1)``:
throughput per replica, fits, peak tile per stage, wall time.

Measured on the 2-core host (before = commit 00a5af6's matmul planner, after = Transpose
rearrangement, serial splits, one region per contiguous block):

========  ==========  ===========  =========  =======  ==============  ==================  =========
config    vertices    edges        compile s  RSS GiB  peak tile B     vertex_state there  cycles
========  ==========  ===========  =========  =======  ==============  ==================  =========
base      9,473,277   86,612,050   94.1       3.72     885,584         308,336             3,918,407
  after   9,473,277   59,392,594   90.7       3.12     733,696         224,148             3,906,663
large2    18,728,777  150,078,488  155.4      10.31    1,709,098       587,042             6,384,526
  after   17,486,153  85,828,632   76.6       4.88     1,085,334       162,662             4,817,360
========  ==========  ===========  =========  =======  ==============  ==================  =========
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import simulator.run as run_mod  # noqa: E402
from simulator.config import RunConfig  # noqa: E402

CONFIGS = {
    "base": dict(model="bert-base", train=True, batch=1, dtype="fp16", partials="fp16", chip="gc200"),
    "large2": dict(model="bert-large", train=True, batch=2, dtype="fp16", partials="fp16", chip="gc200",
                   optimizer="lamb", model_kw={"layers": 2}),
}


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def one(name):
    cfg = RunConfig(**CONFIGS[name])
    t0 = time.perf_counter()
    c = run_mod.build(cfg, simulate=True)
    wall = time.perf_counter() - t0
    g, m, t = c.report["graph"], c.report["memory"], c.report["timing"]
    per = c.memory["per_tile"]
    total = np.asarray(per["total"])
    vs = np.asarray(per["vertex_state"])
    pk = int(total.argmax())
    print(f"{name}: {CONFIGS[name]}")
    print(f"  vertices {g['vertices']:,}  edges {g['edges']:,}  compute sets {g['compute_sets']:,}")
    print(f"  compile {t['compile_s']:.1f} s (load {t['load_s']:.1f} s, simulate {t.get('simulate_s', 0):.1f} s, "
          f"wall {wall:.1f} s)  peak RSS {peak_rss_gib():.2f} GiB")
    print(f"  peak tile {m['peak_tile_bytes']:,} B ({'fits' if m['fits'] else 'DOES NOT FIT'}), "
          f"vertex_state there {int(vs[pk]):,} B, max vertex_state per tile {int(vs.max()):,} B")
    print(f"  cycles {c.report['sim']['cycles']:,}")
    sys.stdout.flush()


def full():
    t0 = time.perf_counter()
    r = run_mod.run(RunConfig.preset("mlperf-v1.0-bert-large-pod16"), workers=1)
    wall = time.perf_counter() - t0
    rep = r.report
    sim, mem = rep["sim"], rep["memory"]
    print("mlperf-v1.0-bert-large-pod16 (workers=1)")
    print(f"  throughput {sim['samples_per_second_per_replica']:.1f} samples/s per replica "
          f"({2 * sim['samples_per_second_per_replica']:.1f} sequences/s at 2 per pack; measured 355)")
    print(f"  fits: {mem['fits']}  peak tile {mem['peak_tile_bytes']:,} B")
    for i, st in enumerate(rep["multichip"]["per_stage"]):
        m = st.get("memory", {})
        print(f"  stage {i}: peak tile {m.get('peak_tile_bytes', 0):,} B, fits {m.get('fits')}")
    print(f"  wall {wall:.1f} s  peak RSS {peak_rss_gib():.2f} GiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=list(CONFIGS) + ["full"], help="one configuration, in this process")
    ap.add_argument("--full", action="store_true", help="also the MLPerf BERT-Large pod16 preset")
    a = ap.parse_args()
    if a.only == "full":
        full()
        return
    if a.only:
        one(a.only)
        return
    for name in list(CONFIGS) + (["full"] if a.full else []):
        subprocess.run([sys.executable, os.path.abspath(__file__), "--only", name], check=False)


if __name__ == "__main__":
    main()
