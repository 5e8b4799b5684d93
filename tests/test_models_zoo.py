"""Built-in models (models.get_model) and summaries (models.summary)."""
import time
from math import prod

import pytest

from models import FAMILIES, ModelError, get_model, list_models, summary
from models.builder import block_ops, block_signature


def _macs(g):
    """Multiply-accumulates of the Conv / Gemm / MatMul ops, from the shapes."""
    total = 0
    for n in g.ops():
        d = g.op(n)
        y = g.tensors[d["outputs"][0]].shape
        w = g.tensors[d["inputs"][1]].shape if len(d["inputs"]) > 1 else None
        if d["op"] == "Conv":
            total += prod(y) * prod(w[1:])
        elif d["op"] in ("Gemm", "MatMul"):
            total += prod(y) * g.tensors[d["inputs"][0]].shape[-1]
    return total


def test_list_models_names_the_built_ins():
    assert list_models() == ["alexnet", "bert-base", "bert-large", "gpt2", "gpt2-large", "gpt2-medium", "gpt2-xl",
                             "llama-7b", "llama-tiny", "mixtral-8x7b", "mixtral-tiny", "mnist-mlp", "resnet50",
                             "vgg16"]


@pytest.mark.parametrize("name, params", [
    ("mnist-mlp", 784 * 256 + 256 + 256 * 10 + 10),
    ("alexnet", 61_100_840),        # torchvision
    ("vgg16", 138_357_544),         # torchvision
    ("resnet50", 25_557_032),       # torchvision
    ("bert-base", 109_482_240 + 768 * 2 + 2),   # BertModel + 2-way classifier
])
def test_parameter_count_matches_the_reference_definition(name, params):
    assert get_model(name).params() == params


def test_bert_base_without_classifier_has_the_standard_bertmodel_count():
    assert get_model("bert-base", num_labels=0).params() == 109_482_240


def _bert_params(layers, hidden, inter, vocab, positions, types=2, labels=2):
    """BERT's parameters by hand: embeddings (+ LayerNorm), layers (Q, K, V, output
    projections, two LayerNorms, the feed-forward pair), pooler, classifier."""
    emb = (vocab + positions + types) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * 2 * hidden + (hidden * inter + inter) + (inter * hidden + hidden)
    return emb + layers * layer + (hidden * hidden + hidden) + (hidden * labels + labels)


def test_bert_large_parameter_count_follows_its_shapes():
    want = _bert_params(24, 1024, 4096, 30400, 512)
    assert want == 335_019_010
    g = get_model("bert-large")
    assert g.params() == want
    assert g.tensors["input_ids"].shape == (1, 512)           # MLPerf's sequence length
    assert get_model("bert-large", num_labels=0).params() == want - (1024 * 2 + 2)
    assert get_model("bert-base").params() == _bert_params(12, 768, 3072, 30522, 512)


def test_bert_large_layers_are_one_block_type_and_its_options_shrink_it():
    g = get_model("bert-large", layers=3, seq_len=128)
    assert g.name == "bert-large"
    assert len({g.op(n)["block_type"] for n in g.ops() if g.op(n)["block"]}) == 1
    assert g.tensors["input_ids"].shape == (1, 128)
    assert g.params() == _bert_params(3, 1024, 4096, 30400, 512)


def test_small_cnn_options_keep_the_full_size_defaults():
    assert get_model("alexnet", hidden=4096, pooled=6).params() == 61_100_840
    small = get_model("vgg16", image_size=32, pooled=1, hidden=64, num_classes=10)
    assert small.params() == 14_714_688 + (512 * 64 + 64) + (64 * 64 + 64) + (64 * 10 + 10)


def test_each_bert_layer_adds_the_standard_7_087_872_params():
    assert get_model("bert-base", layers=12).params() - \
        get_model("bert-base", layers=11).params() == 7_087_872


@pytest.mark.parametrize("name, gmacs", [("alexnet", 0.714), ("vgg16", 15.47),
                                         ("resnet50", 4.09)])
def test_multiply_accumulates_match_published_figures(name, gmacs):
    assert _macs(get_model(name)) / 1e9 == pytest.approx(gmacs, rel=2e-3)


def test_flops_count_a_multiply_add_as_two():
    g = get_model("resnet50")
    conv1 = g.op("conv1")
    assert conv1["flops"] == 2 * 64 * 112 * 112 * 3 * 7 * 7
    assert g.op("fc")["flops"] == 2 * 1000 * 2048 + 1000


def test_flops_and_activation_shapes_scale_with_batch():
    g1, g8 = get_model("resnet50", batch=1), get_model("resnet50", batch=8)
    assert g8.flops() == 8 * g1.flops() and g8.params() == g1.params()
    assert g8.tensors["input"].shape == (8, 3, 224, 224)
    assert g8.tensors[g8.outputs[0]].shape == (8, 1000) and g8.batch == 8


