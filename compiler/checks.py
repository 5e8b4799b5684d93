"""Dataflow checks run when a graph is finalized.

Each check is vectorized over vertices and edges and raises
:class:`~compiler.graph.GraphError` naming the tensor, vertex, compute set and
tile involved.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .codelets import CODELETS, field_dtype
from hardware.dtypes import DTYPE_IDS, DTYPE_NAMES
from .parallel import threads


def _where(graph, vertex):
    b = graph._batch_of(int(vertex))
    cs = graph.compute_sets[b.cs].name
    return f"vertex {int(vertex)} ({b.codelet} in compute set {cs!r}, tile {int(graph.vertex_tile.a[int(vertex)])})"


def _tensor_at(graph, element):
    var = graph.variables[int(graph.variable_of(np.array([element]))[0])]
    return f"tensor {var.name!r} (element {int(element - var.start)})"


def field_columns(arrays, batch, nf):
    """The bulk layout (what Graph.add_vertices writes): when every vertex of ``batch`` has
    the same number of edges with the same fields in the same order, fields ascending
    (checked exactly), the column bounds of each field in a vertex's edges ([nf + 1]:
    field ``f``'s edges are columns [cuts[f], cuts[f + 1]) of the [vertices, edges] rows);
    else None."""
    off = arrays.vertex_edge_offsets
    e0, e1 = int(off[batch.v0]), int(off[batch.v1])
    n = batch.v1 - batch.v0
    k = (e1 - e0) // n if n else 0
    if not k or k * n != e1 - e0 or int(off[batch.v0 + 1]) - e0 != k:
        return None
    ef = arrays.edge_field[e0:e1].reshape(n, k)
    pat = ef[0].astype(np.int64)
    if (np.any(pat[1:] < pat[:-1]) or int(pat[-1]) >= nf
            or not np.all(np.diff(off[batch.v0: batch.v1 + 1]) == k)
            or not all(bool(np.all(ef[:, j] == pat[j])) for j in range(k))):   # column by column: long loops
        return None
    return np.searchsorted(pat, np.arange(nf + 1))


def field_size_matrix(arrays, batch, nf, cuts=None):
    """(elements, edges) connected to each of ``nf`` fields of each vertex of one batch,
    as two [vertices, fields] int64 arrays (``cuts``: :func:`field_columns`, when known)."""
    off = arrays.vertex_edge_offsets
    e0, e1 = int(off[batch.v0]), int(off[batch.v1])
    n = batch.v1 - batch.v0
    if cuts is None:
        cuts = field_columns(arrays, batch, nf)
    if cuts is not None:
        # the bulk layout: sizes are sums of columns, counts one row, no bincount
        el = arrays.edge_len[e0:e1].reshape(n, int(cuts[-1]))
        sz = np.zeros((n, nf), np.int64)
        for fi in range(nf):
            a, b = int(cuts[fi]), int(cuts[fi + 1])
            if b > a:
                col = sz[:, fi]
                col[:] = el[:, a]
                for j in range(a + 1, b):
                    col += el[:, j]
        return sz, np.broadcast_to(np.diff(cuts), (n, nf))
    key = (arrays.edge_vertex[e0:e1].astype(np.int64) - batch.v0) * nf + arrays.edge_field[e0:e1]
    sz = np.bincount(key, weights=arrays.edge_len[e0:e1], minlength=n * nf).astype(np.int64).reshape(n, nf)
    cnt = np.bincount(key, minlength=n * nf).reshape(n, nf)
    return sz, cnt


def batch_fields(arrays, batch, nf):
    """(:func:`field_columns`, then :func:`field_size_matrix`'s sizes and counts) of one batch,
    computed once for the finalized ``arrays`` until the checks have run: the functional gather
    plans, built before the checks beside them (simulator/onnx_backend.py), and the checks read
    the same three, so the checks take the plans' (both are pure functions of the arrays, which
    do not change once finalized).  The checks drop these when done (no [vertices, fields]
    counts kept with the arrays); callers after the checks use ``extra["field_columns"]``."""
    memo = arrays.extra.setdefault("batch_fields", {})
    key = (batch.v0, batch.v1, nf)
    hit = memo.get(key)
    if hit is None:
        cuts = field_columns(arrays, batch, nf)
        hit = memo[key] = (cuts,) + field_size_matrix(arrays, batch, nf, cuts)
    return hit


def field_sizes(arrays, batch, codelet):
    """Elements connected to each field of each vertex of one batch: field -> (n,) int64."""
    sz, cnt = field_size_matrix(arrays, batch, len(codelet.fields))
    return ({f.name: sz[:, i] for i, f in enumerate(codelet.fields)},
            {f.name: cnt[:, i] for i, f in enumerate(codelet.fields)})


def check_graph(graph, arrays):
    """Run the checks below; in a big graph the write-conflict check (5, a sort of every
    written region) runs on another thread beside 2-4 (numpy releases the GIL), its error
    raised after theirs."""
    if threads() < 2 or arrays.edge_start.size < PARALLEL_CHECK_EDGES:
        _check_graph(graph, arrays)
        check_write_conflicts(graph, arrays)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        writes = pool.submit(check_write_conflicts, graph, arrays)
        _check_graph(graph, arrays)
        writes.result()


#: edges from which check_graph checks write conflicts on a thread of their own
PARALLEL_CHECK_EDGES = 1 << 20


def _check_graph(graph, arrays):
    from .graph import GraphError
    nt = graph.num_tiles
    # 1. every vertex mapped to a tile in range
    vt = arrays.vertex_tile
    bad = np.flatnonzero((vt < 0) | (vt >= nt))
    if bad.size:
        v = int(bad[0])
        b = graph._batch_of(v)
        raise GraphError(f"vertex {v} ({b.codelet} in compute set {graph.compute_sets[b.cs].name!r}) "
                         f"has no tile mapping" + (f" ({bad.size} vertices in all)" if bad.size > 1 else "")
                         + "; call set_tile_mapping(vertex, tile)")
    # 2. edges inside the element space, inside one variable
    if arrays.edge_start.size:
        # in chunks, so that checking 100 M edges needs no gigabytes of temporaries, and small
        # ones: a chunk's temporaries (2 MB) stay in cache and in memory the allocator reuses
        # (16 M-edge chunks took fresh pages for each: ResNet-50's 6 M edges 0.14 s, now 0.10 s)
        var_dtype = np.array([DTYPE_IDS[v.dtype] for v in graph.variables], np.int8)
        edge_dtype = np.empty(arrays.edge_start.size, np.int8)
        var_first = np.array([v.start for v in graph.variables], np.int64)
        var_next = np.append(var_first[1:], np.iinfo(np.int64).max)
        step = 1 << 18
        look = graph.variable_lookup() if arrays.edge_start.size >= graph.LOOKUP_MIN_QUERIES else None
        for c0 in range(0, arrays.edge_start.size, step):
            st = arrays.edge_start[c0:c0 + step]
            ln = arrays.edge_len[c0:c0 + step]
            end = st + ln
            if int(st.min()) < 0 or int(end.max()) > graph.num_elements:
                bad = np.flatnonzero((st < 0) | (end > graph.num_elements))
                e = c0 + int(bad[0])
                raise GraphError(f"{_where(graph, arrays.edge_vertex[e])}: edge to elements "
                                 f"[{arrays.edge_start[e]}, {end[bad[0]]}) outside the graph's "
                                 f"{graph.num_elements} elements")
            # the last element's variable is vs exactly when it lies in [start of vs, start of vs + 1):
            # the next variable's start comes with the lookup, no second lookup per edge
            if look is not None:
                vs, nxt = look.locate(st)
            else:
                vs = graph.variable_of(st)
                nxt = var_next[vs]
            bad = end > nxt
            if int(ln.min()) <= 0:    # an empty edge ends before its variable where it starts at one
                bad |= end - 1 < var_first[vs]
            bad = np.flatnonzero(bad)
            if bad.size:
                ve = graph.variable_of(end[bad] - 1)
                e = c0 + int(bad[0])
                raise GraphError(f"{_where(graph, arrays.edge_vertex[e])}: one edge spans two variables "
                                 f"({graph.variables[vs[bad[0]]].name!r} and {graph.variables[ve[0]].name!r})")
            edge_dtype[c0:c0 + step] = var_dtype[vs]
        arrays.extra["edge_dtype"] = edge_dtype    # DTYPE_IDS of each edge's variable
    # 3. per batch: fields connected, sizes, dtypes
    sizes_all, columns = [], []
    for b in graph.batches:
        c = CODELETS[b.codelet]
        cuts, sz, cnt = batch_fields(arrays, b, len(c.fields))
        columns.append(cuts)
        sizes = {f.name: sz[:, i] for i, f in enumerate(c.fields)}
        counts = {f.name: cnt[:, i] for i, f in enumerate(c.fields)}
        for f in c.fields:
            missing = np.flatnonzero(counts[f.name] == 0)
            if missing.size:
                raise GraphError(f"{_where(graph, b.v0 + missing[0])}: field {f.name!r} is not connected")
            if not f.vector:
                wrong = np.flatnonzero(sizes[f.name] != 1)
                if wrong.size:
                    raise GraphError(f"{_where(graph, b.v0 + wrong[0])}: scalar field {f.name!r} connected "
                                     f"to {sizes[f.name][wrong[0]]} elements")
            if f.same_size_as:
                wrong = np.flatnonzero(sizes[f.name] != sizes[f.same_size_as])
                if wrong.size:
                    v = b.v0 + int(wrong[0])
                    raise GraphError(f"{_where(graph, v)}: field {f.name!r} has {sizes[f.name][wrong[0]]} "
                                     f"elements but must match field {f.same_size_as!r} "
                                     f"({sizes[f.same_size_as][wrong[0]]} elements)")
        off = arrays.vertex_edge_offsets
        e0, e1 = int(off[b.v0]), int(off[b.v1])
        if e1 > e0:
            want = np.array([DTYPE_IDS[field_dtype(f, b.dtype, b.params)] for f in c.fields], np.int8)
            wrong = np.flatnonzero(edge_dtype[e0:e1] != want[arrays.edge_field[e0:e1]])
            if wrong.size:
                e = e0 + int(wrong[0])
                f = c.fields[arrays.edge_field[e]]
                raise GraphError(f"{_where(graph, arrays.edge_vertex[e])}: field {f.name!r} expects "
                                 f"{DTYPE_NAMES[want[arrays.edge_field[e]]]} but is connected to "
                                 f"{_tensor_at(graph, arrays.edge_start[e])} of dtype "
                                 f"{DTYPE_NAMES[edge_dtype[e]]}")
        sizes_all.append(sizes)
    arrays.extra["sizes"] = sizes_all
    arrays.extra.pop("batch_fields", None)
    arrays.extra["field_columns"] = columns     # field_columns of each batch, in order (None: no bulk layout)
    # 4. every variable fully mapped
    for var in graph.variables:
        runs = graph.tile_map.runs(var.id)
        if var.size == 0:
            continue
        if runs is None:
            raise GraphError(f"tensor {var.name!r} ({var.dtype}, shape {var.shape}) has no tile mapping; "
                             f"call set_tile_mapping or map_linearly")
        un = np.flatnonzero(runs[1] < 0)
        if un.size:
            nun = int(graph.tile_map.run_lengths(var.id)[un].sum())
            raise GraphError(f"tensor {var.name!r}: element {int(runs[0][un[0]])} (of {var.size}) is not mapped to a tile"
                             + (f" ({nun} unmapped elements)" if nun > 1 else ""))
    # 5. no two vertices of one compute set write the same element: check_write_conflicts


def check_write_conflicts(graph, arrays):
    from .graph import GraphError
    if arrays.edge_start.size == 0:
        return
    off = arrays.vertex_edge_offsets
    ws, wcs = [], []
    # the batches compute set by compute set (a stable sort: in one compute set, in their order),
    # so that the written edges of one compute set are one run of ``w``
    for b in sorted(graph.batches, key=lambda b: b.cs):
        c = CODELETS[b.codelet]
        wf = np.array([f.writes for f in c.fields])
        e0, e1 = int(off[b.v0]), int(off[b.v1])
        idx = e0 + np.flatnonzero(wf[arrays.edge_field[e0:e1]])
        ws.append(idx)
        wcs.append(np.full(idx.size, b.cs, np.int32))
    w = np.concatenate(ws) if ws else np.zeros(0, np.int64)
    if w.size < 2:
        return
    cs_w = np.concatenate(wcs)
    ne = int(graph.num_elements) + 1
    order = None     # the written edges sorted by (compute set, start); None: already
    if (int(cs_w.max()) + 1) * ne < 2**62:   # packed (compute set, start)
        key = cs_w.astype(np.int64) * ne + arrays.edge_start[w]
        # most compute sets' written regions already ascend (vertex by vertex): only the runs
        # of the compute sets where they do not are sorted (stable, as one sort of them all
        # would order them: the same order, the same error; ResNet-50: 0.04-0.1 s -> 0.02 s)
        down = np.flatnonzero(key[1:] < key[:-1])
        if down.size:
            bounds = np.flatnonzero(cs_w[1:] != cs_w[:-1]) + 1
            lo = np.concatenate(([0], bounds))[np.searchsorted(bounds, down, side="right")]
            hi = np.append(bounds, w.size)[np.searchsorted(bounds, down, side="right")]
            order = np.arange(w.size)
            for a, z in sorted(set(zip(lo.tolist(), hi.tolist()))):
                order[a:z] = a + np.argsort(key[a:z], kind="stable")
    else:
        order = np.lexsort((arrays.edge_start[w], cs_w))
    if order is not None:
        w, cs = w[order], cs_w[order]
    else:
        cs = cs_w
    st = arrays.edge_start[w]
    en = st + arrays.edge_len[w]
    clash = np.flatnonzero((cs[1:] == cs[:-1]) & (st[1:] < en[:-1]))
    if clash.size:
        i = int(clash[0])
        e1, e2 = w[i], w[i + 1]
        v1, v2 = int(arrays.edge_vertex[e1]), int(arrays.edge_vertex[e2])
        raise GraphError(f"compute set {graph.compute_sets[cs[i]].name!r}: {_where(graph, v1)} and "
                         f"{_where(graph, v2)} both write {_tensor_at(graph, st[i + 1])}")
