"""Weight updates: SGD with momentum, Adam."""
from __future__ import annotations

import numpy as np

from .base import Planner
from .chunking import chunks

class OptimizerPlanner(Planner):
    """Weight updates where the weights live: SGD with momentum or Adam per chunk."""
    family = "optimizer"

    def lower(self, op, opt, ctx):
        w = ctx.weights_by_name(op["inputs"][0])
        grad = next((ctx.act(t) for t in op["inputs"][1:] if t in ctx.acts and ctx.numel(t) == w.numel), None)
        states = [ctx.weights_by_name(t) for t in op["inputs"][1:] if ctx.is_state(t)]
        st, ln, tiles, ui = chunks(ctx, w, w, max_chunk=4096)
        idx = np.arange(st.size)
        adam = "Adam" in op["op"]
        need = 2 if adam else 1
        while len(states) < need:
            states.append(ctx.state_for(op, w, len(states)))
        fields = {"weights": (idx, w.start + st, ln),
                  "grad": (idx, (grad.start if grad is not None else w.start) + st, ln)}
        if adam:
            fields["m"] = (idx, states[0].start + st, ln)
            fields["v"] = (idx, states[1].start + st, ln)
        else:
            fields["momentum"] = (idx, states[0].start + st, ln)
        for s in states:
            ctx.graph.map_intervals(s.start + st, ln, tiles)
        cs = ctx.compute_set(op, "update")
        ctx.graph.add_vertices(cs, "Adam" if adam else "SGDMomentum", tiles, fields, dtype=ctx.dtype, params={})
        for name in op["outputs"]:
            ctx.alias(name, w if ctx.numel(name) == w.numel else states[0])
        return [cs]
