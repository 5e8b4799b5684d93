"""Memory planning: liveness, allocation with reuse, recompute, offload, accumulation, report."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ipusim_cli
from simulator.report import jsonable
import models
from compiler.allocator import allocate, overlapping_pairs
from compiler.executable import compile_program
from compiler.graph import Graph
from compiler.memory import execute_order, liveness, memory_report, opgraph_memory
from compiler.program import Execute, Repeat, Sequence
from compiler.recompute import checkpoints, recompute, recompute_summary
from models.builder import GraphBuilder
from models.zoo import _bottleneck
from hardware.chips import gc200
from simulator.run import build

CHIP = SimpleNamespace(tiles=4, sram_bytes_per_tile=1 << 16, workers_per_tile=6, vector_bytes_per_cycle=8,
                       vertex_overhead_cycles=10, flops_per_cycle_per_tile={"fp32": 32, "fp16": 128})


def mini_resnet(batch=1, image=32, widths=(4, 8), blocks=(2, 2)):
    """ResNet-50's structure (stem, bottleneck blocks with projection shortcuts, pool, fc), narrow.

    Stride 1 everywhere: activations dominate the memory, as in ResNet-50 at a large batch.
    """
    b = GraphBuilder("mini-resnet", batch)
    x = b.input("input", (batch, 3, image, image))
    x = b.conv(x, "conv1", 16, 3, stride=1, pad=1, bias=False)
    x = b.bn(x, "bn1")
    x = b.op("Relu", [x], name="relu")
    cin = 16
    for li, (n, w) in enumerate(zip(blocks, widths), start=1):
        for i in range(n):
            p = f"layer{li}.{i}"
            with b.block(p, "bottleneck"):
                x = _bottleneck(b, x, p, cin, w, 1)
            cin = w * 4
    x = b.op("GlobalAveragePool", [x], name="avgpool")
    x = b.op("Flatten", [x], dict(axis=1), name="flatten")
    x = b.linear(x, "fc", 10)
    return b.finish([x])


# -- the allocator ----------------------------------------------------------------------------
@st.composite
def schedules(draw):
    n = draw(st.integers(1, 25))
    tiles = draw(st.integers(1, 4))
    iv, pairs = [], []
    for i in range(n):
        for _ in range(draw(st.integers(1, 2))):
            s = draw(st.integers(0, 15))
            iv.append((i, s, s + draw(st.integers(0, 6))))
        for t in draw(st.sets(st.integers(0, tiles - 1), min_size=1)):
            pairs.append((i, t, draw(st.integers(1, 300))))
    return n, tiles, np.array(iv), np.array(pairs)


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_allocator_never_gives_live_tensors_the_same_bytes(case):
    n, tiles, iv, pairs = case
    a = allocate(n, iv[:, 0], iv[:, 1], iv[:, 2], pairs[:, 0], pairs[:, 1], pairs[:, 2], num_tiles=tiles)
    assert overlapping_pairs(a, pairs[:, 0], pairs[:, 1], iv[:, 0], iv[:, 1], iv[:, 2]) == []
    assert np.all(a.offsets % 8 == 0) and np.all(a.sizes >= pairs[:, 2])
    # the region is at least what is live at once, at most everything
    for t in range(tiles):
        sel = pairs[:, 1] == t
        assert a.peak[t] <= a.sizes[sel].sum()
        for s in range(0, 23):
            live = {i for i, s0, s1 in iv if s0 <= s <= s1}
            need = sum(a.sizes[k] for k in np.flatnonzero(sel) if pairs[k, 0] in live)
            assert a.peak[t] >= need


def test_allocator_reuses_bytes_of_tensors_that_are_dead():
    # a chain: each tensor lives two steps; first-fit needs two slots, not ten
    n = 10
    a = allocate(n, np.arange(n), np.arange(n), np.arange(n) + 1, np.arange(n), np.zeros(n, int),
                 np.full(n, 64), num_tiles=1)
    assert a.peak[0] == 128


# -- liveness on a hand-built program --------------------------------------------------------
def _chain(repeat=False):
    g = Graph(CHIP)
    vs = [g.add_variable("fp32", (16,), f"t{i}", kind="activation") for i in range(4)]
    for v in vs:
        g.map_linearly(v, grain=4)
    css = []
    for i in range(3):
        cs = g.add_compute_set(f"step{i}")
        for t in range(4):
            sl = slice(4 * t, 4 * t + 4)
            g.add_vertex(cs, "Relu" if i != 1 else "Exp", {"in": vs[i][sl], "out": vs[i + 1][sl]}, tile=t)
        css.append(cs)
    body = Sequence(*[Execute(c) for c in css])
    prog = Sequence(Repeat(3, body)) if repeat else body
    return g, compile_program(g, prog)


def test_liveness_intervals_and_in_place():
    g, exe = _chain()
    live = liveness(exe)
    assert execute_order(exe.program) == [0, 1, 2]
    # every element-wise step writes over its dying input: one allocation for the whole chain
    assert len(live.item_vars) == 1 and len(live.inplace) == 3
    mem = memory_report(exe)
    assert mem["not_always_live_allocated_bytes"] == 4 * 16
    assert mem["reuse_factor"] == pytest.approx(4.0)


def test_a_variable_read_first_in_a_loop_lives_for_the_whole_loop():
    g, exe = _chain(repeat=True)
    live = liveness(exe)
    t0 = live.item_of_var[0]
    # t0 is only read in the loop: carried, live over every step of it
    sel = live.iv_item == t0
    assert live.iv_start[sel].min() == 0 and live.iv_end[sel].max() == 2


# -- the report on real compiles ---------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_train():
    return build("mnist-mlp", train=True, batch=16, simulate=True)


def test_peak_is_the_max_of_the_liveness_curve_and_categories_add_up(mlp_train):
    m = mlp_train.memory
    curve = m["liveness_curve"]
    assert m["not_always_live_peak_bytes"] == int(curve.max())
    assert m["peak_step"] == int(np.argmax(curve))
    assert sum(m["by_category"].values()) == pytest.approx(m["total_bytes"], abs=len(m["by_category"]))
    per = m["per_tile"]
    assert np.allclose(sum(per[k] for k in m["by_category"]), per["total"])
    assert m["peak_tile_bytes"] == int(per["total"].max())
    # per tile: the allocation holds at least what is live at once, and the tile curve's max is that
    live = m["liveness"]
    lb = live.tile_peaks()
    assert np.all(per["not_always_live_variables"] >= lb - 1e-9)
    t = int(np.argmax(lb))
    assert live.tile_curve(t).max() == pytest.approx(lb[t])
    # the chip curve is the sum of the tile curves
    assert np.allclose(sum(live.tile_curve(x) for x in range(4)) + sum(live.tile_curve(x) for x in range(4, 1472)), curve)
    assert m["peak_step_tensors"] and m["peak_step_tensors"][0]["bytes"] > 0


def test_reuse_shrinks_memory_and_report_keys(mlp_train):
    m = mlp_train.report["memory"]
    for k in ("by_category", "always_live_bytes", "not_always_live_peak_bytes", "no_reuse_bytes", "reuse_factor",
              "oom_tiles", "suggestions", "with_reuse_bytes"):
        assert k in m
    assert m["no_reuse_bytes"] > m["with_reuse_bytes"]
    assert m["reuse_factor"] == pytest.approx(m["no_reuse_bytes"] / m["with_reuse_bytes"])
    json.dumps(jsonable(mlp_train.report))


# -- published ResNet-50 figures ----------------------------------------------------------------
def test_resnet50_weights_and_forward_activations_order_of_magnitude():
    g = models.get_model("resnet50", batch=1)
    assert g.params() == pytest.approx(26e6, rel=0.05)
    outs = [t for t in g.tensors.values() if t.producer is not None]
    conv = sum(t.size for t in outs if g.op(t.producer)["op"] == "Conv")
    add = sum(t.size for t in outs if g.op(t.producer)["op"] == "Add")
    assert conv + add == pytest.approx(16e6, rel=0.1)        # published: about 16 M per image
    c = build("resnet50", functions=False)
    vs = c.exe.graph.variables
    w = sum(v.size for v in vs if v.kind == "weight")
    a = sum(v.size for v in vs if v.kind == "activation")
    assert w == pytest.approx(26e6, rel=0.05)
    assert 1e7 < a < 1e8                                      # every op output: 37.6 M
    m = c.memory
    # published: in place + reuse cut a network's memory 2-3x; the factor here also counts the
    # exchange temporaries of every compute set (each would need bytes of its own without reuse)
    assert 2.0 <= m["reuse_factor"] <= 20.0


# -- recomputation --------------------------------------------------------------------------------
def test_recompute_rewires_backward_to_recomputed_tensors():
    g = models.make_training_graph(mini_resnet(batch=2))
    r = recompute(g, "blocks")
    order = r.ops()
    pos = {o: i for i, o in enumerate(order)}
    keep = checkpoints(g, "blocks")
    produced = {t for o in g.ops() if g.op(o)["phase"] == "fwd" for t in g.op(o)["outputs"]}
    for o in order:
        d = r.op(o)
        if d["phase"] == "bwd":
            for t in d["inputs"]:
                assert not (t in produced and t not in keep), f"{o} reads {t} from the forward pass"
        if d["phase"] == "recompute":
            consumers = [c for c in r.graph.successors(o)]
            assert consumers and min(pos[c] for c in consumers) > pos[o]
    # each update comes after every read of the weight it overwrites (recomputed reads too)
    # and after its gradient, and before the end of the backward pass (gradients die early)
    updates = [o for o in order if r.op(o)["phase"] == "update"]
    for u in updates:
        for out in r.op(u)["outputs"]:
            src = r.tensors[out].inplace_of
            readers = [o for o in order if o != u and src in r.op(o)["inputs"]]
            assert readers or r.tensors[src].kind == "state", u
            assert all(pos[o] < pos[u] for o in readers), u
        assert all(pos[p] < pos[u] for p in r.graph.predecessors(u))
    last_bwd = max(pos[o] for o in order if r.op(o)["phase"] == "bwd")
    assert min(pos[u] for u in updates) < last_bwd
    s = recompute_summary(g, r)
    assert 0.5 < s["extra_forward_passes"] <= 1.01


@pytest.fixture(scope="module")
def resnet_modes():
    out = {}
    for mode in ("none", "blocks", "sqrt"):
        # inline blocks: what recomputation alone saves (outlined blocks add their arguments)
        out[mode] = build(mini_resnet, train=True, batch=4, recompute=mode, simulate=True, functions=False)
    return out


@pytest.mark.parametrize("mode", ["blocks", "sqrt"])
def test_recompute_saves_memory_and_costs_cycles(resnet_modes, mode):
    base, rc = resnet_modes["none"], resnet_modes[mode]
    assert rc.report["memory"]["recompute"]["extra_ops"] > 0
    # the live variables (activations kept for the backward pass), exchange temporaries aside
    assert rc.memory["liveness"].curve(temps=False).max() < 0.9 * base.memory["liveness"].curve(temps=False).max()
    assert rc.report["sim"]["cycles"] > base.report["sim"]["cycles"]
    phases = {cs.phase for cs in rc.exe.graph.compute_sets}
    assert "recompute" in phases


def test_opgraph_estimate_follows_recompute():
    g = models.make_training_graph(mini_resnet(batch=4))
    a = opgraph_memory(g)["peak"]
    for mode in ("blocks", "sqrt", "all"):
        assert opgraph_memory(recompute(g, mode))["peak"] < a


# -- precision ----------------------------------------------------------------------------------
def test_int8_inference_end_to_end():
    a = build("mnist-mlp", batch=4, simulate=True)
    b = build("mnist-mlp", batch=4, dtype="int8", simulate=True)
    assert b.report["sim"]["cycles"] > 0
    assert b.memory["always_live_bytes"] == pytest.approx(a.memory["always_live_bytes"] / 4, rel=0.05)
    assert {v.dtype for v in b.exe.graph.variables if v.kind == "weight"} == {"int8"}


def test_fp16_partials_option_reaches_the_lowering():
    c = build("mnist-mlp", batch=4, dtype="fp16", partials="fp16")
    assert c.report["model"]["partials"] == "fp16"


# -- offload ---------------------------------------------------------------------------------------
def test_offload_optimizer_state_to_streaming_memory(mlp_train):
    c = build("mnist-mlp", train=True, batch=16, simulate=True, offload="optimizer")
    m, base = c.memory, mlp_train.memory
    state = sum(v.size * 4 for v in c.exe.graph.variables if getattr(v, "offloaded", False))
    assert state > 0 and m["offloaded_bytes"] == state
    assert m["always_live_bytes"] == base["always_live_bytes"] - state
    assert c.report["sim"]["remote_bytes"] == 2 * state          # loaded and stored once each
    assert c.report["sim"]["cycles"] > mlp_train.report["sim"]["cycles"]
    names = [s["name"] for s in c.sim.steps]
    assert any(n.startswith("remote remote:") for n in names)


def test_offload_weights_makes_them_not_always_live():
    c = build("mnist-mlp", batch=4, offload="weights", simulate=True)
    assert c.memory["always_live_bytes"] < 100
    assert c.report["sim"]["remote_bytes"] > 0


# -- gradient accumulation -------------------------------------------------------------------------
def test_accumulate_repeats_forward_backward_and_updates_once():
    c = build(mini_resnet, train=True, batch=2, accumulate=4, simulate=True)
    prog = c.exe.program
    assert isinstance(prog.children[0], Repeat) and prog.children[0].count == 4
    assert all(ch.compute_set.phase == "update" for ch in prog.children[1:])
    assert c.report["model"]["samples_per_step"] == 8
    big = build(mini_resnet, train=True, batch=8)
    # activations of a micro-batch of 2 instead of 8; the accumulators stay
    assert c.memory["not_always_live_peak_bytes"] < big.memory["not_always_live_peak_bytes"]


# -- out of memory: diagnose, suggest, fit ---------------------------------------------------------
def test_out_of_memory_is_diagnosed_and_the_suggestion_fits():
    # a 32-tile chip: the per-tile memory of the small network is dominated by activations,
    # as ResNet-50's is on a full chip at a large batch (bench/bench_memory.py)
    small = gc200.replace(tiles=32)
    base = build(mini_resnet, train=True, batch=4, chip=small).memory["peak_tile_bytes"]
    chip = small.replace(sram_bytes_per_tile=int(base * 0.85))
    c = build(mini_resnet, train=True, batch=4, chip=chip)
    m = c.report["memory"]
    assert not m["fits"] and m["oom_tiles"] > 0
    assert m["message"].startswith(f"Out of memory on tile {m['worst_tiles'][0]['tile']}: ")
    assert f"tiles only have {chip.sram_bytes_per_tile}" in m["message"]
    fitting = [s for s in m["suggestions"] if s["fits"]]
    assert fitting, m["suggestions"]
    kinds = {s["option"].split()[0] for s in m["suggestions"]}
    assert {"--recompute", "--batch", "--dtype", "--offload"} <= kinds
    ok = []
    for s in fitting[:3]:
        args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in s["args"].items()}
        kw = dict(train=True, batch=4, chip=chip, suggest=False) | args
        try:
            ok.append(build(mini_resnet, **kw).memory["fits"])
        except ValueError as e:          # an option the lowering cannot compile yet (see the report)
            ok.append(repr(e))
    assert any(x is True for x in ok), (fitting[:3], ok)


def test_suggestions_can_be_verified_by_recompiling():
    base = build("mnist-mlp", train=True, batch=16).memory["peak_tile_bytes"]
    chip = gc200.replace(sram_bytes_per_tile=int(base * 0.9))
    c = build("mnist-mlp", train=True, batch=16, chip=chip, verify_suggestions=True)
    s = c.memory["suggestions"]
    assert s and all(x["method"] == "recompiled" or x["method"].startswith("recompile failed") for x in s)
    assert any(x["fits"] and x["method"] == "recompiled" for x in s)


# -- command line ----------------------------------------------------------------------------------
def test_cli_memory_options(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = ipusim_cli.main(["compile", "mnist-mlp", "--train", "--batch", "8", "--recompute", "sqrt",
                          "--accumulate", "2", "--offload", "optimizer", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["model"]["recompute"] == "sqrt" and rep["model"]["accumulate"] == 2
    assert rep["model"]["offload"] == ["optimizer"]
    assert "reuse_factor" in rep["memory"] and "suggestions" in rep["memory"]
    assert "reuse" in capsys.readouterr().out
    assert ipusim_cli.main(["compile", "mnist-mlp", "--dtype", "int8"]) == 0


def test_accumulate_update_reads_the_accumulators_not_one_micro_batch_gradients():
    # the update once read the last micro-batch's raw gradients: adding the ScaledAdd vertices
    # moved the edge buffer, and the redirect to the accumulators was written to the old one
    from compiler.codelets import CODELETS
    c = build(mini_resnet, train=True, batch=2, accumulate=4)
    g = c.exe.graph
    acc = {v.id for v in g.variables if v.kind == "accumulator"}
    assert acc and all(g.variables[i].dtype for i in acc)
    ev, ef, es = g.e_vertex.view(), g.e_field.view(), g.e_start.view()
    read = set()
    for b in g.batches:
        fields = CODELETS[b.codelet].field_index
        if g.compute_sets[b.cs].phase == "update" and "grad" in fields:
            sel = (ev >= b.v0) & (ev < b.v1) & (ef == fields["grad"])
            read |= set(g.variable_of(es[sel]).tolist())
    assert read == acc
    # accumulators are held for the whole program, like the weights
    assert c.memory["always_live_bytes"] > build(mini_resnet, train=True, batch=2).memory["always_live_bytes"]
