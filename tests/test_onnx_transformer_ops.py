"""ONNX opset-23 transformer ops imported (models/onnx_import.py, models/onnx_expand.py):
Attention, RotaryEmbedding, RMSNormalization -- lowered for timing, and equal to onnx's
reference evaluator in functional mode (simulator/onnx_backend.py).  ONNX's own node tests of
these ops run in tests/test_onnx_backend_runner.py (tests/onnx_node_passing.txt)."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import models
import simulator.onnx_backend as backend
from compiler.lower import lower
from hardware.chips import get_chip
from simulator.run import run

B, S, HID, H, KVH, FF, MAXPOS = 2, 8, 64, 4, 2, 96, 32
D = HID // H


def _decoder_block(rng, position_ids_input=False, mask=False):
    """One Llama-style decoder layer as PyTorch's exporter writes it at opset 23: RMSNorm,
    q / k / v projections, heads split by Reshape + Transpose, RotaryEmbedding at position ids,
    grouped-query causal Attention, the output projection and residual, RMSNorm, SwiGLU MLP
    and residual."""
    def w(name, *shape, scale=0.2):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inv = 1.0 / (10000 ** (np.arange(0, D, 2) / D))
    ang = np.arange(MAXPOS)[:, None] * inv[None, :]
    inits = [w("ln1", HID, scale=1.0), w("ln2", HID, scale=1.0), w("wq", HID, H * D), w("wk", HID, KVH * D),
             w("wv", HID, KVH * D), w("wo", H * D, HID), w("wg", HID, FF), w("wu", HID, FF), w("wd", FF, HID),
             numpy_helper.from_array(np.cos(ang).astype(np.float32), "cos_cache"),
             numpy_helper.from_array(np.sin(ang).astype(np.float32), "sin_cache"),
             numpy_helper.from_array(np.array([B, S, H, D], np.int64), "q_shape"),
             numpy_helper.from_array(np.array([B, S, KVH, D], np.int64), "kv_shape"),
             numpy_helper.from_array(np.array([B, S, HID], np.int64), "o_shape")]
    nodes = [helper.make_node("RMSNormalization", ["x", "ln1"], ["h"], axis=-1, epsilon=1e-6, name="/input_layernorm/RMSNorm")]
    if not position_ids_input:   # the exporter's Range over the sequence, folded at import
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", 0), ("len", S), ("one", 1))]
        nodes += [helper.make_node("Range", ["zero", "len", "one"], ["pos1"]),
                  helper.make_node("Unsqueeze", ["pos1", "ax0"], ["pos2"]),
                  helper.make_node("Expand", ["pos2", "pos_shape"], ["position_ids"])]
        inits += [numpy_helper.from_array(np.array([0], np.int64), "ax0"),
                  numpy_helper.from_array(np.array([B, S], np.int64), "pos_shape")]
    for p, heads, shape in (("q", H, "q_shape"), ("k", KVH, "kv_shape"), ("v", KVH, "kv_shape")):
        nodes += [helper.make_node("MatMul", ["h", "w" + p], [p + "_flat"], name=f"/self_attn/{p}_proj/MatMul"),
                  helper.make_node("Reshape", [p + "_flat", shape], [p + "_bshd"]),
                  helper.make_node("Transpose", [p + "_bshd"], [p + "_bhsd"], perm=[0, 2, 1, 3])]
    nodes += [helper.make_node("RotaryEmbedding", ["q_bhsd", "cos_cache", "sin_cache", "position_ids"], ["q_rot"],
                               name="/self_attn/rotary_q"),
              helper.make_node("RotaryEmbedding", ["k_bhsd", "cos_cache", "sin_cache", "position_ids"], ["k_rot"],
                               name="/self_attn/rotary_k")]
    att_in = ["q_rot", "k_rot", "v_bhsd"] + (["attn_mask"] if mask else [])
    nodes += [helper.make_node("Attention", att_in, ["att"], is_causal=0 if mask else 1, name="/self_attn/Attention"),
              helper.make_node("Transpose", ["att"], ["att_bshd"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["att_bshd", "o_shape"], ["att_flat"]),
              helper.make_node("MatMul", ["att_flat", "wo"], ["o"], name="/self_attn/o_proj/MatMul"),
              helper.make_node("Add", ["x", "o"], ["r1"]),
              helper.make_node("RMSNormalization", ["r1", "ln2"], ["h2"], epsilon=1e-6, name="/post_attention_layernorm/RMSNorm"),
              helper.make_node("MatMul", ["h2", "wg"], ["g"], name="/mlp/gate_proj/MatMul"),
              helper.make_node("Sigmoid", ["g"], ["gs"]),
              helper.make_node("Mul", ["g", "gs"], ["silu"]),
              helper.make_node("MatMul", ["h2", "wu"], ["u"], name="/mlp/up_proj/MatMul"),
              helper.make_node("Mul", ["silu", "u"], ["gu"]),
              helper.make_node("MatMul", ["gu", "wd"], ["down"], name="/mlp/down_proj/MatMul"),
              helper.make_node("Add", ["r1", "down"], ["y"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, HID])]
    if position_ids_input:
        ins.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, [B, S]))
    if mask:
        ins.append(helper.make_tensor_value_info("attn_mask", TensorProto.BOOL, [B, 1, S, S]))
    g = helper.make_graph(nodes, "decoder_block", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, HID])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])


def test_decoder_block_imports_as_existing_ops_and_times():
    m = _decoder_block(np.random.default_rng(0))
    og = models.load_onnx_model(m)
    ops = {og.op(o)["op"] for o in og.ops()}
    assert "Attention" not in ops and "RotaryEmbedding" not in ops and "RMSNormalization" in ops
    assert {"MatMul", "Softmax", "Mul", "Sub", "Slice", "Concat"} <= ops
    # the sub-ops of an expanded node keep its layer (from its exporter-style name)
    assert {og.op(o)["layer"] for o in og.ops() if o.startswith("/self_attn/Attention/")} == {"self_attn"}
    # the causal bias is folded to a constant: no Where / ReduceMax guard over the scores
    assert "Where" not in ops and "ReduceMax" not in ops
    r = run(og, batch=B)
    sim = r.report["sim"]
    assert sim["cycles"] > 0 and sim["flops_executed"] >= 2 * B * S * HID * (H * D + 2 * KVH * D + HID + 3 * FF)


@pytest.mark.parametrize("mask, position_ids_input", [(False, False), (True, True)])
def test_decoder_block_equals_the_reference_evaluator(mask, position_ids_input):
    """Causal attention with the position ids folded at import; or a boolean mask and the
    position ids given at run time (the cos / sin rows gathered from their tables on the chip)."""
    rng = np.random.default_rng(1)
    m = _decoder_block(rng, position_ids_input=position_ids_input, mask=mask)
    x = rng.standard_normal((B, S, HID)).astype(np.float32)
    feeds = {"x": x}
    if position_ids_input:
        feeds["position_ids"] = np.stack([np.arange(S), np.arange(S) + 7]).astype(np.int64)
    if mask:   # causal, and batch 1 sees only its last 5 positions (left padding)
        am = np.tril(np.ones((S, S), bool))[None, None].repeat(B, 0)
        am[1, :, :, :3] = False
        am[1, :, :3, 3] = True    # rows 0-2 of batch 1 see position 3 (no fully masked row)
        feeds["attn_mask"] = am
    want = ReferenceEvaluator(m).run(None, feeds)[0]
    rep = backend.prepare(m)
    (got,) = rep.run(list(feeds.values()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_rms_normalization_is_computed_in_functional_mode_and_timed_by_the_norm_planner():
    """The norm planner times RMSNormalization (the built-in Llama figures) but does not compute
    it: a program run for values (the functional backend) lowers it exactly."""
    x = np.random.default_rng(2).standard_normal((3, 5, 16)).astype(np.float32)
    sc = np.linspace(0.5, 2.0, 16).astype(np.float32)
    g = helper.make_graph([helper.make_node("RMSNormalization", ["x", "s"], ["y"], epsilon=1e-5, name="norm")], "rms",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
                          [numpy_helper.from_array(sc, "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    (got,) = backend.prepare(m).run([x])
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, x)
    og, chip = models.load_onnx_model(m), get_chip("gc200")
    names = {f: [low.graph.compute_sets[c].name for c in low.op_compute_sets["norm"]]
             for f, low in ((f, lower(og, chip, functional=f)) for f in (False, True))}
    assert names[False][-1].endswith("/affine") and names[True] == ["norm/norm/norm"]


def _one(node, ins, outs, opset=23):
    g = helper.make_graph([node], "one", [helper.make_tensor_value_info(n, t, s) for n, t, s in ins],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outs])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_attention_softmax_in_double_is_refused_naming_node_and_attribute():
    m = _one(helper.make_node("Attention", ["q", "k", "v"], ["y"], softmax_precision=TensorProto.DOUBLE, name="att"),
             [(n, TensorProto.FLOAT, [1, 2, 4, 8]) for n in "qkv"], [("y", [1, 2, 4, 8])])
    with pytest.raises(models.ModelError, match=r"node 'att' \(Attention\): attribute softmax_precision=11"):
        models.load_onnx_model(m)


def test_rotary_3d_input_without_num_heads_is_refused_naming_the_attribute():
    m = _one(helper.make_node("RotaryEmbedding", ["x", "c", "s"], ["y"], name="rope"),
             [("x", TensorProto.FLOAT, [1, 4, 32]), ("c", TensorProto.FLOAT, [1, 4, 4]),
              ("s", TensorProto.FLOAT, [1, 4, 4])], [("y", [1, 4, 32])])
    with pytest.raises(models.ModelError, match=r"node 'rope' \(RotaryEmbedding\).*num_heads"):
        models.load_onnx_model(m)


def test_rms_normalization_stash_type_other_than_float_is_refused():
    m = _one(helper.make_node("RMSNormalization", ["x", "s"], ["y"], stash_type=11, name="n"),
             [("x", TensorProto.FLOAT, [2, 8]), ("s", TensorProto.FLOAT, [8])], [("y", [2, 8])])
    with pytest.raises(models.ModelError, match=r"node 'n' \(RMSNormalization\): attribute stash_type=11"):
        models.load_onnx_model(m)


@pytest.mark.parametrize("shapes, attrs, msg", [
    ([[4, 8]] * 3, {}, r"all rank 3 or all rank 4"),
    ([[1, 4, 8]] * 3, {}, r"need attributes q_num_heads and kv_num_heads"),
    ([[1, 3, 4, 8], [1, 2, 4, 8], [1, 2, 4, 8]], {}, r"3 query heads are not a multiple of 2 key-value heads"),
    ([[1, 4, 8]] * 3, dict(q_num_heads=3, kv_num_heads=3), r"input Q \[1, 4, 8\].*q_num_heads=3"),
])
def test_attention_bad_shapes_are_refused_naming_the_input_or_attribute(shapes, attrs, msg):
    m = _one(helper.make_node("Attention", ["q", "k", "v"], ["y"], name="att", **attrs),
             [(n, TensorProto.FLOAT, s) for n, s in zip("qkv", shapes)], [("y", [f"d{i}" for i in range(len(shapes[0]))])])
    with pytest.raises(models.ModelError, match=r"node 'att' \(Attention\): .*" + msg):
        models.load_onnx_model(m)
