"""Per-tile memory allocation with reuse: interval colouring, vectorized over tiles.

Each *item* (a variable, or several variables merged by an in-place op) has a
lifetime made of one or more closed step intervals ``[start, end]`` and a
number of bytes on each tile it is mapped to.  Two items whose lifetimes
overlap must not share bytes on a tile they both use; items whose lifetimes do
not overlap may.

The allocator is first-fit by sorted lifetimes (items in order of first step,
larger first on ties): each item goes, on each of its tiles, at the lowest
offset where it fits between the blocks of the already placed items it
conflicts with.  The Python loop is over items (a few thousand); the work on
the tiles of one item is numpy (sort the conflicting blocks by tile and
offset, take each tile's first gap that is large enough).

    >>> import numpy as np
    >>> # three items on tile 0: a [0,1], b [1,2], c [2,3] -> a and c share bytes
    >>> r = allocate(3, np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([1, 2, 3]),
    ...              np.array([0, 1, 2]), np.array([0, 0, 0]), np.array([64, 64, 64]), num_tiles=1)
    >>> r.offsets.tolist(), r.peak.tolist()
    ([0, 64, 0], [128])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .intervals import unique

ALIGN = 8


@dataclass
class Allocation:
    offsets: np.ndarray      # per placement pair: byte offset on its tile
    sizes: np.ndarray        # per placement pair: aligned bytes
    peak: np.ndarray         # per tile: highest byte used (the not-always-live region's size)

    def check(self, pair_item, pair_tile, iv_item, iv_start, iv_end) -> list:
        """Pairs of items that overlap in time and in bytes on one tile (should be [])."""
        return overlapping_pairs(self, pair_item, pair_tile, iv_item, iv_start, iv_end)


def _ranges(starts, ends):
    """Concatenated aranges [starts[i], ends[i])."""
    lens = ends - starts
    n = int(lens.sum())
    if n == 0:
        return np.zeros(0, np.int64)
    rep = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return np.arange(n, dtype=np.int64) + rep


def allocate(num_items, iv_item, iv_start, iv_end, pair_item, pair_tile, pair_bytes, *,
             num_tiles, order=None, align=ALIGN) -> Allocation:
    """Place every (item, tile) pair; see the module docstring.

    ``iv_*``: lifetime intervals (item, first step, last step), several per item allowed.
    ``pair_*``: (item, tile, bytes) placements, at most one per (item, tile).
    ``order``: item ids in placement order (default: by first step, larger first).
    """
    iv_item = np.asarray(iv_item, np.int64)
    iv_start = np.asarray(iv_start, np.int64)
    iv_end = np.asarray(iv_end, np.int64)
    pair_item = np.asarray(pair_item, np.int64)
    pair_tile = np.asarray(pair_tile, np.int64)
    size = ((np.asarray(pair_bytes, np.int64) + align - 1) // align) * align
    offsets = np.zeros(pair_item.size, np.int64)
    peak = np.zeros(num_tiles, np.int64)
    if pair_item.size == 0 or num_items == 0:
        return Allocation(offsets, size, peak)
    # pairs grouped by item (CSR)
    po = np.argsort(pair_item, kind="stable")
    p_item, p_tile, p_size = pair_item[po], pair_tile[po], size[po]
    p_bounds = np.searchsorted(p_item, np.arange(num_items + 1))
    # intervals grouped by item
    io = np.argsort(iv_item, kind="stable")
    i_item, i_s, i_e = iv_item[io], iv_start[io], iv_end[io]
    i_bounds = np.searchsorted(i_item, np.arange(num_items + 1))
    if order is None:
        first = np.full(num_items, np.iinfo(np.int64).max)
        np.minimum.at(first, i_item, i_s)
        total = np.bincount(p_item, weights=p_size, minlength=num_items)
        order = np.lexsort((-total, first))
    placed = np.zeros(num_items, bool)
    p_off = np.zeros(p_item.size, np.int64)
    tile_pos = np.full(num_tiles, -1, np.int64)
    for it in np.asarray(order, np.int64).tolist():
        a, b = p_bounds[it], p_bounds[it + 1]
        if a == b:
            placed[it] = True
            continue
        tiles, need = p_tile[a:b], p_size[a:b]
        # placed items whose lifetimes overlap this one's
        ia, ib = i_bounds[it], i_bounds[it + 1]
        if ib - ia == 1:
            hit = (i_s <= i_e[ia]) & (i_e >= i_s[ia])
        else:
            hit = np.zeros(i_s.size, bool)
            for k in range(ia, ib):
                hit |= (i_s <= i_e[k]) & (i_e >= i_s[k])
        conf = unique(i_item[hit])
        conf = conf[placed[conf]]
        off = np.zeros(b - a, np.int64)
        if conf.size:
            idx = _ranges(p_bounds[conf], p_bounds[conf + 1])
            tile_pos[tiles] = np.arange(b - a)
            tp = tile_pos[p_tile[idx]]
            tile_pos[tiles] = -1
            keep = tp >= 0
            if np.any(keep):
                idx, tp = idx[keep], tp[keep]
                bo, be = p_off[idx], p_off[idx] + p_size[idx]
                o = np.lexsort((bo, tp))
                tp, bo, be = tp[o], bo[o], be[o]
                new = np.ones(tp.size, bool)
                new[1:] = tp[1:] != tp[:-1]
                # running max of block ends within each tile, before each block
                rank = np.cumsum(new) - 1
                span = int(be.max()) + 1
                run = np.maximum.accumulate(be + rank * span) - rank * span
                prev = np.empty_like(run)
                prev[0] = 0
                prev[1:] = run[:-1]
                prev[new] = 0
                fits = (bo - prev) >= need[tp]
                # tiles with blocks: first gap that fits, else after the last block
                last = np.append(np.flatnonzero(new)[1:], tp.size) - 1
                off[tp[last]] = run[last]
                if np.any(fits):
                    ft, fi = np.unique(tp[fits], return_index=True)
                    off[ft] = prev[fits][fi]
        p_off[a:b] = off
        np.maximum.at(peak, tiles, off + need)
        placed[it] = True
    offsets[po] = p_off
    return Allocation(offsets, size, peak)


def overlapping_pairs(alloc, pair_item, pair_tile, iv_item, iv_start, iv_end, limit=10) -> list:
    """(item, item, tile) triples that are live together and share bytes (a checker)."""
    out = []
    pair_item = np.asarray(pair_item)
    pair_tile = np.asarray(pair_tile)
    iv_item, iv_start, iv_end = (np.asarray(x) for x in (iv_item, iv_start, iv_end))
    for t in unique(pair_tile).tolist():
        sel = np.flatnonzero(pair_tile == t)
        for x in range(sel.size):
            for y in range(x + 1, sel.size):
                i, j = sel[x], sel[y]
                a, b = pair_item[i], pair_item[j]
                if a == b:
                    continue
                if not (alloc.offsets[i] < alloc.offsets[j] + alloc.sizes[j]
                        and alloc.offsets[j] < alloc.offsets[i] + alloc.sizes[i]):
                    continue
                ia, ib = iv_item == a, iv_item == b
                s1, e1, s2, e2 = iv_start[ia], iv_end[ia], iv_start[ib], iv_end[ib]
                if np.any((s1[:, None] <= e2[None, :]) & (s2[None, :] <= e1[:, None])):
                    out.append((int(a), int(b), int(t)))
                    if len(out) >= limit:
                        return out
    return out
