"""Every built-in model trains: on one chip, sharded over two chips and pipelined over two,
at test size (few layers, small images and widths, a 64-tile chip).  Compiling checks that
every tensor is mapped and no two vertices write one element; each run must also report
cycles, one update op per parameter and, for LAMB, its state.  Plus the two planners that
made transformer training possible, run functionally against numpy: the gather gradient
(a scatter-add that writes its whole tensor) and LAMB's per-tensor trust ratio."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.executable import compile_program
from compiler.lower import lower
from hardware.chips import gc2, gc200
from models import list_models
from models.opgraph import OpGraph
from simulator.config import RunConfig
from simulator.engine import Engine
from simulator.run import run

CHIP = gc200.replace(tiles=64)

#: test-size options of each built-in model
SMALL = {
    "mnist-mlp": dict(hidden=32),
    "alexnet": dict(image_size=63, hidden=64, pooled=1, num_classes=10),
    "vgg16": dict(image_size=32, hidden=64, pooled=1, num_classes=10),
    "resnet50": dict(image_size=32, layers=(1, 1, 1, 1), num_classes=10),
    "bert-base": dict(layers=2, hidden=64, heads=2, seq_len=16, vocab=100, max_position=32),
    "bert-large": dict(layers=2, hidden=64, heads=4, intermediate=128, seq_len=16, vocab=100,
                       max_position=32),
    **{n: dict(layers=2, hidden=64, heads=4, seq_len=16, vocab=100, max_position=32)
       for n in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")},
    "llama-7b": dict(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, seq_len=16, vocab=100),
    "llama-tiny": dict(seq_len=16),
    "mixtral-8x7b": dict(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, seq_len=16, vocab=100,
                         experts=4),
    "mixtral-tiny": dict(seq_len=16),
}

#: mode -> (options, optimizer): LAMB where the MLPerf BERT-Large run uses it (one chip, pipeline)
MODES = {"one-chip": (dict(), "lamb"), "shard": (dict(ipus=2, mode="shard"), "sgd"),
         "pipeline": (dict(ipus=2, mode="pipeline"), "lamb")}


def test_every_built_in_model_has_a_test_size():
    assert sorted(SMALL) == list_models()


def _updates(og):
    params = sorted(t.name for t in og.tensors.values() if t.kind == "param" and not t.inplace_of)
    ups = [og.op(n) for n in og.ops() if og.op(n)["phase"] == "update"]
    return params, ups


def _check_updates(og, optimizer, read_only=frozenset()):
    """One update per parameter; ``read_only``: weights another chip updates (a tied copy)."""
    params, ups = _updates(og)
    updated = sorted(u["inputs"][0] for u in ups)
    assert params and updated == [p for p in params if p not in read_only or p in updated]
    want = {"sgd": "SGDMomentumUpdate", "adam": "AdamUpdate", "lamb": "LambUpdate"}[optimizer]
    assert {u["op"] for u in ups} == {want}
    if optimizer == "lamb":
        for p in updated:
            assert og.tensors[f"{p}.lamb_m"].kind == og.tensors[f"{p}.lamb_v"].kind == "state"


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("model", list(SMALL))
def test_built_in_model_trains(model, mode):
    options, optimizer = MODES[mode]
    r = run(RunConfig(model=model, model_kw=SMALL[model], batch=2, train=True, chip=CHIP,
                      optimizer=optimizer, **options))
    rep = r.report
    assert rep["model"]["train"] is True and rep["sim"]["cycles"] > 0
    if mode == "one-chip":
        og = r.compiled.opgraph
        _check_updates(og, optimizer)
        assert rep["sim"]["flops_executed"] > 0
        # every update op was lowered to compute sets that run on the chip
        cs_of = r.compiled.lowered.op_compute_sets
        assert all(cs_of[n] for n in og.ops() if og.op(n)["phase"] == "update")
        return
    mc = rep["multichip"]
    assert mc["mode"] == options["mode"] and mc["stages"] == 2
    stages = mc["placement"]["stages"]
    # a weight read on two stages (GPT-2's embedding, tied to its head) is held by both
    sizes, held = {}, {}
    for st in r.multichip.part.stages:
        for t in st.graph.tensors.values():
            if t.kind == "param" and not t.inplace_of:
                held[t.name] = held.get(t.name, 0) + 1
                sizes[t.name] = t.size
    shared = sum(sizes[t] * (n - 1) for t, n in held.items())
    assert sum(s["params"] for s in stages) == rep["model"]["params"] + shared and all(s["params"] > 0 for s in stages)
    assert len(rep["sim"]["per_ipu"]) == 2
    assert all(p["compute_cycles"] > 0 for p in rep["sim"]["per_ipu"])
    twice = {t for t, n in held.items() if n > 1}
    for st in r.multichip.part.stages:       # each chip updates exactly its own parameters
        _check_updates(st.graph, optimizer, read_only=twice)
    assert sorted(u["inputs"][0] for st in r.multichip.part.stages for u in _updates(st.graph)[1]) == sorted(held)


def test_lamb_optimizer_state_can_be_offloaded():
    base = dict(model="bert-large", model_kw=SMALL["bert-large"], batch=2, train=True, chip=CHIP,
                optimizer="lamb")
    kept = run(RunConfig(**base)).report
    off = run(RunConfig(**base, offload=("optimizer",))).report
    params = kept["model"]["params"]
    assert off["memory"]["offloaded_variables"] > 0
    # both moments of every parameter leave the chip (4 bytes each in fp32)
    assert off["memory"]["offloaded_bytes"] >= 2 * 4 * params
    assert off["memory"]["always_live_bytes"] < kept["memory"]["always_live_bytes"]
    assert off["sim"]["remote_bytes"] >= 2 * 2 * 4 * params > kept["sim"]["remote_bytes"]   # loaded and stored


# -- the planners behind it, run functionally -----------------------------------------------
def _run_functional(g, chip, inputs, state=()):
    low = lower(g, chip)
    eng = Engine(compile_program(low.graph, low.program), functional=True, inputs=inputs)
    for name, val in state:
        eng.write(low.acts[name].tensor, val)
    eng.run()
    return low, eng


def test_gather_gradient_is_a_scatter_add_over_the_whole_tensor():
    """The gradient of a gather along axis 1 (BERT's pooler takes token 0 of each sequence):
    every element is written (zeros where no index points) and repeated indices add up."""
    g = OpGraph("gather-grad")
    g.add_tensor("dy", (3, 5, 8), kind="input")
    g.add_tensor("idx", (5,), "int32", kind="input")
    g.add_tensor("dx", (3, 10, 8), kind="output")
    g.add_op("gg", "GatherGrad", ["dy", "idx"], ["dx"], family="gather", attrs={"axis": 1})
    g.outputs.append("dx")
    rng = np.random.default_rng(0)
    dy, idx = rng.standard_normal((3, 5, 8)), np.array([1, 3, 1, 9, 0])
    low, eng = _run_functional(g, gc2.replace(tiles=2), {"dy": [dy.ravel()], "idx": [idx]})
    want = np.zeros((3, 10, 8))
    np.add.at(want, (slice(None), idx), dy)
    assert np.allclose(eng.read(low.acts["dx"].tensor).reshape(3, 10, 8), want)
    codelets = {b.codelet for b in low.graph.batches}
    assert codelets == {"Fill", "MultiUpdateAdd"}


def test_lamb_update_scales_the_step_by_the_tensor_trust_ratio():
    """3,000 weights over four tiles: the norms are reduced over the tiles, then every chunk
    takes the same ||w|| / ||r||, as in You et al. (2019), Algorithm 2."""
    n = 3000
    g = OpGraph("lamb")
    g.add_tensor("w", (n,), kind="param")
    g.add_tensor("g", (n,), kind="input")
    for s in ("m", "v"):
        g.add_tensor(s, (n,), kind="state")
    g.add_tensor("w.new", (n,), kind="param", inplace_of="w")
    g.add_tensor("m.new", (n,), kind="state", inplace_of="m")
    g.add_tensor("v.new", (n,), kind="state", inplace_of="v")
    hp = dict(lr=0.1, beta1=0.9, beta2=0.999, epsilon=1e-6, weight_decay=0.01)
    g.add_op("u", "LambUpdate", ["w", "g", "m", "v"], ["w.new", "m.new", "v.new"], family="optimizer",
             attrs=hp, phase="update")
    rng = np.random.default_rng(1)
    w, grad, m, v = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n), rng.random(n)
    low, eng = _run_functional(g, gc2.replace(tiles=4), {"g": [grad]}, [("w", w), ("m", m), ("v", v)])
    assert len(low.op_compute_sets["u"]) == 4       # moments, per-tile norms, over the tiles, update
    m2 = 0.9 * m + 0.1 * grad
    v2 = 0.999 * v + 0.001 * grad ** 2
    r = (m2 / 0.1) / (np.sqrt(v2 / 0.001) + 1e-6) + 0.01 * w
    want = w - 0.1 * np.linalg.norm(w) / np.linalg.norm(r) * r
    assert np.allclose(eng.read(low.acts["w"].tensor).ravel(), want, rtol=1e-5, atol=1e-5)
    assert np.allclose(eng.read(low.acts["m"].tensor).ravel(), m2)
    assert np.allclose(eng.read(low.acts["v"].tensor).ravel(), v2)
