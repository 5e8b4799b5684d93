"""Poplar's classic tutorial, on the simulated chip.

Two vectors spread over tiles are added by one vertex per tile; then every
tile sums its part and a last vertex sums the partial sums across tiles.
Values come back through a device-to-host stream.

    .venv/bin/python examples/tutorial_add_reduce.py [--chip gc200] [--n 1000000]
"""
import argparse

import numpy as np

from compiler.executable import compile_program
from compiler.graph import Graph
from compiler.program import Copy, Execute, Sequence
from hardware.chips import get_chip
from simulator.engine import Engine


def build(chip, n):
    g = Graph(chip)
    tiles = chip.tiles
    a = g.add_variable("fp32", (n,), "a")
    b = g.add_variable("fp32", (n,), "b")
    c = g.add_variable("fp32", (n,), "c")
    partial = g.add_variable("fp32", (tiles,), "partial")
    total = g.add_variable("fp32", (1,), "total")
    for t in (a, b, c):
        g.map_linearly(t)
    for t in range(tiles):
        g.set_tile_mapping(partial[t:t + 1], t)
    g.set_tile_mapping(total, 0)

    in_a = g.add_host_to_device_fifo("a", "fp32", n)
    in_b = g.add_host_to_device_fifo("b", "fp32", n)
    out = g.add_device_to_host_fifo("total", "fp32", 1)

    add = g.add_compute_set("add")
    reduce_local = g.add_compute_set("reduce-local")
    reduce_all = g.add_compute_set("reduce-across-tiles")
    for tile, intervals in enumerate(g.get_tile_mapping(c)):
        for lo, hi in intervals:
            g.add_vertex(add, "Add", {"a": a[lo:hi], "b": b[lo:hi], "out": c[lo:hi]}, tile=tile)
            g.add_vertex(reduce_local, "Reduce", {"in": c[lo:hi], "out": partial[tile:tile + 1]},
                         tile=tile, params={"op": "add"})
    g.add_vertex(reduce_all, "Reduce", {"in": partial, "out": total}, tile=0, params={"op": "add"})

    prog = Sequence(Copy(in_a, a), Copy(in_b, b), Execute(add), Execute(reduce_local),
                    Execute(reduce_all), Copy(total, out))
    return g, prog


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chip", default="gc200")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--trace", help="write a Chrome trace JSON here")
    args = ap.parse_args(argv)
    chip = get_chip(args.chip)
    g, prog = build(chip, args.n)
    exe = compile_program(g, prog)
    rng = np.random.default_rng(0)
    xa, xb = rng.random(args.n, np.float32), rng.random(args.n, np.float32)
    eng = Engine(exe, functional=True, inputs={"a": [xa], "b": [xb]})
    rep = eng.run()
    got = float(eng.outputs["total"][0][0])
    want = float(np.sum(xa.astype(np.float64) + xb))
    print(f"{g.num_vertices} vertices, {g.num_edges} edges on {chip.name} ({chip.tiles} tiles)")
    print(f"sum on chip = {got:.4f}, numpy = {want:.4f}")
    print(f"{rep.cycles:.0f} cycles = {rep.seconds * 1e6:.2f} us: compute {rep.compute_cycles:.0f}, "
          f"exchange {rep.exchange_cycles:.0f}, sync {rep.sync_cycles:.0f}")
    if args.trace:
        rep.chrome_trace(args.trace)
    return got, want, rep


if __name__ == "__main__":
    main()
