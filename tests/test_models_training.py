"""Training graphs (models.make_training_graph / get_model(train=True))."""
import networkx as nx
import pytest

from models import ModelError, get_model, make_training_graph
from models.builder import block_ops, block_signature

MODELS = ["mnist-mlp", "alexnet", "vgg16", "resnet50", "bert-base", "bert-large"]


def _train(name, optimizer="sgd", **kw):
    if name.startswith("bert"):
        kw.setdefault("layers", 2)
    if name == "bert-large":
        kw.setdefault("seq_len", 128)
    return get_model(name, train=True, optimizer=optimizer, **kw)


def _ops(g, phase=None, op=None):
    return [n for n in g.ops() if (phase is None or g.op(n)["phase"] == phase)
            and (op is None or g.op(n)["op"] == op)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "lamb"])
def test_training_graph_is_a_dag(name, optimizer):
    assert nx.is_directed_acyclic_graph(_train(name, optimizer).graph)


@pytest.mark.parametrize("name", MODELS)
def test_every_param_has_exactly_one_update_op(name):
    g = _train(name)
    updated = [g.op(n)["inputs"][0] for n in _ops(g, "update")]
    params = [t.name for t in g.tensors.values() if t.kind == "param" and not t.inplace_of]
    assert sorted(updated) == sorted(params)


@pytest.mark.parametrize("name", MODELS)
def test_every_activation_between_a_param_and_the_loss_gets_a_gradient(name):
    g = _train(name)
    params = [t for t, v in g.tensors.items() if v.kind == "param" and not v.inplace_of]
    fwd = g.graph.subgraph(_ops(g, "fwd") + ["loss"])
    consumers = {n for n in fwd for p in params if p in g.op(n)["inputs"]}
    downstream = set(consumers).union(*(nx.descendants(fwd, n) for n in consumers))
    upstream = nx.ancestors(fwd, "loss")
    for n in downstream & upstream:
        for t in g.op(n)["outputs"]:
            if g.tensors[t].dtype in ("fp32", "fp16") and g.tensors[t].kind == "activation" \
                    and not t.endswith(("saved_mean", "saved_inv_std", ".mean", ".inv_std")):
                gt = g.grads.get(t)
                assert gt is not None, t
                assert g.tensors[gt].kind == "grad" and g.tensors[gt].shape == g.tensors[t].shape


def test_the_data_input_and_first_layer_input_get_no_gradient():
    g = _train("resnet50")
    assert "input" not in g.grads
    assert "conv1.ConvGradInput" not in g.graph and "conv1.ConvGradWeight" in g.graph
    mlp = _train("mnist-mlp")
    assert "flatten.out" not in mlp.grads and "fc1.GemmGradA" not in mlp.graph


def test_loss_is_softmax_cross_entropy_on_the_logits_with_a_label_input():
    g = _train("resnet50", batch=4)
    loss = g.op("loss")
    assert (loss["op"], loss["family"], loss["phase"]) == \
        ("SoftmaxCrossEntropyLoss", "loss", "loss")
    assert loss["inputs"] == ["fc.out", "labels"]
    assert g.tensors["labels"].shape == (4,) and g.tensors["labels"].dtype == "int64"
    assert g.inputs == ["input", "labels"] and g.outputs == ["loss"]


def test_conv_gradients_copy_the_forward_attrs_and_cost_the_forward_flops():
    g = _train("resnet50")
    fwd = g.op("layer2.0.conv2")
    for op in ("ConvGradInput", "ConvGradWeight"):
        d = g.op(f"layer2.0.conv2.{op}")
        assert (d["op"], d["family"], d["phase"]) == (op, "conv", "bwd")
        assert d["attrs"]["forward"] == "layer2.0.conv2"
        assert {k: d["attrs"][k] for k in fwd["attrs"]} == fwd["attrs"]
        assert d["flops"] == fwd["flops"]
    assert g.tensors[g.grads["layer2.0.conv2.weight"]].shape == (128, 128, 3, 3)


def test_gradient_op_types_and_families_follow_the_forward_op():
    g = _train("alexnet")
    fam = {g.op(n)["op"]: g.op(n)["family"] for n in _ops(g, "bwd")}
    assert fam["ReluGrad"] == "elementwise" and fam["MaxPoolGrad"] == "pool"
    assert fam["GemmGradA"] == fam["GemmGradB"] == "matmul"
    assert fam["ReduceSum"] == "reduce"        # bias gradients
    assert fam["DropoutGrad"] == "elementwise"
    r = _train("resnet50")
    bn = r.op("layer1.0.bn1.BatchNormalizationGrad")
    assert bn["family"] == "norm" and len(bn["outputs"]) == 3


def test_backward_ops_keep_layer_and_block_with_a_bwd_block_type():
    g = _train("resnet50")
    fwd, bwd = g.op("layer3.2.conv2"), g.op("layer3.2.conv2.ConvGradInput")
    assert bwd["layer"] == fwd["layer"] and bwd["block"] == "layer3.2"
    assert bwd["block_type"] == fwd["block_type"] + ":bwd"


