"""Exchange planning (compiler/exchange.py): the bytes the tile mappings imply.

A tiny graph on a 4-tile chip: vertices on one tile read variables mapped on others.
"""
from types import SimpleNamespace

import numpy as np

from compiler.exchange import ExchangePlan, plan_compute_exchange, runs_of_mapping
from compiler.executable import compile_program
from compiler.graph import Graph
from compiler.program import Copy, Execute

CHIP = SimpleNamespace(tiles=4, sram_bytes_per_tile=1 << 16, workers_per_tile=6, vector_bytes_per_cycle=8,
                       vertex_overhead_cycles=10, flops_per_cycle_per_tile={"fp32": 32, "fp16": 128})


def plans(g):
    arrays = g.finalize()
    return plan_compute_exchange(g, arrays, *runs_of_mapping(g), tiles_per_chip=CHIP.tiles)


def test_a_tile_local_read_exchanges_nothing():
    g = Graph(CHIP)
    x, y = g.add_variable("fp32", (8,), "x"), g.add_variable("fp32", (8,), "y")
    g.set_tile_mapping(x, 2); g.set_tile_mapping(y, 2)
    cs = g.add_compute_set("relu")
    g.add_vertex(cs, "Relu", {"in": x, "out": y}, tile=2)
    xin, xout = plans(g)
    assert cs.id not in xin and cs.id not in xout


def test_bytes_received_per_tile_are_the_remote_elements_it_reads():
    g = Graph(CHIP)
    x, y = g.add_variable("fp32", (8,), "x"), g.add_variable("fp32", (8,), "y")
    g.set_tile_mapping(x[:3], 1); g.set_tile_mapping(x[3:], 0); g.set_tile_mapping(y, 0)
    cs = g.add_compute_set("relu")
    g.add_vertex(cs, "Relu", {"in": x, "out": y}, tile=0)
    xin, _ = plans(g)
    p = xin[cs.id]
    assert p.recv_tiles.tolist() == [0] and p.recv_bytes.tolist() == [3 * 4]
    assert p.send_tiles.tolist() == [1] and p.send_bytes.tolist() == [3 * 4]


def test_a_region_read_by_several_tiles_is_sent_once_and_received_by_each():
    g = Graph(CHIP)
    x = g.add_variable("fp32", (8,), "x")
    g.set_tile_mapping(x, 3)
    cs = g.add_compute_set("copy")
    for t in (0, 1, 2):
        y = g.add_variable("fp32", (8,), f"y{t}")
        g.set_tile_mapping(y, t)
        g.add_vertex(cs, "Copy", {"in": x, "out": y}, tile=t)
    p = plans(g)[0][cs.id]
    assert p.send_tiles.tolist() == [3] and p.send_bytes.tolist() == [32]      # multicast: once
    assert p.recv_tiles.tolist() == [0, 1, 2] and p.recv_bytes.tolist() == [32, 32, 32]


def test_a_tile_receives_an_element_once_however_many_of_its_vertices_read_it():
    g = Graph(CHIP)
    x = g.add_variable("fp32", (8,), "x")
    g.set_tile_mapping(x, 1)
    cs = g.add_compute_set("copy")
    for i in range(3):
        y = g.add_variable("fp32", (8,), f"y{i}")
        g.set_tile_mapping(y, 0)
        g.add_vertex(cs, "Copy", {"in": x, "out": y}, tile=0)
    p = plans(g)[0][cs.id]
    assert p.recv_bytes.tolist() == [32] and p.send_bytes.tolist() == [32]


def test_an_output_written_away_from_its_tile_is_sent_after_the_compute_phase():
    g = Graph(CHIP)
    x = g.add_variable("fp32", (4,), "x")
    g.set_tile_mapping(x, 0)
    cs = g.add_compute_set("relu")
    y32 = g.add_variable("fp32", (4,), "y32")
    g.set_tile_mapping(y32, 3)
    g.add_vertex(cs, "Relu", {"in": x, "out": y32}, tile=0)
    xin, xout = plans(g)
    assert cs.id not in xin
    assert xout[cs.id].send_tiles.tolist() == [0] and xout[cs.id].recv_tiles.tolist() == [3]
    assert xout[cs.id].total_bytes == 16


def test_a_tensor_copy_moves_only_the_elements_whose_tiles_differ():
    g = Graph(CHIP)
    a, b = g.add_variable("fp32", (8,), "a"), g.add_variable("fp32", (8,), "b")
    g.set_tile_mapping(a, 0)
    g.set_tile_mapping(b[:5], 0); g.set_tile_mapping(b[5:], 2)
    cp = Copy(a, b)
    exe = compile_program(g, cp)
    p = exe.copies[id(cp)]
    assert isinstance(p, ExchangePlan)
    assert p.recv_tiles.tolist() == [2] and p.total_bytes == 3 * 4


def test_bytes_between_chips_are_counted_per_chip_pair():
    g = Graph(CHIP)      # tiles 0-1 on chip 0, tiles 2-3 on chip 1
    x, y = g.add_variable("fp32", (4,), "x"), g.add_variable("fp32", (4,), "y")
    g.set_tile_mapping(x, 3); g.set_tile_mapping(y, 0)
    cs = g.add_compute_set("relu")
    g.add_vertex(cs, "Relu", {"in": x, "out": y}, tile=0)
    arrays = g.finalize()
    xin, _ = plan_compute_exchange(g, arrays, *runs_of_mapping(g), tiles_per_chip=2)
    assert xin[cs.id].chip_bytes == {(1, 0): 16}
    assert np.all(xin[cs.id].recv_bytes == 16)


