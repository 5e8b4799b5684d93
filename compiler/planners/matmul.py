"""Matrix products: Gemm, MatMul (batched too) and the contractions without a spatial
window (gradients of matmuls, ConvGradWeight)."""
from __future__ import annotations

import numpy as np

from hardware.dtypes import DTYPE_BYTES
from .base import Planner, add_by_signature, pow2_upto, spread
from .cost import MATMUL_CODELET, METHODS, codelet_cycles, compute_phase_cycles, contraction_cycles, exchange_cycles
from .elementwise import ElementwisePlanner


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
                for P in pow2_upto(K, 64):
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
        compute = compute_phase_cycles(per_tile, contraction_cycles(opt, mseg * nb, kpp, ctx.dtype, chip), chip)
        pb = DTYPE_BYTES[ctx.partials] if P > 1 else b
        # a tile's vertices are consecutive in the grid (part, batch, row block, column
        # block): they share row blocks of a and column blocks of b
        nnb = -(-N // nb)
        a_blocks = 1 + (per_tile - 1) // nnb
        b_blocks = min(nnb, per_tile) * (1 + (per_tile - 1) // (nnb * -(-M // mseg)))
        bytes_in = (a_blocks * mseg * kpp + b_blocks * kpp * nb) * b
        out_b = per_tile * mseg * nb * pb if P > 1 else 0   # partials; the output is not temporary
        # the bytes, then the messages (two terms, so that the sum rounds as it always has)
        cyc = compute + exchange_cycles(bytes_in, chip) + exchange_cycles(0, chip, messages_per_tile=V / T * 2)
        if P > 1:
            rpt = -(-(V // P) // T)
            cyc += exchange_cycles(rpt * P * mseg * nb * pb, chip)
            cyc += compute_phase_cycles(rpt, codelet_cycles("ReducePartials", {"in": P * mseg * nb}, ctx.dtype,
                                                            {"k": P, "partials": ctx.partials}, chip), chip)
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
            g.map_intervals(o_s, o_l, tiles[oi])
            add_by_signature(ctx, cs, MATMUL_CODELET[opt.get("method", "amp")], tiles, sig, {"a": (ai, a_s, a_l), "b": b_f, "out": (oi, o_s, o_l)},
                             lambda u: {"m": int(u[0]), "k": int(u[1]), "n": int(u[2])})
            out.append(cs)
        else:
            part = g.add_variable(ctx.partials, (P, batch * M, N), f"{op['name']}/partials", kind="temporary",
                                  op=op["name"])
            ps = part._start + p[oi] * (batch * M * N) + orow * N + n0[oi]
            g.map_intervals(ps, ncols[oi], tiles[oi])
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
            g.map_intervals(o_s, o_l, rt_[oi_r])
            cs2 = ctx.compute_set(op, "reduce")
            g.add_vertices(cs2, "ReducePartials", rt_, {"in": (ri, src, ncols[ri]), "out": (oi_r, o_s, o_l)},
                           dtype=ctx.dtype, params={"k": P, "partials": ctx.partials})
            out += [cs, cs2]
        if op["op"] == "Gemm" and len(op["inputs"]) > 2 and op["inputs"][2] in ctx.acts:
            out += ElementwisePlanner().lower(op, opt, ctx, codelet="Add", inputs=[op["outputs"][0], op["inputs"][2]],
                                              out=y, suffix="bias")
        return out
