"""Graph storage at scale: 20 M vertices with 120 M edges must fit in a few GiB (issue 2).

    .venv/bin/python bench/bench_graph_scale.py [--vertices 20000000] [--edges-per-vertex 6]

Builds the graph with the bulk API (as the compiler does), finalizes it (CSR +
all dataflow checks) and prints the time, the arrays' bytes and peak RSS.
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
    a = ap.parse_args()
    chip = SimpleNamespace(tiles=1472, sram_bytes_per_tile=638976)
    t0 = time.perf_counter()
    g = Graph(chip)
    # each vertex reads epv-1 regions of a and writes one region of b (MatMulPartial-like fan-in
    # is modelled by ReducePartials: one vector field "in" with several edges, one "out")
    epv = a.edges_per_vertex
    n = a.vertices
    A = g.add_variable("fp32", (n * 4,), "a")
    B = g.add_variable("fp32", (n,), "b")
    g.map_linearly(A, grain=64)
    g.map_linearly(B, grain=16)
    cs = g.add_compute_set("reduce")
    for v0 in range(0, n, a.chunk):
        k = min(a.chunk, n - v0)
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
          f"{t2 - t1:.1f} s; graph arrays {arrays.nbytes / 2**30:.2f} GiB; peak RSS {rss:.2f} GiB")


if __name__ == "__main__":
    main()
