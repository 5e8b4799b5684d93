"""Decoder transformers (models/transformers.py): GPT-2, Llama-style and Mixtral-style.

Parameter counts against the published models; the structure that makes them what they
are (grouped-query attention, rotary embeddings, RMSNorm, SwiGLU, top-k experts); every
family compiled and simulated for inference on one chip and pipelined over two (training
in all modes: tests/test_training_modes.py); the new vertices (rotary embedding and its
gradient, the router's gradient) run functionally against numpy."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.executable import compile_program
from compiler.lower import lower
from hardware.chips import gc2, gc200
from models import ModelError, get_model, list_models
from models.opgraph import OpGraph
from models.transformers import DECODERS, rotary_tables
from simulator.config import RunConfig
from simulator.engine import Engine
from simulator.run import run

CHIP = gc200.replace(tiles=64)

#: one test-size model per family
FAMILY = {"gpt2": ("gpt2", dict(layers=2, hidden=64, heads=4, seq_len=16, vocab=100, max_position=32)),
          "llama": ("llama-tiny", dict(seq_len=16)),
          "mixtral": ("mixtral-tiny", dict(seq_len=16))}


@pytest.mark.parametrize("name, params", [
    ("gpt2", 124_439_808), ("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080),
    ("gpt2-xl", 1_557_611_200),        # Hugging Face GPT2LMHeadModel, tied embeddings
    ("llama-7b", 6_738_415_616),       # meta-llama/Llama-2-7b-hf
    ("mixtral-8x7b", 46_702_792_704),  # mistralai/Mixtral-8x7B-v0.1
])
def test_parameter_counts_match_the_published_models(name, params):
    assert get_model(name, seq_len=8).params() == params


def test_every_decoder_is_a_built_in():
    assert set(DECODERS) <= set(list_models())


def test_gpt2_untied_head_adds_exactly_the_vocabulary_matrix():
    tied = get_model("gpt2", layers=1, seq_len=8).params()
    assert get_model("gpt2", layers=1, seq_len=8, tie_word_embeddings=False).params() == tied + 50257 * 768


def test_llama_layer_is_rmsnorm_rotary_gqa_swiglu():
    g = get_model("llama-tiny", batch=2, seq_len=16)     # 4 heads of 32, 2 key-value heads
    ops = {g.op(n)["op"] for n in g.ops()}
    assert {"RMSNormalization", "RotaryEmbedding", "Swish"} <= ops and "LayerNormalization" not in ops
    assert g.tensors["layers.0.self_attn.k_proj.weight"].shape == (2 * 32, 128)
    assert g.tensors["layers.0.self_attn.q_proj.weight"].shape == (4 * 32, 128)
    # two query heads per key-value head: their rows share one product with K, no copy of K
    assert g.tensors["layers.0.self_attn.scores.out"].shape == (2, 2, 2 * 16, 16)
    assert not any(g.tensors[t].kind == "param" and t.endswith(".bias") for t in g.tensors)
    blocks = {g.op(n)["block_type"] for n in g.ops() if g.op(n)["block"]}
    assert len(blocks) == 1                             # every layer is the same graph function
    assert g.tensors[g.outputs[0]].shape == (2 * 16, 512)


def test_mixtral_routes_each_token_to_its_top_k_experts():
    g = get_model("mixtral-tiny", batch=2, seq_len=16)   # 4 experts, top 2, 32 tokens
    d = g.op("layers.0.block_sparse_moe.dispatch")
    assert d["op"] == "MoEDispatch" and g.tensors[d["outputs"][0]].shape == (4, 20, 128)   # ceil(1.25 x 32 x 2 / 4)
    assert g.tensors["layers.0.block_sparse_moe.experts.w1"].shape == (4, 128, 256)
    assert g.op("layers.0.block_sparse_moe.topk")["attrs"]["k"] == 2


@pytest.mark.parametrize("bad, msg", [
    (dict(hidden=100, heads=3), "num_attention_heads 3 does not divide hidden_size 100"),
    (dict(kv_heads=3), "num_key_value_heads 3 does not divide num_attention_heads 4"),
    (dict(seq_len=300), "seq_len 300 exceeds max_position_embeddings 256"),
    (dict(experts=4, experts_per_tok=5), None),
])
def test_bad_shapes_are_refused_by_name(bad, msg):
    name = "mixtral-tiny" if "experts" in bad else "llama-tiny"
    with pytest.raises(ModelError, match=msg or "num_experts_per_tok 5"):
        get_model(name, **bad)


@pytest.mark.parametrize("mode", ["one-chip", "pipeline"])
@pytest.mark.parametrize("family", list(FAMILY))
def test_decoder_infers(family, mode):
    model, kw = FAMILY[family]
    opts = dict(ipus=2, mode="pipeline") if mode == "pipeline" else {}
    r = run(RunConfig(model=model, model_kw=kw, batch=2, chip=CHIP, **opts))
    rep = r.report
    assert rep["sim"]["cycles"] > 0 and rep["memory"]["fits"] in (True, False)
    assert rep["model"]["params"] == get_model(model, **kw).params()
    if mode == "pipeline":
        stages = rep["multichip"]["placement"]["stages"]
        assert len(stages) == 2 and all(s["params"] > 0 for s in stages)


def test_attention_tensors_are_row_major_and_head_splits_move_runs_of_head_dim():
    """The 4-D tensors of attention (heads, scores, probabilities) are row-major, not
    channel-grouped images: the head split and merge are views of the projections (no
    vertices), a head transpose reads runs of head_dim elements (one message each, not one per
    element: issue 14), K's transpose runs Transpose blocks; a CNN's activations stay images."""
    from compiler.layout import row_major_4d
    S, H, KV, hd = 32, 4, 2, 32
    g = get_model("llama-tiny", seq_len=S)
    low = lower(g, gc200, dtype="fp16")
    exe = compile_program(low.graph, low.program)
    a = "layers.0.self_attn"
    out = {n: g.op(f"{a}.{n}")["outputs"][0] for n in ("split_heads_q", "transpose_q", "transpose_k", "scores",
                                                       "softmax", "transpose_context")}
    assert set(out.values()) <= row_major_4d(g)
    assert all(low.acts[t].g == 1 for t in out.values())
    for view in ("split_heads_q", "split_heads_k", "split_heads_v", "group_q", "merge_heads"):
        assert low.op_compute_sets[f"{a}.{view}"] == []

    def messages(op):
        return sum(int(np.sum(p.send_messages)) for cs in low.op_compute_sets[f"{a}.{op}"]
                   for p in (exe.exchange_in.get(cs), exe.exchange_out.get(cs)) if p is not None)
    # a run of head_dim per token and head (at most split once by a tile boundary); it was one per element
    assert 0 < messages("transpose_q") <= 2 * S * H < S * H * hd // 4
    assert 0 < messages("transpose_context") <= 2 * S * H
    assert {b.codelet for b in low.graph.batches if b.cs in low.op_compute_sets[f"{a}.transpose_k"]} == {"Transpose"}
    assert messages("transpose_k") <= 2 * S * KV * hd // 16
    cnn = get_model("resnet50", image_size=32, num_classes=10)
    assert not row_major_4d(cnn)


# -- the new vertices, functionally --------------------------------------------------------------
def _functional(g, chip, inputs, values):
    low = lower(g, chip)
    eng = Engine(compile_program(low.graph, low.program), functional=True, inputs=inputs)
    for name, val in values.items():
        eng.write(low.acts[name].tensor, np.ravel(val))
    eng.run()
    return low, eng


def _rope_numpy(x, cos, sin, hd, S):
    """Hugging Face's apply_rotary_pos_emb on (tokens, heads x hd), token t at position t mod S."""
    T = x.shape[0]
    xs = x.reshape(T, -1, hd)
    c = np.concatenate([cos, cos], 1)[np.arange(T) % S][:, None, :]
    s = np.concatenate([sin, sin], 1)[np.arange(T) % S][:, None, :]
    rot = np.concatenate([-xs[..., hd // 2:], xs[..., :hd // 2]], axis=-1)
    return (xs * c + rot * s).reshape(T, -1)


@pytest.mark.parametrize("op", ["RotaryEmbedding", "RotaryEmbeddingGrad"])
def test_rotary_vertices_rotate_as_hugging_face_does(op):
    S, B, H, hd = 6, 2, 3, 8
    g = OpGraph("rope")
    g.add_tensor("x", (B * S, H * hd), kind="input")
    cos, sin = rotary_tables(np.arange(S), hd)
    g.add_tensor("cos", cos.shape, kind="constant", data=cos)
    g.add_tensor("sin", sin.shape, kind="constant", data=sin)
    g.add_tensor("y", (B * S, H * hd), kind="output")
    g.add_op("rope", op, ["x", "cos", "sin"], ["y"], family="elementwise",
             attrs=dict(head_dim=hd, inverse=int(op.endswith("Grad"))))
    g.outputs.append("y")
    x = np.random.default_rng(0).standard_normal((B * S, H * hd))
    low, eng = _functional(g, gc2.replace(tiles=4), {"x": [x.ravel()]}, {"cos": cos, "sin": sin})
    got = eng.read(low.acts["y"].tensor).reshape(B * S, H * hd)
    want = _rope_numpy(x, cos, -sin if op.endswith("Grad") else sin, hd, S)
    assert np.allclose(got, want, atol=1e-5)
    if op.endswith("Grad"):      # the inverse rotation undoes the forward one
        assert np.allclose(_rope_numpy(got, cos, sin, hd, S), x, atol=1e-5)


def test_router_gradient_is_the_softmax_gradient_over_the_chosen_experts():
    T, E, k = 10, 6, 2
    rng = np.random.default_rng(1)
    g = OpGraph("router-grad")
    g.add_tensor("dg", (T, k), kind="input")
    g.add_tensor("idx", (T, k), "int32", kind="input")
    g.add_tensor("gates", (T, k), kind="input")
    g.add_tensor("dl", (T, E), kind="output")
    g.add_op("rg", "TopKRouteGrad", ["dg", "idx", "gates"], ["dl"], family="gather")
    g.outputs.append("dl")
    dg = rng.standard_normal((T, k))
    idx = np.stack([rng.permutation(E)[:k] for _ in range(T)])
    gates = rng.random((T, k))
    gates /= gates.sum(1, keepdims=True)
    low, eng = _functional(g, gc2.replace(tiles=2), {"dg": [dg.ravel()], "idx": [idx.ravel()],
                                                     "gates": [gates.ravel()]}, {})
    want = np.zeros((T, E))
    np.put_along_axis(want, idx, gates * (dg - (gates * dg).sum(1, keepdims=True)), axis=1)
    assert np.allclose(eng.read(low.acts["dl"].tensor).reshape(T, E), want, atol=1e-6)
