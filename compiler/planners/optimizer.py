"""Weight updates: SGD with momentum, Adam, LAMB.

SGD and Adam are one element-wise compute set over chunks that follow the weight's mapping.
LAMB (You et al. 2019) scales each tensor's Adam-style step by the trust ratio
``||w|| / ||r||``, two norms of the whole tensor, so it is planned as

1. ``LambMoments`` per chunk: the moments ``m``, ``v``, the direction ``r`` (a temporary
   mapped like the weight) and one partial sum of squares of ``w`` and of ``r`` per vertex;
2. a reduction over the tensor's tiles: one ``Reduce`` per tile and norm sums that tile's
   partials (tile-local), then, when the tensor spans several tiles, one ``Reduce`` per norm
   sums the per-tile results on the tile of the tensor's first chunk;
3. ``LambUpdate`` per chunk: ``w -= lr * ||w|| / ||r|| * r`` with the two sums broadcast.
"""
from __future__ import annotations

import numpy as np

from .base import Planner
from .chunking import chunks

_HYPER = ("lr", "momentum", "beta1", "beta2", "epsilon", "weight_decay")


class OptimizerPlanner(Planner):
    """Weight updates where the weights live: SGD with momentum, Adam or LAMB per chunk."""
    family = "optimizer"

    def lower(self, op, opt, ctx):
        w = ctx.weights_by_name(op["inputs"][0])
        grad = next((ctx.act(t) for t in op["inputs"][1:] if t in ctx.acts and ctx.numel(t) == w.numel), None)
        states = [ctx.weights_by_name(t) for t in op["inputs"][1:] if ctx.is_state(t)]
        st, ln, tiles, ui = chunks(ctx, w, w, max_chunk=4096)
        idx = np.arange(st.size)
        kind = "lamb" if "Lamb" in op["op"] else "adam" if "Adam" in op["op"] else "sgd"
        need = 1 if kind == "sgd" else 2
        while len(states) < need:
            states.append(ctx.state_for(op, w, len(states)))
        fields = {"weights": (idx, w.start + st, ln),
                  "grad": (idx, (grad.start if grad is not None else w.start) + st, ln)}
        if kind == "sgd":
            fields["momentum"] = (idx, states[0].start + st, ln)
        else:
            fields["m"] = (idx, states[0].start + st, ln)
            fields["v"] = (idx, states[1].start + st, ln)
        for s in states:
            ctx.graph.map_intervals(s.start + st, ln, tiles)
        if kind == "lamb":
            css = self._lamb(op, ctx, w, fields, st, ln, tiles)
        else:
            cs = ctx.compute_set(op, "update")
            ctx.graph.add_vertices(cs, "Adam" if kind == "adam" else "SGDMomentum", tiles, fields, dtype=ctx.dtype,
                                   params={})
            css = [cs]
        for name in op["outputs"]:
            ctx.alias(name, w if ctx.numel(name) == w.numel else states[0])
        return css

    def _lamb(self, op, ctx, w, fields, st, ln, tiles):
        g, name = ctx.graph, op["name"]
        hyper = {k: float(v) for k, v in op.get("attrs", {}).items() if k in _HYPER}
        V = st.size
        idx = np.arange(V)
        r = g.add_variable(ctx.dtype, (w.numel,), f"{name}/r", kind="temporary", op=name)
        g.map_intervals(r._start + st, ln, tiles)
        # partial sums of squares, stored tile by tile so each tile reduces one region
        order = np.argsort(tiles, kind="stable")
        slot = np.empty(V, np.int64)
        slot[order] = np.arange(V)
        part = g.add_variable("fp32", (2, V), f"{name}/sum_sq_partials", kind="temporary", op=name)
        g.map_intervals(part._start + np.concatenate((slot, V + slot)), np.ones(2 * V, np.int64),
                        np.concatenate((tiles, tiles)))
        one = np.ones(V, np.int64)
        moments = ctx.compute_set(op, "lamb_moments")
        g.add_vertices(moments, "LambMoments", tiles, dict(fields, r=(idx, r._start + st, ln),
                                                           w_sq=(idx, part._start + slot, one),
                                                           r_sq=(idx, part._start + V + slot, one)),
                       dtype=ctx.dtype, params=hyper)
        # the reduction over the tensor's tiles: per tile, then (several tiles) over the tiles
        ut, first, count = np.unique(tiles[order], return_index=True, return_counts=True)
        U = ut.size
        reduce_p = {"op": "add", "partials": "fp32"}
        sums = g.add_variable("fp32", (2, U), f"{name}/sum_sq_tiles", kind="temporary", op=name)
        g.map_intervals(sums._start + np.arange(2 * U), np.ones(2 * U, np.int64), np.concatenate((ut, ut)))
        per_tile = ctx.compute_set(op, "lamb_norms")
        k2 = np.arange(2 * U)
        g.add_vertices(per_tile, "Reduce", np.concatenate((ut, ut)), {
            "in": (k2, part._start + np.concatenate((first, V + first)), np.concatenate((count, count))),
            "out": (k2, sums._start + k2, np.ones(2 * U, np.int64))}, dtype="fp32", params=reduce_p)
        css = [moments, per_tile]
        total, t_off = sums, (0, U)
        if U > 1:
            home = int(tiles[0])
            total = g.add_variable("fp32", (2,), f"{name}/sum_sq", kind="temporary", op=name)
            g.map_intervals(total._start + np.arange(2), np.ones(2, np.int64), np.full(2, home))
            final = ctx.compute_set(op, "lamb_norms_total")
            g.add_vertices(final, "Reduce", np.full(2, home), {
                "in": (np.arange(2), sums._start + np.array([0, U]), np.full(2, U, np.int64)),
                "out": (np.arange(2), total._start + np.arange(2), np.ones(2, np.int64))}, dtype="fp32",
                params=reduce_p)
            css.append(final)
            t_off = (0, 1)
        upd = ctx.compute_set(op, "lamb_update")
        g.add_vertices(upd, "LambUpdate", tiles, {
            "weights": fields["weights"], "r": (idx, r._start + st, ln),
            "w_sq": (idx, np.full(V, total._start + t_off[0]), one),
            "r_sq": (idx, np.full(V, total._start + t_off[1]), one)}, dtype=ctx.dtype, params=hyper)
        return css + [upd]
