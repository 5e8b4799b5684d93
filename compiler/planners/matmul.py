"""Matrix products: Gemm, MatMul (batched too) and the contractions without a spatial
window (gradients of matmuls, ConvGradWeight)."""
from __future__ import annotations

import functools
import math

import numpy as np

from hardware.dtypes import DTYPE_BYTES
from .base import Planner, add_by_signature, pow2_upto, spread
from .chunking import reduce_partials
from .cost import (MATMUL_CODELET, METHODS, codelet_cycles, codelet_passes, compute_phase_cycles, contraction_cycles,
                   exchange_cycles, supervisor_phase_cycles)
from .elementwise import ElementwisePlanner

#: serial steps a matmul may be split into (where they divide its blocks)
SERIAL = (2, 4, 8)


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
            M = int(math.prod(sy[:-1]))
            N = sy[-1]
            batch = 1
            if op["op"] == "MatMul" and len(sa) > 2 and len(ctx.shape(b)) > 2:
                batch = int(math.prod(sy[:-2]))
                M = sy[-2]
            return batch, M, int(K), N
        # gradient contractions: output (M, N) flattened, K from the FLOPs
        out = int(math.prod(sy))
        N = sy[-1] if len(sy) > 1 else 1
        if len(sy) == 4:   # weight gradient (Co, Ci, kh, kw)
            N = int(math.prod(sy[1:]))
        M = max(out // max(N, 1), 1)
        K = max(int(round(flops / 2 / max(out, 1))), 1)
        return 1, M, K, N

    def choice_key(self, op, ctx):
        """The contraction: options and estimates read the op's dimensions, whether ``b`` is
        batched and transposed first (:meth:`_shared`), its channel group and the lowering's
        chip, tiles, dtypes and proportion, nothing else (a BERT layer's query, key and value
        projections, forward and backward, are one contraction each)."""
        dims, batched_b, transposes = self._shared(op, ctx)
        return ("matmul", op["op"], dims, batched_b, transposes, ctx.group_for(dims[3]), ctx.dtype, ctx.partials,
                ctx.tiles, id(ctx.chip), ctx.available_memory_proportion)

    def options(self, op, ctx):
        batch, M, K, N = self.dims(op, ctx)
        g = ctx.group_for(N)
        opts = []
        for mseg in sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, M} & set(range(1, M + 1))):
            for nb in sorted({g, 2 * g, 4 * g, 8 * g, 16 * g, N} & set(range(1, N + 1))):
                q = batch * (-(-M // mseg)) * (-(-N // nb))
                for P in pow2_upto(K, 64):
                    for m in METHODS:
                        opts.append({"mseg": mseg, "nb": nb, "parts": P, "method": m})
                        # serial splits (PopLibs' planner): the (batch, row block, column block)
                        # blocks in k compute sets one after another, each over all tiles with
                        # 1/k of the temporaries (the name and the rule of ConvPlanner's option)
                        opts += [{"mseg": mseg, "nb": nb, "parts": P, "method": m, "serial": k}
                                 for k in SERIAL if q % k == 0]
        return opts

    def transposes(self, op, ctx, dims=None) -> bool:
        """Whether the op reads a transposed activation operand (``transB``, e.g. attention's
        Q x K^T): it is rearranged first (a Transpose compute set into a temporary), as
        PopLibs does, so that the matmul reads contiguous rows of it.  ``dims``: the op's
        :meth:`dims`, where the caller has them."""
        batch, M, K, N = dims or self.dims(op, ctx)
        b = op["inputs"][1]
        return (bool(op["attrs"].get("transB")) and ctx.opg.tensors[b].kind not in ("param", "constant", "state")
                and self._exact(op, ctx, batch, M, K, N))

    def _exact(self, op, ctx, batch, M, K, N):
        na, nb_ = ctx.numel(op["inputs"][0]), ctx.numel(op["inputs"][1])
        return op["op"] in ("Gemm", "MatMul") and na == batch * M * K and nb_ in (K * N, batch * K * N)

    @staticmethod
    def transpose_pieces(K, blocks, chip, T):
        """Transpose vertices per [K][columns] block of the rearranged operand: pieces of at
        least 16 rows of K, enough of them for every worker of every tile when the blocks
        are few (so the edges stay O(rows): one per source row and piece)."""
        want = -(-T * chip.workers_per_tile // max(blocks, 1))
        return int(max(1, min(want, K // 16)))

    def step_blocks(self, op, opt, ctx, shared=None):
        """(batch, row block, column block) blocks of the grid in one serial step, and the
        distinct (operand batch, column block) blocks of ``b`` that step reads.  ``shared``:
        :meth:`_shared` of ``op``, where the caller has it."""
        (batch, M, K, N), batched_b, _ = shared or self._shared(op, ctx)
        nmb, nnb = -(-M // opt["mseg"]), -(-N // opt["nb"])
        s = batch * nmb * nnb // int(opt.get("serial", 1))
        if s >= nmb * nnb:
            b_blocks = (-(-s // (nmb * nnb)) if batched_b else 1) * nnb
        else:
            b_blocks = min(s, nnb)
        return s, b_blocks

    def estimate(self, op, opt, ctx):
        """k serial steps cost k times one step plus a sync between steps; the temporaries
        are one step's (PopLibs' planner, and ConvPlanner's rule)."""
        return self.estimates(op, [opt], ctx)[0]

    def estimates(self, op, opts, ctx):
        """:meth:`estimate` of every option: the op's dimensions, operands and the codelet
        costs that options share are worked out once (thousands of options per op)."""
        shared = self._shared(op, ctx)
        memo = {}
        out = []
        for opt in opts:
            serial = int(opt.get("serial", 1))
            cyc, temp = self.step_estimate(op, opt, ctx, shared, memo)
            out.append((serial * cyc + (serial - 1) * ctx.chip.sync_cycles, temp))
        return out

    def _shared(self, op, ctx):
        """What every option's estimate of ``op`` reads: its dimensions, whether ``b`` is
        batched, whether it is transposed first."""
        batch, M, K, N = dims = self.dims(op, ctx)
        batched_b = ctx.numel(op["inputs"][1]) == batch * K * N
        return dims, batched_b, self.transposes(op, ctx, dims)

    def step_estimate(self, op, opt, ctx, shared=None, memo=None):
        """(cycles, temporary bytes per tile) of one serial step (of the whole op without
        serial splits): its vertices spread over all tiles.  ``shared``: :meth:`_shared`
        of ``op``; ``memo``: a dict of codelet costs shared by options of the same op."""
        (batch, M, K, N), batched_b, transposes = shared or self._shared(op, ctx)
        memo = {} if memo is None else memo
        chip, T, b = ctx.chip, ctx.tiles, DTYPE_BYTES[ctx.dtype]
        mseg, nb, P = opt["mseg"], opt["nb"], opt["parts"]
        serial = int(opt.get("serial", 1))
        method = opt.get("method", "amp")
        kpp = -(-K // P)
        V = P * batch * (-(-M // mseg)) * (-(-N // nb)) // serial     # vertices of one serial step
        per_tile = -(-V // T)
        key = ("vertex", method, mseg, nb, kpp)
        vc = memo.get(key)
        if vc is None:
            vc = memo[key] = (codelet_passes(MATMUL_CODELET[method], {"out": mseg * nb}, ctx.dtype,
                                             {"k": kpp, "n": nb}),
                              contraction_cycles(opt, mseg * nb, kpp, ctx.dtype, chip, n=nb))
        passes, vertex_cyc = vc
        compute = supervisor_phase_cycles(per_tile, vertex_cyc, chip, passes)
        pb = DTYPE_BYTES[ctx.partials] if P > 1 else b
        # a tile's vertices are consecutive in the grid (part, batch, row block, column
        # block): they share row blocks of a and column blocks of b.  The temporaries are
        # the worst tile's, as PopLibs' planner sizes them: its window of the grid may
        # straddle a row block or a part (``spread`` deals vertices without aligning them)
        nnb, nmb = -(-N // nb), -(-M // mseg)
        section = nmb * nnb if batched_b else max(V // P, 1)
        # over the distinct (a blocks, b blocks, vertices) of the tiles, in tile order: the first
        # tile with the most bytes, as an argmax over all the tiles finds it
        worst = -1
        for a_blocks, b_blocks, verts in worst_tile_rows(V, T, nnb, section, nnb):
            tile_in = (a_blocks * mseg * kpp + b_blocks * kpp * nb) * b
            part_b = verts * mseg * nb * pb if P > 1 else 0    # partials; the output is not temporary
            if tile_in + part_b > worst:
                worst, bytes_in, out_b, vpt = tile_in + part_b, tile_in, part_b, verts
        # the bytes, then the messages (two terms, so that the sum rounds as it always has)
        cyc = compute + exchange_cycles(bytes_in, chip) + exchange_cycles(0, chip, messages_per_tile=V / T * 2)
        if P > 1:   # the reduction where the partials are: a tile reduces 1/P of each block it
            # holds a part of, receiving the other P - 1 parts' pieces (chunking.reduce_partials)
            whole = -(-mseg * nb // P)                 # a block's piece, cut in grains of 8
            units = -(-whole // 8)
            k = min(max(1, -(-chip.workers_per_tile // max(vpt, 1))), units)
            piece = min(whole, -(-units // k) * 8)
            rpt = vpt * k
            cyc += exchange_cycles(rpt * (P - 1) * piece * pb, chip, messages_per_tile=rpt * (P - 1))
            key = ("reduce", P, piece)
            rc = memo.get(key)
            if rc is None:
                rc = memo[key] = codelet_cycles("ReducePartials", {"in": P * piece}, ctx.dtype,
                                                {"k": P, "partials": ctx.partials}, chip)
            cyc += compute_phase_cycles(rpt, rc, chip)
            cyc += chip.sync_cycles
        temp = bytes_in + out_b
        if transposes:
            # the rearrangement: each [K][nb] block of b the step reads, in pieces of kr rows
            _, blocks = self.step_blocks(op, opt, ctx, shared)
            sk = self.transpose_pieces(K, blocks, chip, T)
            kr = -(-K // sk)
            tpt = -(-(blocks * sk) // T)
            key = ("transpose", kr * nb)
            tc = memo.get(key)
            if tc is None:
                tc = memo[key] = codelet_cycles("Transpose", {"in": kr * nb}, ctx.dtype, {}, chip)
            cyc += compute_phase_cycles(tpt, tc, chip)
            cyc += exchange_cycles(tpt * kr * nb * b, chip, messages_per_tile=tpt * nb) + chip.sync_cycles
            temp += tpt * kr * nb * b
        return cyc, temp

    def lower(self, op, opt, ctx):
        batch, M, K, N = self.dims(op, ctx)
        mseg, nb, P = opt["mseg"], opt["nb"], opt["parts"]
        serial = int(opt.get("serial", 1))
        y = ctx.new_act(op, 0)
        nmb, nnb = -(-M // mseg), -(-N // nb)
        p, bt, mb, jb = [a.ravel() for a in np.indices((P, batch, nmb, nnb))]
        out = []
        if serial == 1:
            out += self._lower_step(op, opt, ctx, y, p, bt, mb, jb, "")
        else:   # one slice of the (batch, row block, column block) blocks per step, each over all tiles
            step = ((bt * nmb + mb) * nnb + jb) * serial // (batch * nmb * nnb)
            for j in range(serial):
                sel = step == j
                out += self._lower_step(op, opt, ctx, y, p[sel], bt[sel], mb[sel], jb[sel], f"/s{j}")
        if op["op"] == "Gemm" and len(op["inputs"]) > 2 and op["inputs"][2] in ctx.acts:
            out += ElementwisePlanner().lower(op, opt, ctx, codelet="Add", inputs=[op["outputs"][0], op["inputs"][2]],
                                              out=y, suffix="bias")
        return out

    def _lower_step(self, op, opt, ctx, y, p, bt, mb, jb, tag):
        """The vertices of one serial step (all of them without serial splits): grid points
        ``p, bt, mb, jb`` (part-major), spread over all tiles; returns its compute sets."""
        batch, M, K, N = self.dims(op, ctx)
        g, T = ctx.graph, ctx.tiles
        mseg, nb, P = opt["mseg"], opt["nb"], opt["parts"]
        A = ctx.act(op["inputs"][0])
        b_is_act = ctx.opg.tensors[op["inputs"][1]].kind not in ("param", "constant", "state")
        B = ctx.act(op["inputs"][1])
        exact = self._exact(op, ctx, batch, M, K, N)
        nnb = -(-N // nb)
        V = p.size
        tiles = spread(V, T)
        m0, m1 = mb * mseg, np.minimum(M, mb * mseg + mseg)
        n0, n1 = jb * nb, np.minimum(N, jb * nb + nb)
        k0, k1 = (p * K) // P, ((p + 1) * K) // P
        rows, kk, ncols = m1 - m0, k1 - k0, n1 - n0
        out = []
        # a: rows m0..m1 of batch bt, columns k0..k1 (one interval, or one per row when k is split)
        ai, ar, al = row_intervals((bt * M + m0) * K + k0, rows, kk, K)
        a_l = np.minimum(al, A.numel)
        a_s = np.minimum(A.start + ar % max(A.numel, 1), A.start + A.numel - a_l)
        bbase = bt * K * N if B.numel == batch * K * N else np.zeros_like(bt)
        if b_is_act and exact and op["attrs"].get("transB"):
            # a transposed activation operand (element (k, n) at n * K + k): rearranged first
            T_, cs_t = self._transpose(op, ctx, B, bbase, nb, jb, n0, n1, tiles, tag)
            out.append(cs_t)
            b_f = (np.arange(V), T_[0] + T_[1] + k0 * ncols, kk * ncols)
        elif b_is_act and exact:
            # an activation operand (attention): kk rows of ncols columns, row-major
            b_f = row_intervals(B.start + bbase + k0 * N + n0, kk, ncols, N)
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
        sig = np.stack([rows, kk, ncols], axis=1)
        cs = ctx.compute_set(op, "matmul" + tag)
        codelet = MATMUL_CODELET[opt.get("method", "amp")]
        if P == 1:
            oi, o_s, o_l = row_intervals(y.start + (bt * M + m0) * N + n0, rows, ncols, N)
            g.map_intervals(o_s, o_l, tiles[oi])
            add_by_signature(ctx, cs, codelet, tiles, sig, {"a": (ai, a_s, a_l), "b": b_f, "out": (oi, o_s, o_l)},
                             lambda u: {"m": int(u[0]), "k": int(u[1]), "n": int(u[2])})
            out.append(cs)
        else:
            # partials: one contiguous [rows][ncols] block per vertex, part-major, so that a
            # vertex writes one region and a reduction reads one region per part
            R = V // P
            bsz = rows[:R] * ncols[:R]
            boff = np.concatenate(([0], np.cumsum(bsz)))[:-1]
            S = int(bsz.sum())
            part = g.add_variable(ctx.partials, (P, S), f"{op['name']}/partials{tag.replace('/', '_')}",
                                  kind="temporary", op=op["name"])
            r = np.arange(V) % R
            ps = part._start + p * S + boff[r]
            g.map_intervals(ps, bsz[r], tiles)
            add_by_signature(ctx, cs, codelet, tiles, sig, {"a": (ai, a_s, a_l), "b": b_f,
                                                            "out": (np.arange(V), ps, bsz[r])},
                             lambda u: {"m": int(u[0]), "k": int(u[1]), "n": int(u[2]), "partials": ctx.partials})
            # the reduction, on the tiles that hold each block's partials (PopLibs' grouped
            # reduction): part p's vertex of block r is vertex p * R + r
            base = y.start + (bt[:R] * M + m0[:R]) * N + n0[:R]
            src = part._start + np.arange(P)[:, None] * S + boff[None, :]
            out += [cs, reduce_partials(ctx, op, tag, base, rows[:R], ncols[:R], N, src, tiles.reshape(P, R))]
        return out

    def _transpose(self, op, ctx, B, bbase, nb, jb, n0, n1, tiles, tag):
        """Rearrange the transposed operand of one step: every (operand batch, column block)
        block the step reads becomes a row-major [K][columns] block of a temporary, made by
        Transpose vertices of ``kr`` rows each on the tiles of the matmul vertices that read
        the block (a source row of the piece is one region). Returns ((temporary start,
        block offset per matmul vertex), compute set)."""
        batch, M, K, N = self.dims(op, ctx)
        g, T = ctx.graph, ctx.tiles
        nnb = -(-N // nb)
        bb = bbase // max(K * N, 1)
        key = bb * nnb + jb
        order = np.lexsort((np.arange(key.size), key))
        ukey, first, inv, cnt = np.unique(key[order], return_index=True, return_inverse=True, return_counts=True)
        nblk = ukey.size
        cols = (n1 - n0)[order[first]]
        bsz = K * cols
        boff = np.concatenate(([0], np.cumsum(bsz)))[:-1]
        tmp = g.add_variable(ctx.dtype, (int(bsz.sum()),), f"{op['name']}/transposed{tag.replace('/', '_')}",
                             kind="temporary", op=op["name"])
        blk_of_v = np.empty(key.size, np.int64)
        blk_of_v[order] = inv
        sk = self.transpose_pieces(K, nblk, ctx.chip, T)
        bi, i = np.repeat(np.arange(nblk), sk), np.tile(np.arange(sk), nblk)
        ka, kb = (i * K) // sk, ((i + 1) * K) // sk
        kr = kb - ka
        # the piece's tile: one of the matmul vertices that read its block, in grid order
        tv = order[first[bi] + (i * cnt[bi]) // sk]
        ttile = tiles[tv]
        c = cols[bi]
        src0 = B.start + bbase[tv] + n0[tv] * K + ka
        ii, i_s, i_l = row_intervals(src0, c, kr, K)
        o_s = tmp._start + boff[bi] + ka * c
        o_l = kr * c
        g.map_intervals(o_s, o_l, ttile)
        cs = ctx.compute_set(op, "transpose" + tag)
        add_by_signature(ctx, cs, "Transpose", ttile, np.stack([c, kr], axis=1),
                         {"in": (ii, i_s, i_l), "out": (np.arange(bi.size), o_s, o_l)},
                         lambda u: {"rows": int(u[0]), "cols": int(u[1])})
        return (tmp._start, boff[blk_of_v]), cs


@functools.lru_cache(maxsize=4096)
def worst_tile_blocks(V, T, run, section, distinct):
    """Per tile (tiles holding vertices only), for ``V`` grid points dealt over ``T`` tiles
    by :func:`spread`: how many runs of ``run`` consecutive points its window touches (the
    row blocks of ``a`` it reads), how many distinct column blocks (``distinct`` per
    section of ``section`` points, a point's column block cycling within its section) it
    reads, and how many points it holds."""
    t = np.arange(T, dtype=np.int64)
    s, e = -(-(t * V) // T), -(-((t + 1) * V) // T)
    s, e = s[e > s], e[e > s]
    a = (e - 1) // run - s // run + 1
    fs, ls = s // section, (e - 1) // section
    first = np.minimum(e, (fs + 1) * section) - s
    last = e - ls * section
    mid = np.maximum(ls - fs - 1, 0)
    b = np.where(ls == fs, np.minimum(distinct, e - s),
                 np.minimum(distinct, first) + np.minimum(distinct, last) + mid * min(distinct, section))
    for x in (a, b, e - s):
        x.flags.writeable = False
    return a, b, e - s


@functools.lru_cache(maxsize=4096)
def worst_tile_rows(V, T, run, section, distinct):
    """The distinct rows (a blocks, b blocks, points) of :func:`worst_tile_blocks`, as
    Python ints, in the order of their first tile (a handful of rows for thousands of
    tiles: the planner costs each option on these)."""
    a, b, n = worst_tile_blocks(V, T, run, section, distinct)
    if a.size == 0:
        return ()
    # the rows where a column changes from the tile before (the same row repeats in runs)
    head = np.flatnonzero(np.concatenate(([True], (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (n[1:] != n[:-1]))))
    return tuple(dict.fromkeys(zip(a[head].tolist(), b[head].tolist(), n[head].tolist())))


def row_intervals(first, nrows, rowlen, stride):
    """The regions of ``nrows`` rows of ``rowlen`` elements, ``stride`` apart, from ``first``
    (one set per item): one region per row, or one region for all of them when the rows
    are contiguous (``rowlen == stride``).  Returns (item index, starts, lengths)."""
    first, nrows, rowlen = (np.asarray(x, np.int64) for x in (first, nrows, rowlen))
    stride = np.broadcast_to(np.asarray(stride, np.int64), first.shape)
    contig = rowlen == stride
    cnt = np.where(contig, 1, nrows)
    vi = np.repeat(np.arange(first.size), cnt)
    r = np.arange(vi.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return vi, first[vi] + r * stride[vi], np.where(contig[vi], nrows[vi] * rowlen[vi], rowlen[vi])
