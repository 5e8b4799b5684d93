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
