"""Exchange planning: which tile sends which bytes to which, from the tile mappings.

A vertex that reads a region mapped on another tile makes that tile send it
before the compute phase; an output written by a vertex but mapped elsewhere is
sent after it.  A ``Copy`` between tensors moves every element whose source and
destination tiles differ; a ``Copy`` with a host stream moves each tile's share
over the host link.  Everything is planned with numpy over all edges at once:

* :func:`runs_of_mapping`: where the owning tile changes over the graph's memory;
* :func:`plan_compute_exchange`: the (in, out) :class:`ExchangePlan` of every
  compute set, from its vertices' edges;
* :func:`plan_copies`: the plan of every ``Copy`` of a program (an
  :class:`ExchangePlan`, or a :class:`StreamCopy` for host streams).

Reads are multicast: a region is sent once by its owner however many tiles
receive it, and a tile receives each element once however many of its vertices
read it.

    >>> from types import SimpleNamespace
    >>> from compiler.graph import Graph
    >>> chip = SimpleNamespace(tiles=2, sram_bytes_per_tile=4096, workers_per_tile=6,
    ...     vector_bytes_per_cycle=8, vertex_overhead_cycles=10,
    ...     flops_per_cycle_per_tile={"fp32": 32, "fp16": 128})
    >>> g = Graph(chip)
    >>> x = g.add_variable("fp32", (4,), "x"); y = g.add_variable("fp32", (4,), "y")
    >>> g.set_tile_mapping(x, 1); g.set_tile_mapping(y, 0)
    >>> cs = g.add_compute_set("relu")
    >>> g.add_vertex(cs, "Relu", {"in": x, "out": y}, tile=0)
    0
    >>> arrays = g.finalize()
    >>> xin, xout = plan_compute_exchange(g, arrays, *runs_of_mapping(g), tiles_per_chip=2)
    >>> xin[cs.id].send_tiles.tolist(), xin[cs.id].recv_tiles.tolist(), xin[cs.id].total_bytes
    ([1], [0], 16)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import intervals
from .parallel import parallel_map
from .codelets import CODELETS
from hardware.dtypes import DTYPE_BYTES, DTYPE_NAMES
from .graph import DataStream, GraphError
from .program import Copy, walk
from .tensor import Tensor


@dataclass
class ExchangePlan:
    """Bytes each tile sends / receives in one exchange phase (sparse over tiles)."""
    send_tiles: np.ndarray
    send_bytes: np.ndarray
    send_messages: np.ndarray
    recv_tiles: np.ndarray
    recv_bytes: np.ndarray
    chip_bytes: dict = field(default_factory=dict)   # (src chip, dst chip) -> bytes

    @property
    def total_bytes(self) -> int:
        return int(self.recv_bytes.sum())

    @staticmethod
    def empty():
        z = np.zeros(0, np.int64)
        return ExchangePlan(z, z, z, z, z, {})


def merge_plans(plans) -> ExchangePlan:
    """One exchange phase doing what ``plans`` do: per tile, their bytes and messages summed."""
    def total(tiles, *vals):
        t = np.concatenate(tiles)
        if t.size == 0:
            return (t,) + tuple(np.zeros(0, np.int64) for _ in vals)
        u, inv = np.unique(t, return_inverse=True)
        return (u,) + tuple(np.bincount(inv, weights=np.concatenate(v)).astype(np.int64) for v in vals)
    st, sb, sm = total([p.send_tiles for p in plans], [p.send_bytes for p in plans], [p.send_messages for p in plans])
    rt, rb = total([p.recv_tiles for p in plans], [p.recv_bytes for p in plans])
    chip = {}
    for p in plans:
        for k, v in p.chip_bytes.items():
            chip[k] = chip.get(k, 0) + v
    return ExchangePlan(st, sb, sm, rt, rb, chip)


@dataclass
class StreamCopy:
    stream: DataStream
    tensor: Tensor
    direction: str            # "h2d" | "d2h"
    tiles: np.ndarray
    bytes_per_tile: np.ndarray


def runs_of_mapping(graph):
    """Global boundaries where the owning tile changes, and each run's tile."""
    starts, tiles = [], []
    for var in graph.variables:
        runs = graph.tile_map.runs(var.id)
        if runs is None or var.size == 0:
            continue
        starts.append(runs[0] + var.start)
        tiles.append(runs[1])
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    s = np.concatenate(starts)
    t = np.concatenate(tiles)
    o = np.argsort(s, kind="stable")
    return s[o], t[o]


