"""Exact training (issue 13): one training step of a built-in at test size, computed by the
tiles' vertices in functional mode (simulator/train.py: ``Lowering(exact=True)``), equals an
independent reference within 1e-5 relative in fp32: the loss, and every weight after the
step.  The reference differentiates the forward graph with autograd (a well-kept autodiff
library, https://github.com/HIPS/autograd), written op by op from ONNX's definitions here,
and applies the optimizers as PyTorch defines them (SGD with momentum without dampening,
Adam, LAMB with Adam's bias corrections and decoupled weight decay, per-tensor trust ratio).

Adam's and LAMB's first step moves every weight by about lr * sign(g): where a gradient is
within rounding of zero its sign is noise in any fp32 computation, so those tests use an
``epsilon`` (1e-3) above the gradients' rounding error.
"""
from __future__ import annotations

import numpy as np
import pytest

autograd = pytest.importorskip("autograd")
import autograd.numpy as anp  # noqa: E402
from autograd.scipy.special import erf  # noqa: E402

from compiler.planners.base import LoweringError  # noqa: E402
from models import get_model  # noqa: E402
from simulator.train import ChipTrainer, init_weights  # noqa: E402

RTOL = 1e-5


# -- the reference: the forward graph in autograd.numpy, float32 ----------------------------
def _gemm(a, x, w, c):
    if a.get("transA"):
        x = x.T
    y = a.get("alpha", 1.0) * anp.dot(x, w.T if a.get("transB") else w)
    return y + a.get("beta", 1.0) * c if c is not None else y


