"""Pooling: MaxPool, AveragePool, GlobalAveragePool (and their gradients, as maps)."""
from __future__ import annotations

import numpy as np

from .base import Planner, add_by_signature, spread
from .cost import codelet_cycles
from .elementwise import ElementwisePlanner

class PoolPlanner(Planner):
    """MaxPool / AveragePool / GlobalAveragePool: one vertex per output row segment."""
    family = "pool"

    def estimate(self, op, opt, ctx):
        """Each tile's share of the output through the Pool codelet (the op's window), spread
        over the workers."""
        if op["op"].endswith("Grad"):
            return ElementwisePlanner().estimate(op, opt, ctx)
        n = int(np.prod(ctx.out_shape(op, 0)))
        kh, kw = self.window(op, ctx)
        return codelet_cycles("Pool", {"out": -(-n // ctx.tiles) / ctx.chip.workers_per_tile}, ctx.dtype,
                              {"kh": kh, "kw": kw}, ctx.chip), 0.0

    def window(self, op, ctx):
        """(kh, kw) of the pooling window (the whole image for a global pooling)."""
        shape = ctx.shape(op["inputs"][0])
        if op["op"] == "GlobalAveragePool" or len(ctx.out_shape(op, 0)) != 4:
            return int(shape[2]) if len(shape) > 2 else 1, int(shape[3]) if len(shape) > 3 else 1
        kh, kw = op["attrs"].get("kernel_shape", [1, 1])
        return int(kh), int(kw)

    def lower(self, op, opt, ctx):
        if op["op"].endswith("Grad"):
            # the gradient of a pooling scatters dY into the shape of X: a map over dX
            return ElementwisePlanner().lower(op, opt, ctx, codelet="Copy")
        x = ctx.act(op["inputs"][0])
        y = ctx.new_act(op, 0, group=x.g)
        a = op["attrs"]
        if op["op"] == "GlobalAveragePool" or len(y.logical) != 4:
            kh, kw, s, pt, pl = x.H, x.W, 1, 0, 0
        else:
            kh, kw = a.get("kernel_shape", [1, 1])
            s = (a.get("strides") or [1])[0]
            pads = a.get("pads") or [0, 0, 0, 0]
            pt, pl = pads[0], pads[1]
        n, cg, oh = [v.ravel() for v in np.indices((y.N, y.Cg, y.H))]
        V = n.size
        tiles = spread(V, ctx.tiles)
        rt = np.clip(pt - oh * s, 0, kh)
        rb = np.clip(x.H + pt - oh * s, 0, kh)
        nrows = rb - rt
        iws, iwe = -pl, (y.W - 1) * s - pl + kw
        pleft, pright = max(-iws, 0), max(iwe - x.W, 0)
        vi = np.repeat(np.arange(V), nrows)
        r = rt[vi] + np.arange(vi.size) - np.repeat(np.cumsum(nrows) - nrows, nrows)
        in_s, in_l = x.rows(n[vi], cg[vi], oh[vi] * s - pt + r, np.full(vi.size, iws + pleft),
                            np.full(vi.size, iwe - pright))
        o_s, o_l = y.rows(n, cg, oh, np.zeros(V, np.int64), np.full(V, y.W))
        ctx.graph.map_intervals(o_s, o_l, tiles)
        cs = ctx.compute_set(op, "pool")
        base = {"kh": int(kh), "kw": int(kw), "stride": int(s), "wout": int(y.W), "c": int(x.g),
                "pleft": int(pleft), "pright": int(pright), "op": "max" if "Max" in op["op"] else "avg"}
        add_by_signature(ctx, cs, "Pool", tiles, np.stack([rt, kh - rb], axis=1),
                         {"in": (vi, in_s, in_l), "out": (np.arange(V), o_s, o_l)},
                         lambda u: dict(base, ptop=int(u[0]), pbot=int(u[1])))
        return [cs]
