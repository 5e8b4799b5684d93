"""Property tests (hypothesis): exchange plans account for every byte, random
element-wise programs compute what numpy computes, and the interval helpers
round-trip."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import intervals
from hardware.dtypes import DTYPE_BYTES
from compiler.executable import compile_program
from compiler.graph import Graph
from compiler.program import Execute, Sequence
from hardware.chips import gc2
from simulator.engine import Engine

CHIP = gc2.replace(tiles=8)
NT = CHIP.tiles
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- exchange accounting -------------------------------------------------------------------
@st.composite
def exchange_case(draw):
    nvars = draw(st.integers(1, 3))
    variables = []
    for _ in range(nvars):
        n = draw(st.integers(1, 16))
        dtype = draw(st.sampled_from(["fp32", "fp16"]))
        tiles = draw(st.lists(st.integers(0, NT - 1), min_size=n, max_size=n))
        variables.append((dtype, tiles))
    vertices = []
    for _ in range(draw(st.integers(1, 8))):
        v = draw(st.integers(0, nvars - 1))
        n = len(variables[v][1])
        if draw(st.booleans()):
            a = draw(st.integers(0, n - 1))
            b = draw(st.integers(a + 1, n))
            idx = list(range(a, b))
        else:   # a scattered view, repeats allowed
            idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8))
        vertices.append((v, idx, draw(st.integers(0, NT - 1))))
    return variables, vertices


def build_exchange(variables, vertices):
    g = Graph(CHIP)
    ts = []
    for i, (dtype, tiles) in enumerate(variables):
        t = g.add_variable(dtype, (len(tiles),), f"v{i}")
        for e, tile in enumerate(tiles):
            g.set_tile_mapping(t[e:e + 1], tile)
        ts.append(t)
    cs = g.add_compute_set("read")
    for k, (v, idx, tile) in enumerate(vertices):
        out = g.add_variable(variables[v][0], (len(idx),), f"out{k}")
        g.set_tile_mapping(out, tile)
        g.add_vertex(cs, "Copy", {"in": ts[v][np.array(idx)], "out": out}, tile=tile)
    return g, cs, ts


@SETTINGS
@given(exchange_case())
def test_every_remote_element_is_received_once_per_destination_tile(case):
    variables, vertices = case
    g, cs, ts = build_exchange(variables, vertices)
    exe = compile_program(g, Execute(cs))
    plan = exe.exchange_in.get(cs.id)
    recv, send = {}, {}
    pairs, sent = set(), set()
    for v, idx, tile in vertices:
        dtype, owners = variables[v]
        for e in idx:
            if owners[e] != tile and (tile, v, e) not in pairs:
                pairs.add((tile, v, e))
                recv[tile] = recv.get(tile, 0) + DTYPE_BYTES[dtype]
            if owners[e] != tile and (v, e) not in sent:
                sent.add((v, e))
                send[owners[e]] = send.get(owners[e], 0) + DTYPE_BYTES[dtype]
    if plan is None:
        assert not pairs
        return
    got_recv = dict(zip(plan.recv_tiles.tolist(), plan.recv_bytes.tolist()))
    got_send = dict(zip(plan.send_tiles.tolist(), plan.send_bytes.tolist()))
    # received bytes: distinct (destination tile, remote element) pairs x element size
    assert plan.total_bytes == sum(DTYPE_BYTES[variables[v][0]] for _, v, _ in pairs)
    assert got_recv == recv
    # sends: each tile sends exactly the distinct remote-read elements it owns (multicast)
    assert got_send == send
    assert set(got_send) <= {t for _, tiles in variables for t in tiles}
    # nothing is sent that nobody receives, and a send reaches at least one receiver
    assert sum(got_send.values()) <= plan.total_bytes
    assert np.all(plan.send_messages >= 1)
    assert not exe.exchange_out      # outputs are local


@SETTINGS
@given(exchange_case())
def test_exchange_cycles_cover_the_busiest_receiver(case):
    g, cs, _ = build_exchange(*case)
    eng = Engine(compile_program(g, Execute(cs)))
    plan = eng.exe.exchange_in.get(cs.id)
    rep = eng.run()
    if plan is not None:
        assert rep.exchange_cycles >= plan.recv_bytes.max() / CHIP.exchange_bytes_per_cycle_per_tile
    assert rep.vertices_executed == len(case[1])


# --- random element-wise programs ----------------------------------------------------------------
BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum}
UNARY = {"Relu": lambda x: np.maximum(x, np.float32(0)), "Copy": lambda x: x}
NVARS = 4


@st.composite
def elementwise_program(draw):
    n = draw(st.integers(1, 24))
    maps = [draw(st.lists(st.integers(0, NT - 1), min_size=n, max_size=n)) for _ in range(NVARS)]
    ops = []
    for _ in range(draw(st.integers(1, 5))):
        name = draw(st.sampled_from(sorted(BINARY) + sorted(UNARY)))
        nin = 2 if name in BINARY else 1
        srcs = [draw(st.integers(0, NVARS - 1)) for _ in range(nin)]
        dst = draw(st.sampled_from([i for i in range(NVARS) if i not in srcs]))
        perms = [draw(st.permutations(range(n))) if draw(st.booleans()) else None for _ in range(nin)]
        cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=3)) if n > 1 else []))
        tiles = [draw(st.integers(0, NT - 1)) for _ in range(len(cuts) + 1)]
        ops.append((name, srcs, perms, dst, cuts, tiles))
    values = draw(st.lists(st.lists(st.floats(-100, 100, width=32), min_size=n, max_size=n),
                           min_size=NVARS, max_size=NVARS))
    return n, maps, ops, values


@SETTINGS
@given(elementwise_program())
def test_random_elementwise_program_matches_numpy(prog):
    n, maps, ops, values = prog
    g = Graph(CHIP)
    ts = []
    for i, m in enumerate(maps):
        t = g.add_variable("fp32", (n,), f"x{i}")
        for e, tile in enumerate(m):
            g.set_tile_mapping(t[e:e + 1], tile)
        ts.append(t)
    ref = [np.array(v, np.float32) for v in values]
    steps = []
    for k, (name, srcs, perms, dst, cuts, tiles) in enumerate(ops):
        cs = g.add_compute_set(f"op{k}-{name}")
        ins = [ts[s] if p is None else ts[s][np.array(p)] for s, p in zip(srcs, perms)]
        bounds = [0] + cuts + [n]
        for (a, b), tile in zip(zip(bounds[:-1], bounds[1:]), tiles):
            fields = dict(zip(("a", "b") if len(ins) == 2 else ("in",), (x[a:b] for x in ins)))
            fields["out"] = ts[dst][a:b]
            g.add_vertex(cs, name, fields, tile=tile)
        steps.append(Execute(cs))
        args = [ref[s] if p is None else ref[s][np.array(p)] for s, p in zip(srcs, perms)]
        fn = BINARY.get(name) or UNARY[name]
        ref[dst] = np.asarray(fn(*args), np.float32)
    eng = Engine(compile_program(g, Sequence(steps)), functional=True)
    for t, v in zip(ts, values):
        eng.write(t, v)
    rep = eng.run()
    for t, want in zip(ts, ref):
        np.testing.assert_array_equal(eng.read(t), want)
    assert rep.vertices_executed == g.num_vertices


# --- interval helpers ---------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.integers(0, 50), max_size=40))
def test_runs_then_expand_round_trips(idx):
    s, l = intervals.runs(np.array(idx, np.int64))
    assert intervals.expand(s, l).tolist() == idx
    assert np.all(l >= 1)
    # runs are maximal: a run never continues straight into the next one
    assert not np.any(s[1:] == s[:-1] + l[:-1])


@st.composite
def intervals_and_bounds(draw):
    k = draw(st.integers(0, 8))
    starts = draw(st.lists(st.integers(0, 60), min_size=k, max_size=k))
    lengths = draw(st.lists(st.integers(0, 20), min_size=k, max_size=k))
    bounds = sorted(draw(st.lists(st.integers(0, 80), max_size=10)))   # repeats allowed
    return np.array(starts, np.int64), np.array(lengths, np.int64), np.array(bounds, np.int64)


@SETTINGS
@given(intervals_and_bounds())
def test_split_at_pieces_expand_to_the_original_intervals(case):
    starts, lengths, bounds = case
    ps, pl, parent = intervals.split_at(starts, lengths, bounds)
    assert intervals.expand(ps, pl).tolist() == intervals.expand(starts, lengths).tolist()
    assert np.all(np.diff(parent) >= 0)
    for i in range(starts.size):
        sel = parent == i
        assert pl[sel].sum() == lengths[i]
        assert ps[sel][0] == starts[i]


@SETTINGS
@given(intervals_and_bounds())
def test_split_at_pieces_never_cross_a_bound_and_are_not_empty(case):
    starts, lengths, bounds = case
    ps, pl, parent = intervals.split_at(starts, lengths, bounds)
    for s, l in zip(ps.tolist(), pl.tolist()):
        assert not any(s < b < s + l for b in bounds.tolist())
    # only an empty input interval gives an empty piece
    assert np.all((pl > 0) | (lengths[parent] == 0))


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 10)), max_size=10))
def test_segment_ids_label_each_element_with_its_interval(pairs):
    lengths = np.array([l for _, l in pairs], np.int64)
    ids = intervals.segment_ids(lengths)
    assert ids.tolist() == [i for i, l in enumerate(lengths.tolist()) for _ in range(l)]


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=300), st.lists(st.integers(0, 5999), max_size=300),
       st.integers(0, 4))
def test_lookup_answers_as_a_binary_search_however_dense_the_bounds(bounds, queries, max_steps):
    """Bounds denser than the table's slots (several per slot, repeated ones) take the
    fallback search after ``MAX_STEPS`` steps: the answers are the binary search's."""
    b = np.sort(np.array(bounds, np.int64))
    b[0] = 0
    q = np.array(queries, np.int64)
    look = intervals.Lookup(b, 6000)
    look.MAX_STEPS = max_steps
    want = np.searchsorted(b, q, side="right") - 1
    assert look(q).tolist() == want.tolist()
    r, nxt = look.locate(q)
    assert r.tolist() == want.tolist()
    assert nxt.tolist() == np.append(b[1:], np.iinfo(np.int64).max)[want].tolist()


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=300), st.lists(st.integers(0, 5999), max_size=300))
def test_lookup_answers_queries_before_the_first_bound(bounds, queries):
    """The first bound need not be 0: a query before it answers -1, and one after it in the same
    table slot steps from -1 (the next bound after -1 is the first)."""
    b = np.sort(np.array(bounds, np.int64))
    q = np.array(queries, np.int64)
    look = intervals.Lookup(b, 6000)
    want = np.searchsorted(b, q, side="right") - 1
    assert look(q).tolist() == want.tolist()
    r, nxt = look.locate(q)
    assert r.tolist() == want.tolist()
    assert nxt.tolist() == np.concatenate((b[1:], [np.iinfo(np.int64).max], b[:1]))[want].tolist()
