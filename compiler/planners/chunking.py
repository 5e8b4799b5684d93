"""Splitting an output into vertex-sized chunks that follow a tensor's tile mapping, and
the regions of per-channel operands those chunks read (element-wise maps, reductions,
norms, copies, optimizer updates)."""
from __future__ import annotations

import numpy as np

from ..intervals import unique
from ..layout import Act

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
        bounds = unique(np.concatenate((bounds, brk - brk % step)))
        tmv = True
    else:
        tmv = None
        per = -(-(n // step) // T) * step
        bounds = unique(np.concatenate((bounds, np.arange(per, n, per, dtype=np.int64))))
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


def reduce_partials(ctx, op, tag, out_first, rows, ncols, stride, part_s, part_tiles, grain=8):
    """Sum the partials of a split contraction where they are, as PopLibs' convolution
    reduction does (``poplin/ConvReduce.cpp``: the outputs that one set of tiles holds
    partials of are split among those tiles, and each tile reduces its share, reading its own
    partial in place and receiving the others).

    ``R`` output blocks, each ``rows[r]`` rows of ``ncols[r]`` elements, ``stride`` apart in
    the output, the first at ``out_first[r]``; ``part_s`` (P, R): where part ``p``'s
    contiguous [rows][ncols] block of block ``r`` starts; ``part_tiles`` (P, R): the tile that
    holds it.  Each block is cut into P pieces (at multiples of ``grain`` elements of the
    block), piece ``p`` reduced on the tile of part ``p``; a tile with fewer pieces than
    workers cuts them further.  A piece reads one region of each part (a message from each
    other tile of the group) and writes the output rows it covers, mapped to its tile.
    Returns the compute set."""
    g = ctx.graph
    out_first, rows, ncols = (np.asarray(x, np.int64) for x in (out_first, rows, ncols))
    part_s = np.asarray(part_s, np.int64)
    part_tiles = np.asarray(part_tiles, np.int64)
    P, R = part_s.shape
    bsz = rows * ncols
    # P pieces per block, cut at multiples of grain; piece p on the tile of part p
    cut = (np.arange(P + 1)[None, :] * bsz[:, None]) // P // grain * grain
    cut[:, -1] = bsz
    lo, hi = cut[:, :-1].ravel(), cut[:, 1:].ravel()
    blk = np.repeat(np.arange(R), P)
    tl = part_tiles.T.ravel()
    keep = hi > lo
    lo, hi, blk, tl = lo[keep], hi[keep], blk[keep], tl[keep]
    # at least one piece per worker on each tile that reduces (grain-aligned cuts)
    W = int(getattr(ctx.chip, "workers_per_tile", 6) or 6)
    per_tile = np.bincount(tl, minlength=ctx.tiles)[tl]
    units = -(-(hi - lo) // grain)
    k = np.clip(-(-W // per_tile), 1, np.maximum(units, 1))
    pi = np.repeat(np.arange(lo.size), k)
    j = np.arange(pi.size) - np.repeat(np.cumsum(k) - k, k)
    s_lo = lo[pi] + (j * units[pi]) // k[pi] * grain
    s_hi = np.where(j == k[pi] - 1, hi[pi], lo[pi] + ((j + 1) * units[pi]) // k[pi] * grain)
    blk, tiles = blk[pi], tl[pi].astype(np.int32)
    V = blk.size
    # inputs: the piece of each part's block (one region each)
    vi = np.repeat(np.arange(V), P)
    pp = np.tile(np.arange(P), V)
    i_s = part_s[pp, blk[vi]] + s_lo[vi]
    i_l = (s_hi - s_lo)[vi]
    # outputs: the rows of the block the piece covers (one region when rows are contiguous)
    nc = ncols[blk]
    contig = nc == stride
    r0 = np.where(contig, 0, s_lo // nc)
    cnt = np.where(contig, 1, (s_hi - 1) // nc - r0 + 1)
    ev = np.repeat(np.arange(V), cnt)
    row = r0[ev] + np.arange(ev.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    seg_lo = np.where(contig[ev], s_lo[ev], np.maximum(s_lo[ev], row * nc[ev]))
    seg_hi = np.where(contig[ev], s_hi[ev], np.minimum(s_hi[ev], (row + 1) * nc[ev]))
    o_s = out_first[blk[ev]] + np.where(contig[ev], seg_lo, row * stride + seg_lo - row * nc[ev])
    o_l = seg_hi - seg_lo
    g.map_intervals(o_s, o_l, tiles[ev])
    cs = ctx.compute_set(op, "reduce" + tag)
    g.add_vertices(cs, "ReducePartials", tiles, {"in": (vi, i_s, i_l), "out": (ev, o_s, o_l)},
                   dtype=ctx.dtype, params={"k": P, "partials": ctx.partials})
    return cs
