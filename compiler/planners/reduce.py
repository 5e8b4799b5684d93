"""Reductions: bias gradients, ReduceMean, the statistics of normalisations."""
from __future__ import annotations

import numpy as np

from .base import Planner, spread
from .chunking import chunks
from .cost import codelet_cycles

class ReducePlanner(Planner):
    """Reductions over chunks of the input into per-chunk partial results, then a
    ReducePartials per output element group (bias gradients, ReduceMean, norm statistics)."""
    family = "reduce"

    def estimate(self, op, opt, ctx):
        """Each tile's share of the largest input through the Reduce codelet, spread over the
        workers (the small second stage is not costed)."""
        n = max(ctx.numel(t) for t in op["inputs"] if t in ctx.acts or ctx.is_param(t))
        return codelet_cycles("Reduce", {"in": -(-n // ctx.tiles) / ctx.chip.workers_per_tile}, ctx.dtype,
                              {"op": "add", "partials": ctx.partials}, ctx.chip), 0.0

    def lower(self, op, opt, ctx, src=None, out=None, suffix="reduce"):
        x = src or ctx.act(op["inputs"][0])
        y = out or ctx.new_act(op, 0)
        st, ln, tiles, ui = chunks(ctx, x, x)
        V = st.size
        part = ctx.graph.add_variable(ctx.partials, (V,), f"{op['name']}/{suffix}/partials", kind="temporary",
                                      op=op["name"])
        ctx.graph.map_intervals(part._start + np.arange(V), np.ones(V, np.int64), tiles)
        cs = ctx.compute_set(op, suffix)
        ctx.graph.add_vertices(cs, "Reduce", tiles, {"in": (np.arange(V), x.start + st, ln),
                                                     "out": (np.arange(V), part._start + np.arange(V), np.ones(V, np.int64))},
                               dtype=x.dtype, params={"op": "add", "partials": ctx.partials})
        # second stage: each output element reduces an equal share of the partials
        R = y.numel
        per = max(V // max(R, 1), 1)
        rt = spread(R, ctx.tiles)
        r_s = part._start + np.minimum(np.arange(R) * per, V - per)
        ctx.graph.map_intervals(y.start + np.arange(R), np.ones(R, np.int64), rt)
        cs2 = ctx.compute_set(op, suffix + "-final")
        ctx.graph.add_vertices(cs2, "ReducePartials", rt, {"in": (np.arange(R), r_s, np.full(R, per)),
                                                           "out": (np.arange(R), y.start + np.arange(R), np.ones(R, np.int64))},
                               dtype=ctx.dtype, params={"k": per, "partials": ctx.partials})
        return [cs, cs2]
