"""Losses: softmax cross-entropy and its gradient."""
from __future__ import annotations

import numpy as np

from .base import Planner
from .elementwise import ElementwisePlanner

class LossPlanner(Planner):
    """Softmax cross-entropy: one vertex per sample (loss and d loss / d logits)."""
    family = "loss"

    def lower(self, op, opt, ctx):
        if op["op"].endswith("Grad"):   # d loss / d logits = softmax - one-hot: a map over the logits
            return ElementwisePlanner().lower(op, opt, ctx, codelet="Exp", inputs=op["inputs"][:1],
                                              suffix="grad")
        x = ctx.act(op["inputs"][0])
        lbl = ctx.act(op["inputs"][1])
        loss = ctx.new_act(op, 0)
        grad = ctx.new_act(op, 1) if len(op["outputs"]) > 1 else ctx.temp_act(op, "grad", x.logical)
        rows, cols = x.numel // x.C, x.C
        r = np.arange(rows)
        tiles = ctx.graph.tile_of_elements(x.start + r * cols)
        mean = loss.numel < rows            # a scalar loss: per-sample losses, then their mean
        per_sample = ctx.temp_act(op, "per-sample", (rows,)) if mean else loss
        out_loss = loss
        loss = per_sample
        for t, n in ((loss, 1), (grad, cols)):
            ctx.graph.map_intervals(t.start + r * n, np.full(rows, n), tiles)
        cs = ctx.compute_set(op, "loss")
        ctx.graph.add_vertices(cs, "SoftmaxCrossEntropy", tiles, {
            "logits": (r, x.start + r * cols, np.full(rows, cols)),
            "label": (r, lbl.start + np.minimum(r, lbl.numel - 1), np.ones(rows, np.int64)),
            "loss": (r, loss.start + np.minimum(r, loss.numel - 1), np.ones(rows, np.int64)),
            "grad": (r, grad.start + r * cols, np.full(rows, cols))}, dtype=ctx.dtype, params={"scale": 1.0 / rows})
        if not mean:
            return [cs]
        ctx.graph.map_intervals(np.array([out_loss.start]), np.array([1]), tiles[:1])
        cs2 = ctx.compute_set(op, "mean")
        ctx.graph.add_vertices(cs2, "Reduce", tiles[:1], {"in": (np.zeros(1, np.int64), np.array([loss.start]), np.array([rows])),
                                                          "out": (np.zeros(1, np.int64), np.array([out_loss.start]), np.array([1]))},
                               dtype=ctx.dtype, params={"op": "add", "scale": 1.0 / rows})
        return [cs, cs2]
