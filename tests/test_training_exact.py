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


def _forward(g, weights, feeds):
    """Values of every tensor of forward graph ``g`` (autograd-traceable in ``weights``)."""
    env = dict(feeds)
    env.update(weights)
    for name, t in g.tensors.items():
        if t.data is not None and name not in env:
            env[name] = np.asarray(t.data)
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
    tr = ChipTrainer(fwd, opt, weights=w0, **hyper)
    (data,) = [n for n in fwd.inputs if fwd.tensors[n].kind == "input"]
    loss = tr.step(feeds[data], labels)
    ref_loss, grads = autograd.value_and_grad(lambda w: _loss(fwd, w, feeds, labels))(w0)
    assert loss == pytest.approx(float(ref_loss), rel=RTOL)
    for name, w in w0.items():
        want = _update(opt, w.astype(np.float64), np.asarray(grads[name], np.float64), hyper)
        got = tr.read(name)
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < RTOL, f"{name}: {err:.2e} relative after one {opt} step"
        step, want_step = got - w, want - w          # the step itself (fp32 cancellation: looser)
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
