"""Inference graphs outline repeated blocks as graph functions (compiler/lower.py, ``Lowering.run``):
the function reads argument tensors of its own for its instance's parameters (weights, read-only
state such as batch-norm statistics, host-computed derived weights), and every call, the first
included, copies its instance's in (PopART's CallOpx: a subgraph's inputs are its own tensors).

The chip keeps the weights resident between runs of a compiled program: a call must never write
a layer's parameters, or the next run computes with the wrong ones."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.executable import compile_program
from compiler.lower import lower
from compiler.program import Call, Copy, walk
from hardware.chips import gc200
from simulator.functional import FunctionalState
from tests.test_memory import mini_resnet

CHIP = gc200.replace(tiles=64)


def _decoder(model, layers=3, past=5):
    import models
    kw = dict(layers=layers, hidden=64, heads=4, vocab=100, max_position=64, dropout=0.0) if model == "gpt2" \
        else dict(layers=layers)
    return models.load(model, batch=2, model_kw=dict(kw, cache_len=12, last_logits=True, seq_len=1, past=past))


def _values(g, rng):
    """Random inputs (two runs' worth) and parameter values of graph ``g``."""
    inputs, values = {}, {}
    for t in g.tensors.values():
        if t.producer is not None or t.inplace_of:
            continue
        if t.kind == "input":
            x = rng.integers(0, 50, t.size) if "ids" in t.name or "position" in t.name else rng.standard_normal(t.size)
            inputs[t.name] = [x, x]
        elif t.kind in ("param", "state"):
            v = rng.standard_normal(t.size) * 0.1
            if t.name.endswith("var"):      # batch-norm variance
                v = np.abs(v) + 0.5
            values[t.name] = v
        elif t.kind == "constant" and t.data is not None:
            values[t.name] = np.asarray(t.data, float).ravel()
    return inputs, values


GRAPHS = {"mini-resnet": lambda: mini_resnet(batch=1, image=8, blocks=(3, 3)), "gpt2": lambda: _decoder("gpt2"),
          "llama-tiny": lambda: _decoder("llama-tiny")}


@pytest.mark.parametrize("name", ["mini-resnet", "gpt2", "llama-tiny"])
def test_a_second_run_computes_what_the_first_did(name):
    """Run the compiled program twice on one memory (weights written once, as the host loads them):
    the outputs agree bit for bit.  When the function read the first instance's weights and every
    call copied its own over them, the second run computed the first block with the last block's."""
    g = GRAPHS[name]()
    inputs, values = _values(g, np.random.default_rng(0))
    low = lower(g, CHIP, functional=True, use_functions=True)
    assert low.calls and max(low.calls.values()) >= 2
    exe = compile_program(low.graph, low.program)
    state = FunctionalState(exe, inputs=inputs)
    for n, v in values.items():
        if n in low.acts:
            state.write(low.acts[n].tensor, v)
    if name == "mini-resnet":   # folded batch norm: the host writes each layer's scale and shift
        for n, (kind, recipe) in low.host_layout.items():
            if kind == "derived":
                what, (sc, b, mu, var), eps = recipe
                s = values[sc] / np.sqrt(values[var] + eps)
                state.write(low.acts[n].tensor, s if what == "bn_scale" else values[b] - values[mu] * s)
    state.run_program()
    state.run_program()
    for n in g.outputs:
        first, second = state.outputs[n][:2]
        assert np.any(first != 0)
        assert np.array_equal(first, second), n


@pytest.mark.parametrize("name", ["mini-resnet", "gpt2", "llama-tiny"])
def test_no_copy_writes_a_weight_and_every_call_copies_weights_in(name):
    """No Copy of the program writes a weight (a parameter, a read-only state, a derived weight):
    each call, the first included, copies its instance's weights into the function's arguments."""
    g = GRAPHS[name]()
    low = lower(g, CHIP, dtype="fp16", use_functions=True)
    gr = low.graph
    params = {low.acts[t].var for t, v in g.tensors.items()
              if v.kind in ("param", "constant", "state") and t in low.acts and not v.inplace_of}
    params |= {low.acts[n].var for n, (kind, _) in low.host_layout.items() if kind == "derived"}
    assert params
    written = {gr.variable(p.dst).id for p in walk(low.program) if isinstance(p, Copy) and hasattr(p.dst, "elements")}
    assert not written & {gr.variables[v].id for v in params}
    # every call copies weights in: as many copies read a weight as the calls' instances have
    top = list(low.program.children)
    read = [gr.variable(p.src).id in {gr.variables[v].id for v in params} for p in top
            if isinstance(p, Copy) and hasattr(p.src, "elements")]
    assert sum(read) >= sum(low.calls.values())
    assert sum(isinstance(p, Call) for p in top) == sum(low.calls.values())


def test_only_repeated_blocks_are_outlined_and_unread_parameters_are_not_copied():
    """A block that occurs once is inlined (PopART outlines what repeats; a call of it would only
    add its weights' copies and a second home for them), and a parameter the function's vertices
    never read (a batch-norm statistic, folded on the host into the scale and shift) is neither an
    argument nor copied."""
    g = GRAPHS["mini-resnet"]()
    low = lower(g, CHIP, dtype="fp16", use_functions=True)
    assert low.calls and min(low.calls.values()) >= 2
    gr = low.graph
    bn = {t for o in g.ops() if g.op(o)["op"] == "BatchNormalization" for t in g.op(o)["inputs"][1:]}
    assert len(bn) == 4 * sum(g.op(o)["op"] == "BatchNormalization" for o in g.ops())
    copied = {gr.variable(p.src).id for p in walk(low.program) if isinstance(p, Copy) and hasattr(p.src, "elements")}
    assert not copied & {gr.variables[low.acts[t].var].id for t in bn}
    assert not [v for v in gr.variables if "/arg:" in v.name and v.name.split("/arg:")[1] in bn]
    # the folded scale and shift are copied in, per call
    assert any("/arg:" in v.name and v.name.endswith("folded_scale") for v in gr.variables)
