"""Planners for sparse and conditional layers (models/sparse.py), family ``gather``.

Their vertices are codelets of the table (compiler/codelets.py): ``LSHHash``
(sign bits of ``K`` projections packed into one bucket id), ``TopK`` (the ``k``
largest of a row: indices and values), ``DynamicSlice``, ``MatMulPartial`` and
``ReducePartials``.  :class:`GatherDispatch` is the registry's ``gather``
planner: it sends the op types below to their planner and every other gather op
to :class:`~compiler.planners.gather.GatherPlanner`.

Op types (all family ``gather``, because models/opgraph.py validates families):

``LSHHash``       proj (B, K*L) -> codes (B, L) int32: one vertex per (sample, table)
``LSHSelect``     codes (B, L), buckets (L, 2^K * A/L) int32 -> idx (B, A) int32:
                  one DynamicSlice per (sample, table) copies the bucket's neuron ids
``SparseLinear``  x (B, in), W (out, in), idx (B, A) -> y (B, A): the active
                  neurons only.  "Owner computes": W stays where it is mapped;
                  for each (sample, chunk of ``ch`` active ids) a DynamicSlice on
                  a tile holding rows of W copies the selected rows next to it and
                  a MatMulPartial (1 x in) x (in x ch) computes them there; the
                  sample's input row is broadcast to those tiles (exchange).
                  Vertices are dealt round-robin over the tiles holding W, i.e.
                  the active ids are assumed spread evenly (an expectation: the
                  real ids are data dependent).
``TopKRoute``     logits (T, E) -> idx (T, k) int32, gates (T, k): one TopK per token
``MoEDispatch``   x (T, d), idx (T, k) -> xe (E, C, d): one DynamicSlice per
                  (expert, chunk of slots) reads a distinct slice of x, so the
                  all-to-all volume T k (C E / (T k)) d is exchanged
``MoECombine``    ye (E, C, d), idx (T, k) -> y (T, d): one DynamicSlice per
                  (token chunk, choice) into a (k, T, d) temporary, then
                  ReducePartials sums the k choices (gate scaling not costed)

Their gradients (models/training.py): ``MoEDispatch``'s is a ``MoECombine`` of the slots'
gradient, ``MoECombine``'s a ``MoEDispatch`` of the tokens' gradient (the all-to-all back)
plus ``MoEGateGrad``; ``TopKRoute``'s is ``TopKRouteGrad``:

``MoEGateGrad``   dy (T, d), ye (E, C, d), idx (T, k) -> dgates (T, k): the combine's
                  gather into a (T, k, d) temporary, then one (k x d) x (d x 1)
                  MatMulPartial per token
``TopKRouteGrad`` dgates, idx, gates (T, k) -> dlogits (T, E): one TopKRouteGrad vertex
                  per token (the softmax gradient over the k chosen, zeros elsewhere)

And the KV cache of LLM generation (``KVCacheWrite``, :class:`KVCacheWritePlanner`).

The cost of every one of them is proportional to the active part (``A`` of
``out`` neurons, ``k`` of ``E`` experts), while the weights stay fully resident.
"""
from __future__ import annotations

import numpy as np

from hardware.dtypes import DTYPE_BYTES

from ..layout import Act
from .base import Planner, add_by_signature, spread
from .cost import codelet_cycles


# -- planners ------------------------------------------------------------------------------------
def _act(ctx, name):
    return ctx.act(name) if name in ctx.acts else ctx.weights_by_name(name)


def _int_act(ctx, op, i):
    """An int32 output of ``op``, mapped linearly (its producer maps it again where written)."""
    name = op["outputs"][i]
    a = Act.allocate(ctx.graph, name, ctx.shape(name), "int32", kind="activation", op=op["name"])
    ctx.acts[name] = a
    return a


