"""Tests for the BSP engine (simulator/engine.py) and its report
(simulator/report.py): control costs, vertex counts, the cycle balance,
exchange planning (remote vs local, multicast, supertile sharing), host
stream prefetch, and the JSON / Chrome-trace outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from compiler.executable import compile_program
from compiler.graph import Graph
from compiler.program import Call, Copy, Execute, Repeat, Sequence, Sync
from hardware.chips import gc2
from simulator.engine import CALL_CONTROL_CYCLES, REPEAT_CONTROL_CYCLES, Engine, simulate

CHIP = gc2.replace(tiles=8)


def relu_graph(chip=CHIP, n_per_tile=64, tiles=None, name="relu"):
    """x -> relu -> y with one vertex per tile, all data local."""
    g = Graph(chip)
    tiles = list(range(chip.tiles)) if tiles is None else tiles
    n = n_per_tile * len(tiles)
    x = g.add_variable("fp32", (n,), "x")
    y = g.add_variable("fp32", (n,), "y")
    g.map_linearly(x, tiles=tiles)
    g.map_linearly(y, tiles=tiles)
    cs = g.add_compute_set(name)
    for i, t in enumerate(tiles):
        sl = slice(i * n_per_tile, (i + 1) * n_per_tile)
        g.add_vertex(cs, "Relu", {"in": x[sl], "out": y[sl]}, tile=t)
    return g, cs, x, y


def phase_sum(rep):
    return sum(s["compute"] + s["sync"] + s["exchange"] + s["host_wait"] for s in rep.steps)


# --- control flow ------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 7])
def test_repeat_costs_n_bodies_plus_n_control(n):
    g, cs, _, _ = relu_graph()
    once = simulate(compile_program(g, Execute(cs))).cycles
    rep = simulate(compile_program(g, Repeat(n, Execute(cs))))
    assert rep.cycles == pytest.approx(n * once + n * REPEAT_CONTROL_CYCLES)
    assert rep.control_cycles == n * REPEAT_CONTROL_CYCLES


def test_repeat_zero_runs_nothing():
    g, cs, _, _ = relu_graph()
    rep = simulate(compile_program(g, Repeat(0, Execute(cs))))
    assert (rep.cycles, rep.supersteps, rep.vertices_executed) == (0.0, 0, 0)


def test_nested_repeat_multiplies_supersteps():
    g, cs, _, _ = relu_graph()
    rep = simulate(compile_program(g, Repeat(3, Repeat(4, Execute(cs)))))
    assert rep.supersteps == 12
    assert rep.control_cycles == (3 + 12) * REPEAT_CONTROL_CYCLES


def test_each_vertex_of_executed_compute_sets_runs_once_per_execution():
    g = Graph(CHIP)
    x = g.add_variable("fp32", (64,), "x")
    g.map_linearly(x)
    sets = [g.add_compute_set(f"cs{i}") for i in range(3)]
    for i, cs in enumerate(sets):
        for t in range(2 + i):          # 2, 3 and 4 vertices
            g.add_vertex(cs, "Relu", {"in": x[t * 8:(t + 1) * 8], "out": x[t * 8:(t + 1) * 8]}, tile=t)
    prog = Sequence(Repeat(2, Execute(sets[0])), Execute(sets[1]))   # cs2 never runs
    rep = simulate(compile_program(g, prog))
    assert rep.vertices_executed == 2 * 2 + 3
    assert rep.supersteps == 3


def test_call_runs_function_body_each_call_without_duplicating_vertices():
    g, cs, _, _ = relu_graph()
    nv, ne = g.num_vertices, g.num_edges
    f = g.add_function(Execute(cs), "step")
    once = simulate(compile_program(g, Execute(cs)))
    rep = simulate(compile_program(g, Sequence(Call(f), Call(f), Call(f))))
    assert (g.num_vertices, g.num_edges) == (nv, ne)
    assert rep.vertices_executed == 3 * nv
    assert rep.cycles == pytest.approx(3 * once.cycles + 3 * CALL_CONTROL_CYCLES)


def test_call_inside_repeat_runs_body_count_times():
    g, cs, _, _ = relu_graph()
    f = g.add_function(Execute(cs))
    rep = simulate(compile_program(g, Repeat(5, Call(f))))
    assert rep.supersteps == 5
    assert rep.control_cycles == 5 * (REPEAT_CONTROL_CYCLES + CALL_CONTROL_CYCLES)


def test_sync_costs_chip_sync_cycles():
    g, _, _, _ = relu_graph()
    rep = simulate(compile_program(g, Sequence(Sync(), Sync())))
    assert rep.cycles == 2 * CHIP.sync_cycles == rep.sync_cycles


def test_superstep_is_exchange_compute_and_sync():
    g, cs, _, _ = relu_graph()
    rep = simulate(compile_program(g, Execute(cs)))
    s = rep.steps[0]
    assert s["sync"] == CHIP.sync_cycles
    assert rep.cycles == pytest.approx(s["compute"] + s["sync"] + s["exchange"])


def test_compute_phase_is_longest_tile_over_workers():
    g, cs, _, _ = relu_graph(n_per_tile=64, tiles=[0])
    W = CHIP.workers_per_tile
    # a second tile with more vertices than two rounds of its workers: its time is ceil(n x one / W),
    # longer than tile 0's single vertex, so an engine that ignored tile 1 would report only `one`
    n = 2 * W + 1
    x2 = g.add_variable("fp32", (n * 64,), "x2")
    g.set_tile_mapping(x2, 1)
    for k in range(n):
        g.add_vertex(cs, "Relu", {"in": x2[k * 64:(k + 1) * 64], "out": x2[k * 64:(k + 1) * 64]}, tile=1)
    exe = compile_program(g, Execute(cs))
    one = float(exe.vertex_cycles[0][0])
    rep = simulate(exe)
    assert np.ceil(n * one / W) > one
    assert rep.compute_cycles == pytest.approx(np.ceil(n * one / W))
    assert rep.tile_busy[1] == pytest.approx(np.ceil(n * one / W)) and rep.tile_busy[0] == pytest.approx(one)


def test_compute_phase_is_the_longest_vertex_when_workers_are_idle():
    g, cs, _, _ = relu_graph(n_per_tile=64, tiles=[0])
    big = g.add_variable("fp32", (64 * 64,), "big")      # one vertex with 64x the work on tile 1
    g.set_tile_mapping(big, 1)
    g.add_vertex(cs, "Relu", {"in": big, "out": big}, tile=1)
    exe = compile_program(g, Execute(cs))
    rep = simulate(exe)
    longest = float(max(exe.vertex_cycles[0]))
    assert longest > float(min(exe.vertex_cycles[0]))
    assert rep.compute_cycles == pytest.approx(longest)


# --- the cycle balance and utilisation ------------------------------------------------------
def stream_program(buffers=1, compute_tiles_work=64, repeats=3):
    g, cs, x, y = relu_graph(n_per_tile=compute_tiles_work)
    inp = g.add_host_to_device_fifo("in", "fp32", x.numel, buffers=buffers)
    out = g.add_device_to_host_fifo("out", "fp32", y.numel, buffers=buffers)
    prog = Repeat(repeats, Sequence(Copy(inp, x), Execute(cs), Copy(y, out)))
    return g, prog


def test_cycles_equal_sum_of_phases_plus_control_plus_host_waits():
    g, prog = stream_program()
    rep = simulate(compile_program(g, prog))
    assert rep.host_bytes > 0
    assert rep.cycles == pytest.approx(phase_sum(rep) + rep.control_cycles)


def test_cycles_balance_with_exchange_copies_and_calls():
    g, cs, x, y = relu_graph()
    f = g.add_function(Sequence(Execute(cs), Copy(y, x.reshape(8, -1)[::-1].flatten())))
    rep = simulate(compile_program(g, Repeat(2, Sequence(Call(f), Sync()))))
    assert rep.exchange_cycles > 0
    assert rep.cycles == pytest.approx(phase_sum(rep) + rep.control_cycles)


def test_tile_utilisation_within_zero_and_one():
    g, prog = stream_program()
    rep = simulate(compile_program(g, prog))
    u = rep.tile_utilisation
    assert u.shape == (CHIP.tiles,)
    assert np.all(u >= 0) and np.all(u <= 1) and u.max() > 0


def test_tiles_without_vertices_are_never_busy():
    g, cs, _, _ = relu_graph(tiles=[0, 1])
    rep = simulate(compile_program(g, Repeat(2, Execute(cs))))
    assert rep.tile_busy[2:].tolist() == [0.0] * (CHIP.tiles - 2)
    assert rep.tile_busy[0] == pytest.approx(rep.compute_cycles)


# --- exchange --------------------------------------------------------------------------------
def reader_graph(chip, owners_readers, n=64):
    """One region of ``n`` fp32 per (owner tile, reader tiles) pair, read by a Relu on each reader."""
    g = Graph(chip)
    cs = g.add_compute_set("read")
    for i, (owner, readers) in enumerate(owners_readers):
        x = g.add_variable("fp32", (n,), f"x{i}")
        g.set_tile_mapping(x, owner)
        for r in readers:
            y = g.add_variable("fp32", (n,), f"y{i}_{r}")
            g.set_tile_mapping(y, r)
            g.add_vertex(cs, "Relu", {"in": x, "out": y}, tile=r)
    return g, cs


def test_exchange_counts_remote_inputs_not_local_ones():
    g = Graph(CHIP)
    a = g.add_variable("fp32", (16,), "a"); g.set_tile_mapping(a, 0)
    b = g.add_variable("fp16", (16,), "b"); g.set_tile_mapping(b, 0)
    c = g.add_variable("fp32", (16,), "c"); g.set_tile_mapping(c, 1)
    out = g.add_variable("fp32", (16,), "out"); g.set_tile_mapping(out, 0)
    cs = g.add_compute_set("add")
    g.add_vertex(cs, "Add", {"a": a, "b": c, "out": out}, tile=0)
    g.add_vertex(cs, "Relu", {"in": b, "out": b}, tile=0)
    exe = compile_program(g, Execute(cs))
    plan = exe.exchange_in[cs.id]
    assert plan.recv_tiles.tolist() == [0] and plan.recv_bytes.tolist() == [64]
    assert plan.send_tiles.tolist() == [1] and plan.send_bytes.tolist() == [64]
    assert cs.id not in exe.exchange_out


def test_exchange_out_counts_remote_outputs():
    g = Graph(CHIP)
    a = g.add_variable("fp32", (10,), "a"); g.set_tile_mapping(a, 0)
    out = g.add_variable("fp32", (10,), "out")
    g.set_tile_mapping(out[:4], 0)
    g.set_tile_mapping(out[4:], 3)
    cs = g.add_compute_set("relu")
    g.add_vertex(cs, "Relu", {"in": a, "out": out}, tile=0)
    exe = compile_program(g, Execute(cs))
    plan = exe.exchange_out[cs.id]
    assert (plan.send_tiles.tolist(), plan.send_bytes.tolist()) == ([0], [24])
    assert (plan.recv_tiles.tolist(), plan.recv_bytes.tolist()) == ([3], [24])


def test_multicast_region_read_by_many_tiles_is_sent_once():
    g, cs = reader_graph(CHIP, [(0, [2, 4, 6])], n=64)
    plan = compile_program(g, Execute(cs)).exchange_in[cs.id]
    assert plan.send_tiles.tolist() == [0]
    assert plan.send_bytes.tolist() == [256] and plan.send_messages.tolist() == [1]
    assert sorted(plan.recv_tiles.tolist()) == [2, 4, 6] and plan.total_bytes == 3 * 256


def test_region_read_by_two_vertices_of_one_tile_is_received_once():
    g, cs = reader_graph(CHIP, [(0, [3, 3])], n=32)
    plan = compile_program(g, Execute(cs)).exchange_in[cs.id]
    assert plan.recv_bytes.tolist() == [128]


def test_overlapping_remote_reads_on_one_tile_receive_each_element_once():
    g = Graph(CHIP)
    x = g.add_variable("fp32", (8,), "x"); g.set_tile_mapping(x, 0)
    y = g.add_variable("fp32", (12,), "y"); g.set_tile_mapping(y, 1)
    cs = g.add_compute_set("read")
    g.add_vertex(cs, "Relu", {"in": x[0:6], "out": y[0:6]}, tile=1)
    g.add_vertex(cs, "Relu", {"in": x[2:8], "out": y[6:12]}, tile=1)
    plan = compile_program(g, Execute(cs)).exchange_in[cs.id]
    assert plan.recv_bytes.tolist() == [8 * 4]
    assert plan.send_bytes.tolist() == [8 * 4]


def test_both_tiles_of_a_supertile_send_at_their_own_rate():
    # PopLibs' estimators charge every tile its own exchangeBytesPerCycle; the all-tiles
    # aggregate is then 4 B x tiles x clock, the published "8 TB/s"
    chip = CHIP.replace(exchange_message_cycles=0)
    g1, cs1 = reader_graph(chip, [(0, [2])])
    g2, cs2 = reader_graph(chip, [(0, [2]), (1, [3])])      # tiles 0 and 1: one supertile
    e1 = Engine(compile_program(g1, Execute(cs1)))
    e2 = Engine(compile_program(g2, Execute(cs2)))
    c1 = e1.exchange_cycles(e1.exe.exchange_in[cs1.id])[0]
    c2 = e2.exchange_cycles(e2.exe.exchange_in[cs2.id])[0]
    assert c1 > 0 and c2 == pytest.approx(c1)


def test_tiles_of_different_supertiles_send_in_parallel():
    chip = CHIP.replace(exchange_message_cycles=0)
    g1, cs1 = reader_graph(chip, [(0, [4])])
    g2, cs2 = reader_graph(chip, [(0, [4]), (2, [6])])      # supertiles 0 and 1
    e1 = Engine(compile_program(g1, Execute(cs1)))
    e2 = Engine(compile_program(g2, Execute(cs2)))
    assert e2.exchange_cycles(e2.exe.exchange_in[cs2.id])[0] == pytest.approx(
        e1.exchange_cycles(e1.exe.exchange_in[cs1.id])[0])


def test_exchange_bytes_move_at_exchange_rate_plus_message_cost():
    g, cs = reader_graph(CHIP, [(0, [5])], n=100)
    e = Engine(compile_program(g, Execute(cs)))
    cyc, link = e.exchange_cycles(e.exe.exchange_in[cs.id])
    assert link == 0.0
    assert cyc == pytest.approx(400 / CHIP.exchange_bytes_per_cycle_per_tile + CHIP.exchange_message_cycles)


def test_report_exchange_bytes_sum_over_executions():
    g, cs = reader_graph(CHIP, [(0, [1, 2])], n=16)
    rep = simulate(compile_program(g, Repeat(3, Execute(cs))))
    assert rep.exchange_bytes == 3 * 2 * 64


def test_copy_of_contiguous_region_is_one_message():
    g = Graph(CHIP)
    a = g.add_variable("fp32", (100,), "a"); g.set_tile_mapping(a, 0)
    b = g.add_variable("fp32", (100,), "b"); g.set_tile_mapping(b, 1)
    cp = Copy(a, b)
    plan = compile_program(g, cp).copies[id(cp)]
    assert plan.send_bytes.tolist() == [400] and plan.recv_bytes.tolist() == [400]
    assert plan.send_messages.tolist() == [1]


def test_copy_between_tensors_on_one_tile_moves_nothing():
    g = Graph(CHIP)
    a = g.add_variable("fp32", (10,), "a"); g.set_tile_mapping(a, 2)
    b = g.add_variable("fp32", (10,), "b"); g.set_tile_mapping(b, 2)
    cp = Copy(a, b)
    plan = compile_program(g, cp).copies[id(cp)]
    assert plan.total_bytes == 0


# --- host streams ---------------------------------------------------------------------------------
def prefetch_program(buffers):
    """Long compute, then two back-to-back reads of one stream, repeated."""
    g, cs, x, _ = relu_graph(n_per_tile=4096)
    x1, x2 = x[:512], x[512:1024]
    s = g.add_host_to_device_fifo("in", "fp32", 512, buffers=buffers)
    return g, Repeat(4, Sequence(Execute(cs), Copy(s, x1), Copy(s, x2)))


def test_stream_with_two_buffers_hides_transfers_better_than_one():
    r1 = simulate(compile_program(*prefetch_program(1)))
    r2 = simulate(compile_program(*prefetch_program(2)))
    assert r2.hidden_transfer_fraction > r1.hidden_transfer_fraction
    assert r2.cycles < r1.cycles
    assert r1.host_bytes == r2.host_bytes == 8 * 512 * 4


def test_host_transfer_fully_hidden_behind_long_compute_reads_one():
    g, cs, x, _ = relu_graph(n_per_tile=4096)
    s = g.add_host_to_device_fifo("in", "fp32", 256, buffers=2)
    rep = simulate(compile_program(g, Repeat(3, Sequence(Execute(cs), Copy(s, x[:256])))))
    assert rep.hidden_transfer_fraction == pytest.approx(1.0)
    assert rep.stream_wait_cycles == 0


def test_first_stream_read_without_compute_waits_for_whole_transfer():
    g, _, x, _ = relu_graph()
    s = g.add_host_to_device_fifo("in", "fp32", 256)
    rep = simulate(compile_program(g, Copy(s, x[:256])))
    transfer = CHIP.cycles(CHIP.host_link_latency_s + 1024 / CHIP.host_link_bytes_per_s)
    assert rep.stream_wait_cycles == pytest.approx(transfer)
    assert rep.hidden_transfer_fraction == pytest.approx(0.0)


def test_device_to_host_data_reaches_host_before_run_ends():
    g, _, x, _ = relu_graph()
    s = g.add_device_to_host_fifo("out", "fp32", 256)
    rep = simulate(compile_program(g, Copy(x[:256], s)))
    transfer = CHIP.cycles(CHIP.host_link_latency_s + 1024 / CHIP.host_link_bytes_per_s)
    assert rep.cycles >= transfer
    assert rep.host_bytes == 1024


# --- report outputs ----------------------------------------------------------------------------------
def test_chrome_trace_has_complete_events_and_loads_as_json(tmp_path):
    g, prog = stream_program()
    rep = simulate(compile_program(g, prog))
    path = tmp_path / "trace.json"
    rep.chrome_trace(str(path))
    trace = json.loads(path.read_text())
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert xs
    for e in xs:
        assert {"ph", "ts", "dur", "pid", "tid", "name"} <= set(e)
        assert e["dur"] > 0 and e["ts"] >= 0
    assert {e["cat"] for e in xs} >= {"compute", "sync", "host"}


def test_chrome_trace_events_end_within_run():
    g, prog = stream_program()
    rep = simulate(compile_program(g, prog))
    us = 1e6 / CHIP.clock_hz
    ends = [e["ts"] + e["dur"] for e in rep.chrome_trace()["traceEvents"] if e["ph"] == "X"]
    assert max(ends) <= rep.cycles * us * (1 + 1e-9)


def test_report_to_dict_is_json_serialisable(tmp_path):
    g, prog = stream_program()
    rep = simulate(compile_program(g, prog))
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["cycles"] == rep.cycles and d["vertices_executed"] == 3 * CHIP.tiles
    rep.to_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["supersteps"] == 3


def test_report_seconds_is_cycles_over_clock():
    g, cs, _, _ = relu_graph()
    rep = simulate(compile_program(g, Execute(cs)))
    assert rep.seconds == pytest.approx(rep.cycles / CHIP.clock_hz)


def test_flops_executed_counts_each_execution():
    g, cs, x, _ = relu_graph()
    rep = simulate(compile_program(g, Repeat(2, Execute(cs))))
    assert rep.flops_executed == 2 * x.numel


def test_two_chips_use_multi_chip_sync():
    chip = CHIP
    g = Graph(type("T", (), {"tiles": chip.tiles, "ipus": 2, "sram_bytes_per_tile": chip.sram_bytes_per_tile})())
    g.target = chip
    rep = Engine(compile_program(g, Sync()), chip).run()
    assert rep.ipus == 2 and rep.cycles == chip.sync_cycles_multi_chip
