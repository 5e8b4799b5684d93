"""Normalisations: BatchNormalization, LayerNormalization, LRN."""
from __future__ import annotations

import numpy as np

from .base import Planner
from .chunking import chunks, per_channel
from .elementwise import ElementwisePlanner
from .reduce import ReducePlanner

class NormPlanner(Planner):
    """BatchNormalization / LayerNormalization / LRN.  Inference: one per-channel
    affine map.  Training and gradients: statistics reductions, then the map."""
    family = "norm"

    def estimate(self, op, opt, ctx):
        return ElementwisePlanner().estimate(op, opt, ctx)

    def lower(self, op, opt, ctx):
        x = ctx.act(op["inputs"][0])
        y = ctx.new_act(op, 0, group=x.g if ctx.out_shape(op, 0) == x.logical else None)
        out = []
        if ctx.training or op["op"] != "BatchNormalization":
            stats = ctx.temp_act(op, "stats", (y.C,))
            out += ReducePlanner().lower(op, opt, ctx, src=x, out=stats, suffix="stats")
        if op["op"] == "LRN":
            out += ElementwisePlanner().lower(op, opt, ctx, codelet="Mul", inputs=[op["inputs"][0]] * 2, out=y,
                                              suffix="lrn")
            return out
        params = [t for t in op["inputs"][1:] if ctx.is_param(t)]
        if op["op"] == "BatchNormalization" and not ctx.training and len(params) >= 4:
            # inference: y = x * s + t with s = scale / sqrt(var + eps), t = B - mean * s, folded on
            # the host (the vertices read these two, not the four parameters)
            eps = float(op["attrs"].get("epsilon", 1e-5))
            scale = ctx.derived_weight(op, "folded_scale", (y.C,), ("bn_scale", params[:4], eps))
            shift = ctx.derived_weight(op, "folded_shift", (y.C,), ("bn_shift", params[:4], eps))
        else:
            scale = ctx.weights_by_name(params[0]) if params else None
            shift = ctx.weights_by_name(params[1]) if len(params) > 1 else scale
        st, ln, tiles, ui = chunks(ctx, y, x)
        ctx.graph.map_intervals(y.start + st, ln, tiles)
        V = st.size
        idx = np.arange(V)
        cs = ctx.compute_set(op, "affine")
        if scale is None or y.H * y.W == 1 and scale.numel < y.C:
            ctx.graph.add_vertices(cs, "Copy", tiles, {"in": (idx, x.start + st, ln), "out": (idx, y.start + st, ln)},
                                   dtype=ctx.dtype)
            return out + [cs]
        sc_s, sl = per_channel(y, scale, st, ln, ui)
        sh_s, _ = per_channel(y, shift, st, ln, ui)
        ctx.graph.add_vertices(cs, "Affine", tiles, {"in": (idx, x.start + st, ln),
                                                     "scale": (idx, sc_s, sl),
                                                     "shift": (idx, sh_s, sl),
                                                     "out": (idx, y.start + st, ln)},
                               dtype=ctx.dtype, params=ctx.fused(op, None))
        return out + [cs]