def _windows(x, a, k, fill):
    """(N, C, Ho, Wo, kh * kw) windows of a 2-D convolution / pool over ``x`` (padding ``fill``)."""
    s = a.get("strides") or [1, 1]
    d = a.get("dilations") or [1, 1]
    p = a.get("pads") or [0, 0, 0, 0]
    xp = anp.pad(x, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])), "constant", constant_values=fill)
    ho = (xp.shape[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (xp.shape[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    ih = (np.arange(ho) * s[0])[:, None] + np.arange(k[0]) * d[0]
    iw = (np.arange(wo) * s[1])[:, None] + np.arange(k[1]) * d[1]
    cols = xp[:, :, ih[:, None, :, None], iw[None, :, None, :]]       # (N, C, Ho, Wo, kh, kw)
    return anp.reshape(cols, cols.shape[:4] + (k[0] * k[1],))


def _conv(a, x, w, b):
    G = a.get("group", 1)
    N, M, k = x.shape[0], w.shape[0], w.shape[2:]
    cols = _windows(x, a, k, 0.0)
    ho, wo = cols.shape[2:4]
    cols = anp.reshape(cols, (N, G, x.shape[1] // G, ho, wo, k[0] * k[1]))
    wg = anp.reshape(w, (G, M // G, w.shape[1], k[0] * k[1]))
    y = anp.reshape(anp.einsum("ngchwk,gmck->ngmhw", cols, wg), (N, M, ho, wo))
    return y if b is None else y + anp.reshape(b, (1, M, 1, 1))


def _maxpool(a, x):
    """Each window's first maximum, as PyTorch routes the gradient."""
    cols = _windows(x, a, a["kernel_shape"], -np.inf)
    flat = anp.reshape(cols, (-1, cols.shape[-1]))
    idx = np.argmax(getattr(flat, "_value", flat), axis=1)
    return anp.reshape(flat[np.arange(flat.shape[0]), idx], cols.shape[:4])


def _avgpool(a, x):
    k = a["kernel_shape"]
    total = anp.sum(_windows(x, a, k, 0.0), axis=-1)
    if a.get("count_include_pad"):
        return total / (k[0] * k[1])
    ones = np.ones((1, 1) + x.shape[2:], np.float32)
    return total / np.sum(_windows(ones, a, k, 0.0), axis=-1)


def _batchnorm(a, x, scale, bias):
    axes = (0,) + tuple(range(2, x.ndim))
    shp = (1, -1) + (1,) * (x.ndim - 2)
    mean = anp.mean(x, axis=axes, keepdims=True)
    var = anp.mean((x - mean) ** 2, axis=axes, keepdims=True)
    return (x - mean) / anp.sqrt(var + a.get("epsilon", 1e-5)) * anp.reshape(scale, shp) + anp.reshape(bias, shp)


def _softmax(x, axis):
    e = anp.exp(x - anp.max(x, axis=axis, keepdims=True))
    return e / anp.sum(e, axis=axis, keepdims=True)


def _layernorm(a, x, scale, bias, rms=False):
    axes = tuple(range(a.get("axis", -1) % x.ndim, x.ndim))
    eps = a.get("epsilon", 1e-5)
    if rms:
        y = x / anp.sqrt(anp.mean(x * x, axis=axes, keepdims=True) + eps)
    else:
        mean = anp.mean(x, axis=axes, keepdims=True)
        y = (x - mean) / anp.sqrt(anp.mean((x - mean) ** 2, axis=axes, keepdims=True) + eps)
    y = y * scale
    return y if bias is None else y + bias


def _rotary(a, x, cos, sin):
    """Hugging Face's apply_rotary_pos_emb per head (rotate_half), token t at position t mod S."""
    T, hd = x.shape[0], a["head_dim"]
    c, s = cos[np.arange(T) % cos.shape[0]][:, None, :], sin[np.arange(T) % sin.shape[0]][:, None, :]
    h = anp.reshape(x, (T, -1, hd))
    x1, x2 = h[:, :, :hd // 2], h[:, :, hd // 2:]
    return anp.reshape(anp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=2), x.shape)


UNARY_REF = {
    "Sigmoid": lambda x, a: 1 / (1 + anp.exp(-x)), "Tanh": lambda x, a: anp.tanh(x), "Exp": lambda x, a: anp.exp(x),
    "Sqrt": lambda x, a: anp.sqrt(x), "Log": lambda x, a: anp.log(x), "Neg": lambda x, a: -x,
    "Abs": lambda x, a: anp.abs(x), "Reciprocal": lambda x, a: 1 / x, "Erf": lambda x, a: erf(x),
    "Softplus": lambda x, a: anp.log1p(anp.exp(x)),
    "LeakyRelu": lambda x, a: anp.where(x >= 0, x, a.get("alpha", 0.01) * x),
    "Elu": lambda x, a: anp.where(x > 0, x, a.get("alpha", 1.0) * (anp.exp(anp.minimum(x, 0)) - 1)),
}


def _slots(idx, E, C):
    """expert * C + slot of each (token, choice) pair, in token then choice order; -1 past C."""
    count, pos = [0] * E, np.full(idx.shape, -1)
    for t in range(idx.shape[0]):
        for j in range(idx.shape[1]):
            e = int(idx[t, j])
            if count[e] < C:
                pos[t, j] = e * C + count[e]
            count[e] += 1
    return pos


def _forward(g, weights, feeds):
    """Values of every tensor of forward graph ``g`` (autograd-traceable in ``weights``)."""
    env = dict(feeds)
    env.update(weights)
    for name, t in g.tensors.items():
        if name not in env and (t.data is not None or t.kind == "state"):
            env[name] = np.asarray(t.data) if t.data is not None else np.zeros(t.shape, np.float32)
    for n in g.ops():
        d = g.op(n)
        op, a = d["op"], d["attrs"]
        x = [env[i] if i else None for i in d["inputs"]]
        if op == "Flatten":
            ax = a.get("axis", 1)
            y = anp.reshape(x[0], (int(np.prod(x[0].shape[:ax])), -1))
        elif op == "Gemm":
            y = _gemm(a, x[0], x[1], x[2] if len(x) > 2 else None)
        elif op == "Relu":
            y = anp.maximum(x[0], 0.0)
        elif op == "Conv":
            y = _conv(a, x[0], x[1], x[2] if len(x) > 2 else None)
        elif op == "BatchNormalization":
            y = _batchnorm(a, *x[:3])
        elif op == "MaxPool":
            y = _maxpool(a, x[0])
        elif op == "AveragePool":
            y = _avgpool(a, x[0])
        elif op == "GlobalAveragePool":
            y = anp.mean(x[0], axis=tuple(range(2, x[0].ndim)), keepdims=True)
        elif op == "Add":
            y = x[0] + x[1]
        elif op == "Mul":
            y = x[0] * x[1]
        elif op == "Div":
            y = x[0] / x[1]
        elif op == "MatMul":
            y = anp.matmul(x[0], x[1])
        elif op == "Reshape":
            y = anp.reshape(x[0], tuple(int(v) for v in x[1]))
        elif op == "Transpose":
            y = anp.transpose(x[0], a["perm"])
        elif op == "Gather":
            y = x[0][(slice(None),) * a.get("axis", 0) + (np.asarray(x[1], np.int64),)]
        elif op == "Softmax":
            y = _softmax(x[0], a.get("axis", -1))
        elif op == "LayerNormalization":
            y = _layernorm(a, x[0], x[1], x[2] if len(x) > 2 else None)
        elif op == "RMSNormalization":
            y = _layernorm(a, x[0], x[1], None, rms=True)
        elif op == "Gelu" and a.get("approximate", "none") == "tanh":
            y = 0.5 * x[0] * (1 + anp.tanh(np.sqrt(2 / np.pi) * (x[0] + 0.044715 * x[0] ** 3)))
        elif op == "Gelu":
            y = 0.5 * x[0] * (1 + erf(x[0] / np.sqrt(2)))
        elif op in UNARY_REF:
            y = UNARY_REF[op](x[0], a)
        elif op == "Swish":
            y = x[0] / (1 + anp.exp(-a.get("alpha", 1.0) * x[0]))
        elif op == "RotaryEmbedding":
            y = _rotary(a, *x[:3])
        elif op == "TopKRoute":        # the k largest logits (ties to the lower expert), their softmax
            v = getattr(x[0], "_value", x[0])
            y = np.argsort(-np.asarray(v), axis=1, kind="stable")[:, :a["k"]]
            env[d["outputs"][1]] = _softmax(x[0][np.arange(y.shape[0])[:, None], y], -1)
        elif op in ("MoEDispatch", "MoECombine"):
            E, C, dm = g.tensors[d["outputs"][0] if op == "MoEDispatch" else d["inputs"][0]].shape
            pos = _slots(x[1], E, C)
            if op == "MoEDispatch":
                onehot = np.zeros((E * C, pos.shape[0]), np.float32)
                t, j = np.nonzero(pos >= 0)
                onehot[pos[t, j], t] = 1.0
                y = anp.reshape(anp.dot(onehot, x[0]), (E, C, dm))
            else:
                rows = anp.reshape(x[0], (E * C, dm))[np.maximum(pos, 0)] * (pos >= 0)[:, :, None]
                y = anp.sum(rows * x[2][:, :, None], axis=1)
        else:
            raise NotImplementedError(f"reference: op {op}")
        env[d["outputs"][0]] = y
    return env


def _loss(g, weights, feeds, labels):
    z = _forward(g, weights, feeds)[g.outputs[0]]
    z = z - anp.max(z, axis=1, keepdims=True)
    lp = z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))
    onehot = np.eye(z.shape[1], dtype=np.float32)[labels]
    return -anp.sum(lp * onehot) / z.shape[0]


def _update(opt, w, grad, hyper):
    """One step from zero state (PyTorch's definitions)."""
    lr = hyper["lr"]
    if opt == "sgd":
        return w - lr * grad                        # momentum buffer = g at the first step
    b1, b2, eps = hyper.get("beta1", 0.9), hyper.get("beta2", 0.999), hyper["epsilon"]
    m, v = (1 - b1) * grad, (1 - b2) * grad * grad
    d = (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)
    if opt == "adam":
        return w - lr * d
    r = d + hyper.get("weight_decay", 0.01) * w
    wn, rn = np.linalg.norm(w), np.linalg.norm(r)
    ratio = wn / rn if wn > 0 and rn > 0 else 1.0
    return w - lr * ratio * r


def _check_one_step(fwd, feeds, labels, opt, **hyper):
    hyper.setdefault("lr", 0.05)
    if opt != "sgd":
        hyper.setdefault("epsilon", 1e-3)
    w0 = init_weights(fwd, seed=3)
    rng = np.random.default_rng(4)
    for k, v in w0.items():      # biases and norm scales off their initial 0 / 1
        if v.ndim == 1:
            w0[k] = (v + rng.uniform(-0.2, 0.2, v.shape)).astype(np.float32)
    tr = ChipTrainer(fwd, opt, weights=w0, **hyper)
    loss = tr.step(feeds, labels)
    ref_loss, grads = autograd.value_and_grad(lambda w: _loss(fwd, w, feeds, labels))(w0)
    assert loss == pytest.approx(float(ref_loss), rel=RTOL)
    for name, w in w0.items():
        want = _update(opt, w.astype(np.float64), np.asarray(grads[name], np.float64), hyper)
        got = tr.read(name)
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < RTOL, f"{name}: {err:.2e} relative after one {opt} step"
        # the step itself (fp32 cancellation: looser), where it is not negligible (a convolution's
        # bias before a batch norm has a zero gradient: its rounding is all there is)
        step, want_step = got - w, want - w
        if np.abs(want_step).max() > 1e-4 * np.abs(want).max():
            err = np.abs(step - want_step).max() / np.abs(want_step).max()
            assert err < 1e-3, f"{name}: the step is {err:.2e} off"
    return tr


@pytest.mark.parametrize("opt", ["sgd", "adam", "lamb"])
def test_mnist_mlp_one_step_exact(opt):
    fwd = get_model("mnist-mlp", batch=8, hidden=32, image_size=8)
    rng = np.random.default_rng(7)
    x = rng.random((8, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    tr = _check_one_step(fwd, {"input": x}, y, opt)
    assert tr.low.opgraph_is_training()


def test_two_steps_keep_state_on_chip():
    """The momentum buffer lives on the chip: the second step's weights follow w -= lr (mu m + g)."""
    fwd = get_model("mnist-mlp", batch=4, hidden=16, image_size=8)
    rng = np.random.default_rng(1)
    xs = rng.random((2, 4, 1, 8, 8), dtype=np.float32)
    ys = rng.integers(0, 10, (2, 4))
    w = init_weights(fwd, seed=2)
    tr = ChipTrainer(fwd, "sgd", weights=w, lr=0.1, momentum=0.9)
    m = {k: np.zeros_like(v, np.float64) for k, v in w.items()}
    w = {k: v.astype(np.float64) for k, v in w.items()}
    for s in range(2):
        tr.step(xs[s], ys[s])
        g = autograd.grad(lambda p: _loss(fwd, p, {"input": xs[s]}, ys[s]))(
            {k: v.astype(np.float32) for k, v in w.items()})
        for k in w:
            m[k] = 0.9 * m[k] + g[k]
            w[k] = w[k] - 0.1 * m[k]
    for k in w:
        assert np.abs(tr.read(k) - w[k]).max() / np.abs(w[k]).max() < RTOL
        assert np.abs(tr.read(f"{k}.momentum") - m[k]).max() / np.abs(m[k]).max() < RTOL


def test_training_mode_dropout_refused_by_name():
    """What the exact lowering does not compute (random dropout masks) is refused at compile
    time, naming the op, never computed as something else."""
    fwd = get_model("alexnet", batch=1, image_size=64, hidden=16, pooled=1, num_classes=4)
    with pytest.raises(LoweringError, match=r"classifier\.0.*Dropout.*dropout masks"):
        ChipTrainer(fwd, "sgd")


def _images(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_resnet50_one_step_exact():
    """Convolutions with stride and padding (7x7 / 2, 3x3 / 2 in the bottlenecks, 1x1 / 2
    downsampling), training-mode batch norm, max pool, residual adds, global average pool.
    48x48 images: the last stage's batch norms then normalise 8 values per channel (over 2 their
    gradient is ill-conditioned, 1 / |a - b|, in any fp32 computation)."""
    fwd = get_model("resnet50", batch=2, image_size=48, layers=(1, 1, 1, 1), num_classes=10)
    _check_one_step(fwd, {"input": _images((2, 3, 48, 48), 5)}, np.array([3, 7]), "sgd")


def _small_cnn(batch):
    """A CNN with what ResNet-50 lacks: grouped, dilated and asymmetrically padded convolutions
    with bias, an average pool that does not count its padding."""
    from models.builder import GraphBuilder
    b = GraphBuilder("small-cnn", batch, "fp32")
    x = b.input("input", (batch, 4, 9, 9))
    w1, b1 = b.param("c1.weight", (8, 2, 3, 3)), b.param("c1.bias", (8,))
    x = b.op("Conv", [x, w1, b1], dict(kernel_shape=[3, 3], strides=[2, 1], pads=[1, 0, 2, 1], group=2,
                                       dilations=[1, 1]), name="c1")
    x = b.bn(x, "bn1")
    x = b.op("Relu", [x], name="r1")
    w2 = b.param("c2.weight", (8, 1, 3, 3))
    x = b.op("Conv", [x, w2], dict(kernel_shape=[3, 3], strides=[1, 1], pads=[2, 2, 2, 2], group=8,
                                   dilations=[2, 2]), name="c2")
    x = b.op("AveragePool", [x], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), name="pool")
    x = b.op("GlobalAveragePool", [x], name="gap")
    x = b.op("Flatten", [x], dict(axis=1), name="flatten")
    x = b.linear(x, "fc", 5)
    return b.finish([x])


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_small_cnn_one_step_exact(opt):
    fwd = _small_cnn(3)
    _check_one_step(fwd, {"input": _images((3, 4, 9, 9), 6)}, np.array([0, 4, 2]), opt)


def _tokens(shape, vocab, seed):
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int64)


TRANSFORMERS = {
    # layer norm, GELU, causal softmax attention, tied token embeddings + positions
    "gpt2": dict(batch=2, seq_len=8, layers=2, hidden=32, heads=2, vocab=50, max_position=16, dropout=0.0),
    # RMS norm, rotary embeddings, grouped-query attention (2 query heads per key-value head), SwiGLU
    "llama-tiny": dict(batch=2, seq_len=8, layers=2, hidden=32, heads=4, kv_heads=2, intermediate=64, vocab=50,
                       max_position=16),
}


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_mixtral_one_step_exact(opt):
    """Top-2 of 4 experts per token with softmax gates, experts' buffers of capacity 10 for 32
    (token, choice) pairs (a pair past an expert's capacity is dropped), SwiGLU experts as
    batched MatMuls, the gated combine; rotary embeddings, grouped-query attention."""
    kw = dict(batch=2, seq_len=8, layers=2, hidden=32, heads=4, kv_heads=2, intermediate=32, vocab=50,
              max_position=16)
    fwd = get_model("mixtral-tiny", **kw)
    tr = _check_one_step(fwd, {"input_ids": _tokens((2, 8), 50, 14)}, _tokens(16, 50, 15), opt)
    assert {"TopKRoute", "MoEDispatch", "MoECombine", "MoEGateGrad", "TopKRouteGrad"} <= \
        {tr.graph.op(n)["op"] for n in tr.graph.ops()}


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_bert_one_step_exact(opt):
    """Word, token-type and position embeddings, post-norm encoder layers, the pooler's first
    token (a gather along the sequence) and tanh, the classifier; without dropout."""
    fwd = get_model("bert-base", batch=2, layers=2, hidden=32, heads=2, seq_len=8, vocab=60, max_position=16,
                    dropout=0)
    feeds = {"input_ids": _tokens((2, 8), 60, 11), "token_type_ids": _tokens((2, 8), 2, 12)}
    _check_one_step(fwd, feeds, np.array([1, 0]), opt)


@pytest.mark.parametrize("model, opt", [("gpt2", "sgd"), ("gpt2", "adam"), ("llama-tiny", "sgd"),
                                        ("llama-tiny", "lamb")])
def test_transformer_one_step_exact(model, opt):
    """(GPT-2's key bias has a zero gradient, softmax being blind to a shift of a query's
    scores: its rounding noise, which LAMB's direction divides by the noise's own size, is
    all a step has; LAMB is checked on llama-tiny, which has no biases.)"""
    kw = TRANSFORMERS[model]
    fwd = get_model(model, **kw)
    ids = _tokens((kw["batch"], kw["seq_len"]), kw["vocab"], 8)
    _check_one_step(fwd, {"input_ids": ids}, _tokens(kw["batch"] * kw["seq_len"], kw["vocab"], 9), opt)


@pytest.mark.parametrize("act, attrs", [("Sigmoid", {}), ("Tanh", {}), ("Sqrt", {}), ("Log", {}),
                                        ("Reciprocal", {}), ("Neg", {}), ("Abs", {}), ("Erf", {}),
                                        ("Softplus", {}), ("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}),
                                        ("Gelu", {"approximate": "tanh"}), ("Swish", {"alpha": 1.5})])
def test_unary_gradients_exact(act, attrs):
    """Each element-wise gradient rule's vertices (after an Exp, so Log / Sqrt / Reciprocal see
    positive values; Exp's own gradient is checked with them)."""
    from models.builder import GraphBuilder
    b = GraphBuilder(f"mlp-{act.lower()}", 4, "fp32")
    x = b.input("input", (4, 6))
    x = b.linear(x, "fc1", 12)
    if act in ("Sqrt", "Log", "Reciprocal"):
        x = b.op("Exp", [x], name="exp")
    x = b.op(act, [x], dict(attrs), name="act")
    x = b.linear(x, "fc2", 3)
    fwd = b.finish([x])
    _check_one_step(fwd, {"input": _images((4, 6), 10)}, np.array([0, 1, 2, 1]), "sgd")


@pytest.mark.parametrize("model, kw", [
    ("alexnet", dict(batch=2, image_size=64, hidden=32, pooled=1, num_classes=10, dropout=0)),
    ("vgg16", dict(batch=2, image_size=32, hidden=32, pooled=1, num_classes=10, dropout=0))])
def test_plain_cnn_one_step_exact(model, kw):
    """torchvision's AlexNet (11x11 / 4 and 5x5 convolutions, 3x3 / 2 max pools) and VGG-16
    (thirteen 3x3 convolutions, 2x2 max pools) without their classifier's dropout."""
    fwd = get_model(model, **kw)
    s = kw["image_size"]
    _check_one_step(fwd, {"input": _images((2, 3, s, s), 13)}, np.array([2, 9]), "sgd")
