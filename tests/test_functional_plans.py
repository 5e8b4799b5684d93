"""The functional executor's gather / scatter plans (simulator/functional.py) and the bulk
edge layout they read (compiler/graph.py add_vertices, compiler/checks.py
field_size_matrix): each fast path gives what the general one gives."""
from __future__ import annotations

import numpy as np

import simulator.functional as F
from compiler.checks import field_size_matrix
from compiler.executable import compile_program
from compiler.graph import Graph
from compiler.program import Execute, Sequence
from hardware.chips import gc2
from simulator.engine import Engine

CHIP = gc2.replace(tiles=4)
RNG = np.random.default_rng(77)


def _var(g, n, name):
    t = g.add_variable("fp32", (n,), name)
    g.set_tile_mapping(t, 0)
    return t


def _plans(exe):
    st = F.FunctionalState(exe)
    return [st._batch_plan(b) for b in exe.graph.batches]


def test_reduce_partials_read_as_a_strided_view_sum_like_numpy():
    P, V, L = 5, 7, 6                    # partials, vertices, elements per vertex
    g = Graph(CHIP)
    part, out = _var(g, P * V * L, "partials"), _var(g, V * L, "out")
    cs = g.add_compute_set("reduce")
    vi = np.repeat(np.arange(V), P)
    starts = part._start + (np.arange(P)[None, :] * V * L + np.arange(V)[:, None] * L).ravel()
    g.add_vertices(cs, "ReducePartials", np.zeros(V, np.int32),
                   {"in": (vi, starts, np.full(V * P, L)),
                    "out": (np.arange(V), out._start + np.arange(V) * L, np.full(V, L))}, params={"k": P})
    exe = compile_program(g, Sequence([Execute(cs)]))
    (grp,) = _plans(exe)[0]
    assert isinstance(grp.gather["in"], F._Strided)
    x = RNG.standard_normal(P * V * L).astype(np.float32)
    eng = Engine(exe, functional=True)
    eng.write(part, x)
    eng.run()
    np.testing.assert_allclose(eng.read(out), x.reshape(P, V * L).sum(axis=0), rtol=1e-6)


def test_outputs_of_one_length_on_no_grid_are_written_as_rows_and_nothing_else():
    V, L = 9, 5
    g = Graph(CHIP)
    a, b, out = _var(g, V * L, "a"), _var(g, V * L, "b"), _var(g, V * L + 40, "out")
    gaps = RNG.integers(0, 4, V)         # regions of 5 at starts with no common step >= 5
    gaps[1] = 1
    ostart = out._start + np.arange(V) * L + np.cumsum(gaps)
    cs = g.add_compute_set("add")
    ar = np.arange(V)
    g.add_vertices(cs, "Add", np.zeros(V, np.int32),
                   {"a": (ar, a._start + ar * L, np.full(V, L)), "b": (ar, b._start + ar * L, np.full(V, L)),
                    "out": (ar, ostart, np.full(V, L))})
    exe = compile_program(g, Sequence([Execute(cs)]))
    (grp,) = _plans(exe)[0]
    assert isinstance(grp.outs["out"], F._Rows)
    xa, xb = RNG.standard_normal(V * L).astype(np.float32), RNG.standard_normal(V * L).astype(np.float32)
    eng = Engine(exe, functional=True)
    eng.write(a, xa)
    eng.write(b, xb)
    eng.run()
    want = np.zeros(V * L + 40, np.float32)
    want[(ostart - out._start)[:, None] + np.arange(L)] = (xa + xb).reshape(V, L)
    np.testing.assert_array_equal(eng.read(out), want)


def _graph_with_bulk_edges(interleave):
    rng = np.random.default_rng(5)      # the same graph each call
    g = Graph(CHIP)
    t = _var(g, 4000, "t")
    cs = g.add_compute_set("cs")
    V = 50
    vi3 = np.repeat(np.arange(V), 3)
    fields = {"in": (vi3, t._start + rng.permutation(3000)[:3 * V], np.full(3 * V, 2)),
              "scale": (np.arange(V), t._start + 3000 + np.arange(V) * 4, np.full(V, 4)),
              "shift": (np.arange(V), t._start + 3300 + np.arange(V) * 4, np.full(V, 4)),
              "out": (np.arange(V), t._start + 3500 + np.arange(V) * 6, np.full(V, 6))}
    if not interleave:
        g._extend_by_vertex = lambda *a: False     # the general path: appended field by field, sorted at finalize
    g.add_vertices(cs, "Affine", rng.integers(0, 4, V).astype(np.int32), fields)
    return g


