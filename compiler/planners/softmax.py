"""Softmax over rows."""
from __future__ import annotations

import numpy as np

from .base import Planner, spread
from .elementwise import ElementwisePlanner

class SoftmaxPlanner(Planner):
    """Softmax over rows: reduce-max, subtract, exp, reduce-add, divide."""
    family = "softmax"

    def estimate(self, op, opt, ctx):
        return 5 * ElementwisePlanner().estimate(op, opt, ctx)[0], 0.0

    def lower(self, op, opt, ctx):
        x = ctx.act(op["inputs"][0])
        y = ctx.new_act(op, 0)
        rows, cols = x.numel // x.C, x.C
        r = np.arange(rows)
        tiles = ctx.graph.tile_of_elements(x.start + r * cols)
        tiles = np.where(tiles < 0, spread(rows, ctx.tiles), tiles)
        stat = ctx.graph.add_variable(ctx.dtype, (2, rows), f"{op['name']}/stats", kind="temporary", op=op["name"])
        ctx.graph.map_intervals(stat._start + np.concatenate((r, rows + r)), np.ones(2 * rows, np.int64),
                                 np.concatenate((tiles, tiles)))
        ctx.graph.map_intervals(y.start + r * cols, np.full(rows, cols), tiles)
        one = np.ones(rows, np.int64)
        full = np.full(rows, cols, np.int64)
        g = ctx.graph
        css = []
        for step, (codelet, fields, params) in enumerate([
            ("Reduce", {"in": (r, x.start + r * cols, full), "out": (r, stat._start + r, one)}, {"op": "max"}),
            ("BroadcastOp", {"in": (r, x.start + r * cols, full), "b": (r, stat._start + r, one),
                             "out": (r, y.start + r * cols, full)}, {"op": "sub"}),
            ("Exp", {"in": (r, y.start + r * cols, full), "out": (r, y.start + r * cols, full)}, {}),
            ("Reduce", {"in": (r, y.start + r * cols, full), "out": (r, stat._start + rows + r, one)}, {"op": "add"}),
            ("BroadcastOp", {"in": (r, y.start + r * cols, full), "b": (r, stat._start + rows + r, one),
                             "out": (r, y.start + r * cols, full)}, {"op": "div"}),
        ]):
            cs = ctx.compute_set(op, ["max", "sub", "exp", "sum", "div"][step])
            g.add_vertices(cs, codelet, tiles, fields, dtype=ctx.dtype, params=params)
            css.append(cs)
        return css
