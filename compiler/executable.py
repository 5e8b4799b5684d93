"""Compile a graph and a program into an :class:`Executable`.

The executable is what the simulator runs: the finalized graph arrays, the
program tree, and, per compute set, the work of each tile (from the codelet
table's cycle estimates) and the exchange the tile mappings imply (which tile
sends which bytes to which).  Everything is computed once with numpy over all
vertices and edges; ``Repeat`` and ``Call`` reuse it.

    >>> from types import SimpleNamespace
    >>> from compiler.graph import Graph
    >>> from compiler.program import Execute
    >>> chip = SimpleNamespace(tiles=2, sram_bytes_per_tile=4096, workers_per_tile=6,
    ...     vector_bytes_per_cycle=8, vertex_overhead_cycles=10,
    ...     flops_per_cycle_per_tile={"fp32": 32, "fp16": 128})
    >>> g = Graph(chip)
    >>> x = g.add_variable("fp32", (4,), "x"); y = g.add_variable("fp32", (4,), "y")
    >>> g.map_linearly(x); g.map_linearly(y)
    >>> cs = g.add_compute_set("relu")
    >>> g.add_vertex(cs, "Relu", {"in": x, "out": y}, tile=0)
    0
    >>> exe = compile_program(g, Execute(cs))
    >>> exe.compute[cs.id].vertices, int(exe.exchange_in[cs.id].recv_bytes.sum())
    (1, 8)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import intervals
from .codelets import CODELETS, post_cycles
from .dtypes import DTYPE_BYTES
from .graph import DataStream, Graph, GraphError
from .program import Call, Copy, Execute, Repeat, Sequence, Sync, walk
from .tensor import Tensor


@dataclass
class ComputeWork:
    """Per tile work of one compute set (sparse over the tiles it uses)."""
    tiles: np.ndarray        # tile ids
    sum_cycles: np.ndarray   # sum of vertex cycle estimates on the tile
    max_cycles: np.ndarray   # longest single vertex on the tile
    count: np.ndarray        # vertices on the tile
    vertices: int
    flops: float


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


@dataclass
class StreamCopy:
    stream: DataStream
    tensor: Tensor
    direction: str            # "h2d" | "d2h"
    tiles: np.ndarray
    bytes_per_tile: np.ndarray


@dataclass
class Executable:
    graph: Graph
    arrays: object
    program: object
    compute: dict                 # cs id -> ComputeWork
    exchange_in: dict             # cs id -> ExchangePlan (remote inputs, before compute)
    exchange_out: dict            # cs id -> ExchangePlan (remote outputs, after compute)
    copies: dict                  # id(Copy node) -> ExchangePlan | StreamCopy
    vertex_cycles: list           # per batch: (n,) cycle estimates
    tiles_per_chip: int

    @property
    def num_vertices(self):
        return self.graph.num_vertices

    @property
    def num_edges(self):
        return self.graph.num_edges


def _runs_of_mapping(graph: Graph):
    """Global boundaries where the owning tile changes, and each run's tile."""
    starts, tiles = [], []
    for var in graph.variables:
        tm = graph.tile_map.get(var.id)
        if tm is None or var.size == 0:
            continue
        brk = np.flatnonzero(np.diff(tm)) + 1
        st = np.concatenate(([0], brk))
        starts.append(st + var.start)
        tiles.append(tm[st])
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    s = np.concatenate(starts)
    t = np.concatenate(tiles)
    o = np.argsort(s, kind="stable")
    return s[o], t[o]


def _pieces(graph, starts, lengths, run_starts, run_tiles):
    """Split regions at tile-mapping boundaries; return pieces with their tile.

    Most regions lie on one tile: they are found with two lookups per region
    (the run number of their first and last element) and only the others are
    split.
    """
    if starts.size == 0 or run_starts.size == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, z.astype(np.int32)
    r0 = np.searchsorted(run_starts, starts, side="right") - 1
    r1 = np.searchsorted(run_starts, starts + lengths - 1, side="right") - 1
    single = r0 == r1
    if np.all(single):
        return starts, lengths, np.arange(starts.size), run_tiles[np.clip(r0, 0, None)]
    multi = np.flatnonzero(~single)
    ps, pl, parent = intervals.split_at(starts[multi], lengths[multi], run_starts)
    ri = np.searchsorted(run_starts, ps, side="right") - 1
    one = np.flatnonzero(single)
    return (np.concatenate((starts[one], ps)), np.concatenate((lengths[one], pl)),
            np.concatenate((one, multi[parent])),
            np.concatenate((run_tiles[np.clip(r0[one], 0, None)], run_tiles[np.clip(ri, 0, None)])))


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
    first, st, en = intervals.merge_per_key(key, start, start + length)
    return first, st, en - st