def _pieces(graph, starts, lengths, run_starts, run_tiles, lookup=None, nxt=None):
    """Split regions at tile-mapping boundaries; return pieces with their tile, and the
    region of each piece.

    Every region's first piece is in the region's place (most regions lie on one tile:
    that piece is the region); the further pieces of the regions that reach into later
    runs follow, cut at the starts of those runs.  Two lookups per region at most (the run
    of its first element, and of its last where it reaches further).  ``nxt``:
    ``run_starts`` with int64's maximum appended (given by a caller that splits many chunks).
    """
    if starts.size == 0 or run_starts.size == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, z.astype(np.int32)
    find = lookup or (lambda q: np.searchsorted(run_starts, q, side="right") - 1)
    r0 = find(starts)
    last = starts + lengths - 1
    if nxt is None:
        nxt = np.append(run_starts, np.iinfo(np.int64).max)
    rc = np.clip(r0, 0, None)
    end0 = nxt[r0 + 1]                                   # where each region's first run ends
    multi = np.flatnonzero(end0 <= last)                 # regions that reach into a later run
    tile0 = run_tiles[rc]
    if multi.size == 0:
        return starts, lengths, np.arange(starts.size), tile0
    first_len = np.minimum(lengths, end0 - starts)
    # piece k >= 1 of region i covers run r0[i] + k, from that run's start
    a, z = r0[multi], find(last[multi])
    nmore = z - a
    parent = np.repeat(multi, nmore)
    k = np.arange(parent.size) - np.repeat(np.cumsum(nmore) - nmore, nmore) + 1
    run = np.repeat(a, nmore) + k
    ps = run_starts[run]
    pe = np.minimum(nxt[run + 1], last[parent] + 1)
    return (np.concatenate((starts, ps)), np.concatenate((first_len, pe - ps)),
            np.concatenate((np.arange(starts.size), parent)), np.concatenate((tile0, run_tiles[run])))


def _aggregate(keys, values, *more):
    u, inv = np.unique(keys, return_inverse=True)
    out = [np.bincount(inv, weights=values).astype(np.int64)]
    for m in more:
        out.append(np.bincount(inv, weights=m).astype(np.int64))
    return (u, *out)


def _union(keys, start, length):
    """Merge intervals that overlap and share every key (touching ones stay apart).

    ``keys``: tuple of non-negative int arrays, packed into one int64 key.
    Returns the index of each merged interval's first member (into the
    inputs), its start and its length.
    """
    key = np.zeros(start.size, np.int64)
    for k in keys:
        k = k.astype(np.int64)
        key = key * (int(k.max()) + 1 if k.size else 1) + k
    start = np.asarray(start, np.int64)
    first, st, en = intervals.merge_per_key(key, start, start + length)
    return first, st, en - st


def _bits(n):
    """Bits that hold the values 0..n-1."""
    return max(int(n) - 1, 0).bit_length()


