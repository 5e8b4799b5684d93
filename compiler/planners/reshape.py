"""Views (Reshape, Flatten, Transpose of a view...): the output shares the input's storage."""
from __future__ import annotations

import numpy as np

from .base import Planner
from .elementwise import ElementwisePlanner

class ReshapePlanner(Planner):
    """Views: the output shares the input's storage (no vertices)."""
    family = "reshape"

    def lower(self, op, opt, ctx):
        src = op["inputs"][0]
        a = ctx.act(src) if src in ctx.acts else ctx.weights_by_name(src)
        shape = ctx.out_shape(op, 0)
        if op["op"] == "Transpose" and len(shape) > 1 and shape != a.logical:
            return ElementwisePlanner().lower(op, opt, ctx, codelet="Copy", inputs=[src], suffix="transpose")
        if len(a.logical) == 4 and a.H * a.W > 1 and a.g > 1 and tuple(shape) != a.logical:
            return self._to_row_major(op, a, shape, ctx)
        ctx.acts[op["outputs"][0]] = ctx.view(a, op["outputs"][0], shape)
        return []

    def _to_row_major(self, op, a, shape, ctx):
        """Flatten a channel-grouped image into NCHW order: one Copy per image row and
        channel group, writing each element to its strided place."""
        y = ctx.new_act(op, 0)
        n, cg, h = [v.ravel() for v in np.indices((a.N, a.Cg, a.H))]
        V = n.size
        tiles = ctx.graph.tile_of_elements(a.rows(n, cg, h, np.zeros(V, np.int64), np.zeros(V, np.int64))[0])
        in_s, in_l = a.rows(n, cg, h, np.zeros(V, np.int64), np.full(V, a.W))
        w, ci = [v.ravel() for v in np.indices((a.W, a.g))]
        dst = (y.start + n[:, None] * (a.C * a.H * a.W) + (cg[:, None] * a.g + ci[None, :]) * (a.H * a.W)
               + h[:, None] * a.W + w[None, :]).ravel()
        vi = np.repeat(np.arange(V), a.W * a.g)
        ctx.graph.map_intervals(dst, np.ones(dst.size, np.int64), tiles[vi])
        cs = ctx.compute_set(op, "flatten")
        ctx.graph.add_vertices(cs, "Copy", tiles, {"in": (np.arange(V), in_s, in_l),
                                                   "out": (vi, dst, np.ones(dst.size, np.int64))}, dtype=ctx.dtype)
        return [cs]