def _plan(group, src_tile, dst_tile, start, length, nbytes, tiles_per_chip, ngroups):
    """Exchange plans per group (compute set) from remote pieces.

    Reads are multicast: a region is sent once by its owner however many tiles
    receive it, and a tile receives each element once however many of its
    vertices read it (overlapping regions are merged, per receiver and per
    sender).  Every piece lies in one variable, so overlapping pieces share a
    dtype.
    """
    plans = {}
    keep = length > 0
    if not np.all(keep):
        group, src_tile, dst_tile = group[keep], src_tile[keep], dst_tile[keep]
        start, length, nbytes = start[keep], length[keep], nbytes[keep]
    if group.size == 0:
        return plans
    ebytes = nbytes // np.maximum(length, 1)
    # receptions: union of the pieces per (group, dst, src)
    i, st, ln = _union((group, dst_tile, src_tile), start, length)
    g, s, d, nb = group[i], src_tile[i], dst_tile[i], ln * ebytes[i]
    # sends: union of the receptions per (group, src)
    j, _, sln = _union((g, s), st, ln)
    gs, ss, nbs = g[j], s[j], sln * ebytes[i][j]
    T = np.int64(1 << 32)
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
    for grp in np.unique(np.concatenate((sg, rg))).tolist():
        a, b = s_bounds[grp], s_bounds[grp + 1]
        c, d2 = r_bounds[grp], r_bounds[grp + 1]
        plans[grp] = ExchangePlan(sk[a:b] % T, sb[a:b], sm[a:b], rk[c:d2] % T, rb[c:d2],
                                  chip_b.get(grp, {}))
    return plans


EXCHANGE_CHUNK_EDGES = 4_000_000


def _plan_edges(graph, arrays, ranges, vt, vcs, var_bytes, run_starts, run_tiles, tiles_per_chip, ncs):
    """Exchange plans (in, out) for the edges in ``ranges`` [(e0, e1, batch)]."""
    idx = intervals.expand(np.array([r[0] for r in ranges]), np.array([r[1] - r[0] for r in ranges]))
    reads = np.empty(idx.size, bool)
    writes = np.empty(idx.size, bool)
    pos = 0
    for e0, e1, b in ranges:
        c = CODELETS[b.codelet]
        f = arrays.edge_field[e0:e1]
        reads[pos:pos + e1 - e0] = np.array([x.reads for x in c.fields])[f]
        writes[pos:pos + e1 - e0] = np.array([x.writes for x in c.fields])[f]
        pos += e1 - e0
    est = arrays.edge_start[idx]
    ps, pl, parent, ptile = _pieces(graph, est, arrays.edge_len[idx].astype(np.int64), run_starts, run_tiles)
    ebytes = var_bytes[graph.variable_of(est)]
    pv = arrays.edge_vertex[idx[parent]]
    pvt = vt[pv].astype(np.int64)
    remote = ptile != pvt
    pcs = vcs[pv]
    pb = pl * ebytes[parent]
    r = remote & reads[parent]
    xin = _plan(pcs[r], ptile[r].astype(np.int64), pvt[r], ps[r], pl[r], pb[r], tiles_per_chip, ncs)
    w = remote & writes[parent]
    xout = _plan(pcs[w], pvt[w], ptile[w].astype(np.int64), ps[w], pl[w], pb[w], tiles_per_chip, ncs)
    return xin, xout


