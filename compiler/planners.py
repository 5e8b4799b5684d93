"""One planner per op family, all with the same interface.

A planner turns one op of the op graph into vertices over the tiles:

* ``options(op, ctx)`` lists the ways to split the op (dicts of split sizes);
* ``estimate(op, opt, ctx)`` costs one option from the codelet table and the
  chip: (cycles, temporary bytes per tile);
* ``lower(op, opt, ctx)`` adds the compute sets and vertices and returns the
  compute sets in execution order.

:func:`choose` picks the option with the fewest cycles among those whose
temporary memory fits ``available_memory_proportion`` of a tile, then the
least memory.  Adding a family is copying a sibling class.
"""
from __future__ import annotations

import numpy as np

from .codelets import CODELETS, amp_cycles, amp_padded, mac_cycles, vector_cycles
from hardware.dtypes import DTYPE_BYTES
from .layout import Act


class LoweringError(ValueError):
    pass


def spread(n: int, tiles: int) -> np.ndarray:
    """Tile of each of ``n`` items dealt in contiguous blocks over ``tiles`` tiles."""
    return ((np.arange(n, dtype=np.int64) * tiles) // max(n, 1)).astype(np.int32)


def unique_rows(rows):
    """``np.unique(rows, axis=0, return_inverse=True)`` for small non-negative ints,
    packed into one int64 key per row (much faster than the row-wise unique)."""
    rows = np.asarray(rows, np.int64)
    if rows.size and rows.min() >= 0:
        span = rows.max(axis=0) + 1
        if float(np.prod(span.astype(np.float64))) < 2.0**62:
            key = np.zeros(rows.shape[0], np.int64)
            for j in range(rows.shape[1]):
                key = key * int(span[j]) + rows[:, j]
            uk, first, inv = np.unique(key, return_index=True, return_inverse=True)
            return rows[first], inv.ravel()
    u, inv = np.unique(rows, axis=0, return_inverse=True)
    return u, inv.ravel()


def add_by_signature(ctx, cs, codelet, tiles, sig, fields, params_of, dtype=None):
    """Add vertices in one batch per distinct signature row, so that vertices whose
    windows differ (image borders, last segments) get their own parameters.

    ``fields``: name -> (vertex index, starts, lengths) with vertex index 0..V-1.
    """
    sig = np.asarray(sig, np.int64).reshape(len(tiles), -1)
    u, inv = unique_rows(sig)
    order_v = np.argsort(inv, kind="stable")
    bounds_v = np.searchsorted(inv[order_v], np.arange(len(u) + 1))
    local = np.empty(len(tiles), np.int64)
    sorted_fields = {}
    for name, (vi, st, ln) in fields.items():
        o = np.argsort(inv[vi], kind="stable")
        sorted_fields[name] = (vi[o], st[o], ln[o], np.searchsorted(inv[vi][o], np.arange(len(u) + 1)))
    for gi in range(len(u)):
        sel = order_v[bounds_v[gi]:bounds_v[gi + 1]]
        local[sel] = np.arange(sel.size)
        f2 = {}
        for name, (vi, st, ln, b) in sorted_fields.items():
            a, z = b[gi], b[gi + 1]
            f2[name] = (local[vi[a:z]], st[a:z], ln[a:z])
        ctx.graph.add_vertices(cs, codelet, tiles[sel], f2, dtype=dtype or ctx.dtype,
                               params=params_of(u[gi]))


def choose(planner, op, ctx):
    best = None
    limit = ctx.available_memory_proportion * ctx.chip.sram_bytes_per_tile
    for opt in planner.options(op, ctx):
        cyc, mem = planner.estimate(op, opt, ctx)
        key = (mem > limit, cyc, mem)
        if best is None or key < best[0]:
            best = (key, opt)
    if best is None:
        raise LoweringError(f"op {op['name']!r} ({op['op']}): no way to split it over the tiles")
    opt = dict(best[1])
    opt["est_cycles"], opt["est_temp_bytes"] = best[0][1], best[0][2]
    opt["fits_temp"] = not best[0][0]
    return opt


#: how a contraction runs: on the matrix unit (AMP, contraction padded to its width) or
#: with plain vector MACs (no padding, a fraction of the rate); chosen per op by the cost
METHODS = ("amp", "mac")
CONV_CODELET = {"amp": "ConvPartial", "mac": "ConvPartialMAC"}
MATMUL_CODELET = {"amp": "MatMulPartial", "mac": "MatMulPartialMAC"}


def contraction_cycles(opt, outer, k, dtype, chip):
    """One vertex's cycles for ``outer`` outputs x ``k``-element contractions (``k`` is
    what the AMP pads: a channel group, a k chunk) by the option's method."""
    if opt.get("method", "amp") == "mac":
        return mac_cycles(outer * k, dtype, chip)
    return amp_cycles(outer * amp_padded(k, dtype), dtype, chip)


def _pow2_upto(n, cap=64):
    out, k = [], 1
    while k <= min(n, cap):
        out.append(k)
        k *= 2
    return out


class Planner:
    family = None

    def options(self, op, ctx):
        return [{}]

    def estimate(self, op, opt, ctx):
        return 0.0, 0.0

    def lower(self, op, opt, ctx):
        raise NotImplementedError


# -- convolutions ------------------------------------------------------------------------

class ConvPlanner(Planner):
    """Conv (and ConvGradInput, as a convolution of the output gradient).

    Vertex = (input-channel part p, image n, output channel group, output row,
    row segment).  Input channels split over ``parts`` tiles produce fp32 /
    fp16 partials that ReducePartials vertices sum.
    """
    family = "conv"

    def dims(self, op, ctx):
        x, y = ctx.act(op["inputs"][0]), ctx.out_shape(op, 0)
        if len(x.logical) != 4 or len(y) != 4:
            raise LoweringError(f"op {op['name']!r} ({op['op']}): expects 4-D input and output, "
                                f"got {x.logical} -> {y}")
        a = op["attrs"]
        kh, kw = (list(a.get("kernel_shape") or ctx.weight_shape(op)[2:]) + [1, 1])[:2]
        s = (list(a.get("strides") or [1, 1]) + [1])[0]
        pads = list(a.get("pads") or [0, 0, 0, 0])
        groups = int(a.get("group", 1))
        if op["op"] == "ConvGradInput":   # a convolution of dY producing dX, stride 1 over dX
            s, pads = 1, [kh // 2, kw // 2, kh // 2, kw // 2]
        return x, y, int(kh), int(kw), int(s), int(pads[0]), int(pads[1] if len(pads) > 1 else pads[0]), groups

    def options(self, op, ctx):
        x, y, kh, kw, s, pt, pl, groups = self.dims(op, ctx)
        Wo = y[3]
        cig = x.Cg if groups == 1 else 1
        segs = sorted({max(1, -(-Wo // d)) for d in (1, 2, 4, 8)})
        return [{"wseg": w, "parts": p, "method": m} for m in METHODS
                for w in segs for p in _pow2_upto(cig, 16) if cig % p == 0]

    def _shape(self, op, opt, ctx):
        x, y, kh, kw, s, pt, pl, groups = self.dims(op, ctx)
        N, Co, Ho, Wo = y
        go = Act.dims(y) and ctx.group_for(Co)
        Cog = Co // go
        nws = -(-Wo // opt["wseg"])
        cipp = (x.C // groups) // opt["parts"]
        return x, N, Co, Ho, Wo, go, Cog, nws, cipp, kh, kw, s, pt, pl, groups

    def estimate(self, op, opt, ctx):
        x, N, Co, Ho, Wo, go, Cog, nws, cipp, kh, kw, s, pt, pl, groups = self._shape(op, opt, ctx)
        P, wseg = opt["parts"], opt["wseg"]
        chip, T, b = ctx.chip, ctx.tiles, DTYPE_BYTES[ctx.dtype]
        V = P * N * Cog * Ho * nws
        per_tile = -(-V // T)
        cig_size = x.g if cipp >= x.g else cipp
        vc = float(contraction_cycles(opt, wseg * go * kh * kw * (cipp // cig_size), cig_size, ctx.dtype, chip))
        compute = -(-per_tile // chip.workers_per_tile) * vc
        in_bytes = per_tile * kh * min(x.W, wseg * s + kw) * cipp * b
        w_bytes = min(per_tile, P * Cog) * go * cipp * kh * kw * b
        pb = DTYPE_BYTES[ctx.partials] if P > 1 else b
        out_bytes = per_tile * wseg * go * pb
        cyc = compute + (in_bytes + w_bytes) / chip.exchange_bytes_per_cycle_per_tile
        if P > 1:
            R = N * Cog * Ho * nws
            rpt = -(-R // T)
            cyc += rpt * P * wseg * go * pb / chip.exchange_bytes_per_cycle_per_tile
            cyc += -(-rpt // chip.workers_per_tile) * float(vector_cycles(P * wseg * go, ctx.partials, chip))
            cyc += chip.sync_cycles
        return cyc, in_bytes + w_bytes + out_bytes

    def lower(self, op, opt, ctx):
        x, N, Co, Ho, Wo, go, Cog, nws, cipp, kh, kw, s, pt, pl, groups = self._shape(op, opt, ctx)
        P, wseg = opt["parts"], opt["wseg"]
        g, T = ctx.graph, ctx.tiles
        y = ctx.new_act(op, 0, group=go)
        w = ctx.weights(op)
        # vertex grid, input-channel part outermost so parts land on different tiles
        p, n, cog, oh, ws = [a.ravel() for a in np.indices((P, N, Cog, Ho, nws))]
        V = p.size
        tiles = spread(V, T)
        w0 = ws * wseg
        w1 = np.minimum(Wo, w0 + wseg)
        # the window: kernel rows inside the image, pixels inside the image, padding outside
        if op["op"] == "ConvGradInput":
            # dX from dY: the transposed convolution reads dY zero-dilated by the forward
            # stride; windows are placed on dY's (smaller) grid in proportion
            ih0 = (oh * x.H) // Ho - pt
            iws = (w0 * x.W) // Wo - pl
            iwe = np.maximum(((w1 - 1) * x.W) // Wo - pl + kw, iws + 1)
        else:
            ih0 = oh * s - pt
            iws = w0 * s - pl
            iwe = (w1 - 1) * s - pl + kw
        rt = np.clip(-ih0, 0, kh)
        rb = np.clip(x.H - ih0, 0, kh)
        nrows = rb - rt
        if np.any(nrows <= 0):
            raise LoweringError(f"op {op['name']!r}: a kernel window lies entirely in the padding")
        pleft = np.maximum(-iws, 0)
        pright = np.maximum(iwe - x.W, 0)
        a0, a1 = iws + pleft, iwe - pright
        cig_size = x.g if cipp >= x.g else cipp
        ncig = max(1, cipp // x.g)
        # input edges: for each channel group c of this part, each row r inside the image
        cnt = ncig * nrows
        vi = np.repeat(np.arange(V), cnt)
        k = np.arange(vi.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        c = k // nrows[vi]
        r = rt[vi] + k % nrows[vi]
        if groups == 1:
            cig = p[vi] * ncig + c
        else:   # grouped / depthwise: the input channels that feed this output group
            cig = np.minimum((cog[vi] * go * x.C // Co) // x.g + c, x.Cg - 1)
        in_s, in_l = x.rows(n[vi], cig, ih0[vi] + r, a0[vi], a1[vi])
        blk = ncig * kh * kw * cig_size * go
        exact_w = groups == 1 and P * Cog * blk == w.numel
        w_s = w.start + ((p * Cog + cog) * blk) % max(w.numel, 1)
        w_l = np.full(V, min(blk, w.numel), np.int64)
        w_s = np.minimum(w_s, w.start + w.numel - w_l)
        if exact_w and op["phase"] == "fwd":
            ctx.host_layout.setdefault(op["inputs"][1], ("conv", {"P": P, "Cog": Cog, "go": go, "ncig": ncig,
                                                                   "cig": cig_size, "kh": kh, "kw": kw}))
        base = {"kh": kh, "kw": kw, "stride": s, "groups": ncig, "cig": cig_size, "cog": go}
        sig = np.stack([rt, kh - rb, pleft, pright, w1 - w0], axis=1)

        def params_of(u, extra=None):
            return dict(base, ptop=int(u[0]), pbot=int(u[1]), pleft=int(u[2]), pright=int(u[3]), wout=int(u[4]),
                        **(extra or {}))

        cs = ctx.compute_set(op, "conv")
        out = []
        if P == 1:
            o_s, o_l = y.rows(n, cog, oh, w0, w1)
            g._map_intervals(o_s, o_l, tiles)
            add_by_signature(ctx, cs, CONV_CODELET[opt.get("method", "amp")], tiles, sig,
                             {"in": (vi, in_s, in_l), "weights": (np.arange(V), w_s, w_l),
                              "out": (np.arange(V), o_s, o_l)}, params_of)
            out.append(cs)
        else:
            part = g.add_variable(ctx.partials, (P, N, Cog, Ho, Wo, go), f"{op['name']}/partials",
                                  kind="temporary", op=op["name"])
            ps = part._start + (((((p * N + n) * Cog + cog) * Ho + oh) * Wo + w0) * go)
            pl_ = (w1 - w0) * go
            g._map_intervals(ps, pl_, tiles)
            add_by_signature(ctx, cs, CONV_CODELET[opt.get("method", "amp")], tiles, sig,
                             {"in": (vi, in_s, in_l), "weights": (np.arange(V), w_s, w_l),
                              "out": (np.arange(V), ps, pl_)},
                             lambda u: params_of(u, {"partials": ctx.partials}))
            # reduce the partials: one vertex per output row segment, parts in order
            R = N * Cog * Ho * nws
            rt_ = spread(R, T)
            o_s, o_l = y.rows(n[:R], cog[:R], oh[:R], w0[:R], w1[:R])
            g._map_intervals(o_s, o_l, rt_)
            ri = np.repeat(np.arange(R), P)
            src = ps.reshape(P, R).T.ravel()
            cs2 = ctx.compute_set(op, "reduce")
            g.add_vertices(cs2, "ReducePartials", rt_, {"in": (ri, src, np.repeat(pl_[:R], P)),
                                                        "out": (np.arange(R), o_s, o_l)},
                           dtype=ctx.dtype, params={"k": P, "partials": ctx.partials})
            out += [cs, cs2]
        if len(op["inputs"]) > 2 and op["inputs"][2] in ctx.acts:   # bias: a per-channel add in place
            out += ElementwisePlanner().lower(op, opt, ctx, codelet="Add", inputs=[op["outputs"][0], op["inputs"][2]],
                                              out=y, suffix="bias")
        return out


# -- matrix products -----------------------------------------------------------------------

class MatMulPlanner(Planner):
    """Gemm / MatMul (batched too) and every contraction without a spatial window
    (gradients of matmuls, ConvGradWeight).  Vertex = (k part, batch, row block,
    column block).  Operands read with their exact regions when they are
    row-major matrices of the right shape, otherwise an equal-volume region of
    the operand (documented approximation for gradient contractions)."""
    family = "matmul"

    def dims(self, op, ctx):
        a, b = op["inputs"][0], op["inputs"][1]
        sa = ctx.shape(a)
        sy = ctx.out_shape(op, 0)
        flops = max(op.get("flops", 0), 1)
        if op["op"] in ("Gemm", "MatMul") and len(sa) >= 2:
            K = sa[-1] if not op["attrs"].get("transA") else sa[-2]
            M = int(np.prod(sy[:-1]))
            N = sy[-1]
            batch = 1
            if op["op"] == "MatMul" and len(sa) > 2 and len(ctx.shape(b)) > 2:
                batch = int(np.prod(sy[:-2]))
                M = sy[-2]
            return batch, M, int(K), N
        # gradient contractions: output (M, N) flattened, K from the FLOPs
        out = int(np.prod(sy))
        N = sy[-1] if len(sy) > 1 else 1
        if len(sy) == 4:   # weight gradient (Co, Ci, kh, kw)
            N = int(np.prod(sy[1:]))
        M = max(out // max(N, 1), 1)
        K = max(int(round(flops / 2 / max(out, 1))), 1)
        return 1, M, K, N

    def options(self, op, ctx):
        batch, M, K, N = self.dims(op, ctx)
        g = ctx.group_for(N)
        opts = []
        for mseg in sorted({1, 2, 4, 8, 16, M} & set(range(1, M + 1))):
            for nb in sorted({g, 2 * g, 4 * g, N} & set(range(1, N + 1))):
                for P in _pow2_upto(K, 64):
                    for m in METHODS:
                        opts.append({"mseg": mseg, "nb": nb, "parts": P, "method": m})
        return opts

    def estimate(self, op, opt, ctx):
        batch, M, K, N = self.dims(op, ctx)
        chip, T, b = ctx.chip, ctx.tiles, DTYPE_BYTES[ctx.dtype]
        mseg, nb, P = opt["mseg"], opt["nb"], opt["parts"]
        kpp = -(-K // P)
        V = P * batch * (-(-M // mseg)) * (-(-N // nb))
        per_tile = -(-V // T)
        vc = float(contraction_cycles(opt, mseg * nb, kpp, ctx.dtype, chip))
        compute = -(-per_tile // chip.workers_per_tile) * vc
        pb = DTYPE_BYTES[ctx.partials] if P > 1 else b
        bytes_in = per_tile * (mseg * kpp + kpp * nb) * b
        out_b = per_tile * mseg * nb * pb
        cyc = compute + bytes_in / chip.exchange_bytes_per_cycle_per_tile + V / T * 2 * chip.exchange_message_cycles
        if P > 1:
            R = V // P
            rpt = -(-R // T)
            cyc += rpt * P * mseg * nb * pb / chip.exchange_bytes_per_cycle_per_tile
            cyc += -(-rpt // chip.workers_per_tile) * float(vector_cycles(P * mseg * nb, ctx.partials, chip))
            cyc += chip.sync_cycles
        return cyc, bytes_in + out_b

    def lower(self, op, opt, ctx):
        batch, M, K, N = self.dims(op, ctx)
        g, T = ctx.graph, ctx.tiles
        mseg, nb, P = opt["mseg"], opt["nb"], opt["parts"]
        y = ctx.new_act(op, 0)
        A = ctx.act(op["inputs"][0])
        b_is_act = ctx.opg.tensors[op["inputs"][1]].kind not in ("param", "constant", "state")
        B = ctx.act(op["inputs"][1])
        exact = op["op"] in ("Gemm", "MatMul") and A.numel == batch * M * K and B.numel in (K * N, batch * K * N)
        nmb, nnb = -(-M // mseg), -(-N // nb)
        p, bt, mb, jb = [a.ravel() for a in np.indices((P, batch, nmb, nnb))]
        V = p.size
        tiles = spread(V, T)
        m0, m1 = mb * mseg, np.minimum(M, mb * mseg + mseg)
        n0, n1 = jb * nb, np.minimum(N, jb * nb + nb)
        k0, k1 = (p * K) // P, ((p + 1) * K) // P
        rows, kk, ncols = m1 - m0, k1 - k0, n1 - n0
        # a: rows m0..m1 of batch bt, columns k0..k1 (one interval per row)
        ai = np.repeat(np.arange(V), rows)
        r = np.arange(ai.size) - np.repeat(np.cumsum(rows) - rows, rows)
        arow = bt[ai] * M + m0[ai] + r
        a_l = np.minimum(kk[ai], A.numel)
        a_s = np.minimum(A.start + (arow * K + k0[ai]) % max(A.numel, 1), A.start + A.numel - a_l)
        if b_is_act and exact and op["attrs"].get("transB"):
            # a transposed activation operand: element (k, n) is at n * K + k, one edge per element
            cnt = kk * ncols
            bi = np.repeat(np.arange(V), cnt)
            q = np.arange(bi.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            kq, nq = k0[bi] + q // ncols[bi], n0[bi] + q % ncols[bi]
            boff = (bt[bi] * K * N if B.numel == batch * K * N else 0) + nq * K + kq
            b_f = (bi, B.start + boff, np.ones(bi.size, np.int64))
        elif b_is_act and exact:
            # an activation operand (attention): kk rows of ncols columns, row-major
            bi = np.repeat(np.arange(V), kk)
            rk = np.arange(bi.size) - np.repeat(np.cumsum(kk) - kk, kk)
            boff = (bt[bi] * K * N if B.numel == batch * K * N else 0) + (k0[bi] + rk) * N + n0[bi]
            b_f = (bi, B.start + boff, ncols[bi])
        else:
            # weights are ours to lay out: one contiguous [kk][ncols] block per (part, column block)
            blk_p, blk_j = [a.ravel() for a in np.indices((P, nnb))]
            bsz = ((((blk_p + 1) * K) // P - (blk_p * K) // P) * (np.minimum(N, blk_j * nb + nb) - blk_j * nb))
            boffs = np.concatenate(([0], np.cumsum(bsz)))[:-1]
            blk = (k1 - k0) * (n1 - n0)
            b_l = np.minimum(blk, B.numel)
            b_s = np.minimum(B.start + boffs[p * nnb + jb] % max(B.numel, 1), B.start + B.numel - b_l)
            b_f = (np.arange(V), b_s, b_l)
            if exact and op["phase"] == "fwd":
                ctx.host_layout.setdefault(op["inputs"][1], ("matmul", {"P": P, "nb": nb, "K": K, "N": N,
                                                                         "trans": bool(op["attrs"].get("transB"))}))
        oi = np.repeat(np.arange(V), rows)
        orow = bt[oi] * M + m0[oi] + r
        sig = np.stack([rows, kk, ncols], axis=1)
        cs = ctx.compute_set(op, "matmul")
        out = []
        if P == 1:
            o_s = y.start + orow * N + n0[oi]
            o_l = ncols[oi]
            g._map_intervals(o_s, o_l, tiles[oi])
            add_by_signature(ctx, cs, MATMUL_CODELET[opt.get("method", "amp")], tiles, sig, {"a": (ai, a_s, a_l), "b": b_f, "out": (oi, o_s, o_l)},
                             lambda u: {"m": int(u[0]), "k": int(u[1]), "n": int(u[2])})
            out.append(cs)
        else:
            part = g.add_variable(ctx.partials, (P, batch * M, N), f"{op['name']}/partials", kind="temporary",
                                  op=op["name"])
            ps = part._start + p[oi] * (batch * M * N) + orow * N + n0[oi]
            g._map_intervals(ps, ncols[oi], tiles[oi])
            add_by_signature(ctx, cs, MATMUL_CODELET[opt.get("method", "amp")], tiles, sig, {"a": (ai, a_s, a_l), "b": b_f,
                                                                   "out": (oi, ps, ncols[oi])},
                             lambda u: {"m": int(u[0]), "k": int(u[1]), "n": int(u[2]), "partials": ctx.partials})
            # reduction: one vertex per (batch, row block, column block); its input is
            # ordered part-major so that it reads as [parts][rows][columns]
            R = V // P
            rows_r = rows[:R]
            rt_ = spread(R, T)
            cnt = P * rows_r
            ri = np.repeat(np.arange(R), cnt)
            k = np.arange(ri.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            pp, rr = k // rows_r[ri], k % rows_r[ri]
            src = part._start + pp * (batch * M * N) + (bt[ri] * M + m0[ri] + rr) * N + n0[ri]
            oi_r = np.repeat(np.arange(R), rows_r)
            rr2 = np.arange(oi_r.size) - np.repeat(np.cumsum(rows_r) - rows_r, rows_r)
            o_s = y.start + (bt[oi_r] * M + m0[oi_r] + rr2) * N + n0[oi_r]
            o_l = ncols[oi_r]
            g._map_intervals(o_s, o_l, rt_[oi_r])
            cs2 = ctx.compute_set(op, "reduce")
            g.add_vertices(cs2, "ReducePartials", rt_, {"in": (ri, src, ncols[ri]), "out": (oi_r, o_s, o_l)},
                           dtype=ctx.dtype, params={"k": P, "partials": ctx.partials})
            out += [cs, cs2]
        if op["op"] == "Gemm" and len(op["inputs"]) > 2 and op["inputs"][2] in ctx.acts:
            out += ElementwisePlanner().lower(op, opt, ctx, codelet="Add", inputs=[op["outputs"][0], op["inputs"][2]],
                                              out=y, suffix="bias")
        return out


# -- element-wise and everything chunked along the output -------------------------------------

def chunks(ctx, y: Act, like: Act | None, max_chunk=None):
    """Split an output into vertex-sized chunks that follow a tensor's mapping.

    Chunks never cross an (image, channel group) block for 4-D tensors or a row
    for 2-D ones, so per-channel operands stay one region, nor a boundary of
    ``like``'s tile mapping, so reads stay local; each tile's share is split
    into at least ``workers_per_tile`` chunks (aligned to the channel group).
    Returns (starts, lengths, tiles, unit index) relative to ``y``.
    """
    spatial = y.H * y.W > 1
    unit = y.H * y.W * y.g if spatial else y.C
    step = y.g if spatial else 1
    n = y.numel
    W = ctx.chip.workers_per_tile
    T = ctx.tiles
    bounds = np.arange(unit, n, unit, dtype=np.int64)
    tmaps = ctx.graph.tile_map
    runs = tmaps.runs(like.var) if like is not None else None
    if runs is not None and ctx.graph.variables[like.var].size >= n:
        brk = runs[0][(runs[0] > 0) & (runs[0] < n)]
        bounds = np.union1d(bounds, brk - brk % step)
        tmv = True
    else:
        tmv = None
        per = -(-(n // step) // T) * step
        bounds = np.union1d(bounds, np.arange(per, n, per, dtype=np.int64))
    bounds = bounds[(bounds > 0) & (bounds < n)]
    st = np.concatenate(([0], bounds)).astype(np.int64)
    ln = np.diff(np.concatenate((st, [n]))).astype(np.int64)
    linear = np.minimum(st // max(-(-(n // step) // T) * step, 1), T - 1)
    if tmv is not None:
        at = tmaps.tile_of(like.var, st)
        tiles = np.where(at >= 0, at, linear).astype(np.int32)
    else:
        tiles = linear.astype(np.int32)
    # split further so every tile has work for its workers, and no chunk exceeds the cap
    per_tile = np.bincount(tiles, minlength=T)
    k = np.maximum(1, -(-W // np.maximum(per_tile[tiles], 1)))
    if max_chunk:
        k = np.maximum(k, -(-ln // max_chunk))
    k = np.minimum(k, np.maximum(ln // step, 1))
    pi = np.repeat(np.arange(st.size), k)
    j = np.arange(pi.size) - np.repeat(np.cumsum(k) - k, k)
    units = ln[pi] // step
    lo = (j * units) // k[pi] * step
    hi = np.where(j == k[pi] - 1, ln[pi], ((j + 1) * units) // k[pi] * step)
    cst = st[pi] + lo
    return cst, hi - lo, tiles[pi], cst // unit


def per_channel(y: Act, b: Act, st, ln, ui):
    """The region of a per-channel operand ``b`` that chunks (st, ln) of ``y`` need.

    Images: the g channels of the chunk's channel group (the chunk repeats them per
    pixel).  Rows: the columns the chunk covers (chunks never cross a row).
    """
    if y.H * y.W > 1:
        bl = np.full(st.size, min(y.g, b.numel), np.int64)
        cg = ui % max(y.Cg, 1)
        return b.start + np.minimum(cg * y.g, b.numel - bl), bl
    col = st % max(y.C, 1)
    bl = np.minimum(ln, b.numel)
    return b.start + np.minimum(col % max(b.numel, 1), b.numel - bl), bl


class ElementwisePlanner(Planner):
    """Unary and binary maps.  Output chunks follow the first input's mapping so
    reads are local; a smaller operand (bias, per-channel scale) is broadcast."""
    family = "elementwise"
    CODELET = {"Relu": "Relu", "Add": "Add", "Sum": "Add", "Sub": "Sub", "Mul": "Mul", "Div": "Div",
               "Exp": "Exp", "Sqrt": "Sqrt", "Tanh": "Tanh", "Sigmoid": "Sigmoid", "Gelu": "Gelu",
               "Erf": "Tanh", "Max": "Max", "ReluGrad": "ReluGrad", "Dropout": "Copy",
               "Identity": "Copy", "Cast": "Cast", "Transpose": "Copy", "Concat": "Copy"}

    def estimate(self, op, opt, ctx):
        n = int(np.prod(ctx.out_shape(op, 0)))
        per_tile = -(-n // ctx.tiles)
        return float(vector_cycles(per_tile / ctx.chip.workers_per_tile, ctx.dtype, ctx.chip)), 0.0

    def lower(self, op, opt, ctx, codelet=None, inputs=None, out=None, params=None, suffix="map"):
        ins = [t for t in (inputs or op["inputs"]) if t in ctx.acts or ctx.is_param(t)]
        y = out or ctx.new_act(op, 0)
        srcs = [ctx.act(t) if t in ctx.acts else ctx.weights_by_name(t) for t in ins]
        big = [s for s in srcs if s.numel == y.numel]
        small = [s for s in srcs if s.numel != y.numel]
        like = big[0] if big else None
        st, ln, tiles, ui = chunks(ctx, y, like)
        y_s = y.start + st
        ctx.graph._map_intervals(y_s, ln, tiles)
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


class PoolPlanner(Planner):
    """MaxPool / AveragePool / GlobalAveragePool: one vertex per output row segment."""
    family = "pool"

    def estimate(self, op, opt, ctx):
        n = int(np.prod(ctx.out_shape(op, 0)))
        return float(vector_cycles(-(-n // ctx.tiles) * 9 / ctx.chip.workers_per_tile, ctx.dtype, ctx.chip)), 0.0

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
        ctx.graph._map_intervals(o_s, o_l, tiles)
        cs = ctx.compute_set(op, "pool")
        base = {"kh": int(kh), "kw": int(kw), "stride": int(s), "wout": int(y.W), "c": int(x.g),
                "pleft": int(pleft), "pright": int(pright), "op": "max" if "Max" in op["op"] else "avg"}
        add_by_signature(ctx, cs, "Pool", tiles, np.stack([rt, kh - rb], axis=1),
                         {"in": (vi, in_s, in_l), "out": (np.arange(V), o_s, o_l)},
                         lambda u: dict(base, ptop=int(u[0]), pbot=int(u[1])))
        return [cs]


class ReducePlanner(Planner):
    """Reductions over chunks of the input into per-chunk partial results, then a
    ReducePartials per output element group (bias gradients, ReduceMean, norm statistics)."""
    family = "reduce"

    def estimate(self, op, opt, ctx):
        n = max(ctx.numel(t) for t in op["inputs"] if t in ctx.acts or ctx.is_param(t))
        return float(vector_cycles(-(-n // ctx.tiles) / ctx.chip.workers_per_tile, ctx.dtype, ctx.chip)), 0.0

    def lower(self, op, opt, ctx, src=None, out=None, suffix="reduce"):
        x = src or ctx.act(op["inputs"][0])
        y = out or ctx.new_act(op, 0)
        st, ln, tiles, ui = chunks(ctx, x, x)
        V = st.size
        part = ctx.graph.add_variable(ctx.partials, (V,), f"{op['name']}/{suffix}/partials", kind="temporary",
                                      op=op["name"])
        ctx.graph._map_intervals(part._start + np.arange(V), np.ones(V, np.int64), tiles)
        cs = ctx.compute_set(op, suffix)
        ctx.graph.add_vertices(cs, "Reduce", tiles, {"in": (np.arange(V), x.start + st, ln),
                                                     "out": (np.arange(V), part._start + np.arange(V), np.ones(V, np.int64))},
                               dtype=x.dtype, params={"op": "add", "partials": ctx.partials})
        # second stage: each output element reduces an equal share of the partials
        R = y.numel
        per = max(V // max(R, 1), 1)
        rt = spread(R, ctx.tiles)
        r_s = part._start + np.minimum(np.arange(R) * per, V - per)
        ctx.graph._map_intervals(y.start + np.arange(R), np.ones(R, np.int64), rt)
        cs2 = ctx.compute_set(op, suffix + "-final")
        ctx.graph.add_vertices(cs2, "ReducePartials", rt, {"in": (np.arange(R), r_s, np.full(R, per)),
                                                           "out": (np.arange(R), y.start + np.arange(R), np.ones(R, np.int64))},
                               dtype=ctx.dtype, params={"k": per, "partials": ctx.partials})
        return [cs, cs2]


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
        scale = ctx.weights_by_name(params[0]) if params else None
        shift = ctx.weights_by_name(params[1]) if len(params) > 1 else scale
        if op["op"] == "BatchNormalization" and not ctx.training and len(params) >= 4:
            # inference: y = x * s + t with s = scale / sqrt(var + eps), t = B - mean * s, folded on the host
            eps = float(op["attrs"].get("epsilon", 1e-5))
            scale = ctx.derived_weight(op, "folded_scale", (y.C,), ("bn_scale", params[:4], eps))
            shift = ctx.derived_weight(op, "folded_shift", (y.C,), ("bn_shift", params[:4], eps))
        st, ln, tiles, ui = chunks(ctx, y, x)
        ctx.graph._map_intervals(y.start + st, ln, tiles)
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


class SoftmaxPlanner(Planner):
    """Softmax over rows: reduce-max, subtract, exp, reduce-add, divide."""
    family = "softmax"

    def estimate(self, op, opt, ctx):
        return 5 * ElementwisePlanner().estimate(op, opt, ctx)[0], 0.0

    def lower(self, op, opt, ctx):
        x = ctx.act(op["inputs"][0])
        y = ctx.new_act(op, 0)
        rows, cols = x.numel // x.C, x.C
        r = np.arange(rows)
        tiles = ctx.graph.tile_of_elements(x.start + r * cols)
        tiles = np.where(tiles < 0, spread(rows, ctx.tiles), tiles)
        stat = ctx.graph.add_variable(ctx.dtype, (2, rows), f"{op['name']}/stats", kind="temporary", op=op["name"])
        ctx.graph._map_intervals(stat._start + np.concatenate((r, rows + r)), np.ones(2 * rows, np.int64),
                                 np.concatenate((tiles, tiles)))
        ctx.graph._map_intervals(y.start + r * cols, np.full(rows, cols), tiles)
        one = np.ones(rows, np.int64)
        full = np.full(rows, cols, np.int64)
        g = ctx.graph
        css = []
        for step, (codelet, fields, params) in enumerate([
            ("Reduce", {"in": (r, x.start + r * cols, full), "out": (r, stat._start + r, one)}, {"op": "max"}),
            ("BroadcastOp", {"in": (r, x.start + r * cols, full), "b": (r, stat._start + r, one),
                             "out": (r, y.start + r * cols, full)}, {"op": "sub"}),
            ("Exp", {"in": (r, y.start + r * cols, full), "out": (r, y.start + r * cols, full)}, {}),
            ("Reduce", {"in": (r, y.start + r * cols, full), "out": (r, stat._start + rows + r, one)}, {"op": "add"}),
            ("BroadcastOp", {"in": (r, y.start + r * cols, full), "b": (r, stat._start + rows + r, one),
                             "out": (r, y.start + r * cols, full)}, {"op": "div"}),
        ]):
            cs = ctx.compute_set(op, ["max", "sub", "exp", "sum", "div"][step])
            g.add_vertices(cs, codelet, tiles, fields, dtype=ctx.dtype, params=params)
            css.append(cs)
        return css


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
            ctx.graph._map_intervals(t.start + r * n, np.full(rows, n), tiles)
        cs = ctx.compute_set(op, "loss")
        ctx.graph.add_vertices(cs, "SoftmaxCrossEntropy", tiles, {
            "logits": (r, x.start + r * cols, np.full(rows, cols)),
            "label": (r, lbl.start + np.minimum(r, lbl.numel - 1), np.ones(rows, np.int64)),
            "loss": (r, loss.start + np.minimum(r, loss.numel - 1), np.ones(rows, np.int64)),
            "grad": (r, grad.start + r * cols, np.full(rows, cols))}, dtype=ctx.dtype, params={"scale": 1.0 / rows})
        if not mean:
            return [cs]
        ctx.graph._map_intervals(np.array([out_loss.start]), np.array([1]), tiles[:1])
        cs2 = ctx.compute_set(op, "mean")
        ctx.graph.add_vertices(cs2, "Reduce", tiles[:1], {"in": (np.zeros(1, np.int64), np.array([loss.start]), np.array([rows])),
                                                          "out": (np.zeros(1, np.int64), np.array([out_loss.start]), np.array([1]))},
                               dtype=ctx.dtype, params={"op": "add", "scale": 1.0 / rows})
        return [cs, cs2]


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
            ctx.graph._map_intervals(s.start + st, ln, tiles)
        cs = ctx.compute_set(op, "update")
        ctx.graph.add_vertices(cs, "Adam" if adam else "SGDMomentum", tiles, fields, dtype=ctx.dtype, params={})
        for name in op["outputs"]:
            ctx.alias(name, w if ctx.numel(name) == w.numel else states[0])
        return [cs]


class GatherPlanner(Planner):
    """Gather / embedding lookup: one DynamicSlice per (row, column block) on the
    tile holding that block of the table."""
    family = "gather"

    def lower(self, op, opt, ctx):
        tname, iname = op["inputs"][0], op["inputs"][1]
        table = ctx.act(tname) if tname in ctx.acts else ctx.weights_by_name(tname)
        index = ctx.act(iname) if iname in ctx.acts else ctx.weights_by_name(iname)
        y = ctx.new_act(op, 0)
        rows = index.numel
        C = table.C
        cb = min(C, 64)
        nb = -(-C // cb)
        ri, bi = [a.ravel() for a in np.indices((rows, nb))]
        V = ri.size
        vrows = table.numel // max(C, 1)
        t_s = table.start + bi * vrows * cb
        t_l = np.minimum(vrows * cb, table.start + table.numel - t_s)
        # read the part of the block held by the tile the vertex runs on (no exchange of the table)
        runs = ctx.graph.tile_map.runs(table.var)
        if runs is not None:
            brk = runs[0][1:]
            rel = t_s - table.start
            nxt = np.concatenate((brk, [ctx.graph.variables[table.var].size]))[np.searchsorted(brk, rel, side="right")]
            t_l = np.maximum(np.minimum(t_l, nxt - rel), 1)
        tiles = ctx.graph.tile_of_elements(t_s)
        tiles = np.where(tiles < 0, spread(V, ctx.tiles), tiles)
        o_s = y.start + (ri * C + bi * cb) % max(y.numel, 1)
        o_l = np.minimum(cb, C - bi * cb)
        ctx.graph._map_intervals(o_s, o_l, tiles)
        idx_t = ctx.int_index(index)
        cs = ctx.compute_set(op, "gather")
        ctx.graph.add_vertices(cs, "DynamicSlice", tiles, {
            "table": (np.arange(V), t_s, t_l),
            "index": (np.arange(V), idx_t.start + ri % idx_t.numel, np.ones(V, np.int64)),
            "out": (np.arange(V), o_s, o_l)}, dtype=ctx.dtype, params={"row": int(cb)})
        return [cs]


class ReshapePlanner(Planner):
    """Views: the output shares the input's storage (no vertices)."""
    family = "reshape"

    def lower(self, op, opt, ctx):
        src = op["inputs"][0]
        a = ctx.act(src) if src in ctx.acts else ctx.weights_by_name(src)
        shape = ctx.out_shape(op, 0)
        if op["op"] == "Transpose" and len(shape) > 1 and shape != a.logical:
            return ElementwisePlanner().lower(op, opt, ctx, codelet="Copy", inputs=[src], suffix="transpose")
        if len(a.logical) == 4 and a.H * a.W > 1 and a.g > 1 and tuple(shape) != a.logical:
            return self._to_row_major(op, a, shape, ctx)
        ctx.acts[op["outputs"][0]] = a.alias(op["outputs"][0], shape)
        return []

    def _to_row_major(self, op, a, shape, ctx):
        """Flatten a channel-grouped image into NCHW order: one Copy per image row and
        channel group, writing each element to its strided place."""
        y = ctx.new_act(op, 0)
        n, cg, h = [v.ravel() for v in np.indices((a.N, a.Cg, a.H))]
        V = n.size
        tiles = ctx.graph.tile_of_elements(a.rows(n, cg, h, np.zeros(V, np.int64), np.zeros(V, np.int64))[0])
        in_s, in_l = a.rows(n, cg, h, np.zeros(V, np.int64), np.full(V, a.W))
        w, ci = [v.ravel() for v in np.indices((a.W, a.g))]
        dst = (y.start + n[:, None] * (a.C * a.H * a.W) + (cg[:, None] * a.g + ci[None, :]) * (a.H * a.W)
               + h[:, None] * a.W + w[None, :]).ravel()
        vi = np.repeat(np.arange(V), a.W * a.g)
        ctx.graph._map_intervals(dst, np.ones(dst.size, np.int64), tiles[vi])
        cs = ctx.compute_set(op, "flatten")
        ctx.graph.add_vertices(cs, "Copy", tiles, {"in": (np.arange(V), in_s, in_l),
                                                   "out": (vi, dst, np.ones(dst.size, np.int64))}, dtype=ctx.dtype)
        return [cs]


class ConcatPlanner(Planner):
    """Concat: copy vertices move each input's chunks into the output."""
    family = "concat"

    def lower(self, op, opt, ctx):
        y = ctx.new_act(op, 0)
        off = 0
        css = []
        cs = ctx.compute_set(op, "concat")
        for t in op["inputs"]:
            if t not in ctx.acts and not ctx.is_param(t):
                continue
            x = ctx.act(t) if t in ctx.acts else ctx.weights_by_name(t)
            st, ln, tiles, ui = chunks(ctx, x, x)
            ln = np.minimum(ln, y.numel - np.minimum(off + st, y.numel))
            keep = ln > 0
            st, ln, tiles = st[keep], ln[keep], tiles[keep]
            ctx.graph._map_intervals(y.start + off + st, ln, tiles)
            i = np.arange(st.size)
            ctx.graph.add_vertices(cs, "Copy", tiles, {"in": (i, x.start + st, ln), "out": (i, y.start + off + st, ln)},
                                   dtype=ctx.dtype)
            off += x.numel
        css.append(cs)
        return css


PLANNERS = {p.family: p for p in (ConvPlanner(), MatMulPlanner(), ElementwisePlanner(), PoolPlanner(),
                                  ReducePlanner(), NormPlanner(), SoftmaxPlanner(), LossPlanner(),
                                  OptimizerPlanner(), GatherPlanner(), ReshapePlanner(), ConcatPlanner())}