def test_the_executable_keeps_the_plans_of_every_compute_set():
    g = Graph(CHIP)
    x, y = g.add_variable("fp32", (4,), "x"), g.add_variable("fp32", (4,), "y")
    g.set_tile_mapping(x, 1); g.set_tile_mapping(y, 0)
    cs = g.add_compute_set("relu")
    g.add_vertex(cs, "Relu", {"in": x, "out": y}, tile=0)
    exe = compile_program(g, Execute(cs))
    assert exe.exchange_in[cs.id].total_bytes == 16


def test_a_streamed_tensor_is_counted_per_tile_on_its_mapping_runs():
    # issue 15: a host-stream Copy counted its tensor's bytes per tile element by element (a
    # 2^26-element input: 2.6 GB of host memory, 13 s); on the mapping's runs it is the same count
    from types import SimpleNamespace

    from compiler.exchange import _elements_per_tile
    from compiler.graph import Graph
    g = Graph(SimpleNamespace(tiles=4, sram_bytes_per_tile=1 << 16))
    a = g.add_variable("fp32", (3,), "a")
    v = g.add_variable("fp32", (12,), "v")
    g.map_linearly(a)
    g.map_intervals(np.array([v._start, v._start + 4]), np.array([4, 3]), np.array([2, 1], np.int32))
    for view in (v, v[2:9], v[5:6], v[8:12], v.reshape(3, 4)[1]):
        tiles = g.tile_of_elements(view.elements().ravel())
        want = np.unique(tiles, return_counts=True)
        got = _elements_per_tile(g, view)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), view


def _random_graph(seed, n_cs=6):
    """Compute sets whose vertices read and write random regions of variables mapped in
    random runs; compute sets added in interleaved order (their edges are not one run)."""
    rng = np.random.default_rng(seed)
    g = Graph(CHIP)
    xs = []
    for i in range(4):
        x = g.add_variable("fp32" if i % 2 else "fp16", (int(rng.integers(40, 90)),), f"x{i}")
        cuts = np.sort(rng.choice(np.arange(1, x.numel), 5, replace=False))
        for a, b, t in zip(np.r_[0, cuts], np.r_[cuts, x.numel], rng.integers(0, CHIP.tiles, 6)):
            g.set_tile_mapping(x[int(a):int(b)], int(t))
        xs.append(x)
    css = [g.add_compute_set(f"cs{i}") for i in range(n_cs)]
    for k in range(3 * n_cs):
        cs = css[k % n_cs]
        src = xs[k % 4]
        a = int(rng.integers(0, src.numel - 8)); n = int(rng.integers(2, 8))
        dst = g.add_variable(src.dtype, (n,), f"y{k}")      # each vertex writes its own, in two runs
        g.set_tile_mapping(dst[:n // 2], int(rng.integers(0, CHIP.tiles)))
        g.set_tile_mapping(dst[n // 2:], int(rng.integers(0, CHIP.tiles)))
        g.add_vertex(cs, "Copy", {"in": src[a:a + n], "out": dst}, tile=int(rng.integers(0, CHIP.tiles)))
    return g


def test_plans_are_the_same_in_chunks_on_several_threads_as_in_one_pass(monkeypatch):
    import compiler.exchange as ex
    for seed in range(5):
        g = _random_graph(seed)
        one = plans(g)
        monkeypatch.setattr(ex, "EXCHANGE_CHUNK_EDGES", 3)     # many chunks, planned on 2 threads
        monkeypatch.setenv("IPUSIM_THREADS", "2")
        many = plans(g)
        assert one[0] and one[1]
        monkeypatch.undo()
        for a, b in zip(one, many):
            assert a.keys() == b.keys()
            for k in a:
                for f in ("send_tiles", "send_bytes", "send_messages", "recv_tiles", "recv_bytes"):
                    assert getattr(a[k], f).tolist() == getattr(b[k], f).tolist(), (seed, k, f)
                assert a[k].chip_bytes == b[k].chip_bytes


def test_parallel_map_keeps_the_order_and_refuses_a_bad_thread_count(monkeypatch):
    import pytest

    from compiler.parallel import parallel_map, threads
    assert list(parallel_map(lambda x: x * x, range(20), workers=3)) == [x * x for x in range(20)]
    monkeypatch.setenv("IPUSIM_THREADS", "0")
    with pytest.raises(ValueError, match="IPUSIM_THREADS"):
        threads()
    monkeypatch.setenv("IPUSIM_THREADS", "two")
    with pytest.raises(ValueError, match="IPUSIM_THREADS"):
        threads()


def test_vertex_state_is_the_same_on_several_threads(monkeypatch):
    from compiler.memory import vertex_state
    for seed in range(3):
        g = _random_graph(seed)
        arrays = g.finalize()
        monkeypatch.setenv("IPUSIM_THREADS", "1")
        one = vertex_state(g, arrays)
        monkeypatch.setenv("IPUSIM_THREADS", "2")
        assert one.sum() > 0 and vertex_state(g, arrays).tolist() == one.tolist()


def test_the_variables_each_compute_set_uses_are_kept_until_the_graph_grows():
    from compiler.transforms import _uses
    g = _random_graph(0)
    first = _uses(g)
    assert first and _uses(g) == first
    first.clear()                                   # a caller's copy: the kept one is intact
    assert _uses(g)
    cs = g.add_compute_set("new")
    x, y = g.add_variable("fp32", (4,), "nx"), g.add_variable("fp32", (4,), "ny")
    g.set_tile_mapping(x, 0); g.set_tile_mapping(y, 1)
    g.add_vertex(cs, "Copy", {"in": x, "out": y}, tile=1)
    assert _uses(g)[cs.id] == {g.variable(x).id: False, g.variable(y).id: True}