def _sorted_union(key, start, end, kbits):
    """Union of the intervals [start, end) (length > 0) that share a key, touching ones
    apart: (key, start, end) of the merged intervals, sorted by key then start.

    Starts and ends are sorted independently (values, not an argsort): among a key's
    intervals in start order, the first i end before the (i+1)-th starts exactly when the
    i-th smallest end does.  Every key has as many starts as ends, so the i-th smallest
    packed start and end share a key, and a merged interval begins where the packed end
    before it is at most the packed start (a new key or a gap).  None when
    (key, position) does not fit in an int64.
    """
    pb = _bits(int(end.max()) + 1)
    if kbits + pb > 62:
        return None
    a = key << pb
    b = a | end
    a |= start
    a.sort(kind="stable")     # (timsort: faster than quicksort on these partly ordered keys)
    b.sort(kind="stable")
    new = np.empty(a.size, bool)
    new[0] = True
    np.less_equal(b[:-1], a[1:], out=new[1:])
    heads = np.flatnonzero(new)
    tails = np.append(heads[1:], a.size) - 1
    mask = (1 << pb) - 1
    ah = a[heads]
    return ah >> pb, ah & mask, b[tails] & mask


def _plan_sorted(group, src_tile, dst_tile, start, length, ebytes):
    """Receptions (group, src, dst, bytes) and the send / receive aggregates of
    :func:`_plan`, with sorts of packed values.  The element size is part of the key
    (overlapping pieces share a variable, hence a dtype), so the merged intervals need
    no link back to their members.  None where the packed keys would not fit."""
    start = np.asarray(start, np.int64)
    if start.size == 0 or int(start.min()) < 0:
        return None
    if int(ebytes.min()) < 0 or int(ebytes.max()) > 64:
        return None
    if min(int(group.min()), int(src_tile.min()), int(dst_tile.min())) < 0:
        return None
    present = np.bincount(ebytes, minlength=1) > 0
    eu = np.flatnonzero(present).astype(np.int64)            # the element sizes present
    # the groups present, by rank (a chunk holds a few compute sets out of a thousand), and
    # positions from the chunk's lowest start: fewer bits, so that (key, position) fits an
    # int64 in big graphs too (both maps keep the order, the merged intervals, the bytes)
    gpresent = np.bincount(group) > 0
    gu = np.flatnonzero(gpresent).astype(np.int64)
    gcode = (np.cumsum(gpresent) - 1)[group] if gu.size > 1 else np.zeros(group.size, np.int64)
    base = int(start.min())
    GB, SB, DB, EB = (_bits(gu.size), _bits(int(src_tile.max()) + 1),
                      _bits(int(dst_tile.max()) + 1), _bits(eu.size))
    k1 = (gcode.astype(np.int64) << DB | dst_tile) << SB | src_tile
    if EB:      # more than one element size: its code in the key
        k1 = k1 << EB | (np.cumsum(present) - 1)[ebytes]
    st0 = start - base
    r1 = _sorted_union(k1, st0, st0 + length, GB + DB + SB + EB)
    if r1 is None:
        return None
    key, st, en = r1
    e = key & ((1 << EB) - 1)
    s = (key >> EB) & ((1 << SB) - 1)
    gd = key >> (EB + SB)
    d = gd & ((1 << DB) - 1)
    gc = gd >> DB
    g = gu[gc]
    nb = (en - st) * eu[e]
    # receptions per (group, dst): contiguous in this order
    rh = np.flatnonzero(np.concatenate(([True], gd[1:] != gd[:-1])))
    T = np.int64(1 << 32)
    rk = g[rh] * T + d[rh]
    rb = np.add.reduceat(nb, rh)
    # sends: union of the receptions per (group, src), then per (group, src)
    k2 = ((gc << SB | s) << EB) | e
    r2 = _sorted_union(k2, st, en, GB + SB + EB)
    if r2 is None:
        return None
    key2, st2, en2 = r2
    e2 = key2 & ((1 << EB) - 1)
    gs = key2 >> EB
    g2, s2 = gu[gs >> SB], gs & ((1 << SB) - 1)
    nb2 = (en2 - st2) * eu[e2]
    sh = np.flatnonzero(np.concatenate(([True], gs[1:] != gs[:-1])))
    sk = g2[sh] * T + s2[sh]
    sb = np.add.reduceat(nb2, sh)
    sm = np.diff(np.append(sh, gs.size)).astype(np.int64)
    return (g, s, d, nb), (sk, sb.astype(np.int64), sm), (rk, rb.astype(np.int64))


