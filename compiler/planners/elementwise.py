"""Element-wise maps: unary and binary ops, a smaller operand broadcast."""
from __future__ import annotations

import numpy as np

from ..codelets import CODELETS
from .base import Planner, spread
from .chunking import chunks, per_channel
from .cost import codelet_cycles

class ElementwisePlanner(Planner):
    """Unary and binary maps.  Output chunks follow the first input's mapping so
    reads are local; a smaller operand (bias, per-channel scale) is broadcast."""
    family = "elementwise"
    CODELET = {"Relu": "Relu", "Add": "Add", "Sum": "Add", "Sub": "Sub", "Mul": "Mul", "Div": "Div",
               "Exp": "Exp", "Sqrt": "Sqrt", "Tanh": "Tanh", "Sigmoid": "Sigmoid", "Gelu": "Gelu",
               "Erf": "Tanh", "Max": "Max", "ReluGrad": "ReluGrad", "Dropout": "Copy",
               "Identity": "Copy", "Cast": "Cast", "Transpose": "Copy", "Concat": "Copy",
               "Swish": "Swish", "SwishGrad": "Swish"}
    ROTARY = ("RotaryEmbedding", "RotaryEmbeddingGrad")

    def estimate(self, op, opt, ctx):
        """Each tile's share of the output through the op's codelet, spread over the workers."""
        if op["op"] in self.ROTARY:
            T, row = ctx.shape(op["inputs"][0])
            per_tile = -(-T // ctx.tiles)
            return -(-per_tile // ctx.chip.workers_per_tile) * codelet_cycles(
                "Rotary", {"out": row}, ctx.dtype, {}, ctx.chip), 0.0
        n = int(np.prod(ctx.out_shape(op, 0)))
        per_tile = -(-n // ctx.tiles)
        name = self.CODELET.get(op["op"], "Copy")
        return codelet_cycles(name, {"out": per_tile / ctx.chip.workers_per_tile}, ctx.dtype, {}, ctx.chip), 0.0

    def lower(self, op, opt, ctx, codelet=None, inputs=None, out=None, params=None, suffix="map"):
        if op["op"] in self.ROTARY:
            return self._rotary(op, ctx)
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

    def _rotary(self, op, ctx):
        """RotaryEmbedding of x (tokens, heads x head_dim) with cos / sin caches (positions,
        head_dim / 2): one ``Rotary`` vertex per token, on the tile that holds the token's row,
        reading its position's cos and sin rows (token t of a sequence of S is at position
        t mod S); the gradient is the same rotation with sin negated (attrs ``inverse``)."""
        x, cos, sin = (ctx.act(t) if t in ctx.acts else ctx.weights_by_name(t) for t in op["inputs"][:3])
        T, row = ctx.shape(op["inputs"][0])
        S, half = ctx.shape(op["inputs"][1])
        y = ctx.new_act(op, 0)
        t = np.arange(T, dtype=np.int64)
        tiles = ctx.graph.tile_of_elements(x.start + t * row)
        tiles = np.where(tiles < 0, spread(T, ctx.tiles), tiles).astype(np.int32)
        ctx.graph.map_intervals(y.start + t * row, np.full(T, row, np.int64), tiles)
        pos = (t % S) * half
        cs = ctx.compute_set(op, "rotary")
        ctx.graph.add_vertices(cs, "Rotary", tiles, {
            "in": (t, x.start + t * row, np.full(T, row, np.int64)),
            "cos": (t, cos.start + pos, np.full(T, half, np.int64)),
            "sin": (t, sin.start + pos, np.full(T, half, np.int64)),
            "out": (t, y.start + t * row, np.full(T, row, np.int64))},
            dtype=ctx.dtype, params={"head_dim": 2 * half, "inverse": int(bool(op["attrs"].get("inverse", 0)))})
        return [cs]