def test_bulk_edges_written_in_vertex_order_equal_the_sorted_ones():
    a, b = _graph_with_bulk_edges(True).finalize(), _graph_with_bulk_edges(False).finalize()
    for k in ("edge_vertex", "edge_field", "edge_start", "edge_len", "vertex_edge_offsets"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
        assert getattr(a, k).dtype == getattr(b, k).dtype


def test_field_size_matrix_of_the_bulk_layout_equals_the_bincounts():
    g = _graph_with_bulk_edges(True)
    arr = g.finalize()
    (bt,) = g.batches
    sz, cnt = field_size_matrix(arr, bt, 4)
    key = arr.edge_vertex.astype(np.int64) * 4 + arr.edge_field
    n = bt.v1 - bt.v0
    np.testing.assert_array_equal(sz, np.bincount(key, weights=arr.edge_len, minlength=4 * n).reshape(n, 4))
    np.testing.assert_array_equal(cnt, np.bincount(key, minlength=4 * n).reshape(n, 4))


def test_distinct_rows_without_a_sort_equal_the_hashed_ones():
    rows = RNG.integers(0, 50, (40, 3)) * 8
    rows[:, 0] = RNG.permutation(50)[:40] * 8           # distinct rows start at distinct elements
    pick = RNG.integers(0, 40, 300)
    S, L = rows[pick], np.full((300, 3), 8)
    fast = F._distinct_by_first(S, L)
    assert fast is not None
    first, inv = fast
    np.testing.assert_array_equal(S[first][inv], S)
    assert np.all(np.diff(first) > 0)                    # in order of first appearance
    _, ref_first = np.unique(pick, return_index=True)
    np.testing.assert_array_equal(first, np.sort(ref_first))
    # rows that start alike but differ later: not the same row, the fast path declines
    S2 = S.copy()
    S2[first[0] + 1:, 1] += 1
    S2[first[0], 0] = S2[first[0] + 1, 0] = 4000
    assert F._distinct_by_first(S2, L) is None
    f2, i2 = F._distinct_rows(S2, L)
    np.testing.assert_array_equal(S2[f2][i2], S2)


def test_im2col_equals_the_padded_sliding_windows():
    import itertools
    from compiler.codelets import _im2col, _pad_window
    for kh, kw, s, pt, pb, pl, pr, g in itertools.product((1, 3), (1, 3, 7), (1, 2), (0, 1), (0, 1), (0, 3), (0, 2), (1, 2)):
        if pt + pb >= kh:
            continue
        for win in (kw, kw + 5):
            wout = (win + pl + pr - kw) // s + 1
            x = RNG.standard_normal((3, g, kh - pt - pb, win, 4)).astype(np.float32)
            p = dict(ptop=pt, pbot=pb, pleft=pl, pright=pr)
            ref = np.lib.stride_tricks.sliding_window_view(_pad_window(x, p), kw, axis=3)[:, :, :, : (wout - 1) * s + 1: s]
            np.testing.assert_array_equal(_im2col(x, p, kh, kw, s, wout), ref.transpose(0, 3, 1, 2, 5, 4))


def test_matmuls_shared_out_over_threads_equal_one_product_each(monkeypatch):
    """compiler/codelets.py _matmuls: products cut along their weight sets or rows and run on
    several threads give, bit for bit, what one np.matmul per product gives."""
    import compiler.codelets as C
    shapes = [(37, 20, 5, 8), (300, 36, 1, 16), (64, 9, 3, 4), (1, 5, 7, 2), (500, 72, 2, 8)]   # M, K, m, N
    jobs, want = [], []
    for M, K, m, N in shapes:
        a = RNG.standard_normal((M, K)).astype(np.float32)
        b = RNG.standard_normal((m, K, N)).astype(np.float32)
        jobs.append((a, b, np.full((m, M, N), np.nan, np.float32)))
        want.append(np.matmul(a, b))
    monkeypatch.setattr(C, "SPLIT_MATMUL_MACS", 0)
    for n in ("1", "2", "3"):
        monkeypatch.setenv("IPUSIM_THREADS", n)
        for _, _, o in jobs:
            o[...] = np.nan
        C._matmuls(jobs)
        for (_, _, o), w in zip(jobs, want):
            np.testing.assert_array_equal(o, w)


def test_matmuls_in_a_forked_child_of_a_process_that_shared_products_out(monkeypatch):
    """A forked child inherits the products' thread pool but not its threads: it makes its own
    (it used to wait for ever on the inherited one)."""
    import os
    import pytest
    import compiler.codelets as C
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    monkeypatch.setattr(C, "SPLIT_MATMUL_MACS", 0)
    monkeypatch.setenv("IPUSIM_THREADS", "2")
    a = RNG.standard_normal((64, 32)).astype(np.float32)
    b = RNG.standard_normal((4, 32, 8)).astype(np.float32)
    o = np.empty((4, 64, 8), np.float32)
    C._matmuls([(a, b, o)])        # this process's pool
    pid = os.fork()
    if pid == 0:                   # the child: exit 0 when its products are right, within 20 s
        import signal
        signal.alarm(20)
        o2 = np.empty_like(o)
        C._matmuls([(a, b, o2)])
        os._exit(0 if np.array_equal(o, o2) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