class LSHHashPlanner(Planner):
    family = "gather"

    def estimate(self, op, opt, ctx):
        B, KL = ctx.shape(op["inputs"][0])
        return codelet_cycles("LSHHash", {"in": -(-B * KL // ctx.tiles)}, ctx.dtype, {}, ctx.chip), 0.0

    def lower(self, op, opt, ctx):
        proj = _act(ctx, op["inputs"][0])
        B, KL = ctx.shape(op["inputs"][0])
        L = ctx.shape(op["outputs"][0])[1]
        K = KL // L
        y = _int_act(ctx, op, 0)
        b, l = [a.ravel() for a in np.indices((B, L))]
        V = b.size
        ins = proj.start + b * KL + l * K
        tiles = ctx.graph.tile_of_elements(ins)
        tiles = np.where(tiles < 0, spread(V, ctx.tiles), tiles)
        o_s = y.start + b * L + l
        ctx.graph.map_intervals(o_s, np.ones(V, np.int64), tiles)
        cs = ctx.compute_set(op, "lsh_hash")
        idx = np.arange(V)
        ctx.graph.add_vertices(cs, "LSHHash", tiles, {"in": (idx, ins, np.full(V, K, np.int64)),
                                                      "out": (idx, o_s, np.ones(V, np.int64))}, dtype=ctx.dtype)
        return [cs]


class LSHSelectPlanner(Planner):
    family = "gather"

    def lower(self, op, opt, ctx):
        codes = _act(ctx, op["inputs"][0])
        buckets = _act(ctx, op["inputs"][1])
        B, L = ctx.shape(op["inputs"][0])
        A = ctx.shape(op["outputs"][0])[1]
        per = A // L                          # neuron ids per bucket
        y = _int_act(ctx, op, 0)
        b, l = [a.ravel() for a in np.indices((B, L))]
        V = b.size
        tsize = buckets.numel // L
        t_s = buckets.start + l * tsize
        tiles = ctx.graph.tile_of_elements(t_s)
        tiles = np.where(tiles < 0, spread(V, ctx.tiles), tiles)
        o_s = y.start + b * A + l * per
        ctx.graph.map_intervals(o_s, np.full(V, per, np.int64), tiles)
        cs = ctx.compute_set(op, "lsh_select")
        idx = np.arange(V)
        ctx.graph.add_vertices(cs, "DynamicSlice", tiles, {
            "table": (idx, t_s, np.full(V, tsize, np.int64)),
            "index": (idx, codes.start + b * L + l, np.ones(V, np.int64)),
            "out": (idx, o_s, np.full(V, per, np.int64))}, dtype="int32", params={"row": int(per)})
        return [cs]


class SparseLinearPlanner(Planner):
    family = "gather"
    CHUNK = 16          # active neurons per vertex

    def estimate(self, op, opt, ctx):
        """Each tile's (sample, chunk) vertices: a DynamicSlice of ``CHUNK`` rows of W and a
        (1 x in) x (in x CHUNK) MatMulPartial, spread over the workers."""
        B, n_in = ctx.shape(op["inputs"][0])
        A = ctx.shape(op["outputs"][0])[1]
        V = B * -(-A // self.CHUNK)
        per_tile = -(-V // ctx.tiles)
        c = per_tile * (codelet_cycles("DynamicSlice", {"out": self.CHUNK * n_in, "index": self.CHUNK}, ctx.dtype,
                                       {"row": n_in}, ctx.chip) +
                        codelet_cycles("MatMulPartial", {"out": self.CHUNK}, ctx.dtype, {"m": 1, "k": n_in,
                                                                                         "n": self.CHUNK}, ctx.chip))
        return c / ctx.chip.workers_per_tile, float(per_tile * self.CHUNK * n_in * 4)

    def lower(self, op, opt, ctx):
        x = _act(ctx, op["inputs"][0])
        W = _act(ctx, op["inputs"][1])
        ids = _act(ctx, op["inputs"][2])
        B, n_in = ctx.shape(op["inputs"][0])
        n_out = ctx.shape(op["inputs"][1])[0]
        A = ctx.shape(op["outputs"][0])[1]
        ch = min(self.CHUNK, A)
        nch = -(-A // ch)
        y = ctx.new_act(op, 0)
        b, j = [a.ravel() for a in np.indices((B, nch))]
        V = b.size
        a0 = j * ch
        cnt = np.minimum(ch, A - a0)
        # the row blocks of W, one per tile that holds W: vertices dealt round-robin over them
        rows_per_blk = max(1, -(-n_out // ctx.tiles))
        nblk = -(-n_out // rows_per_blk)
        blk = (b * nch + j) % nblk
        r0 = blk * rows_per_blk
        rl = np.minimum(rows_per_blk, n_out - r0)
        t_s = W.start + r0 * n_in
        t_l = rl * n_in
        tiles = ctx.graph.tile_of_elements(t_s)
        tiles = np.where(tiles < 0, spread(V, ctx.tiles), tiles).astype(np.int32)
        gathered = ctx.graph.add_variable(ctx.dtype, (B, nch * ch, n_in), f"{op['name']}/rows", kind="temporary",
                                          op=op["name"])
        g_s = gathered._start + (b * nch * ch + a0) * n_in
        g_l = cnt * n_in
        ctx.graph.map_intervals(g_s, g_l, tiles)
        idx = np.arange(V)
        cs1 = ctx.compute_set(op, "gather_rows")
        ctx.graph.add_vertices(cs1, "DynamicSlice", tiles, {
            "table": (idx, t_s, t_l), "index": (idx, ids.start + b * A + a0, cnt),
            "out": (idx, g_s, g_l)}, dtype=ctx.dtype, params={"row": int(n_in)})
        o_s = y.start + b * A + a0
        ctx.graph.map_intervals(o_s, cnt, tiles)
        cs2 = ctx.compute_set(op, "sparse_matmul")
        sig = np.stack([np.ones(V, np.int64), np.full(V, n_in), cnt], axis=1)
        add_by_signature(ctx, cs2, "MatMulPartial", tiles, sig,
                         {"a": (idx, x.start + b * n_in, np.full(V, n_in, np.int64)),
                          "b": (idx, g_s, g_l), "out": (idx, o_s, cnt)},
                         lambda u: {"m": int(u[0]), "k": int(u[1]), "n": int(u[2])})
        return [cs1, cs2]


class TopKRoutePlanner(Planner):
    family = "gather"

    def lower(self, op, opt, ctx):
        logits = _act(ctx, op["inputs"][0])
        T, E = ctx.shape(op["inputs"][0])
        k = ctx.shape(op["outputs"][0])[1]
        idx_a = _int_act(ctx, op, 0)
        gates = ctx.new_act(op, 1)
        t = np.arange(T)
        tiles = ctx.graph.tile_of_elements(logits.start + t * E)
        tiles = np.where(tiles < 0, spread(T, ctx.tiles), tiles)
        ctx.graph.map_intervals(idx_a.start + t * k, np.full(T, k, np.int64), tiles)
        ctx.graph.map_intervals(gates.start + t * k, np.full(T, k, np.int64), tiles)
        cs = ctx.compute_set(op, "topk")
        ctx.graph.add_vertices(cs, "TopK", tiles, {"in": (t, logits.start + t * E, np.full(T, E, np.int64)),
                                                   "idx": (t, idx_a.start + t * k, np.full(T, k, np.int64)),
                                                   "gates": (t, gates.start + t * k, np.full(T, k, np.int64))},
                               dtype=ctx.dtype, params={"k": int(k)})
        return [cs]


class MoEDispatchPlanner(Planner):
    family = "gather"
    CHUNK = 8           # slots per vertex

    def lower(self, op, opt, ctx):
        x = _act(ctx, op["inputs"][0])
        ids = _act(ctx, op["inputs"][1])
        T, d = ctx.shape(op["inputs"][0])
        E, C, _ = ctx.shape(op["outputs"][0])
        y = ctx.new_act(op, 0)
        ch = min(self.CHUNK, C)
        nch = -(-C // ch)
        e, j = [a.ravel() for a in np.indices((E, nch))]
        V = e.size
        s0 = j * ch
        cnt = np.minimum(ch, C - s0)
        tiles = spread(V, ctx.tiles)
        o_s = y.start + (e * C + s0) * d
        ctx.graph.map_intervals(o_s, cnt * d, tiles)
        # a distinct slice of x per (expert, chunk): the all-to-all volume, balanced
        slot = (e * C + s0) % max(T - ch + 1, 1)
        t_s = x.start + np.minimum(slot, T - cnt) * d
        i_s = ids.start + (e * C + s0) % max(ids.numel - ch + 1, 1)
        idx = np.arange(V)
        cs = ctx.compute_set(op, "dispatch")
        ctx.graph.add_vertices(cs, "DynamicSlice", tiles, {
            "table": (idx, t_s, cnt * d), "index": (idx, i_s, cnt), "out": (idx, o_s, cnt * d)},
            dtype=ctx.dtype, params={"row": int(d)})
        return [cs]


class MoECombinePlanner(Planner):
    """``ye (E, C, d), idx (T, k) -> y (T, d)``: each (token group, choice) a ``DynamicSlice``
    into a ``(k, T, d)`` temporary on the group's tile, then a ``ReducePartials`` per group sums
    the ``k`` choices there.  A group is ``ch`` tokens of all ``d`` features, or, when the
    tokens are fewer than the tiles, one token's ``d / nf`` features, so the temporary and the
    output spread over the tiles (a prefill of 32 tokens of 4,096 features on a GC200 once put
    128 KiB of the temporary and 64 KiB of the output on each of 4 tiles).  Where a tile's share
    of the temporary would still be over ``available_memory_proportion`` of the tile (as the
    matmul planner bounds its partials), the tokens are combined in passes, each with its own
    temporary (live only during its pass): :meth:`split`."""
    family = "gather"
    CHUNK = 8           # tokens per vertex at most
    MIN_FEATURES = 64   # features per vertex at least (a split of the features)

    def _groups(self, T, d, tiles) -> tuple:
        """``(ch, nf)`` for ``T`` tokens: as many tokens per group as leave every tile a group
        (at most :attr:`CHUNK`); fewer tokens than tiles: one token per group, its features in
        ``nf`` chunks (``nf`` divides ``d``, at least :attr:`MIN_FEATURES` each)."""
        if T >= tiles:
            return min(self.CHUNK, -(-T // tiles)), 1
        most = max(1, min(tiles // T, d // self.MIN_FEATURES))
        return 1, next(n for n in range(most, 0, -1) if d % n == 0)

    def split(self, T, k, d, ctx) -> tuple:
        """``(passes, ch, nf)``: the fewest passes over the tokens (``ceil(T / passes)`` each)
        whose temporary puts at most ``available_memory_proportion`` of a tile on any tile (a
        pass of one token's group per tile where none does), and each pass's groups."""
        tiles = ctx.tiles
        eb = DTYPE_BYTES[ctx.dtype]
        budget = ctx.available_memory_proportion * ctx.chip.sram_bytes_per_tile
        P = 1
        while True:
            Tp = -(-T // P)
            ch, nf = self._groups(Tp, d, tiles)
            per_tile = -(-(-(-Tp // ch) * nf) // tiles) * k * ch * (d // nf) * eb
            if per_tile <= budget or Tp <= tiles:
                return P, ch, nf
            P = max(P + 1, -(-P * per_tile // budget))

    def lower(self, op, opt, ctx):
        ye = _act(ctx, op["inputs"][0])
        ids = _act(ctx, op["inputs"][1])
        E, C, d = ctx.shape(op["inputs"][0])
        T, k = ctx.shape(op["inputs"][1])
        y = ctx.new_act(op, 0)
        P, ch, nf = self.split(T, k, d, ctx)
        f = d // nf                     # features per group (all of them when ch > 1)
        bounds = [T * p // P for p in range(P + 1)]
        out = []
        for p in range(P):
            a, Tp = bounds[p], bounds[p + 1] - bounds[p]
            nch = -(-Tp // ch)
            G = nch * nf                # groups: (token chunk, feature chunk), chunk-major
            gt, gf = np.divmod(np.arange(G), nf)
            t0 = gt * ch                # within the pass
            cnt = np.minimum(ch, Tp - t0)
            gtiles = spread(G, ctx.tiles)
            # this pass's (k, Tp, d) temporary: group (gt, gf)'s rows of choice q contiguous
            tmp = ctx.graph.add_variable(ctx.dtype, (k, Tp, d), f"{op['name']}/choices" + (f"{p}" if P > 1 else ""),
                                         kind="temporary", op=op["name"])
            g, q = [x.ravel() for x in np.indices((G, k))]
            V = g.size
            off = (q * Tp + t0[g]) * d + gf[g] * f
            n = cnt[g] * f
            tiles = gtiles[g]
            p_s = tmp._start + off
            ctx.graph.map_intervals(p_s, n, tiles)
            src = ye.start + ((q * T + a + t0[g]) * d + gf[g] * f) % max(ye.numel - ch * f + 1, 1)
            idx = np.arange(V)
            tag = f"_{p}" if P > 1 else ""
            cs1 = ctx.compute_set(op, "combine_gather" + tag)
            ctx.graph.add_vertices(cs1, "DynamicSlice", tiles, {
                "table": (idx, src, n), "index": (idx, ids.start + (a + t0[g]) * k + q, cnt[g]),
                "out": (idx, p_s, n)}, dtype=ctx.dtype, params={"row": int(f)})
            # the sum of the k choices: one ReducePartials per group, its input choice-major
            r = np.arange(G)
            ri = np.repeat(r, k)
            qq = np.tile(np.arange(k), G)
            o_s = y.start + (a + t0) * d + gf * f
            ctx.graph.map_intervals(o_s, cnt * f, gtiles)
            cs2 = ctx.compute_set(op, "combine_sum" + tag)
            ctx.graph.add_vertices(cs2, "ReducePartials", gtiles, {
                "in": (ri, tmp._start + (qq * Tp + t0[ri]) * d + gf[ri] * f, cnt[ri] * f), "out": (r, o_s, cnt * f)},
                dtype=ctx.dtype, params={"k": int(k), "partials": ctx.dtype})
            out += [cs1, cs2]
        return out


class TopKRouteGradPlanner(Planner):
    """d logits (T, E) of a top-k router from d gates, indices and gates (T, k): one
    ``TopKRouteGrad`` vertex per token, on the tile holding the token's gate gradient."""
    family = "gather"

    def lower(self, op, opt, ctx):
        dg, ids, gates = (_act(ctx, t) for t in op["inputs"][:3])
        T, k = ctx.shape(op["inputs"][0])
        E = ctx.out_shape(op, 0)[1]
        y = ctx.new_act(op, 0)
        t = np.arange(T)
        tiles = ctx.graph.tile_of_elements(dg.start + t * k)
        tiles = np.where(tiles < 0, spread(T, ctx.tiles), tiles)
        ctx.graph.map_intervals(y.start + t * E, np.full(T, E, np.int64), tiles)
        kk = np.full(T, k, np.int64)
        cs = ctx.compute_set(op, "topk_grad")
        ctx.graph.add_vertices(cs, "TopKRouteGrad", tiles, {
            "grad": (t, dg.start + t * k, kk), "idx": (t, ids.start + t * k, kk),
            "gates": (t, gates.start + t * k, kk), "out": (t, y.start + t * E, np.full(T, E, np.int64))},
            dtype=ctx.dtype)
        return [cs]


class MoEGateGradPlanner(Planner):
    """d gates (T, k) of a combine: each token's k expert-output rows are gathered next to it
    as the combine gathers them (``DynamicSlice`` per token chunk and choice), then one
    (k x d) x (d x 1) ``MatMulPartial`` per token with the token's gradient row."""
    family = "gather"
    CHUNK = MoECombinePlanner.CHUNK

    def lower(self, op, opt, ctx):
        dy, ye, ids = (_act(ctx, t) for t in op["inputs"][:3])
        T, d = ctx.shape(op["inputs"][0])
        k = ctx.shape(op["inputs"][2])[1]
        y = ctx.new_act(op, 0)
        ch = min(self.CHUNK, T)
        nch = -(-T // ch)
        c, q = [a.ravel() for a in np.indices((nch, k))]
        V = c.size
        t0 = c * ch
        cnt = np.minimum(ch, T - t0)
        chunk_tiles = spread(nch, ctx.tiles)
        tiles = chunk_tiles[c]
        tmp = ctx.graph.add_variable(ctx.dtype, (T, k, d), f"{op['name']}/choices", kind="temporary", op=op["name"])
        # token-major: a token's k rows are contiguous, the (k x d) operand of its product
        p_s = tmp._start + (t0[:, None] * k + np.arange(ch)[None, :] * k + q[:, None]) * d
        ok = np.arange(ch)[None, :] < cnt[:, None]
        vi = np.broadcast_to(np.arange(V)[:, None], ok.shape)[ok]
        ctx.graph.map_intervals(p_s[ok], np.full(vi.size, d, np.int64), tiles[vi])
        src = ye.start + ((q * T + t0) * d) % max(ye.numel - ch * d + 1, 1)
        idx = np.arange(V)
        cs1 = ctx.compute_set(op, "gate_grad_gather")
        ctx.graph.add_vertices(cs1, "DynamicSlice", tiles, {
            "table": (idx, src, cnt * d), "index": (idx, ids.start + t0 * k + q, cnt),
            "out": (vi, p_s[ok], np.full(vi.size, d, np.int64))}, dtype=ctx.dtype, params={"row": int(d)})
        t = np.arange(T)
        tt = chunk_tiles[t // ch]
        ctx.graph.map_intervals(y.start + t * k, np.full(T, k, np.int64), tt)
        cs2 = ctx.compute_set(op, "gate_grad_dot")
        ctx.graph.add_vertices(cs2, "MatMulPartial", tt, {
            "a": (t, tmp._start + t * k * d, np.full(T, k * d, np.int64)),
            "b": (t, dy.start + t * d, np.full(T, d, np.int64)),
            "out": (t, y.start + t * k, np.full(T, k, np.int64))},
            dtype=ctx.dtype, params={"m": int(k), "k": int(d), "n": 1})
        return [cs1, cs2]


class KVCacheWritePlanner(Planner):
    """``KVCacheWrite``: x (B S, kv x hd), cache -> the cache with positions [position,
    position + S) of every sequence and key-value head written in place (models/transformers.py).
    Keys are stored transposed, (B kv, hd, L): one ``Transpose`` per (sequence, head, 16 of
    hd) turns its [S][16] rows into [16][S] runs of the cache; values, (B kv, L, hd): one
    ``Copy`` per (sequence, head, 16 tokens).  Each vertex runs on the tile holding the first
    element it writes, so the new keys and values are what crosses the exchange."""
    family = "gather"
    CHUNK = 16

    def lower(self, op, opt, ctx):
        x, cache = (_act(ctx, t) for t in op["inputs"][:2])
        a = op["attrs"]
        KV, hd, S, pos = int(a["kv_heads"]), int(a["head_dim"]), int(a["tokens"]), int(a["position"])
        shape = ctx.shape(op["inputs"][1])
        L = shape[2] if a["layout"] == "k" else shape[1]
        B = shape[0] // KV
        y = ctx.new_act(op, 0)           # the cache itself, written in place
        row = KV * hd
        if a["layout"] == "k":
            dc = min(self.CHUNK, hd)
            b, h, j = [v.ravel() for v in np.indices((B, KV, -(-hd // dc)))]
            d0 = j * dc
            w = np.minimum(dc, hd - d0)
            V = b.size
            # in: S rows of w columns; out: w runs of S positions
            vi = np.repeat(np.arange(V), S)
            s = np.tile(np.arange(S), V)
            in_s = x.start + (b[vi] * S + s) * row + h[vi] * hd + d0[vi]
            in_l = w[vi]
            vo = np.repeat(np.arange(V), w)
            jj = np.arange(vo.size) - np.repeat(np.cumsum(w) - w, w)
            out_s = y.start + ((b[vo] * KV + h[vo]) * hd + d0[vo] + jj) * L + pos
            out_l = np.full(vo.size, S, np.int64)
            first = y.start + ((b * KV + h) * hd + d0) * L + pos
            codelet = "Transpose"
        else:
            sc = min(self.CHUNK, S)
            b, h, j = [v.ravel() for v in np.indices((B, KV, -(-S // sc)))]
            s0 = j * sc
            n = np.minimum(sc, S - s0)
            V = b.size
            vi = np.repeat(np.arange(V), n)
            s = s0[vi] + np.arange(vi.size) - np.repeat(np.cumsum(n) - n, n)
            in_s = x.start + (b[vi] * S + s) * row + h[vi] * hd
            in_l = np.full(vi.size, hd, np.int64)
            vo = np.arange(V)
            first = out_s = y.start + ((b * KV + h) * L + pos + s0) * hd
            out_l = n * hd
            codelet = "Copy"
        tiles = ctx.graph.tile_of_elements(first)
        tiles = np.where(tiles < 0, spread(V, ctx.tiles), tiles)
        cs = ctx.compute_set(op, f"{a['layout']}_cache_write")
        if codelet == "Transpose":
            # one batch per width of the head-dim chunk (the last may be narrower)
            for wd in np.unique(w):
                sel = np.flatnonzero(w == wd)
                loc = np.full(V, -1, np.int64)
                loc[sel] = np.arange(sel.size)
                mi, mo = loc[vi] >= 0, loc[vo] >= 0
                ctx.graph.add_vertices(cs, "Transpose", tiles[sel], {
                    "in": (loc[vi[mi]], in_s[mi], in_l[mi]), "out": (loc[vo[mo]], out_s[mo], out_l[mo])},
                    dtype=ctx.dtype, params={"rows": S, "cols": int(wd)})
        else:
            ctx.graph.add_vertices(cs, "Copy", tiles, {"in": (vi, in_s, in_l), "out": (vo, out_s, out_l)},
                                   dtype=ctx.dtype)
        return [cs]


SPARSE_PLANNERS = {"LSHHash": LSHHashPlanner(), "LSHSelect": LSHSelectPlanner(),
                   "SparseLinear": SparseLinearPlanner(), "TopKRoute": TopKRoutePlanner(),
                   "MoEDispatch": MoEDispatchPlanner(), "MoECombine": MoECombinePlanner(),
                   "TopKRouteGrad": TopKRouteGradPlanner(), "MoEGateGrad": MoEGateGradPlanner(),
                   "KVCacheWrite": KVCacheWritePlanner()}


class GatherDispatch(Planner):
    """``PLANNERS["gather"]``: sparse op types to their planner, the rest to the original."""
    family = "gather"

    def __init__(self, base):
        self.base = base

    def _p(self, op):
        return SPARSE_PLANNERS.get(op["op"], self.base)

    def options(self, op, ctx):
        return self._p(op).options(op, ctx)

    def estimate(self, op, opt, ctx):
        return self._p(op).estimate(op, opt, ctx)

    def lower(self, op, opt, ctx):
        return self._p(op).lower(op, opt, ctx)