@pytest.mark.parametrize("name", ["resnet50", "bert-base"])
def test_blocks_with_equal_bwd_block_type_are_identical(name):
    g = _train(name)
    by_type = {}
    for b, ops in block_ops(g).items():
        for phase in ("fwd", "bwd", "update"):
            part = [n for n in ops if g.op(n)["phase"] == phase]
            if part:
                bt = g.op(part[0])["block_type"]
                assert all(g.op(n)["block_type"] == bt for n in part)
                by_type.setdefault(bt, set()).add(block_signature(g, part))
    assert all(len(s) == 1 for s in by_type.values())
    assert not any("#" in bt for bt in by_type)


def test_fan_out_gradients_are_summed():
    g = _train("resnet50")
    s = g.op("layer2.0.relu3.out.grad_sum")   # feeds layer2.1's conv1 and its residual add
    assert (s["op"], s["family"], s["phase"]) == ("Sum", "elementwise", "bwd")
    assert len(s["inputs"]) == 2 and s["block"] == "layer2.1"
    b = _train("bert-base")                   # Q, K, V and the residual
    assert len(b.op("encoder.layer.0.output.LayerNorm.out.grad_sum")["inputs"]) == 4


def test_sgd_keeps_one_momentum_and_adam_two_moments_per_param():
    sgd, adam = _train("mnist-mlp", "sgd"), _train("mnist-mlp", "adam")
    u = sgd.op("fc1.weight.update")
    assert (u["op"], u["family"], u["phase"]) == ("SGDMomentumUpdate", "optimizer", "update")
    assert u["inputs"] == ["fc1.weight", "fc1.weight.grad", "fc1.weight.momentum"]
    assert sgd.tensors["fc1.weight.momentum"].kind == "state"
    a = adam.op("fc1.weight.update")
    assert a["op"] == "AdamUpdate"
    assert [adam.tensors[t].kind for t in a["inputs"][2:]] == ["state", "state"]


def test_lamb_keeps_two_moments_and_its_hyperparameters_per_param():
    g = _train("bert-base", "lamb")
    u = g.op("pooler.dense.weight.update")
    assert (u["op"], u["family"], u["phase"]) == ("LambUpdate", "optimizer", "update")
    assert u["inputs"] == ["pooler.dense.weight", "pooler.dense.weight.grad",
                           "pooler.dense.weight.lamb_m", "pooler.dense.weight.lamb_v"]
    assert u["attrs"]["weight_decay"] == 0.01 and u["attrs"]["epsilon"] == 1e-6
    assert [g.tensors[t].inplace_of for t in u["outputs"]] == u["inputs"][:1] + u["inputs"][2:]
    n = g.tensors["pooler.dense.weight"].size
    assert u["flops"] == 18 * n
    params = [t for t in g.tensors.values() if t.kind == "param" and not t.inplace_of]
    assert all(f"{p.name}.lamb_m" in g.tensors and f"{p.name}.lamb_v" in g.tensors for p in params)
    adam = make_training_graph(get_model("mnist-mlp"), "adam", epsilon=1e-7)
    assert adam.op("fc1.weight.update")["attrs"]["epsilon"] == 1e-7


def test_updated_tensors_are_in_place_and_not_counted_as_params():
    g = _train("resnet50")
    out = g.tensors[g.op("fc.weight.update")["outputs"][0]]
    assert out.inplace_of == "fc.weight"
    assert g.params() == get_model("resnet50").params()


def test_update_ops_run_as_soon_as_their_weight_is_no_longer_read():
    g = _train("resnet50")
    order = g.ops()
    pos = {n: i for i, n in enumerate(order)}
    phases = [g.op(n)["phase"] for n in order]
    # the first layer's updates wait for the end of the backward pass, the last layer's do not
    assert phases.index("update") < max(i for i, p in enumerate(phases) if p == "bwd")
    for n in order:
        if g.op(n)["phase"] != "update":
            continue
        w = g.op(n)["inputs"][0]
        readers = [o for o in order if o != n and w in g.op(o)["inputs"]]
        grad = g.tensors[g.op(n)["inputs"][1]].producer
        assert readers and max(pos[o] for o in readers) < pos[n]
        assert pos[grad] < pos[n]
        # and no later than right after the last of them
        assert pos[n] - max(max(pos[o] for o in readers), pos[grad]) <= 8


def test_backward_costs_about_twice_the_forward():
    g = _train("resnet50")
    f = sum(g.op(n)["flops"] for n in _ops(g, "fwd"))
    b = sum(g.op(n)["flops"] for n in _ops(g, "bwd"))
    assert 1.9 < b / f < 2.1


def test_batchnorm_runs_in_training_mode_and_saves_statistics():
    g = _train("resnet50")
    d = g.op("bn1")
    assert d["attrs"]["training_mode"] == 1 and len(d["outputs"]) == 3
    assert d["flops"] == 7 * 64 * 112 * 112


def test_make_training_graph_leaves_the_forward_graph_alone():
    fwd = get_model("mnist-mlp")
    before = (len(fwd), list(fwd.tensors), fwd.flops())
    make_training_graph(fwd, "adam")
    assert (len(fwd), list(fwd.tensors), fwd.flops()) == before


def test_bad_optimizer_and_training_graph_input_are_errors():
    with pytest.raises(ModelError, match="optimizer 'rmsprop'"):
        make_training_graph(get_model("mnist-mlp"), "rmsprop")
    with pytest.raises(ModelError, match="already a training graph"):
        make_training_graph(_train("mnist-mlp"))
