"""Element-wise maps: unary and binary ops, a smaller operand broadcast."""
from __future__ import annotations

import numpy as np

from ..codelets import CODELETS
from .base import Planner
from .chunking import chunks, per_channel
from .cost import codelet_cycles

class ElementwisePlanner(Planner):
    """Unary and binary maps.  Output chunks follow the first input's mapping so
    reads are local; a smaller operand (bias, per-channel scale) is broadcast."""
    family = "elementwise"
    CODELET = {"Relu": "Relu", "Add": "Add", "Sum": "Add", "Sub": "Sub", "Mul": "Mul", "Div": "Div",
               "Exp": "Exp", "Sqrt": "Sqrt", "Tanh": "Tanh", "Sigmoid": "Sigmoid", "Gelu": "Gelu",
               "Erf": "Tanh", "Max": "Max", "ReluGrad": "ReluGrad", "Dropout": "Copy",
               "Identity": "Copy", "Cast": "Cast", "Transpose": "Copy", "Concat": "Copy"}

    def estimate(self, op, opt, ctx):
        """Each tile's share of the output through the op's codelet, spread over the workers."""
        n = int(np.prod(ctx.out_shape(op, 0)))
        per_tile = -(-n // ctx.tiles)
        name = self.CODELET.get(op["op"], "Copy")
        return codelet_cycles(name, {"out": per_tile / ctx.chip.workers_per_tile}, ctx.dtype, {}, ctx.chip), 0.0

    def lower(self, op, opt, ctx, codelet=None, inputs=None, out=None, params=None, suffix="map"):
        ins = [t for t in (inputs or op["inputs"]) if t in ctx.acts or ctx.is_param(t)]
        y = out or ctx.new_act(op, 0)
        srcs = [ctx.act(t) if t in ctx.acts else ctx.weights_by_name(t) for t in ins]
        big = [s for s in srcs if s.numel == y.numel]
        small = [s for s in srcs if s.numel != y.numel]
        like = big[0] if big else None
        st, ln, tiles, ui = chunks(ctx, y, like)
        y_s = y.start + st
        ctx.graph.map_intervals(y_s, ln, tiles)
        V = st.size
        idx = np.arange(V)
        name = codelet or self.CODELET.get(op["op"], "Copy")
        c = CODELETS[name]
        cs = ctx.compute_set(op, suffix)
        if small and name in ("Add", "Sub", "Mul", "Div"):
            b = small[0]
            bs, bl = per_channel(y, b, st, ln, ui)
            ctx.graph.add_vertices(cs, "BroadcastOp", tiles, {"in": (idx, big[0].start + st if big else y_s, ln),
                                                              "b": (idx, bs, bl), "out": (idx, y_s, ln)},
                                   dtype=ctx.dtype, params=dict({"op": name.lower()}, **ctx.fused(op, out)))
            return [cs]
        fields = {}
        in_fields = [f.name for f in c.fields if not f.writes]
        for i, fname in enumerate(in_fields):
            s = big[min(i, len(big) - 1)] if big else None
            fields[fname] = (idx, (s.start + st) if s is not None else y_s, ln)
        fields[[f.name for f in c.fields if f.writes][0]] = (idx, y_s, ln)
        ctx.graph.add_vertices(cs, name, tiles, fields, dtype=ctx.dtype, params=dict(params or {}, **ctx.fused(op, out)))
        return [cs]
