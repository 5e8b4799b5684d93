"""Convolutions: Conv, and ConvGradInput as a convolution of the output gradient."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hardware.dtypes import DTYPE_BYTES
from ..layout import Act
from .base import LoweringError, Planner, add_by_signature, pow2_upto, spread
from .cost import (CONV_CODELET, METHODS, codelet_cycles, codelet_passes, compute_phase_cycles, exchange_cycles,
                   supervisor_phase_cycles)
from .elementwise import ElementwisePlanner


@dataclass(frozen=True)
class ConvShape:
    """A convolution's geometry and one split of it.

    The vertex grid is (input-channel part, image, output channel group, output row,
    row segment): ``vertices = parts x N x Cog x Ho x segments``.
    """
    x: Act              # the input activation (channel-grouped, ``x.g`` channels per group)
    N: int              # images
    Co: int             # output channels
    Ho: int             # output rows
    Wo: int             # output pixels per row
    go: int             # output channels per group (one vertex writes one group)
    kh: int
    kw: int
    stride: int
    pad_top: int
    pad_left: int
    groups: int         # the op's channel groups (1: dense, C: depthwise)
    wseg: int = 0       # output pixels per row segment (0: the whole row)
    parts: int = 1      # input-channel parts (partials summed by ReducePartials)
    dil: int = 1        # ConvGradInput of a strided convolution: the forward stride, by which
                        # dY is zero-dilated (pad_top / pad_left are then the forward padding)

    @property
    def Cog(self) -> int:
        """Output channel groups."""
        return self.Co // self.go

    @property
    def segments(self) -> int:
        """Row segments per output row."""
        return -(-self.Wo // self.wseg)

    @property
    def cipp(self) -> int:
        """Input channels per part."""
        return (self.x.C // self.groups) // self.parts

    @property
    def cig(self) -> int:
        """Input channels per channel group a vertex reads (what the AMP pads)."""
        return self.x.g if self.cipp >= self.x.g else self.cipp

    @property
    def ncig(self) -> int:
        """Input channel groups one vertex reads."""
        return max(1, self.cipp // self.x.g)

    @property
    def vertices(self) -> int:
        return self.parts * self.N * self.Cog * self.Ho * self.segments

    @property
    def reductions(self) -> int:
        """ReducePartials vertices (one per output row segment) when ``parts > 1``."""
        return self.N * self.Cog * self.Ho * self.segments

    def vertex_params(self) -> dict:
        """The params of a conv vertex away from the image border.  Over a zero-dilated dY
        (``dil`` > 1) a vertex applies the kernel rows that land on dY's rows (at most
        ceil(kh / dil)) and, per kernel column, the 1 / dil of the row's pixels that land on
        dY's pixels (``wdil``): PopLibs' worklists skip the zeros of an input dilation
        (``ConvUtil.cpp`` ``getOutputRangeForKernelIndex``)."""
        p = {"kh": self.kh, "kw": self.kw, "stride": self.stride, "groups": self.ncig, "cig": self.cig,
             "cog": self.go}
        if self.dil > 1:
            p.update(kh=-(-self.kh // self.dil), wdil=self.dil)
        return p


class ConvPlanner(Planner):
    """Conv (and ConvGradInput, as a convolution of the output gradient).

    Vertex = (input-channel part p, image n, output channel group, output row,
    row segment).  Input channels split over ``parts`` tiles produce fp32 /
    fp16 partials that ReducePartials vertices sum.
    """
    family = "conv"

    def shape(self, op, ctx, opt=None) -> ConvShape:
        """The op's :class:`ConvShape`, split as ``opt`` says (whole rows, one part without)."""
        x, y = ctx.act(op["inputs"][0]), ctx.out_shape(op, 0)
        if len(x.logical) != 4 or len(y) != 4:
            raise LoweringError(f"op {op['name']!r} ({op['op']}): expects 4-D input and output, "
                                f"got {x.logical} -> {y}")
        a = op["attrs"]
        kh, kw = (list(a.get("kernel_shape") or ctx.weight_shape(op)[2:]) + [1, 1])[:2]
        s = (list(a.get("strides") or [1, 1]) + [1])[0]
        pads = list(a.get("pads") or [0, 0, 0, 0])
        groups = int(a.get("group", 1))
        dil = 1
        if op["op"] == "ConvGradInput":   # a convolution of dY producing dX, stride 1 over dX
            if s > 1:                     # over dY zero-dilated by the forward stride
                dil, s = s, 1
            else:
                pads = [kh // 2, kw // 2, kh // 2, kw // 2]
        N, Co, Ho, Wo = y
        go = Act.dims(y) and ctx.group_for(Co)
        opt = opt or {}
        return ConvShape(x, N, Co, Ho, Wo, go, int(kh), int(kw), int(s), int(pads[0]),
                         int(pads[1] if len(pads) > 1 else pads[0]), groups,
                         wseg=opt.get("wseg", Wo), parts=opt.get("parts", 1), dil=dil)

    def options(self, op, ctx):
        sh = self.shape(op, ctx)
        cig = sh.x.Cg if sh.groups == 1 else 1
        segs = sorted({max(1, -(-sh.Wo // d)) for d in (1, 2, 4, 8)})
        opts = [{"wseg": w, "parts": p, "method": m} for m in METHODS
                for w in segs for p in pow2_upto(cig, 16) if cig % p == 0]
        # serial splits (PopLibs' planner): the (image, output channel group) blocks in k
        # compute sets one after another, each over all tiles with 1/k of the temporaries
        # (with input-channel parts, each step reduces its own partials)
        q = sh.N * sh.Cog
        opts += [dict(o, serial=k) for o in opts for k in (2, 4, 8) if q % k == 0]
        return opts

    def choice_key(self, op, ctx):
        """The geometry: options and estimates read the :class:`ConvShape` (the input's
        channels, rows, pixels and grouping, not its name) and the lowering's chip, tiles and
        dtypes, nothing else (ResNet-50's 53 convolutions have 23 geometries)."""
        sh = self.shape(op, ctx)
        x = sh.x
        return ("conv", op["op"], x.N, x.C, x.H, x.W, x.g, x.dtype, sh.N, sh.Co, sh.Ho, sh.Wo, sh.go, sh.kh,
                sh.kw, sh.stride, sh.pad_top, sh.pad_left, sh.groups, sh.dil, ctx.dtype, ctx.partials, ctx.tiles,
                id(ctx.chip), ctx.available_memory_proportion)

    def vertex_cycles(self, sh: ConvShape, opt, ctx) -> float:
        """One full-width conv vertex's cycles: the ConvPartial(MAC) codelet's cost."""
        return codelet_cycles(CONV_CODELET[opt.get("method", "amp")], {"out": sh.wseg * sh.go}, ctx.dtype,
                              sh.vertex_params(), ctx.chip)

    def estimate(self, op, opt, ctx):
        """(cycles, temporary bytes per tile).  A tile's vertices are consecutive in the
        grid (part, image, output channel group, output row, row segment), so they share
        input rows and weight blocks: the tile receives the union of their input windows
        and one weight block per output channel group it holds, in one message per region
        its vertices read (a channel group's row, a weight block).  Temporary bytes are
        what PopLibs' planner bounds: the received inputs and weights, and the partials
        (with what the reducing tile receives) of a split contraction; the output itself
        is not temporary."""
        # the options of one op share their shapes and vertex costs: computed once each
        memo = ctx.__dict__.setdefault("_conv_memo", {})
        key = (id(op), opt.get("wseg"), opt.get("parts"))
        hit = memo.get(key)
        if hit is None or hit[0] is not op:
            hit = memo[key] = (op, self.shape(op, ctx, opt))
        sh = hit[1]
        P, wseg, go, cipp = sh.parts, sh.wseg, sh.go, sh.cipp
        chip, T, b = ctx.chip, ctx.tiles, DTYPE_BYTES[ctx.dtype]
        x = sh.x
        serial = int(opt.get("serial", 1))
        per_tile = -(-sh.vertices // (serial * T))     # in one serial step
        vp = sh.vertex_params()
        method = opt.get("method", "amp")
        vkey = ("vertex", method, sh.wseg * sh.go, tuple(vp.items()))
        costs = memo.get(vkey)
        if costs is None:
            costs = memo[vkey] = (codelet_passes(CONV_CODELET[method], {"out": sh.wseg * sh.go}, ctx.dtype, vp),
                                  self.vertex_cycles(sh, opt, ctx))
        passes, vcyc = costs
        compute = supervisor_phase_cycles(per_tile, vcyc, chip, passes)
        segs = sh.segments
        row_block = sh.Ho * segs                     # vertices of one (image, channel group)
        d = sh.dil                                   # dY rows and pixels advance 1 / d per output one
        if per_tile <= row_block:
            in_rows = min(x.H, ((-(-per_tile // segs) - 1) * sh.stride + sh.kh) // d + (d > 1))
            images = 1
        else:
            in_rows = x.H
            images = -(-per_tile // (sh.Cog * row_block))
        in_w = x.W if per_tile >= segs else min(x.W, (per_tile * wseg * sh.stride + sh.kw) // d + (d > 1))
        in_bytes = images * in_rows * in_w * cipp * b
        w_blocks = min(P * sh.Cog, 1 + (per_tile - 1) // row_block)
        w_bytes = w_blocks * go * cipp * sh.kh * sh.kw * b
        messages = per_tile * (sh.ncig * vp["kh"] + 2)
        cyc = compute + exchange_cycles(in_bytes + w_bytes, chip, messages_per_tile=messages)
        cyc = serial * cyc + (serial - 1) * chip.sync_cycles
        temp = in_bytes + w_bytes
        if P > 1:   # each serial step reduces its own partials
            pb = DTYPE_BYTES[ctx.partials]
            rpt = -(-sh.reductions // (serial * T))
            red_in = rpt * P * wseg * go * pb
            red = exchange_cycles(red_in, chip, messages_per_tile=rpt * (P + 1))
            rkey = ("reduce", P * wseg * go, P)
            rcyc = memo.get(rkey)
            if rcyc is None:
                rcyc = memo[rkey] = codelet_cycles("ReducePartials", {"in": P * wseg * go}, ctx.dtype,
                                                   {"k": P, "partials": ctx.partials}, chip)
            red += compute_phase_cycles(rpt, rcyc, chip)
            cyc += serial * (red + chip.sync_cycles)
            temp += per_tile * wseg * go * pb + red_in
        return cyc, temp

    def estimates(self, op, opts, ctx):
        """:meth:`estimate` of every option at once (ResNet-50 costs 23 geometries x 150
        options): the shapes and vertex costs once per (method, row segment, parts), the rest
        as numpy arrays over the options, in the same float64 operations in the same order as
        :meth:`estimate` (the same numbers, tests/test_planners.py)."""
        if not opts:
            return []
        sh0 = self.shape(op, ctx)
        chip, T, b = ctx.chip, ctx.tiles, DTYPE_BYTES[ctx.dtype]
        pb = DTYPE_BYTES[ctx.partials]
        x = sh0.x
        wk = chip.workers_per_tile
        per_split, per_vertex = {}, {}
        cols = []     # per option: (serial, parts, wseg, vertices, reductions, segments, cipp, ncig,
                      # vertex kernel rows, vertex cycles, passes, reduction cycles)
        for opt in opts:
            wseg, parts, method = opt.get("wseg", sh0.Wo), opt.get("parts", 1), opt.get("method", "amp")
            sp = per_split.get((wseg, parts))
            if sp is None:
                sh = replace(sh0, wseg=wseg, parts=parts)
                vp = sh.vertex_params()
                rc = codelet_cycles("ReducePartials", {"in": parts * sh.wseg * sh.go}, ctx.dtype,
                                    {"k": parts, "partials": ctx.partials}, chip) if parts > 1 else 0.0
                sp = per_split[(wseg, parts)] = (sh, vp, (sh.parts, sh.wseg, sh.vertices, sh.reductions,
                                                          sh.segments, sh.cipp, sh.ncig, vp["kh"]), rc)
            sh, vp, geo, rc = sp
            vkey = (method, wseg, parts)
            vc = per_vertex.get(vkey)
            if vc is None:
                vc = per_vertex[vkey] = (self.vertex_cycles(sh, opt, ctx),
                                         codelet_passes(CONV_CODELET[method], {"out": sh.wseg * sh.go}, ctx.dtype, vp))
            cols.append((int(opt.get("serial", 1)),) + geo + vc + (rc,))
        c = list(zip(*cols))
        serial, P, wseg, verts, reds, segs, cipp, ncig, vkh = (np.array(a, np.int64) for a in c[:9])
        vcyc, passes, rcyc = (np.array(a, np.float64) for a in c[9:])
        per_tile = -(-verts // (serial * T))
        compute = per_tile * vcyc / wk + passes * chip.amp_pass_cycles
        row_block = sh0.Ho * segs
        d = sh0.dil
        few = per_tile <= row_block
        in_rows = np.where(few, np.minimum(x.H, ((-(-per_tile // segs) - 1) * sh0.stride + sh0.kh) // d + (d > 1)),
                           x.H)
        images = np.where(few, 1, -(-per_tile // (sh0.Cog * row_block)))
        in_w = np.where(per_tile >= segs, x.W, np.minimum(x.W, (per_tile * wseg * sh0.stride + sh0.kw) // d + (d > 1)))
        in_bytes = images * in_rows * in_w * cipp * b
        w_blocks = np.minimum(P * sh0.Cog, 1 + (per_tile - 1) // row_block)
        w_bytes = w_blocks * sh0.go * cipp * sh0.kh * sh0.kw * b
        messages = per_tile * (ncig * vkh + 2)
        cyc = compute + ((in_bytes + w_bytes) / chip.exchange_bytes_per_cycle_per_tile
                         + messages * chip.exchange_message_cycles)
        cyc = serial * cyc + (serial - 1) * chip.sync_cycles
        temp = in_bytes + w_bytes
        split = P > 1
        if split.any():
            rpt = -(-reds // (serial * T))
            red_in = rpt * P * wseg * sh0.go * pb
            red = red_in / chip.exchange_bytes_per_cycle_per_tile + rpt * (P + 1) * chip.exchange_message_cycles
            red = red + -(-rpt // wk) * rcyc
            cyc = np.where(split, cyc + serial * (red + chip.sync_cycles), cyc)
            temp = np.where(split, temp + per_tile * wseg * sh0.go * pb + red_in, temp)
        return list(zip(cyc.tolist(), temp.tolist()))

    def lower(self, op, opt, ctx):
        sh = self.shape(op, ctx, opt)
        N, Ho, go, Cog, nws, P = sh.N, sh.Ho, sh.go, sh.Cog, sh.segments, sh.parts
        y = ctx.new_act(op, 0, group=go)
        w = ctx.weights(op)
        # vertex grid, input-channel part outermost so parts land on different tiles
        p, n, cog, oh, ws = [a.ravel() for a in np.indices((P, N, Cog, Ho, nws))]
        serial = int(opt.get("serial", 1))
        out = []
        if serial == 1:
            out += self._lower_step(op, opt, ctx, sh, y, w, p, n, cog, oh, ws, "")
        else:   # one compute set per slice of (image, channel group) blocks, each over all tiles
            step = (n * Cog + cog) * serial // (N * Cog)
            for j in range(serial):
                sel = step == j
                out += self._lower_step(op, opt, ctx, sh, y, w, p[sel], n[sel], cog[sel], oh[sel], ws[sel],
                                        f"/s{j}")
        if len(op["inputs"]) > 2 and op["inputs"][2] in ctx.acts:   # bias: a per-channel add in place
            out += ElementwisePlanner().lower(op, opt, ctx, codelet="Add", inputs=[op["outputs"][0], op["inputs"][2]],
                                              out=y, suffix="bias")
        return out

    def _lower_step(self, op, opt, ctx, sh, y, w, p, n, cog, oh, ws, tag):
        """The vertices of one serial step (all of them without serial splits): the grid
        points ``p, n, cog, oh, ws``, spread over all tiles; returns its compute sets."""
        x, Ho, Wo, go, Cog = sh.x, sh.Ho, sh.Wo, sh.go, sh.Cog
        kh, kw, s, pt, pl, groups = sh.kh, sh.kw, sh.stride, sh.pad_top, sh.pad_left, sh.groups
        P, wseg = sh.parts, sh.wseg
        g, T = ctx.graph, ctx.tiles
        V = p.size
        tiles = spread(V, T)
        w0 = ws * wseg
        w1 = np.minimum(Wo, w0 + wseg)
        # the window: kernel rows inside the image, pixels inside the image, padding outside
        khv = np.full(V, kh, np.int64)
        if sh.dil > 1:
            # dX from dY zero-dilated by the forward stride d: dX row oh takes kernel rows
            # k = k0, k0 + d, ... (k0 = (oh + pad) mod d) from dY rows (oh + pad - k) / d, a run of
            # consecutive rows; each pixel takes the kernel columns that land on dY's pixels
            d = sh.dil
            k0 = (oh + pt) % d
            khv = np.maximum(-(-(kh - k0) // d), 1)
            ih0 = (oh + pt - k0) // d - (khv - 1)
            iws = -(-(w0 + pl - (kw - 1)) // d)
            iwe = (w1 - 1 + pl) // d + 1
        elif op["op"] == "ConvGradInput":
            # stride 1: dY and dX have one grid (the padding keeps the size)
            ih0 = (oh * x.H) // Ho - pt
            iws = (w0 * x.W) // Wo - pl
            iwe = np.maximum(((w1 - 1) * x.W) // Wo - pl + kw, iws + 1)
        else:
            ih0 = oh * s - pt
            iws = w0 * s - pl
            iwe = (w1 - 1) * s - pl + kw
        rt = np.clip(-ih0, 0, khv)
        rb = np.clip(x.H - ih0, 0, khv)
        nrows = rb - rt
        if np.any(nrows <= 0):
            raise LoweringError(f"op {op['name']!r}: a kernel window lies entirely in the padding")
        pleft = np.maximum(-iws, 0)
        pright = np.maximum(iwe - x.W, 0)
        a0, a1 = iws + pleft, iwe - pright
        cig_size, ncig = sh.cig, sh.ncig
        # input edges: for each channel group c of this part, each row r inside the image
        cnt = ncig * nrows
        vi = np.repeat(np.arange(V), cnt)
        k = np.arange(vi.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        c, rr = np.divmod(k, np.repeat(nrows, cnt))
        if groups == 1:
            # x.rows(n, p * ncig + c, ih0 + rt + rr, a0, a1) as a per-vertex start (its first
            # channel group's first row) plus the edge's channel group and row (no per-edge
            # gathers of the vertex's coordinates)
            hw = x.H * x.W
            base = x.start + ((n * x.Cg + p * ncig) * hw + (ih0 + rt) * x.W + a0) * x.g
            in_s = np.repeat(base.astype(np.int64), cnt) + (c * hw + rr * x.W) * x.g
            in_l = np.repeat(((a1 - a0) * x.g).astype(np.int64), cnt)
        else:   # grouped / depthwise: the input channels that feed this output group
            cig = np.minimum((cog[vi] * go * x.C // sh.Co) // x.g + c, x.Cg - 1)
            in_s, in_l = x.rows(n[vi], cig, ih0[vi] + rt[vi] + rr, a0[vi], a1[vi])
        blk = ncig * kh * kw * cig_size * go
        exact_w = groups == 1 and P * Cog * blk == w.numel
        w_s = w.start + ((p * Cog + cog) * blk) % max(w.numel, 1)
        w_l = np.full(V, min(blk, w.numel), np.int64)
        w_s = np.minimum(w_s, w.start + w.numel - w_l)
        if exact_w and op["phase"] == "fwd":
            ctx.host_layout.setdefault(op["inputs"][1], ("conv", {"P": P, "Cog": Cog, "go": go, "ncig": ncig,
                                                                   "cig": cig_size, "kh": kh, "kw": kw}))
        base = sh.vertex_params()
        sig = np.stack([rt, khv - rb, pleft, pright, w1 - w0] + ([khv] if sh.dil > 1 else []), axis=1)

        def params_of(u, extra=None):
            if sh.dil > 1:
                extra = dict(extra or {}, kh=int(u[5]))
            return dict(base, ptop=int(u[0]), pbot=int(u[1]), pleft=int(u[2]), pright=int(u[3]), wout=int(u[4]),
                        **(extra or {}))

        cs = ctx.compute_set(op, "conv" + tag)
        out = []
        if P == 1:
            o_s, o_l = y.rows(n, cog, oh, w0, w1)
            g.map_intervals(o_s, o_l, tiles)
            add_by_signature(ctx, cs, CONV_CODELET[opt.get("method", "amp")], tiles, sig,
                             {"in": (vi, in_s, in_l), "weights": (np.arange(V), w_s, w_l),
                              "out": (np.arange(V), o_s, o_l)}, params_of)
            out.append(cs)
        else:
            # partials of this step: one [row segment][go] block per vertex, part-major
            R = V // P     # this step's output row segments (the grid is part-major)
            pl_ = (w1 - w0) * go
            boff = np.concatenate(([0], np.cumsum(pl_[:R])))[:-1]
            S = int(pl_[:R].sum())
            part = g.add_variable(ctx.partials, (P, S), f"{op['name']}/partials{tag.replace('/', '_')}",
                                  kind="temporary", op=op["name"])
            ps = part._start + p * S + boff[np.arange(V) % R]
            g.map_intervals(ps, pl_, tiles)
            add_by_signature(ctx, cs, CONV_CODELET[opt.get("method", "amp")], tiles, sig,
                             {"in": (vi, in_s, in_l), "weights": (np.arange(V), w_s, w_l),
                              "out": (np.arange(V), ps, pl_)},
                             lambda u: params_of(u, {"partials": ctx.partials}))
            # reduce the partials: one vertex per output row segment, parts in order
            rt_ = spread(R, T)
            o_s, o_l = y.rows(n[:R], cog[:R], oh[:R], w0[:R], w1[:R])
            g.map_intervals(o_s, o_l, rt_)
            ri = np.repeat(np.arange(R), P)
            src = ps.reshape(P, R).T.ravel()
            cs2 = ctx.compute_set(op, "reduce" + tag)
            g.add_vertices(cs2, "ReducePartials", rt_, {"in": (ri, src, np.repeat(pl_[:R], P)),
                                                        "out": (np.arange(R), o_s, o_l)},
                           dtype=ctx.dtype, params={"k": P, "partials": ctx.partials})
            out += [cs, cs2]
        return out
