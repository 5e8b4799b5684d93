"""Tutorial 3: host streams (data FIFOs) and prefetch (Poplar's tut4 streams).

A host-to-device FIFO feeds two batches each iteration, the device scales
them (out = relu(in * w)) and a device-to-host FIFO returns them.  The program
runs in functional mode, so the values that come back are checked against
numpy.  The same program is then timed with the input stream single- and
double-buffered: with two buffers the host pushes the next batches while the
device computes (both batches of the next iteration, not just the first), so
more of the transfer time is hidden and the run is shorter.

    PYTHONPATH=. .venv/bin/python examples/tut3_host_streams.py [--chip gc2] [--tiles 8] [--n 1024]
"""
import argparse

import numpy as np

from compiler.executable import compile_program
from compiler.graph import Graph
from compiler.program import Copy, Execute, Repeat, Sequence
from hardware.chips import get_chip
from simulator.engine import Engine


def build(chip, n, iterations, buffers, work=20):
    """Each iteration reads two batches (micro-batches), computes on both, returns both.

    ``work``: Relu passes per iteration (makes the compute long against the transfers).
    """
    g = Graph(chip)
    x = g.add_variable("fp32", (2, n), "x")
    y = g.add_variable("fp32", (2, n), "y")
    w = g.add_variable("fp32", (n,), "w")
    g.map_linearly(w)
    for t in (x, y):                       # both batches of a tile's columns on that tile
        for b in range(2):
            g.map_linearly(t[b])
    inp = g.add_host_to_device_fifo("in", "fp32", n, buffers=buffers)
    out = g.add_device_to_host_fifo("out", "fp32", n, buffers=buffers)
    scale, relu = g.add_compute_set("scale"), g.add_compute_set("relu")
    mapping = g.get_tile_mapping(w)
    for cs in (scale, relu):
        for tile, ivs in enumerate(mapping):
            for lo, hi in ivs:
                for b in range(2):
                    if cs is scale:
                        g.add_vertex(cs, "Mul", {"a": x[b, lo:hi], "b": w[lo:hi], "out": y[b, lo:hi]}, tile=tile)
                    else:
                        g.add_vertex(cs, "Relu", {"in": y[b, lo:hi], "out": y[b, lo:hi]}, tile=tile)
    body = Sequence(Copy(inp, x[0]), Copy(inp, x[1]), Execute(scale), Repeat(work, Execute(relu)),
                    Copy(y[0], out), Copy(y[1], out))
    return g, Repeat(iterations, body), (x, w)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chip", default="gc2")
    ap.add_argument("--tiles", type=int, help="use only this many tiles of the chip")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--iterations", type=int, default=4)
    args = ap.parse_args(argv)
    chip = get_chip(args.chip)
    if args.tiles:
        chip = chip.replace(tiles=args.tiles)
    n, it = args.n, args.iterations
    rng = np.random.default_rng(0)
    batches = rng.standard_normal((2 * it, n)).astype(np.float32)
    weights = rng.standard_normal(n).astype(np.float32)

    # values: every batch comes back as relu(batch * w)
    g, prog, (x, w) = build(chip, n, it, buffers=2)
    eng = Engine(compile_program(g, prog), functional=True, inputs={"in": batches})
    eng.write(w, weights)
    eng.run()
    got = np.stack(eng.outputs["out"])
    ok = bool(np.array_equal(got, np.maximum(batches * weights, 0)))
    print(f"{2 * it} batches of {n} floats through the device and back; values match numpy: {ok}")

    # timing: single- against double-buffered input
    reports = {}
    for buffers in (1, 2):
        g, prog, _ = build(chip, n, it, buffers=buffers)
        rep = Engine(compile_program(g, prog)).run()
        reports[buffers] = rep
        print(f"  buffers={buffers}: {rep.cycles:.0f} cycles, host transfers {rep.host_transfer_cycles:.0f} "
              f"cycles, waited {rep.stream_wait_cycles:.0f}, hidden {rep.hidden_transfer_fraction:.0%}")
    return ok, reports


if __name__ == "__main__":
    main()
