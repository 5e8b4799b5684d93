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
               "Swish": "Swish", "SwishGrad": "Swish", "ZeroInsert": "ZeroInsert"}
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
        if op["op"] == "ZeroInsert":
            return self._zero_insert(op, ctx)
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

    def _zero_insert(self, op, ctx):
        """The deferred dilation of a strided 1x1 ``ConvGradInput`` (:func:`compiler.partition.legalise`):
        dX (N, C, H, W) from the undilated result (N, C, Ho, Wo), as PopLibs' ``activationsPostDilate``
        copy.  One vertex per row of dX and channel group: a ``ZeroInsert`` reading the source row for
        the rows on the stride, a ``Fill`` of zeros for the others; dX is laid out in the source's
        channel groups and each row is mapped to the tile of its nearest source row (PopLibs maps the
        new variable like the dilated view with each zero replaced by its nearest non-zero element)."""
        src = ctx.act(op["inputs"][0])
        s_h, s_w = (list(op["attrs"].get("strides") or [1, 1]) + [1])[:2]
        y = ctx.new_act(op, 0, group=src.g)
        N, Cg, H = y.N, y.Cg, y.H
        n, cg, h = (a.ravel() for a in np.meshgrid(np.arange(N), np.arange(Cg), np.arange(H), indexing="ij"))
        sh = np.minimum(h // s_h, src.H - 1)
        on = (h % s_h == 0) & (h // s_h < src.H)
        s_s, s_l = src.rows(n, cg, sh, np.zeros_like(h), np.full_like(h, src.W))
        y_s, y_l = y.rows(n, cg, h, np.zeros_like(h), np.full_like(h, y.W))
        tiles = ctx.graph.tile_of_elements(s_s)
        tiles = np.where(tiles < 0, spread(tiles.size, ctx.tiles), tiles).astype(np.int32)
        ctx.graph.map_intervals(y_s, y_l, tiles)
        cs = ctx.compute_set(op, "dilate")
        k = np.flatnonzero(on)
        i = np.arange(k.size)
        ctx.graph.add_vertices(cs, "ZeroInsert", tiles[k], {"in": (i, s_s[k], s_l[k]), "out": (i, y_s[k], y_l[k])},
                               dtype=ctx.dtype, params={"stride": int(s_w), "g": int(src.g)})
        z = np.flatnonzero(~on)
        if z.size:
            i = np.arange(z.size)
            ctx.graph.add_vertices(cs, "Fill", tiles[z], {"out": (i, y_s[z], y_l[z])}, dtype=ctx.dtype)
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
