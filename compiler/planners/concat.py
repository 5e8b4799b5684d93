"""Concat."""
from __future__ import annotations

import numpy as np

from .base import Planner
from .chunking import chunks

class ConcatPlanner(Planner):
    """Concat: copy vertices move each input's chunks into the output."""
    family = "concat"

    def lower(self, op, opt, ctx):
        y = ctx.new_act(op, 0)
        off = 0
        css = []
        cs = ctx.compute_set(op, "concat")
        for t in op["inputs"]:
            if t not in ctx.acts and not ctx.is_param(t):
                continue
            x = ctx.act(t) if t in ctx.acts else ctx.weights_by_name(t)
            st, ln, tiles, ui = chunks(ctx, x, x)
            ln = np.minimum(ln, y.numel - np.minimum(off + st, y.numel))
            keep = ln > 0
            st, ln, tiles = st[keep], ln[keep], tiles[keep]
            ctx.graph.map_intervals(y.start + off + st, ln, tiles)
            i = np.arange(st.size)
            ctx.graph.add_vertices(cs, "Copy", tiles, {"in": (i, x.start + st, ln), "out": (i, y.start + off + st, ln)},
                                   dtype=ctx.dtype)
            off += x.numel
        css.append(cs)
        return css
