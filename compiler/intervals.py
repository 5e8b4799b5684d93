"""Vectorized helpers for contiguous intervals of element indices.

Tensor regions, tile mappings and edges are all stored as intervals
(start, length) in a graph's global element space; these helpers convert
between intervals and index arrays without Python loops.
"""
from __future__ import annotations

import numpy as np


def unique(values) -> np.ndarray:
    """``np.unique(values)`` (sorted distinct values, same dtype) by one sort for integer arrays:
    numpy 2.4's ``np.unique`` without ``return_*`` goes through a hash table that took 7 s for 5 M
    random integers, 20 s for 5 M nearly sorted ones (a sort: 1.1 s and 0.08 s).

    >>> unique(np.array([5, 3, 5, 1]))
    array([1, 3, 5])
    """
    a = np.asarray(values).ravel()
    if a.dtype.kind not in "iub":
        return np.unique(a)
    a = np.sort(a, kind="stable")
    keep = np.empty(a.size, bool)
    keep[:1] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def runs(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a flat index array into maximal runs of consecutive values.

    >>> runs(np.array([3, 4, 5, 9, 10, 2]))
    (array([3, 9, 2]), array([3, 2, 1]))
    """
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    brk = np.flatnonzero(np.diff(idx) != 1) + 1
    starts_pos = np.concatenate(([0], brk))
    ends_pos = np.concatenate((brk, [idx.size]))
    return idx[starts_pos], (ends_pos - starts_pos).astype(np.int64)


def expand(starts: np.ndarray, lengths: np.ndarray, dtype=np.int64) -> np.ndarray:
    """Concatenate ``arange(s, s + l)`` for every interval, vectorized (``dtype``:
    of the result, e.g. int32 for half the memory when the indices fit).

    >>> expand(np.array([3, 9]), np.array([3, 2]))
    array([ 3,  4,  5,  9, 10])
    """
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype)
    offs = np.cumsum(lengths) - lengths
    return np.repeat((starts - offs).astype(dtype, copy=False), lengths) + np.arange(total, dtype=dtype)


def segment_ids(lengths: np.ndarray) -> np.ndarray:
    """For intervals of the given lengths, the interval number of every element.

    >>> segment_ids(np.array([2, 0, 3]))
    array([0, 0, 2, 2, 2])
    """
    lengths = np.asarray(lengths, np.int64)
    return np.repeat(np.arange(lengths.size), lengths)


def split_at(starts, lengths, bounds):
    """Split intervals wherever they cross one of the sorted ``bounds``.

    Returns (piece_starts, piece_lengths, parent) where ``parent`` is the index of
    the interval each piece came from.

    >>> split_at(np.array([0, 10]), np.array([10, 4]), np.array([4, 12]))
    (array([ 0,  4, 10, 12]), array([4, 6, 2, 2]), array([0, 0, 1, 1]))
    """
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    bounds = np.asarray(bounds, np.int64)
    # repeated bounds (e.g. the starts of empty variables) would give empty pieces
    if bounds.size > 1 and not np.all(bounds[1:] > bounds[:-1]):
        bounds = unique(bounds)
    ends = starts + lengths
    lo = np.searchsorted(bounds, starts, side="right")
    hi = np.searchsorted(bounds, ends, side="left")
    ncut = np.maximum(hi - lo, 0)
    if not ncut.any():        # nothing to split (the common case): skip the piece arithmetic
        return starts.copy(), lengths.copy(), np.arange(starts.size)
    npieces = ncut + 1
    parent = np.repeat(np.arange(starts.size), npieces)
    # position of each piece inside its parent: 0..ncut
    first = np.cumsum(npieces) - npieces
    k = np.arange(parent.size) - np.repeat(first, npieces)
    # piece k of parent p starts at bounds[lo[p] + k - 1] (k > 0) or starts[p]
    bidx = np.repeat(lo, npieces) + k - 1
    pstart = np.where(k == 0, starts[parent], bounds[np.clip(bidx, 0, max(bounds.size - 1, 0))] if bounds.size else 0)
    nxt = np.repeat(lo, npieces) + k
    pend = np.where(k == np.repeat(ncut, npieces), ends[parent],
                    bounds[np.clip(nxt, 0, max(bounds.size - 1, 0))] if bounds.size else 0)
    return pstart.astype(np.int64), (pend - pstart).astype(np.int64), parent


def merge_per_key(key, start, end, closed=False):
    """Merge the intervals that share a key and overlap, vectorized.

    Intervals are [start, end) (``closed=True``: [start, end], so that two
    lives meeting at one step merge).  Returns (first, start, end): for each
    merged interval, the index (into the inputs) of its first member, its
    start and its end, sorted by key then start.

    >>> merge_per_key(np.array([0, 0, 1]), np.array([0, 3, 0]), np.array([4, 6, 2]))
    (array([0, 2]), array([0, 0]), array([6, 2]))
    """
    key = np.asarray(key, np.int64)
    start = np.asarray(start, np.int64)
    end = np.asarray(end, np.int64)
    if key.size == 0:
        z = np.zeros(0, np.int64)
        return z, z, z
    kmax, smin, emax = int(key.max()), int(start.min()), int(end.max())
    if key.min() >= 0 and smin >= 0 and (kmax + 1) * (emax + 1) < 2**62:
        o = np.argsort(key * (emax + 1) + start, kind="stable")   # one sort of packed (key, start)
    else:
        o = np.lexsort((start, key))
    k, st, en = key[o], start[o], end[o]
    newk = np.ones(k.size, bool)
    newk[1:] = k[1:] != k[:-1]
    # running max of the ends within each key: lift each key's ends above all earlier ones
    rank = np.cumsum(newk) - 1
    span = int(en.max() - min(int(st.min()), 0)) + 2
    run = np.maximum.accumulate(en + rank * span) - rank * span
    new = newk.copy()
    new[1:] |= st[1:] > run[:-1] if closed else st[1:] >= run[:-1]
    heads = np.flatnonzero(new)
    tails = np.append(heads[1:], k.size) - 1
    return o[heads], st[heads], run[tails]


class Lookup:
    """``searchsorted(bounds, q, side="right") - 1`` for many queries ``q`` in
    [0, limit): a table of the answer at every 2**shift-th element, then a step over
    the few bounds between that element and the query (no binary search per query).

    >>> Lookup(np.array([0, 5, 5, 9]), 12)(np.array([0, 4, 5, 11]))
    array([0, 0, 2, 3])
    """

    def __init__(self, bounds, limit):
        self.bounds = np.asarray(bounds, np.int64)
        self.limit = int(limit)
        self.shift = 6
        while (self.limit >> self.shift) > (1 << 22):
            self.shift += 1
        # the answer at slot i (element i << shift): the bounds at or before it, less one; a
        # bound b counts from slot ceil(b / 2**shift) on (a count and a cumulative sum over
        # the slots, not a binary search per slot)
        slots = (self.limit >> self.shift) + 2
        # the next bound after each answer; after the answer -1 (a query before every bound), the
        # first bound, at index -1: the table's steps then start there
        self.after = np.concatenate((self.bounds[1:], [np.iinfo(np.int64).max], self.bounds[:1]))
        # more bounds than slots (the mapping runs of a BERT-Large stage: 6 M in 2.3 M slots): most
        # queries would step past the table's answer and be searched again; numpy's binary search
        # over queries in nearly ascending order (edges, vertex by vertex) is faster than both
        # (a stage's vertex state: 5.2-6.2 s -> 4.6-4.8 s); the answers are the same
        self.dense = self.bounds.size > slots
        if self.dense:
            self.table = None
            return
        # the bounds ascend: answer j - 1 holds from slot first[j - 1] to slot first[j], one
        # repeat (not a count, its cumulative sum and a subtraction: three arrays of a slot each,
        # which this machine faults in page by page: ResNet-50's variables, 86 M elements,
        # 0.02-0.1 s, now one array)
        first = np.clip(-((-self.bounds) >> self.shift), 0, slots)
        self.table = np.repeat(np.arange(-1, self.bounds.size, dtype=np.int64),
                               np.diff(first, prepend=0, append=slots))

    #: steps over the bounds of a table slot before the rest of the queries are binary-searched
    #: (where the bounds are dense, as the mapping runs of a BERT-Large stage, stepping through
    #: them all was 2.4x slower than the search; a few steps, then the search for the others)
    MAX_STEPS = 2

    def __call__(self, q):
        q = np.asarray(q, np.int64)
        if self.dense:
            return np.searchsorted(self.bounds, q, side="right") - 1
        r = self.table[q >> self.shift]
        todo = np.flatnonzero(self.after[r] <= q)
        for _ in range(self.MAX_STEPS):
            if not todo.size:
                return r
            r[todo] += 1
            todo = todo[self.after[r[todo]] <= q[todo]]
        if todo.size:
            r[todo] = np.searchsorted(self.bounds, q[todo], side="right") - 1
        return r

    def locate(self, q):
        """(``self(q)``, the next bound after each answer): the bound that ends each query's
        interval comes with the search (``self.after``), not from a second gather."""
        q = np.asarray(q, np.int64)
        if self.dense:
            r = np.searchsorted(self.bounds, q, side="right") - 1
            return r, self.after[r]
        r = self.table[q >> self.shift]
        nxt = self.after[r]
        todo = np.flatnonzero(nxt <= q)
        for _ in range(self.MAX_STEPS):
            if not todo.size:
                return r, nxt
            r[todo] += 1
            nxt[todo] = self.after[r[todo]]
            todo = todo[nxt[todo] <= q[todo]]
        if todo.size:
            r[todo] = np.searchsorted(self.bounds, q[todo], side="right") - 1
            nxt[todo] = self.after[r[todo]]
        return r, nxt

    def covers(self, q):
        """Whether every query lies in [0, limit) (where the table answers)."""
        return q.size == 0 or (int(q.min()) >= 0 and int(q.max()) < self.limit)