def _plan(group, src_tile, dst_tile, start, length, nbytes, tiles_per_chip, ngroups, ebytes=None):
    """Exchange plans per group (compute set) from remote pieces.

    Reads are multicast: a region is sent once by its owner however many tiles
    receive it, and a tile receives each element once however many of its
    vertices read it (overlapping regions are merged, per receiver and per
    sender).  Every piece lies in one variable, so overlapping pieces share a
    dtype.  ``nbytes`` may be None where ``ebytes`` (bytes per element) is given.
    """
    plans = {}
    keep = length > 0
    if not np.all(keep):
        group, src_tile, dst_tile = group[keep], src_tile[keep], dst_tile[keep]
        start, length = start[keep], length[keep]
        nbytes = None if nbytes is None else nbytes[keep]
        ebytes = None if ebytes is None else ebytes[keep]
    if group.size == 0:
        return plans
    if ebytes is None:
        ebytes = nbytes // np.maximum(length, 1)
    T = np.int64(1 << 32)
    fast = _plan_sorted(group, src_tile, dst_tile, start, length, ebytes)
    if fast is not None:
        (g, s, d, nb), (sk, sb, sm), (rk, rb) = fast
    else:
        # receptions: union of the pieces per (group, dst, src)
        i, st, ln = _union((group, dst_tile, src_tile), start, length)
        g, s, d, nb = group[i], src_tile[i], dst_tile[i], ln * ebytes[i]
        # sends: union of the receptions per (group, src)
        j, _, sln = _union((g, s), st, ln)
        gs, ss, nbs = g[j], s[j], sln * ebytes[i][j]
        sk, sb, sm = _aggregate(gs * T + ss, nbs.astype(np.float64), np.ones(j.size))
        rk, rb = _aggregate(g * T + d, nb.astype(np.float64))
    sg, rg = sk // T, rk // T
    cs_, cd_ = s // tiles_per_chip, d // tiles_per_chip
    cross = cs_ != cd_
    chip_b = {}
    if np.any(cross):
        ck, cb = _aggregate((g[cross] * 4096 + cs_[cross]) * 4096 + cd_[cross], nb[cross].astype(np.float64))
        for k, b in zip(ck.tolist(), cb.tolist()):
            chip_b.setdefault(k // (4096 * 4096), {})[((k // 4096) % 4096, k % 4096)] = b
    s_bounds = np.searchsorted(sg, np.arange(ngroups + 1))
    r_bounds = np.searchsorted(rg, np.arange(ngroups + 1))
    for grp in intervals.unique(np.concatenate((sg, rg))).tolist():
        a, b = s_bounds[grp], s_bounds[grp + 1]
        c, d2 = r_bounds[grp], r_bounds[grp + 1]
        plans[grp] = ExchangePlan(sk[a:b] % T, sb[a:b], sm[a:b], rk[c:d2] % T, rb[c:d2],
                                  chip_b.get(grp, {}))
    return plans


EXCHANGE_CHUNK_EDGES = 250_000   # small enough that the temporaries come from the heap, not fresh pages


def _plan_edges(graph, arrays, ranges, vt, edge_bytes, run_starts, run_tiles, tiles_per_chip, ncs,
                run_lookup=None, run_next=None):
    """Exchange plans (in, out) for the edges in ``ranges`` [(e0, e1, batch)];
    ``edge_bytes``: edge ids -> their element size."""
    lens = np.array([e1 - e0 for e0, e1, _ in ranges], np.int64)
    contiguous = all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    if contiguous:      # one run of edges (as chunks of consecutive compute sets are): slices, not gathers
        E0 = ranges[0][0]
        sel = slice(E0, ranges[-1][1])
    else:
        sel = intervals.expand(np.array([r[0] for r in ranges]), lens)
    n = int(lens.sum())
    reads = np.empty(n, bool)
    writes = np.empty(n, bool)
    pos = 0
    for e0, e1, b in ranges:
        c = CODELETS[b.codelet]
        f = arrays.edge_field[e0:e1]
        reads[pos:pos + e1 - e0] = np.array([x.reads for x in c.fields])[f]
        writes[pos:pos + e1 - e0] = np.array([x.writes for x in c.fields])[f]
        pos += e1 - e0
    # the compute set and the tile of each edge's vertex
    ecs = np.repeat(np.array([b.cs for _, _, b in ranges], np.int64), lens)
    evt = vt[arrays.edge_vertex[sel]]
    ps, pl, parent, ptile = _pieces(graph, arrays.edge_start[sel], arrays.edge_len[sel].astype(np.int64),
                                    run_starts, run_tiles, run_lookup, run_next)
    pvt = evt[parent]
    remote = ptile != pvt
    pcs = ecs[parent]
    xs = []
    for rw, (src, dst) in ((reads, (ptile, pvt)), (writes, (pvt, ptile))):
        r = np.flatnonzero(remote & rw[parent])
        pe = parent[r] + E0 if contiguous else sel[parent[r]]      # the edge of each piece
        xs.append(_plan(pcs[r], src[r], dst[r], ps[r], pl[r], None, tiles_per_chip, ncs,
                        ebytes=edge_bytes(pe)))
    return tuple(xs)


def _edge_bytes(graph, arrays):
    """Element size of the edges ``e``, as a function of ``e`` (from each edge's variable's
    dtype, as the checks found it): asked for the remote edges of one chunk at a time, not
    for all edges at once (8 bytes per edge of a 100 M edge graph)."""
    dt = arrays.extra.get("edge_dtype")
    if dt is None:
        var_bytes = np.array([DTYPE_BYTES[v.dtype] for v in graph.variables], np.int64)
        return lambda e: var_bytes[graph.variable_of(arrays.edge_start[e])]
    dtype_bytes = np.array([DTYPE_BYTES[n] for n in DTYPE_NAMES], np.int64)
    return lambda e: dtype_bytes[dt[e]]


def plan_compute_exchange(graph, arrays, run_starts, run_tiles, tiles_per_chip):
    """Exchange plans (in, out) of every compute set: dicts compute set id -> :class:`ExchangePlan`
    (compute sets without remote reads or writes are absent).

    Compute sets are planned in chunks of about ``EXCHANGE_CHUNK_EDGES`` edges: every
    compute set's edges are planned together (multicast is exact), the temporaries stay
    bounded.
    """
    exchange_in, exchange_out = {}, {}
    if not arrays.edge_start.size:
        return exchange_in, exchange_out
    ncs = len(graph.compute_sets)
    vt = arrays.vertex_tile
    edge_bytes = _edge_bytes(graph, arrays)
    run_lookup = intervals.Lookup(run_starts, max(graph.num_elements, 1)) if run_starts.size else None
    run_next = np.append(run_starts, np.iinfo(np.int64).max)    # once, not per chunk
    off = arrays.vertex_edge_offsets
    ranges = {}
    for b in graph.batches:
        ranges.setdefault(b.cs, []).append((int(off[b.v0]), int(off[b.v1]), b))
    chunks, chunk, size = [], [], 0
    items = list(ranges.items())
    for i, (csid, rs) in enumerate(items):
        chunk += rs
        size += sum(e1 - e0 for e0, e1, _ in rs)
        if size >= EXCHANGE_CHUNK_EDGES or i == len(items) - 1:
            chunks.append(chunk)
            chunk, size = [], 0

    def plan(chunk):
        return _plan_edges(graph, arrays, chunk, vt, edge_bytes, run_starts, run_tiles, tiles_per_chip, ncs,
                           run_lookup, run_next)
    # the chunks are independent and numpy releases the GIL in their sorts and gathers: planned
    # on every core, merged in chunk order (the same dicts as one after another)
    for xin, xout in parallel_map(plan, chunks):
        exchange_in.update(xin)
        exchange_out.update(xout)
    return exchange_in, exchange_out


def plan_copies(graph, program, run_starts, run_tiles, tiles_per_chip) -> dict:
    """The plan of every ``Copy`` in ``program``: id(Copy node) -> :class:`StreamCopy` (host
    streams) or :class:`ExchangePlan` (tensor to tensor, all planned together in one pass),
    in program order."""
    copies, tensor_copies = {}, []
    for p in walk(program):
        if isinstance(p, Copy):
            copies[id(p)] = _plan_stream_copy(graph, p)
            if copies[id(p)] is None:
                tensor_copies.append(p)
    if tensor_copies:
        copies.update(_plan_tensor_copies(graph, tensor_copies, run_starts, run_tiles, tiles_per_chip))
    return copies


def _elements_per_tile(graph, t):
    """(tiles, element counts) of tensor ``t`` (tile -1: unmapped).  A contiguous view of one
    variable is counted on the variable's mapping runs (a streamed input of 2^26 elements took
    2.6 GB element by element); other views element by element."""
    if t.numel and t.is_contiguous():
        s0 = int(t.intervals()[0][0])
        vid = int(graph.variable_of(np.array([s0]))[0])
        var = graph.variables[vid]
        runs = graph.tile_map.runs(vid)
        lo, hi = s0 - var.start, s0 - var.start + t.numel
        if runs is not None and hi <= var.size:
            st, tl = runs
            en = np.append(st[1:], var.size)
            n = np.clip(np.minimum(en, hi) - np.maximum(st, lo), 0, None)
            covered = int(n.sum())
            tiles, counts = tl[n > 0], n[n > 0]
            if covered < t.numel:     # before the first run: unmapped
                tiles, counts = np.append(tiles, -1), np.append(counts, t.numel - covered)
            u, inv = np.unique(tiles, return_inverse=True)
            return u.astype(np.int32), np.bincount(inv, weights=counts).astype(np.int64)
    tiles = graph.tile_of_elements(t.elements().ravel())
    return np.unique(tiles, return_counts=True)


def _plan_stream_copy(graph, p: Copy):
    """A host-stream Copy's plan; None for a (checked) tensor-to-tensor Copy, which
    :func:`_plan_tensor_copies` plans with the others."""
    src, dst = p.src, p.dst
    if isinstance(src, DataStream) or isinstance(dst, DataStream):
        stream, t = (src, dst) if isinstance(src, DataStream) else (dst, src)
        if not isinstance(t, Tensor):
            raise GraphError(f"Copy with stream {stream.name!r} needs a tensor on the other side")
        want = "h2d" if stream is src else "d2h"
        if stream.direction != want:
            raise GraphError(f"stream {stream.name!r} is {stream.direction}, cannot be used as "
                             f"{'source' if want == 'h2d' else 'destination'} of a Copy")
        if t.numel != stream.numel or t.dtype != stream.dtype:
            raise GraphError(f"Copy between stream {stream.name!r} ({stream.numel} x {stream.dtype}) and "
                             f"tensor {t.name!r} ({t.numel} x {t.dtype}): sizes or dtypes differ")
        u, cnt = _elements_per_tile(graph, t)
        return StreamCopy(stream, t, want, u, cnt * DTYPE_BYTES[t.dtype])
    if src.numel != dst.numel:
        raise GraphError(f"Copy from {src.name!r} ({src.numel} elements) to {dst.name!r} "
                         f"({dst.numel} elements): sizes differ")
    if src.dtype != dst.dtype:
        raise GraphError(f"Copy from {src.name!r} ({src.dtype}) to {dst.name!r} ({dst.dtype}): dtypes differ")
    return None


def _copy_pieces(graph, p, run_starts, run_tiles, var_starts, mapped):
    """The remote pieces of one tensor-to-tensor Copy: maximal runs of consecutive source
    elements of one variable between one pair of tiles (source tile != destination tile),
    as (source starts, lengths, source tiles, destination tiles).

    Computed on intervals: the copy's element positions are cut wherever the source or
    the destination view jumps, crosses a tile-mapping run or a variable start.
    """
    n = p.src.numel
    z = np.zeros(0, np.int64)
    if n == 0:
        return z, z, z, z
    sides = []
    cuts = [np.array([0, n], np.int64)]
    for t in (p.src, p.dst):
        s, ln = t.intervals()
        s, ln = s.astype(np.int64), ln.astype(np.int64)
        off = np.cumsum(ln) - ln                    # position of each interval in the copy
        cuts.append(off)
        for bounds in (run_starts, var_starts):     # boundaries strictly inside an interval
            lo = np.searchsorted(bounds, s, side="right")
            hi = np.searchsorted(bounds, s + ln, side="left")
            k = np.maximum(hi - lo, 0)
            if k.any():
                bi = intervals.expand(lo, k)
                cuts.append(np.repeat(off - s, k) + bounds[bi])
        sides.append((s, off))
    cut = intervals.unique(np.concatenate(cuts))
    pos, length = cut[:-1], np.diff(cut)
    addr = []
    for s, off in sides:
        i = np.searchsorted(off, pos, side="right") - 1
        addr.append(s[i] + (pos - off[i]))
    tiles = [_tile_of(a, run_starts, run_tiles, var_starts, mapped) for a in addr]
    remote = tiles[0] != tiles[1]
    ss, ln, st, dt = addr[0][remote], length[remote], tiles[0][remote], tiles[1][remote]
    if ss.size == 0:
        return z, z, z, z
    # join pieces the element-wise rule would not have cut: consecutive source, same tiles
    # and variable (cuts from the destination side or from local pieces in between)
    var = np.searchsorted(var_starts, ss, side="right") - 1
    join = np.zeros(ss.size, bool)
    join[1:] = (ss[1:] == ss[:-1] + ln[:-1]) & (st[1:] == st[:-1]) & (dt[1:] == dt[:-1]) & (var[1:] == var[:-1])
    head = np.flatnonzero(~join)
    ln = np.add.reduceat(ln, head)
    return ss[head], ln, st[head], dt[head]


def _tile_of(addr, run_starts, run_tiles, var_starts, mapped):
    """Tile of each element (-1 where its variable has no mapping), as tile_of_elements."""
    out = np.full(addr.size, -1, np.int64)
    if run_starts.size:
        r = np.searchsorted(run_starts, addr, side="right") - 1
        out = np.where(r >= 0, run_tiles[np.clip(r, 0, None)].astype(np.int64), -1)
    vid = np.searchsorted(var_starts, addr, side="right") - 1
    return np.where(mapped[vid], out, -1)


def _plan_tensor_copies(graph, ps, run_starts, run_tiles, tiles_per_chip):
    """Exchange plans of tensor-to-tensor Copy programs, all planned in one pass."""
    var_starts = np.array([v.start for v in graph.variables], np.int64)
    mapped = np.array([v.id in graph.tile_map for v in graph.variables] + [False])
    parts = [_copy_pieces(graph, p, run_starts, run_tiles, var_starts, mapped) for p in ps]
    grp = np.repeat(np.arange(len(ps), dtype=np.int64), [x[0].size for x in parts])
    cat = [np.concatenate([x[i] for x in parts]) if parts else np.zeros(0, np.int64) for i in range(4)]
    ss, ln, st, dt = cat
    nb = ln * np.array([DTYPE_BYTES[p.src.dtype] for p in ps], np.int64)[grp] if grp.size else ln
    plans = _plan(grp, st, dt, ss, ln, nb, tiles_per_chip, len(ps))
    return {id(p): plans.get(i, ExchangePlan.empty()) for i, p in enumerate(ps)}
