"""Splitting an output into vertex-sized chunks that follow a tensor's tile mapping, and
the regions of per-channel operands those chunks read (element-wise maps, reductions,
norms, copies, optimizer updates)."""
from __future__ import annotations

import numpy as np

from ..layout import Act
from .base import spread

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


def reduction_chunk(total_out, tiles, grain=8):
    """Elements per ReducePartials vertex so that a reduction of ``total_out`` outputs
    gives every tile work (at least one chunk per tile), aligned to ``grain``."""
    c = -(-int(total_out) // max(int(tiles), 1))
    return max(grain, -(-c // grain) * grain)


def reduce_partials(ctx, op, tag, out_s, out_l, src_s, chunk):
    """Sum the partials of a split contraction, spread over all tiles (PopLibs reduces
    the partials of a split over every tile, not one tile per output block).

    ``out_s, out_l``: the R output regions (absolute starts, lengths); ``src_s``:
    (R, P) starts of each region's P partials (each as long as its region).  Every
    region is cut into pieces of ``chunk`` elements; each piece is one ReducePartials
    vertex reading its P partial pieces, and its output piece is mapped to the
    vertex's tile.  Returns the compute set."""
    g = ctx.graph
    out_s = np.asarray(out_s, np.int64)
    out_l = np.asarray(out_l, np.int64)
    src_s = np.asarray(src_s, np.int64).reshape(out_s.size, -1)
    P = src_s.shape[1]
    npc = -(-out_l // chunk)                         # pieces per region
    r = np.repeat(np.arange(out_s.size), npc)
    j = np.arange(r.size) - np.repeat(np.cumsum(npc) - npc, npc)
    off = j * chunk
    ln = np.minimum(chunk, out_l[r] - off)
    V = r.size
    tiles = spread(V, ctx.tiles)
    o_s = out_s[r] + off
    g.map_intervals(o_s, ln, tiles)
    vi = np.repeat(np.arange(V), P)
    pp = np.tile(np.arange(P), V)
    i_s = src_s[r[vi], pp] + off[vi]
    cs = ctx.compute_set(op, "reduce" + tag)
    g.add_vertices(cs, "ReducePartials", tiles, {"in": (vi, i_s, ln[vi]), "out": (np.arange(V), o_s, ln)},
                   dtype=ctx.dtype, params={"k": P, "partials": ctx.partials})
    return cs