@pytest.mark.parametrize("name", ["mnist-mlp", "alexnet", "vgg16", "resnet50", "bert-base", "bert-large"])
def test_every_op_is_complete(name):
    g = get_model(name)
    for n in g.ops():
        d = g.op(n)
        assert d["family"] in FAMILIES and d["phase"] == "fwd"
        assert isinstance(d["layer"], str) and d["layer"]
        assert isinstance(d["flops"], int) and d["flops"] >= 0
        assert all(g.tensors[t].shape for t in d["outputs"])
        if d["op"] == "Conv":
            assert {"kernel_shape", "strides", "pads", "group", "dilations"} <= set(d["attrs"])
            assert len(d["attrs"]["pads"]) == 4


def test_layer_names_follow_torchvision_module_names():
    g = get_model("resnet50")
    assert {"conv1", "bn1", "maxpool", "layer3.2.conv2", "layer4.0.downsample.0",
            "fc"} <= {g.op(n)["layer"] for n in g.graph}
    assert g.tensors["layer3.2.conv2.weight"].shape == (256, 256, 3, 3)
    assert get_model("alexnet").ops()[0] == "features.0"


def test_batchnorm_running_statistics_are_state_not_params():
    g = get_model("resnet50")
    assert g.tensors["bn1.running_mean"].kind == "state"
    assert g.tensors["bn1.weight"].kind == "param"


def test_resnet_bottlenecks_are_blocks_and_equal_shapes_share_a_block_type():
    g = get_model("resnet50")
    blocks = block_ops(g)
    assert len(blocks) == 16 and "layer3.2" in blocks
    bt = {b: g.op(ops[0])["block_type"] for b, ops in blocks.items()}
    assert len({bt[f"layer3.{i}"] for i in range(1, 6)}) == 1
    assert bt["layer3.0"] != bt["layer3.1"] and bt["layer2.1"] != bt["layer3.1"]
    assert len(set(bt.values())) == 8


@pytest.mark.parametrize("name", ["resnet50", "bert-base"])
def test_blocks_with_equal_block_type_have_identical_ops_in_the_same_order(name):
    g = get_model(name)
    by_type = {}
    for b, ops in block_ops(g).items():
        assert len({g.op(n)["block_type"] for n in ops}) == 1
        by_type.setdefault(g.op(ops[0])["block_type"], set()).add(block_signature(g, ops))
    assert all(len(sigs) == 1 for sigs in by_type.values())


def test_bert_encoder_layers_share_one_block_type():
    g = get_model("bert-base", layers=4)
    blocks = block_ops(g)
    assert sorted(blocks) == [f"encoder.layer.{i}" for i in range(4)]
    assert len({g.op(ops[0])["block_type"] for ops in blocks.values()}) == 1


def test_bert_shapes_follow_seq_len_and_heads():
    g = get_model("bert-base", batch=2, seq_len=64, layers=1)
    assert g.tensors["input_ids"].shape == (2, 64) and g.tensors["input_ids"].dtype == "int64"
    assert g.tensors["encoder.layer.0.attention.self.scores.out"].shape == (2, 12, 64, 64)
    assert g.tensors[g.outputs[0]].shape == (2, 2)


def test_fp16_models_hold_fp16_activations_and_weights():
    g = get_model("mnist-mlp", dtype="fp16")
    assert {g.tensors[t].dtype for t in g.tensors} == {"fp16"}
    assert g.tensors["fc1.weight"].nbytes == 784 * 256 * 2


def test_unknown_model_option_and_dtype_are_errors():
    with pytest.raises(ModelError, match="unknown model 'resnet51'.*resnet50"):
        get_model("resnet51")
    with pytest.raises(ModelError, match="unknown option.*widht"):
        get_model("mnist-mlp", widht=3)
    with pytest.raises(ModelError, match="dtype"):
        get_model("alexnet", dtype="fp8")


def test_image_size_that_cannot_be_pooled_to_7x7_is_an_error():
    with pytest.raises(ModelError, match="vgg16.*avgpool"):
        get_model("vgg16", image_size=64)


@pytest.mark.parametrize("name", ["mnist-mlp", "alexnet", "vgg16", "resnet50", "bert-base"])
def test_models_build_fast_with_and_without_training(name):
    t = time.perf_counter()
    get_model(name)
    get_model(name, train=True, optimizer="adam")
    assert time.perf_counter() - t < 1.5


# -- summary ----------------------------------------------------------------------------
def test_summary_totals_match_the_graph():
    g = get_model("resnet50")
    s = summary(g)
    assert (s["name"], s["params"], s["flops"], s["ops"]) == \
        ("resnet50", g.params(), g.flops(), len(g))
    assert sum(r["params"] for r in s["layers"]) == g.params()
    assert sum(r["flops"] for r in s["layers"]) == g.flops()


def test_summary_has_a_per_layer_table():
    s = summary(get_model("resnet50"))
    row = next(r for r in s["layers"] if r["layer"] == "layer3.2.conv2")
    assert row["params"] == 256 * 256 * 9 and row["op_types"] == ["Conv"]
    assert row["output_shape"] == (1, 256, 14, 14)
    assert s["by_family"]["conv"]["ops"] == 53


def test_summary_of_a_training_graph_splits_flops_by_phase():
    s = summary(get_model("mnist-mlp", train=True))
    assert set(s["by_phase"]) == {"fwd", "loss", "bwd", "update"}
    assert sum(v["flops"] for v in s["by_phase"].values()) == s["flops"]
