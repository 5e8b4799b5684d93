"""Tutorial 2: a compute set of vertices, run by the BSP engine (Poplar's tut2/tut3).

Builds v2 = v1 + 1 (one Add vertex per tile, reading a constant that lives on
tile 0, so the other tiles receive it in the exchange phase), then
v3 = v2 - shift and v1 = relu(v3) in two more compute sets, repeated a few times with a Repeat
program.  Runs the program in functional mode, checks the values against
numpy, and prints the cycles of each phase and the exchange it implied.

    PYTHONPATH=. .venv/bin/python examples/tut2_compute_set.py [--chip gc2] [--tiles 8] [--n 64]
"""
import argparse

import numpy as np

from compiler.executable import compile_program
from compiler.graph import Graph
from compiler.program import Execute, Repeat, Sequence
from hardware.chips import get_chip
from simulator.engine import Engine


def build(chip, n):
    g = Graph(chip)
    v1 = g.add_variable("fp32", (n,), "v1")
    v2 = g.add_variable("fp32", (n,), "v2")
    v3 = g.add_variable("fp32", (n,), "v3")
    shift = g.add_variable("fp32", (n,), "shift")
    for t in (v1, v2, v3, shift):
        g.map_linearly(t)
    one = g.add_constant("fp32", (n,), 1.0, "one")
    g.set_tile_mapping(one, 0)                      # remote for every tile but 0

    add = g.add_compute_set("add-one")
    sub_relu = g.add_compute_set("sub")
    relu = g.add_compute_set("relu")
    # one vertex per tile, on the tile that holds the data it writes (Poplar's idiom);
    # vertices of one codelet added one after another are stored as one batch
    mapping = g.get_tile_mapping(v2)          # v1, v2, v3 and shift are mapped alike
    for cs, codelet, fields in ((add, "Add", lambda s: {"a": v1[s], "b": one[s], "out": v2[s]}),
                                (sub_relu, "Sub", lambda s: {"a": v2[s], "b": shift[s], "out": v3[s]}),
                                (relu, "Relu", lambda s: {"in": v3[s], "out": v1[s]})):
        for tile, ivs in enumerate(mapping):
            for lo, hi in ivs:
                g.add_vertex(cs, codelet, fields(slice(lo, hi)), tile=tile)
    # v1 <- relu(v1 + 1 - shift), three times
    prog = Repeat(3, Sequence(Execute(add), Execute(sub_relu), Execute(relu)))
    return g, prog, (v1, shift)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chip", default="gc2")
    ap.add_argument("--tiles", type=int, help="use only this many tiles of the chip")
    ap.add_argument("--n", type=int, default=4096)
    args = ap.parse_args(argv)
    chip = get_chip(args.chip)
    if args.tiles:
        chip = chip.replace(tiles=args.tiles)
    g, prog, (v1, shift) = build(chip, args.n)
    exe = compile_program(g, prog)
    print(f"{g.num_vertices} vertices, {g.num_edges} edges in {len(g.compute_sets)} compute sets "
          f"on {chip.name} ({g.num_tiles} tiles)")
    for cs in g.compute_sets:
        x = exe.exchange_in.get(cs.id)
        print(f"  {cs.name:10s}: {exe.compute[cs.id].vertices} vertices, "
              f"exchange in {x.total_bytes if x else 0} bytes")

    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(args.n).astype(np.float32)
    s = rng.random(args.n).astype(np.float32)
    eng = Engine(exe, functional=True)
    eng.write(v1, x0)
    eng.write(shift, s)
    rep = eng.run()
    want = x0
    for _ in range(3):
        want = np.maximum(want + np.float32(1) - s, 0)
    got = eng.read(v1)
    ok = bool(np.allclose(got, want, rtol=1e-6, atol=1e-6))
    first = ", ".join(f"{v:.4f}" for v in got[:4])
    print(f"  v1 after 3 iterations matches numpy: {ok} (first values {first})")
    print(f"{rep.cycles:.0f} cycles = {rep.seconds * 1e6:.2f} us in {rep.supersteps} supersteps: "
          f"compute {rep.compute_cycles:.0f}, exchange {rep.exchange_cycles:.0f}, "
          f"sync {rep.sync_cycles:.0f}, control {rep.control_cycles:.0f}")
    print(f"  {rep.vertices_executed} vertex executions, mean tile utilisation "
          f"{rep.tile_utilisation.mean():.1%}")
    return got, want, rep


if __name__ == "__main__":
    main()