def compile_program(graph: Graph, program, *, check_exchange=True) -> Executable:
    """Finalize the graph, cost every compute set and plan every exchange."""
    arrays = graph.finalize()
    chip = graph.target
    tiles_per_chip = int(chip.tiles)
    sizes_all = arrays.extra["sizes"]
    ncs = len(graph.compute_sets)
    used_cs = set()
    for p in walk(program):
        if isinstance(p, Execute):
            cs = p.compute_set
            if cs.id >= ncs or graph.compute_sets[cs.id] is not cs:
                raise GraphError(f"program executes compute set {cs.name!r}, which is not in this graph")
            used_cs.add(cs.id)
    # -- vertex cycles and per tile work --------------------------------------
    vertex_cycles = []
    vt = arrays.vertex_tile
    cyc = np.zeros(graph.num_vertices, np.float64)
    flops = np.zeros(ncs, np.float64)
    for b, sizes in zip(graph.batches, sizes_all):
        c = CODELETS[b.codelet]
        cy = np.broadcast_to(np.asarray(c.cycles(sizes, b.dtype, b.params, chip), np.float64)
                             + post_cycles(c, sizes, b.dtype, b.params, chip), (b.v1 - b.v0,))
        cyc[b.v0:b.v1] = cy
        vertex_cycles.append(cy)
        if c.flops is not None:
            flops[b.cs] += float(np.sum(c.flops(sizes, b.dtype, b.params)))
    vcs = np.repeat(np.array([b.cs for b in graph.batches], np.int64),
                    [b.v1 - b.v0 for b in graph.batches]) if graph.batches else np.zeros(0, np.int64)
    compute = {}
    if vcs.size:
        key = vcs * (1 << 32) + vt
        o = np.argsort(key, kind="stable")
        k, cy_sorted = key[o], cyc[o]
        u, first = np.unique(k, return_index=True)
        sums = np.add.reduceat(cy_sorted, first)
        maxs = np.maximum.reduceat(cy_sorted, first)
        counts = np.diff(np.append(first, k.size))
        ucs = u >> 32
        bounds = np.searchsorted(ucs, np.arange(ncs + 1))
        for csid in range(ncs):
            a, bnd = bounds[csid], bounds[csid + 1]
            compute[csid] = ComputeWork((u[a:bnd] & 0xFFFFFFFF).astype(np.int64), sums[a:bnd], maxs[a:bnd],
                                        counts[a:bnd], int(counts[a:bnd].sum()), float(flops[csid]))
    for csid in range(ncs):
        compute.setdefault(csid, ComputeWork(*(np.zeros(0),) * 4, 0, 0.0))
    # -- exchange implied by the mappings -----------------------------------------
    run_starts, run_tiles = _runs_of_mapping(graph)
    exchange_in, exchange_out = {}, {}
    if arrays.edge_start.size:
        var_bytes = np.array([DTYPE_BYTES[v.dtype] for v in graph.variables], np.int64)
        off = arrays.vertex_edge_offsets
        # compute sets in chunks of about EXCHANGE_CHUNK_EDGES edges: every compute set's
        # edges are planned together (multicast is exact), the temporaries stay bounded
        ranges = {}
        for b in graph.batches:
            ranges.setdefault(b.cs, []).append((int(off[b.v0]), int(off[b.v1]), b))
        chunk, size = [], 0
        items = list(ranges.items())
        for i, (csid, rs) in enumerate(items):
            chunk.append(rs)
            size += sum(e1 - e0 for e0, e1, _ in rs)
            if size >= EXCHANGE_CHUNK_EDGES or i == len(items) - 1:
                xin, xout = _plan_edges(graph, arrays, [r for rs_ in chunk for r in rs_], vt, vcs, var_bytes,
                                        run_starts, run_tiles, tiles_per_chip, ncs)
                exchange_in.update(xin)
                exchange_out.update(xout)
                chunk, size = [], 0
    # -- copies ---------------------------------------------------------------------
    copies = {}
    for p in walk(program):
        if isinstance(p, Copy):
            copies[id(p)] = _plan_copy(graph, p, run_starts, run_tiles, tiles_per_chip)
    return Executable(graph, arrays, program, compute, exchange_in, exchange_out, copies,
                      vertex_cycles, tiles_per_chip)


def _plan_copy(graph, p: Copy, run_starts, run_tiles, tiles_per_chip):
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
        tiles = graph.tile_of_elements(t.elements().ravel())
        u, cnt = np.unique(tiles, return_counts=True)
        return StreamCopy(stream, t, want, u, cnt * DTYPE_BYTES[t.dtype])
    if src.numel != dst.numel:
        raise GraphError(f"Copy from {src.name!r} ({src.numel} elements) to {dst.name!r} "
                         f"({dst.numel} elements): sizes differ")
    if src.dtype != dst.dtype:
        raise GraphError(f"Copy from {src.name!r} ({src.dtype}) to {dst.name!r} ({dst.dtype}): dtypes differ")
    se, de = src.elements().ravel(), dst.elements().ravel()
    st, dt = graph.tile_of_elements(se).astype(np.int64), graph.tile_of_elements(de).astype(np.int64)
    remote = np.flatnonzero(st != dt)
    se, st, dt = se[remote], st[remote], dt[remote]
    # one piece per run of consecutive source elements of one variable between one pair of tiles
    brk = np.flatnonzero((np.diff(se) != 1) | (np.diff(st) != 0) | (np.diff(dt) != 0)
                         | (np.diff(graph.variable_of(se)) != 0)) + 1
    first = np.concatenate(([0], brk)).astype(np.int64)
    ln = np.diff(np.concatenate((first, [se.size]))).astype(np.int64)
    if se.size == 0:
        first = ln = np.zeros(0, np.int64)
    plans = _plan(np.zeros(first.size, np.int64), st[first], dt[first], se[first], ln,
                  ln * DTYPE_BYTES[src.dtype], tiles_per_chip, 1)
    return plans.get(0, ExchangePlan.empty())
