"""Splitting an output into vertex-sized chunks that follow a tensor's tile mapping, and
the regions of per-channel operands those chunks read (element-wise maps, reductions,
norms, copies, optimizer updates)."""
from __future__ import annotations

import numpy as np

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
