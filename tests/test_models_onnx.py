"""ONNX import (models.load_onnx) and export (models.to_onnx).

The files are built here with onnx.helper in the style of model-zoo files
(opset 9 with initializers also listed as graph inputs, recent opsets,
weights in Constant / ConstantOfShape nodes, Shape->Reshape subgraphs).
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import ModelError, get_model, load_onnx, make_training_graph, to_onnx

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def _w(name, *shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _save(tmp_path, nodes, inputs, outputs, inits=(), opset=13, name="net.onnx",
          inits_as_inputs=False):
    inputs = list(inputs)
    if inits_as_inputs:   # old zoo files list every initializer among the inputs too
        inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                   for i in inits]
    g = helper.make_graph(nodes, "net", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 4 if opset <= 9 else 7
    p = tmp_path / name
    onnx.save(m, str(p))
    return p


def _convnet(tmp_path, opset):
    """Conv(3->8, 3x3, pad 1)+BN+Relu -> MaxPool 2 -> Conv(8->16, 3x3, stride 2)
    -> GlobalAveragePool -> Flatten -> Gemm(16->10) -> Softmax, batch symbolic."""
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn.s", "bn.b", "bn.m", "bn.v"],
                         ["b1"], name="bn1", epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2.w"], ["c2"], name="conv2", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
    ]
    inits = [_w("c1.w", 8, 3, 3, 3), _w("c1.b", 8), _w("bn.s", 8), _w("bn.b", 8),
             _w("bn.m", 8), numpy_helper.from_array(np.ones(8, np.float32), "bn.v"),
             _w("c2.w", 16, 8, 3, 3), _w("fc.w", 10, 16), _w("fc.b", 10)]
    x = helper.make_tensor_value_info("x", F, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("prob", F, ["N", 10])
    return _save(tmp_path, nodes, [x], [y], inits, opset=opset,
                 name=f"convnet{opset}.onnx", inits_as_inputs=opset <= 9)


CONVNET_PARAMS = 8 * 3 * 9 + 8 + 8 + 8 + 16 * 8 * 9 + 10 * 16 + 10


@pytest.mark.parametrize("opset", [9, 17])
def test_conv_net_with_initializers_gets_shapes_params_and_flops(tmp_path, opset):
    g = load_onnx(_convnet(tmp_path, opset), batch=4)
    shape = {t: g.tensors[t].shape for t in ("c1", "p1", "c2", "gap", "flat", "prob")}
    assert shape == {"c1": (4, 8, 32, 32), "p1": (4, 8, 16, 16), "c2": (4, 16, 8, 8),
                     "gap": (4, 16, 1, 1), "flat": (4, 16), "prob": (4, 10)}
    assert g.inputs == ["x"] and g.outputs == ["prob"] and g.batch == 4
    assert g.params() == CONVNET_PARAMS
    assert g.op("conv1")["flops"] == 2 * 4 * 8 * 32 * 32 * 3 * 9 + 4 * 8 * 32 * 32
    assert g.op("conv2")["flops"] == 2 * 4 * 16 * 8 * 8 * 8 * 9
    assert g.op("fc")["flops"] == 2 * 4 * 10 * 16 + 4 * 10


def test_initializers_listed_as_inputs_are_weights_not_inputs(tmp_path):
    g = load_onnx(_convnet(tmp_path, 9))
    assert g.inputs == ["x"]
    assert g.tensors["c1.w"].kind == "param"
    assert isinstance(g.tensors["c1.w"].data, np.ndarray)


def test_batchnorm_running_statistics_are_state(tmp_path):
    g = load_onnx(_convnet(tmp_path, 13))
    assert [g.tensors[t].kind for t in ("bn.s", "bn.b", "bn.m", "bn.v")] == \
        ["param", "param", "state", "state"]


def test_ops_get_families_and_complete_onnx_attrs(tmp_path):
    g = load_onnx(_convnet(tmp_path, 13))
    fam = {n: g.op(n)["family"] for n in g.graph}
    assert fam == {"conv1": "conv", "bn1": "norm", "relu1": "elementwise", "pool1": "pool",
                   "conv2": "conv", "relu2": "elementwise", "gap": "pool",
                   "flatten": "reshape", "fc": "matmul", "softmax": "softmax"}
    a = g.op("conv2")["attrs"]
    assert (a["kernel_shape"], a["strides"], a["pads"], a["dilations"], a["group"]) == \
        ([3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1)
    assert g.op("fc")["attrs"]["transB"] == 1


def test_symbolic_batch_defaults_to_one(tmp_path):
    g = load_onnx(_convnet(tmp_path, 13))
    assert g.tensors["x"].shape == (1, 3, 32, 32) and g.batch == 1


def test_weights_from_constant_and_constant_of_shape_nodes(tmp_path):
    w = RNG.standard_normal((6, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["W"], name="w_const",
                         value=numpy_helper.from_array(w, "W")),
        helper.make_node("Constant", [], ["bshape"], name="b_shape",
                         value=numpy_helper.from_array(np.array([4], np.int64), "bs")),
        helper.make_node("ConstantOfShape", ["bshape"], ["B"], name="b_fill",
                         value=numpy_helper.from_array(np.array([0.5], np.float32), "v")),
        helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
        helper.make_node("Add", ["h", "B"], ["y"], name="bias"),
    ]
    p = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", F, [2, 6])],
              [helper.make_tensor_value_info("y", F, [2, 4])], opset=9)
    g = load_onnx(p)
    assert sorted(g.graph) == ["bias", "matmul"]
    assert g.tensors["W"].kind == "param" and np.array_equal(g.tensors["W"].data, w)
    assert g.tensors["B"].kind == "param" and np.all(g.tensors["B"].data == 0.5)
    assert g.params() == 6 * 4 + 4
    assert g.op("matmul")["flops"] == 2 * 2 * 4 * 6 and g.op("bias")["flops"] == 2 * 4


def _shape_reshape_net(tmp_path, opset):
    """x (N,8,4,4) -> Reshape to (N, -1) with the N taken from Shape(x)."""
    unsq = (helper.make_node("Unsqueeze", ["n"], ["n1"], name="unsq", axes=[0])
            if opset < 13 else
            helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsq"))
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        unsq,
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="reshape"),
        # Gemm's bias is optional only from opset 11 (onnx.checker refuses it missing before)
        helper.make_node("Gemm", ["flat", "fc.w"] + (["fc.b"] if opset < 11 else []), ["y"], name="fc", transB=1),
    ]
    inits = [_i64("zero", 0), _i64("minus1", [-1]), _i64("axes0", [0]), _w("fc.w", 3, 128), _w("fc.b", 3)]
    x = helper.make_tensor_value_info("x", F, ["batch", 8, 4, 4])
    y = helper.make_tensor_value_info("y", F, ["batch", 3])
    return _save(tmp_path, nodes, [x], [y], inits, opset=opset, name=f"reshape{opset}.onnx")


@pytest.mark.parametrize("opset", [9, 13])
def test_shape_subgraph_is_folded_into_a_concrete_reshape(tmp_path, opset):
    g = load_onnx(_shape_reshape_net(tmp_path, opset), batch=5)
    assert sorted(g.op(n)["op"] for n in g.graph) == ["Gemm", "Reshape"]
    assert g.tensors["flat"].shape == (5, 128) and g.tensors["y"].shape == (5, 3)
    target = g.tensors[g.op("reshape")["inputs"][1]]
    assert target.kind == "constant" and list(target.data) == [5, -1]


def test_our_shape_rules_agree_with_onnx_shape_inference(tmp_path):
    for p in (_convnet(tmp_path, 9), _convnet(tmp_path, 17), _shape_reshape_net(tmp_path, 9),
              _zoo_style_net(tmp_path)):
        a, b = load_onnx(p, batch=2), load_onnx(p, batch=2, use_onnx_shapes=False)
        assert {t: v.shape for t, v in a.tensors.items()} == \
            {t: v.shape for t, v in b.tensors.items()}, p.name


def _zoo_style_net(tmp_path):
    """GoogLeNet / SqueezeNet-like opset-9 file with the other supported ops."""
    c = helper.make_node
    nodes = [
        c("Pad", ["x"], ["xp"], name="pad", pads=[0, 0, 1, 1, 0, 0, 1, 1]),
        c("Conv", ["xp", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], strides=[2, 2]),
        c("LeakyRelu", ["c1"], ["a1"], name="lrelu", alpha=0.1),
        c("LRN", ["a1"], ["n1"], name="lrn", size=5, alpha=1e-4, beta=0.75, bias=1.0),
        c("AveragePool", ["n1"], ["p1"], name="avgpool", kernel_shape=[3, 3], strides=[2, 2],
          pads=[1, 1, 1, 1]),
        c("Conv", ["p1", "w2"], ["e1"], name="expand1x1", kernel_shape=[1, 1]),
        c("Conv", ["p1", "w3"], ["e3"], name="expand3x3", kernel_shape=[3, 3],
          auto_pad="SAME_UPPER"),
        c("Concat", ["e1", "e3"], ["cat"], name="concat", axis=1),
        c("Sigmoid", ["cat"], ["s"], name="sigmoid"),
        c("Tanh", ["cat"], ["t"], name="tanh"),
        c("Clip", ["cat"], ["cl"], name="clip", min=0.0, max=6.0),
        c("Sum", ["s", "t", "cl"], ["sum"], name="sum3"),
        c("Mul", ["sum", "half"], ["m"], name="mul"),
        c("Sub", ["m", "half"], ["d0"], name="sub"),
        c("Div", ["d0", "half"], ["d"], name="div"),
        c("Dropout", ["d"], ["dr"], name="dropout", ratio=0.3),
        c("Transpose", ["dr"], ["tr"], name="transpose", perm=[0, 2, 3, 1]),
        c("ReduceMean", ["tr"], ["rm"], name="reducemean", axes=[1, 2], keepdims=1),
        c("Squeeze", ["rm"], ["sq"], name="squeeze", axes=[1, 2]),
        c("Identity", ["sq"], ["id"], name="identity"),
        c("Cast", ["id"], ["cs"], name="cast", to=TensorProto.FLOAT),
        c("LogSoftmax", ["cs"], ["y"], name="logsoftmax", axis=1),
    ]
    inits = [_w("w1", 4, 3, 3, 3), _w("w2", 4, 4, 1, 1), _w("w3", 4, 4, 3, 3),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    x = helper.make_tensor_value_info("x", F, ["N", 3, 17, 17])
    y = helper.make_tensor_value_info("y", F, ["N", 8])
    return _save(tmp_path, nodes, [x], [y], inits, opset=9, name="zoo_style.onnx",
                 inits_as_inputs=True)


def test_zoo_style_file_with_many_op_types_imports(tmp_path):
    g = load_onnx(_zoo_style_net(tmp_path), batch=2)
    s = {t: g.tensors[t].shape for t in ("xp", "c1", "p1", "e3", "cat", "tr", "sq", "y")}
    assert s == {"xp": (2, 3, 19, 19), "c1": (2, 4, 9, 9), "p1": (2, 4, 5, 5),
                 "e3": (2, 4, 5, 5), "cat": (2, 8, 5, 5), "tr": (2, 5, 5, 8),
                 "sq": (2, 8), "y": (2, 8)}
    assert g.op("expand3x3")["attrs"]["pads"] == [1, 1, 1, 1]
    assert g.op("sum3")["flops"] == 2 * 2 * 8 * 5 * 5
    assert g.op("lrn")["flops"] == (2 * 5 + 3) * 2 * 4 * 9 * 9
    assert g.tensors["half"].kind == "constant"
    assert g.params() == 4 * 3 * 9 + 4 * 4 + 4 * 4 * 9


def test_zoo_style_file_gets_a_training_graph_with_gradients_for_every_op(tmp_path):
    g = make_training_graph(load_onnx(_zoo_style_net(tmp_path), batch=2))
    assert {"LRNGrad", "AveragePoolGrad", "ConcatGrad", "Transpose", "ReduceMeanGrad",
            "Reshape", "SigmoidGrad", "TanhGrad", "ClipGrad", "LeakyReluGrad", "DropoutGrad",
            "LogSoftmaxGrad", "Sum", "Mul", "Div"} <= \
        {g.op(n)["op"] for n in g.graph if g.op(n)["phase"] == "bwd"}
    assert "pad.PadGrad" not in g.graph           # the padded input needs no gradient
    assert all(t in g.grads for t in ("c1", "cat", "sq", "y"))


def test_bert_like_decomposed_layernorm_and_erf_gelu(tmp_path):
    c = helper.make_node
    nodes = [
        c("Gather", ["emb", "ids"], ["e"], name="/embeddings/word_embeddings/Gather"),
        c("ReduceMean", ["e"], ["mu"], name="/embeddings/LayerNorm/ReduceMean", axes=[-1]),
        c("Sub", ["e", "mu"], ["xc"], name="/embeddings/LayerNorm/Sub"),
        c("Pow", ["xc", "two"], ["sq"], name="/embeddings/LayerNorm/Pow"),
        c("ReduceMean", ["sq"], ["var"], name="/embeddings/LayerNorm/ReduceMean_1", axes=[-1]),
        c("Add", ["var", "eps"], ["ve"], name="/embeddings/LayerNorm/Add"),
        c("Sqrt", ["ve"], ["sd"], name="/embeddings/LayerNorm/Sqrt"),
        c("Div", ["xc", "sd"], ["nx"], name="/embeddings/LayerNorm/Div"),
        c("Mul", ["nx", "gamma"], ["g"], name="/embeddings/LayerNorm/Mul"),
        c("Add", ["g", "beta"], ["h"], name="/embeddings/LayerNorm/Add_1"),
        c("MatMul", ["h", "w"], ["f"], name="/encoder/layer.0/intermediate/dense/MatMul"),
        c("Div", ["f", "sqrt2"], ["f2"], name="/encoder/layer.0/intermediate/act/Div"),
        c("Erf", ["f2"], ["ef"], name="/encoder/layer.0/intermediate/act/Erf"),
        c("Add", ["ef", "one"], ["ef1"], name="/encoder/layer.0/intermediate/act/Add"),
        c("Mul", ["f", "ef1"], ["y"], name="/encoder/layer.0/intermediate/act/Mul"),
    ]
    scal = {"two": 2.0, "eps": 1e-12, "sqrt2": 1.4142135, "one": 1.0}
    inits = [_w("emb", 100, 16), _w("gamma", 16), _w("beta", 16), _w("w", 16, 64)] + \
        [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in scal.items()]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", F, ["batch", "seq", 64])
    p = _save(tmp_path, nodes, [ids], [y], inits, opset=13, name="bertish.onnx")
    g = load_onnx(p, batch=2, dim_values={"seq": 8})
    assert g.tensors["y"].shape == (2, 8, 64) and g.tensors["var"].shape == (2, 8, 1)
    assert g.tensors["emb"].kind == "param"           # the table is not folded away
    assert g.params() == 100 * 16 + 16 + 16 + 16 * 64
    assert g.op("/embeddings/LayerNorm/ReduceMean")["layer"] == "embeddings.LayerNorm"
    assert g.op("/encoder/layer.0/intermediate/dense/MatMul")["layer"] == \
        "encoder.layer.0.intermediate.dense"
    assert g.op("/encoder/layer.0/intermediate/dense/MatMul")["flops"] == 2 * 2 * 8 * 16 * 64
    t = make_training_graph(g)   # broadcasting Sub / Div / Mul, Pow, Sqrt, Erf, MatMul
    assert t.tensors[t.grads["emb"]].shape == (100, 16)
    assert t.tensors[t.grads["gamma"]].shape == (16,)
    assert {"PowGradA", "SqrtGrad", "ErfGrad", "DivGradB", "Neg", "ReduceSum",
            "MatMulGradB", "GatherGrad"} <= {t.op(n)["op"] for n in t.graph}


def test_batch_cannot_override_a_fixed_batch_dim(tmp_path):
    c = helper.make_node("Relu", ["x"], ["y"], name="relu")
    p = _save(tmp_path, [c], [helper.make_tensor_value_info("x", F, [1, 4])],
              [helper.make_tensor_value_info("y", F, [1, 4])], name="fixed.onnx")
    assert load_onnx(p).batch == 1 and load_onnx(p, batch=1).batch == 1
    with pytest.raises(ModelError, match=r"fixed\.onnx.*fixed batch of 1"):
        load_onnx(p, batch=2)


def test_constant_position_ids_slice_folds_but_the_embedding_gather_stays(tmp_path):
    c = helper.make_node
    nodes = [
        c("Shape", ["ids"], ["s"], name="shape"),
        c("Gather", ["s", "one"], ["seq"], name="seq_len", axis=0),
        c("Unsqueeze", ["seq", "axes0"], ["end"], name="unsq"),
        c("Slice", ["pos_buf", "start", "end", "axes1"], ["pos"], name="slice"),
        c("Gather", ["pos_emb", "pos"], ["pe"], name="position_embeddings"),
        c("Gather", ["tok_emb", "ids"], ["te"], name="word_embeddings"),
        c("Add", ["te", "pe"], ["y"], name="add"),
    ]
    inits = [_i64("one", 1), _i64("axes0", [0]), _i64("axes1", [1]), _i64("start", [0]),
             _i64("pos_buf", np.arange(32).reshape(1, 32)), _w("pos_emb", 32, 8),
             _w("tok_emb", 50, 8)]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 10])
    y = helper.make_tensor_value_info("y", F, ["batch", 10, 8])
    g = load_onnx(_save(tmp_path, nodes, [ids], [y], inits, name="pos.onnx"), batch=3)
    assert sorted(g.graph) == ["add", "position_embeddings", "word_embeddings"]
    assert list(g.tensors["pos"].data.ravel()) == list(range(10))
    assert g.tensors["pe"].shape == (1, 10, 8) and g.tensors["y"].shape == (3, 10, 8)
    assert g.params() == 32 * 8 + 50 * 8


def test_symbolic_non_batch_dim_without_value_is_an_error(tmp_path):
    c = helper.make_node("Relu", ["x"], ["y"], name="relu")
    x = helper.make_tensor_value_info("x", F, ["batch", "seq"])
    p = _save(tmp_path, [c], [x], [helper.make_tensor_value_info("y", F, ["batch", "seq"])],
              name="sym.onnx")
    with pytest.raises(ModelError, match=r"sym\.onnx.*'x'.*seq.*dim_values"):
        load_onnx(p)


def test_unsupported_op_is_reported_with_file_node_and_op_type(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("NonMaxSuppression", ["r", "r"], ["y"], name="foo")]
    p = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", F, [1, 4, 4])],
              [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 3])],
              name="file.onnx")
    with pytest.raises(ModelError) as e:
        load_onnx(p)
    msg = str(e.value)
    assert "file.onnx: node 'foo' has op type 'NonMaxSuppression', which is not supported" \
        in msg
    assert "supported: " in msg and "Conv" in msg


def test_truncated_file_is_reported_as_not_valid_onnx(tmp_path):
    src = _convnet(tmp_path, 13).read_bytes()
    p = tmp_path / "half.onnx"
    p.write_bytes(src[: len(src) // 2])
    with pytest.raises(ModelError, match=r"half\.onnx: not a valid ONNX file "
                                         r"\(truncated or corrupt\)"):
        load_onnx(p)


def test_garbage_file_is_reported_as_not_valid_onnx(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    with pytest.raises(ModelError, match=r"junk\.onnx: not a valid ONNX file"):
        load_onnx(p)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ModelError, match=r"nope\.onnx: no such file"):
        load_onnx(tmp_path / "nope.onnx")


def test_model_error_is_a_value_error():
    assert issubclass(ModelError, ValueError)


def test_imported_graph_can_be_made_a_training_graph(tmp_path):
    g = make_training_graph(load_onnx(_convnet(tmp_path, 13)), "adam")
    updates = sorted(g.op(n)["inputs"][0] for n in g.graph if g.op(n)["phase"] == "update")
    assert updates == ["bn.b", "bn.s", "c1.b", "c1.w", "c2.w", "fc.b", "fc.w"]
    assert "conv1.ConvGradInput" not in g.graph and "conv2.ConvGradInput" in g.graph


# -- export ---------------------------------------------------------------------------
def test_exported_resnet50_round_trips_params_flops_and_layers(tmp_path):
    g = get_model("resnet50")
    h = load_onnx(to_onnx(g, tmp_path / "resnet50.onnx"))
    assert (h.params(), h.flops(), len(h)) == (g.params(), g.flops(), len(g))
    assert [h.op(n)["layer"] for n in h.ops()] == [g.op(n)["layer"] for n in g.ops()]
    assert [h.op(n)["block_type"] for n in h.ops()] == [g.op(n)["block_type"] for n in g.ops()]


def test_exported_bert_passes_the_onnx_checker_and_round_trips(tmp_path):
    g = get_model("bert-base", layers=1, seq_len=16, vocab=1000)
    p = to_onnx(g, tmp_path / "bert.onnx")
    onnx.checker.check_model(onnx.load(p), full_check=True)
    h = load_onnx(p)
    assert (h.params(), h.flops()) == (g.params(), g.flops())


def test_exported_file_with_dynamic_batch_loads_at_any_batch(tmp_path):
    g = get_model("bert-base", layers=1, seq_len=16, vocab=1000)
    p = to_onnx(g, tmp_path / "bert.onnx", dynamic_batch=True)
    h = load_onnx(p, batch=4)
    assert h.tensors["input_ids"].shape == (4, 16)
    assert h.flops() == get_model("bert-base", layers=1, seq_len=16, vocab=1000, batch=4).flops()


def test_exported_file_is_deterministic(tmp_path):
    g = get_model("mnist-mlp")
    a = to_onnx(g, tmp_path / "a.onnx", seed=3)
    b = to_onnx(g, tmp_path / "b.onnx", seed=3)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert a.endswith("a.onnx") and b.endswith("b.onnx")


def test_exported_mlp_computes_its_function_in_the_reference_evaluator(tmp_path):
    from onnx.reference import ReferenceEvaluator
    g = get_model("mnist-mlp", batch=2)
    p = to_onnx(g, tmp_path / "mlp.onnx", dynamic_batch=True)
    m = onnx.load(p)
    w = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    x = RNG.standard_normal((3, 1, 28, 28)).astype(np.float32)
    h = np.maximum(x.reshape(3, -1) @ w["fc1.weight"].T + w["fc1.bias"], 0)
    want = h @ w["fc2.weight"].T + w["fc2.bias"]
    got = ReferenceEvaluator(m).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_given_weights_are_used(tmp_path):
    g = get_model("mnist-mlp")
    w = np.full((10,), 7.0, np.float32)
    h = load_onnx(to_onnx(g, tmp_path / "m.onnx", weights={"fc2.bias": w}))
    assert np.array_equal(h.tensors["fc2.bias"].data, w)


def test_training_graphs_cannot_be_exported(tmp_path):
    with pytest.raises(ModelError, match="forward graphs only"):
        to_onnx(get_model("mnist-mlp", train=True), tmp_path / "t.onnx")


def test_doc_string_layer_names_must_be_names(tmp_path):
    # a list as a layer name imported, then every view failed with "unhashable"
    def net(doc):
        relu = helper.make_node("Relu", ["x"], ["y"], name="r", doc_string=doc)
        return _save(tmp_path, [relu], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    with pytest.raises(ModelError, match=r"node 'r' \(Relu\): doc_string 'ipusim.layer' must be a name"):
        load_onnx(net('{"ipusim": {"layer": [1, 2]}}'))
    g = load_onnx(net('{"ipusim": {"layer": 7, "block": "b0"}}'))
    op = g.op(g.ops()[0])
    assert (op["layer"], op["block"]) == ("7", "b0")


@pytest.mark.parametrize("dim", [2**63 - 1, 2**31, 10**12])
def test_huge_input_dims_are_refused_naming_the_input(tmp_path, dim):
    # 2^63-1 died with OverflowError in map_linearly, 2^31 with MemoryError (448 GiB)
    relu = helper.make_node("Relu", ["x"], ["y"], name="r")
    p = _save(tmp_path, [relu], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, dim])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, dim])])
    with pytest.raises(ModelError, match=r"graph input 'x' of shape .* more than this simulator handles"):
        load_onnx(p)


def test_a_crash_inside_onnx_shape_inference_is_an_error_naming_the_file(tmp_path, monkeypatch):
    # onnx's C++ shape inference can abort the interpreter on a bad file (a std::clamp
    # assertion was seen with a pooling window larger than its input); it runs in a
    # forked child, so the abort is an error message here
    import os
    relu = helper.make_node("Relu", ["x"], ["y"], name="r")
    p = _save(tmp_path, [relu], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", lambda *a, **k: os.abort())
    with pytest.raises(ModelError, match=r"net.onnx: onnx shape inference crashed on this file"):
        load_onnx(p)


def test_a_file_onnx_checker_rejects_is_refused_with_its_reason(tmp_path):
    # a Relu with two inputs imported and simulated before; onnx.checker rejects it
    relu = helper.make_node("Relu", ["x", "x"], ["y"], name="r")
    p = _save(tmp_path, [relu], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    with pytest.raises(ModelError, match=r"net.onnx: not a valid ONNX model \(onnx.checker\): .*input size 2"):
        load_onnx(p)


def _zeros(name, *shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


_X4 = ("x", [1, 3, 8, 8])
INVALID_NODES = [   # (case, node, inputs, initializers, output rank, the reason's words)
    ("kernel_shape contradicts the weight", helper.make_node("Conv", ["x", "w"], ["y"], name="n", kernel_shape=[5, 5]),
     [_X4], [_zeros("w", 4, 3, 3, 3)], 4, "contradicts the weight"),
    ("dilation 0", helper.make_node("Conv", ["x", "w"], ["y"], name="n", dilations=[0, 0]),
     [_X4], [_zeros("w", 4, 3, 3, 3)], 4, "dilations .* must be positive"),
    ("auto_pad BOGUS", helper.make_node("Conv", ["x", "w"], ["y"], name="n", auto_pad="BOGUS"),
     [_X4], [_zeros("w", 4, 3, 3, 3)], 4, "auto_pad 'BOGUS'"),
    ("conv bias of 7 for 4 channels", helper.make_node("Conv", ["x", "w", "b"], ["y"], name="n"),
     [_X4], [_zeros("w", 4, 3, 3, 3), _zeros("b", 7)], 4, r"Conv bias of shape \(7,\)"),
    ("group not dividing the output channels", helper.make_node("Conv", ["x", "w"], ["y"], name="n", group=3),
     [_X4], [_zeros("w", 4, 1, 3, 3)], 4, "group 3 does not divide"),
    ("batch norm scale of 5 for 3 channels", helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="n"),
     [_X4], [_zeros("s", 5), _zeros("b", 3), _zeros("m", 3), _zeros("v", 3)], 4, "scale of shape"),
    ("softmax axis 5 on rank 2", helper.make_node("Softmax", ["x"], ["y"], name="n", axis=5),
     [("x", [2, 3])], [], 2, "axis 5 out of range"),
    ("concat of (1,10) and (3,7)", helper.make_node("Concat", ["x", "z"], ["y"], name="n", axis=1),
     [("x", [1, 10]), ("z", [3, 7])], [], 2, "differ off that axis"),
    ("gemm bias of 7 for 4 columns", helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="n"),
     [("x", [2, 3])], [_zeros("w", 3, 4), _zeros("b", 7)], 2, "does not broadcast"),
]


@pytest.mark.parametrize("case, node, ins, inits, rank, words", INVALID_NODES, ids=[c[0] for c in INVALID_NODES])
def test_nodes_our_rules_reject_are_refused_even_where_onnx_inferred_shapes(tmp_path, case, node, ins, inits, rank,
                                                                            words):
    # onnx's lenient inference gave shapes for all of these, and the importer discarded its own
    # rule errors: they compiled and simulated with exit 0
    p = _save(tmp_path, [node], [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in ins],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(rank)])], inits)
    with pytest.raises(ModelError, match=rf"node 'n' \(\w+\): .*{words}"):
        load_onnx(p)


def test_a_layer_norm_scale_that_does_not_fit_the_normalized_dims_is_refused_by_node(tmp_path):
    # scale of 3 for 8 features failed late in lowering with numpy's broadcast message, no file named
    ln = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], name="n")
    p = _save(tmp_path, [ln], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
              [_zeros("s", 3), _zeros("b", 8)], opset=17)
    with pytest.raises(ModelError, match=r"net.onnx: node 'n' \(LayerNormalization\): .*scale of shape \(3,\) "
                                         r"does not broadcast to the normalized dims \(8,\)"):
        load_onnx(p, batch=2)
    ok = _save(tmp_path, [ln], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
               [_zeros("s", 8), _zeros("b", 1)], opset=17, name="ok.onnx")
    assert load_onnx(ok, batch=2).name


def test_a_declared_shape_onnx_strict_inference_contradicts_is_refused(tmp_path):
    # issue 15 (fuzzing): models whose declared value_info shapes contradict the ops' (a rank-3
    # intermediate of rank-2 Relus) imported and compiled; onnx.checker's full check rejects them
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="r1"), helper.make_node("Relu", ["h"], ["y"], name="r2")]
    io = ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    p = _save(tmp_path, nodes, *io)
    m = onnx.load(p)
    m.graph.value_info.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, ["a", "b", "c"]))
    onnx.save(m, p)
    with pytest.raises(ModelError, match=r"net.onnx: onnx's strict shape / type inference rejects this file .*"
                                         r"differ in rank"):
        load_onnx(p)
    assert load_onnx(_save(tmp_path, nodes, *io, name="ok.onnx")).name


def test_declared_shapes_that_contradict_the_file_are_refused(tmp_path):
    # issue 15 (bench/fuzz.py findings, kept in tests/fuzz_corpus/): a graph input of dim 0 was
    # silently imported as batch 1; an initializer listed among the inputs with another declared
    # shape, and an output declared [-1, 4], were accepted; onnx's full check rejects all three
    relu = helper.make_node("Relu", ["x"], ["y"], name="r")
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])]
    p = _save(tmp_path, [relu], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [0, 4])], out)
    with pytest.raises(ModelError, match=r"graph input 'x' has dim 0 of size 0"):
        load_onnx(p)
    add = helper.make_node("Add", ["x", "w"], ["y"], name="a")
    p = _save(tmp_path, [add], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 3])], out, [_zeros("w", 1, 4)],
              name="w.onnx")
    with pytest.raises(ModelError, match=r"graph input 'w' is declared of shape \[1, 3\], but its initializer has "
                                         r"shape \[1, 4\]"):
        load_onnx(p)
    p = _save(tmp_path, [relu], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4])], name="o.onnx")
    with pytest.raises(ModelError, match=r"graph output 'y' is declared of shape \[-1, 4\], but its node computes "
                                         r"\[1, 4\]"):
        load_onnx(p)


def test_a_declared_shape_onnx_kept_but_the_op_contradicts_is_refused(tmp_path):
    # issue 15 (fuzzing): pads [1, 1, 2, 1] give a 7 x 6 output; the file declared 6 x 6, onnx's
    # lenient inference kept the declared shape, and the import took it
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=[1, 1, 2, 1])
    p = _save(tmp_path, [conv], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])], [_zeros("w", 2, 1, 3, 3)])
    with pytest.raises(ModelError, match=r"node 'c' \(Conv\): output 'y' is declared of shape \[1, 2, 6, 6\], "
                                         r"but the op computes \[1, 2, 7, 6\]"):
        load_onnx(p)


def test_flatten_counts_a_negative_axis_from_the_back_of_the_rank(tmp_path):
    # axis -1 of a (2, 3, 4, 5) tensor is (24, 5); the rule gave (120, 1), hidden by onnx's shapes
    fl = helper.make_node("Flatten", ["x"], ["y"], name="f", axis=-1)
    p = _save(tmp_path, [fl], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 60])])
    with pytest.raises(ModelError, match=r"output 'y' is declared of shape \[2, 60\], but the op computes \[24, 5\]"):
        load_onnx(p, batch=2)


def test_a_name_that_is_not_utf8_is_refused_as_a_corrupt_file(tmp_path):
    # a flipped byte in the graph name: protobuf hands it over as bytes, the report's JSON broke
    relu = helper.make_node("Relu", ["x"], ["y"], name="r")
    p = _save(tmp_path, [relu], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    data = p.read_bytes() if hasattr(p, "read_bytes") else open(p, "rb").read()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data.replace(b"\x12\x03net", b"\x12\x03n\xa7t"))
    with pytest.raises(ModelError, match=r"bad.onnx: not a valid ONNX file \(truncated or corrupt\): a graph name "
                                         r"is not UTF-8"):
        load_onnx(str(bad))


def test_inputs_are_read_before_the_initializers_and_onnxs_inference_runs_beside_them(tmp_path):
    """The import sizes the graph inputs from the initializers' dims, starts onnx's shape
    inference in its child, then reads the initializers' data: an input it cannot size is
    still refused by name, and a good file gets its shapes."""
    w = _w("w", 4, 3)
    y = helper.make_tensor_value_info("y", F, ["b", 3])
    x = helper.make_tensor_value_info("x", F, [1, "n"])    # a symbolic dim the import cannot size
    p = _save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [x], [y], inits=[w])
    with pytest.raises(ModelError, match="symbolic dim 1"):
        load_onnx(p)
    x = helper.make_tensor_value_info("x", F, [2, 4])
    p = _save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [x], [y], inits=[w], name="b.onnx",
              inits_as_inputs=True)
    g = load_onnx(p)
    assert g.tensors["y"].shape == (2, 3) and "w" not in g.inputs
