"""Tutorial 1: variables, constants, views and tile mapping (Poplar's tut1).

Creates variables and a constant, maps them to tiles by hand and with
map_linearly, prints which tile holds which elements, shows that slices,
transposes and concatenations are views of the same elements (no copies), and
that compiling with an unmapped element fails with a message naming the tensor.

    PYTHONPATH=. .venv/bin/python examples/tut1_variables_and_mapping.py [--chip gc2] [--tiles 8]
"""
import argparse

from compiler.executable import compile_program
from compiler.graph import Graph, GraphError
from compiler.program import Sequence
from compiler.tensor import concat
from hardware.chips import get_chip


def show_mapping(g, t):
    """One line per tile that holds part of ``t``: its intervals of t's flattened elements."""
    for tile, ivs in enumerate(g.get_tile_mapping(t)):
        if ivs:
            print(f"    tile {tile:4d}: {ivs}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chip", default="gc2")
    ap.add_argument("--tiles", type=int, help="use only this many tiles of the chip")
    args = ap.parse_args(argv)
    chip = get_chip(args.chip)
    if args.tiles:
        chip = chip.replace(tiles=args.tiles)
    g = Graph(chip)
    print(f"graph for {chip.name}: {g.num_tiles} tiles, {chip.sram_bytes_per_tile} bytes each")

    # 1. variables: each owns a contiguous range of the graph's element space
    v1 = g.add_variable("float", (4,), "v1")          # Poplar's alias: float == fp32
    v2 = g.add_variable("half", (4, 4), "v2")
    v3 = g.add_variable("fp32", (4, 4), "v3")
    c1 = g.add_constant("fp32", (4,), [1.0, 1.5, 2.0, 2.5], "c1")
    for t in (v1, v2, v3, c1):
        var = g.variable(t)
        print(f"  {var.name}: {var.dtype} {var.shape} -> elements [{var.start}, {var.start + var.size})")

    # 2. tile mapping by hand: v1 split over two tiles, each row of v2 on its own tile
    g.set_tile_mapping(v1[:2], 0)
    g.set_tile_mapping(v1[2:], 1)
    for row in range(4):
        g.set_tile_mapping(v2[row], row % g.num_tiles)
    g.set_tile_mapping(c1, 0)
    # ... and linearly, in chunks of 4 elements (a grain keeps chunks whole on one tile)
    g.map_linearly(v3, grain=4)
    for t in (v1, v2, v3):
        print(f"  tile mapping of {t.name}:")
        show_mapping(g, t)

    # 3. views: no data is copied, a view is a shaped list of element indices
    col = v2.slice(1, 3, dim=1)
    print(f"  v2[:, 1:3] elements: {col.elements().tolist()}")
    print(f"  v3.T[0] elements (a column of v3): {v3.T[0].elements().tolist()}")
    both = concat([v1, v3[0]])
    print(f"  concat([v1, v3[0]]) elements: {both.elements().tolist()}")
    print("  tile mapping of a column of v2 (in the view's own coordinates):")
    show_mapping(g, col)

    # 4. every element must live on a tile: an unmapped one is an error at compile time
    v4 = g.add_variable("fp32", (3,), "v4")
    g.set_tile_mapping(v4[:2], 0)
    try:
        compile_program(g, Sequence())
        error = None
    except GraphError as e:
        error = str(e)
    print(f"  compiling with v4[2] unmapped: GraphError: {error}")
    g.set_tile_mapping(v4[2:], 1)
    exe = compile_program(g, Sequence())
    print(f"  after mapping v4[2]: compiled, {exe.graph.num_elements} elements in the graph")
    return g, error


if __name__ == "__main__":
    main()
