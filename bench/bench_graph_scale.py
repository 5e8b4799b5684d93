"""Graph storage at scale: 20 M vertices with 120 M edges must fit in a few GiB (issues 2, 3).

    .venv/bin/python bench/bench_graph_scale.py [--vertices 20000000] [--edges-per-vertex 6]
    .venv/bin/python bench/bench_graph_scale.py --compile   # + compile_program and memory_report

Builds the graph with the bulk API (as the compiler does), finalizes it (CSR +
all dataflow checks) and prints the time, the arrays' bytes and peak RSS.
With ``--compile`` the vertices are spread over ``--compute-sets`` compute
sets run in sequence, and the back end runs on it as on a lowered network
(per-tile work, exchange plans, liveness and allocation): the size class of
Poplar's AlexNet training graph (18.7 M vertices, 115.8 M edges).
"""
import argparse
import os
import resource
import sys
import time
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from compiler.graph import Graph  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vertices", type=int, default=20_000_000)
    ap.add_argument("--edges-per-vertex", type=int, default=6)
    ap.add_argument("--chunk", type=int, default=2_000_000)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compute-sets", type=int, default=100)
    a = ap.parse_args()
    chip = SimpleNamespace(tiles=1472, sram_bytes_per_tile=638976)
    t0 = time.perf_counter()
    g = Graph(chip)
    # each vertex reads epv-1 regions of a and writes one region of b (MatMulPartial-like fan-in
    # is modelled by ReducePartials: one vector field "in" with several edges, one "out")
    epv = a.edges_per_vertex
    n = a.vertices
    A = g.add_variable("fp32", (n * 4,), "a", kind="activation")
    B = g.add_variable("fp32", (n,), "b", kind="activation")
    g.map_linearly(A, grain=64)
    g.map_linearly(B, grain=16)
    ncs = a.compute_sets if a.compile else 1
    css = [g.add_compute_set(f"reduce{i}") for i in range(ncs)]
    per_cs = -(-n // ncs)
    for v0 in range(0, n, min(a.chunk, per_cs)):
        cs = css[v0 // per_cs]
        k = min(a.chunk, per_cs - v0 % per_cs, n - v0)
        v = np.arange(k)
        gv = v0 + v
        tiles = ((gv * chip.tiles) // n).astype(np.int32)
        vi = np.repeat(v, epv - 1)
        j = np.tile(np.arange(epv - 1), k)
        starts = A._start + (np.repeat(gv, epv - 1) * 4 + j * 4 // (epv - 1)) % (n * 4)
        g.add_vertices(cs, "ReducePartials", tiles,
                       {"in": (vi, starts, np.ones(vi.size, np.int64)),
                        "out": (v, B._start + gv, np.ones(k, np.int64))},
                       params={"k": epv - 1})
    t1 = time.perf_counter()
    arrays = g.finalize()
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{g.num_vertices:,} vertices, {g.num_edges:,} edges: build {t1 - t0:.1f} s, finalize + checks "
          f"{t2 - t1:.1f} s; graph arrays {arrays.nbytes / 2**30:.2f} GiB; peak RSS {rss:.2f} GiB", flush=True)
    if a.compile:
        from compiler.executable import compile_program
        from compiler.memory import memory_report
        from compiler.program import Execute, Sequence
        from hardware.chips import get_chip
        g.target = get_chip("gc200")
        exe = compile_program(g, Sequence(*[Execute(c) for c in css]))
        t3 = time.perf_counter()
        mem = memory_report(exe)
        t4 = time.perf_counter()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"compile_program {t3 - t2:.1f} s, memory_report {t4 - t3:.1f} s; total {t4 - t0:.1f} s; "
              f"peak tile {mem['peak_tile_bytes']:,} B; peak RSS {rss:.2f} GiB")


if __name__ == "__main__":
    main()
