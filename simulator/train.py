"""Train a model functionally on the simulated chip.

    >>> from simulator.train import train
    >>> r = train("mnist-mlp", data="digits", steps=3, batch=16)      # doctest: +SKIP
    >>> r.losses, r.accuracy, r.seconds_per_step                     # doctest: +SKIP

The training graph (models/training.py: forward, softmax cross-entropy, the backward pass,
the optimizer's update) is lowered with ``exact=True`` (compiler/lower.py): every op, forward
and backward, through the index-mapped lowering whose vertices compute the op's values, and
any op it does not compute exactly refused by name at compile time.  The weights and the
optimizer's state live in the simulated chip's memory from step to step; each step the host
streams in a batch of images and labels, the tiles' vertices compute the loss, the gradients
and the update (simulator/functional.py), and the loss streams out.  The simulated time per
step is the engine's (compute, exchange, syncs, host streams).  The held-out accuracy is
computed on the chip too: the forward graph at the test set's size, lowered the same way,
with the trained weights copied into it.

Data sets: ``digits``, scikit-learn's bundled handwritten digits (``load_digits``: 1,797
8x8 images of 0-16 grey levels, scaled to [0, 1]; no download).  ``mnist-mlp`` then takes
8x8 inputs (its model option ``image_size=8``: 64 -> 256 -> 10).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

import models
from compiler.executable import compile_program
from compiler.lower import lower
from hardware.chips import get_chip

from .engine import Engine

DATASETS = ("digits",)
#: default learning rates per optimizer
DEFAULT_LR = {"sgd": 0.05, "adam": 3e-3, "lamb": 1e-2}


class TrainError(ValueError):
    pass


@dataclass
class TrainResult:
    model: str
    data: str
    optimizer: str
    batch: int
    steps: int
    losses: list = field(default_factory=list)     # loss of each step (computed on the chip)
    accuracy: float = 0.0                          # held-out accuracy after the last step
    train_samples: int = 0
    test_samples: int = 0
    seconds_per_step: float = 0.0                  # simulated time of one training step
    eval_seconds: float = 0.0                      # simulated time of the held-out forward pass
    wall_seconds: float = 0.0                      # host time of the whole run (compile included)
    params: int = 0
    weights: dict = field(default_factory=dict, repr=False)   # trained weights by name


def load_dataset(name, test_fraction=0.2, seed=0):
    """(x_train, y_train, x_test, y_test): images (N, 1, H, W) float32 and int64 labels, split
    at random (``seed``) with ``test_fraction`` of the samples held out."""
    if name != "digits":
        raise TrainError(f"unknown data set {name!r}; available: {', '.join(DATASETS)}")
    if not 0 < float(test_fraction) < 1:
        raise TrainError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]        # (1797, 1, 8, 8), in [0, 1]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * float(test_fraction)))
    te, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[te], y[te]


def _model_options(model, data, x):
    if model == "mnist-mlp" and data == "digits":
        return {"image_size": int(x.shape[-1])}
    return {}


def init_weights(opg, seed=0):
    """Initial values of a forward graph's parameters, as PyTorch initialises its layers: a
    weight of 2 or more dims uniform in +-1/sqrt(fan_in) (fan_in: the product of its dims
    after the first, ``nn.Linear`` / ``nn.Conv2d``'s default), a 1-D one (bias) zero, a
    normalisation's scale one; parameters with data keep it."""
    rng = np.random.default_rng(seed)
    scales = {d["inputs"][1] for d in (opg.op(n) for n in opg.ops())
              if d["op"] in ("BatchNormalization", "LayerNormalization", "RMSNormalization") and len(d["inputs"]) > 1}
    out = {}
    for name, t in opg.tensors.items():
        if t.kind != "param" or t.inplace_of:
            continue
        if t.data is not None:
            out[name] = np.asarray(t.data, np.float32)
        elif len(t.shape) >= 2:
            bound = 1.0 / np.sqrt(max(int(np.prod(t.shape[1:])), 1))
            out[name] = rng.uniform(-bound, bound, t.shape).astype(np.float32)
        else:
            out[name] = np.full(t.shape, 1.0 if name in scales else 0.0, np.float32)
    return out


class ChipTrainer:
    """A training graph compiled for exact functional execution, its weights and optimizer
    state held in the simulated chip's memory between steps."""

    def __init__(self, fwd, optimizer="sgd", *, chip="gc200", lr=None, momentum=0.9, weights=None, seed=0,
                 **opt_kw):
        if optimizer not in models.training.OPTIMIZERS:
            raise TrainError(f"unknown optimizer {optimizer!r}; choose from {', '.join(models.training.OPTIMIZERS)}")
        self.fwd = fwd
        self.chip = get_chip(chip) if isinstance(chip, str) else chip
        hyper = dict(opt_kw, lr=DEFAULT_LR[optimizer] if lr is None else float(lr))
        if optimizer == "sgd":
            hyper["momentum"] = float(momentum)
        self.graph = models.make_training_graph(fwd, optimizer, **hyper)
        self.classes = int(fwd.tensors[fwd.outputs[0]].shape[1])
        self.low = lower(self.graph, self.chip, exact=True)
        self.exe = compile_program(self.low.graph, self.low.program)
        self.engine = Engine(self.exe, self.chip, functional=True, inputs={})
        self.step_count = 0
        self.seconds = []
        w = init_weights(fwd, seed) if weights is None else {k: np.asarray(v, np.float32) for k, v in weights.items()}
        for name, t in self.graph.tensors.items():
            if t.inplace_of or name not in self.low.acts:
                continue
            if t.kind == "param":
                if name not in w:
                    raise TrainError(f"no initial value for parameter {name!r}")
                self._write(name, w[name])
            elif t.kind == "state":
                self._write(name, np.zeros(t.shape, np.float32))
            elif t.kind == "constant" and t.data is not None:
                self._write(name, t.data)

    def _write(self, name, value):
        value = np.asarray(value)
        want = tuple(self.graph.tensors[name].shape)
        if tuple(value.shape) != want:
            raise TrainError(f"tensor {name!r}: expected shape {want}, got {tuple(value.shape)}")
        self.engine.write(self.low.acts[name].tensor, _storage(value, self.low.acts[name]))

    def read(self, name):
        """A tensor's value on the chip now (weights, optimizer state), in its logical shape."""
        return _logical(self.engine.read(self.low.acts[name].tensor), self.low.acts[name])

    def weights(self):
        return {n: self.read(n) for n, t in self.graph.tensors.items()
                if t.kind == "param" and not t.inplace_of}

    def step(self, x, labels):
        """One training step on the chip: returns the loss the tiles computed.  ``x``: the
        batch of the model's data input, or a dict of its inputs by name."""
        g = self.graph
        feeds = {"labels": np.asarray(labels)}
        data = [n for n in g.inputs if g.tensors[n].kind == "input" and n != "labels"]
        if isinstance(x, dict):
            if set(x) != set(data):
                raise TrainError(f"{g.name}: inputs {', '.join(sorted(x))} given, the model takes {', '.join(data)}")
            feeds.update({n: np.asarray(v) for n, v in x.items()})
        elif len(data) != 1:
            raise TrainError(f"{g.name}: the model takes inputs {', '.join(data)}: give them as a dict")
        else:
            feeds[data[0]] = np.asarray(x)
        st = self.engine.functional
        for n, v in feeds.items():
            want = tuple(g.tensors[n].shape)
            if tuple(v.shape) != want:
                raise TrainError(f"input {n!r}: expected shape {want}, got {tuple(v.shape)}")
            if g.tensors[n].dtype not in ("fp32", "fp16") and (v.dtype.kind not in "iub" or (
                    n == "labels" and v.size and (v.min() < 0 or v.max() >= self.classes))):
                raise TrainError(f"input {n!r}: expected integers" + (f" in [0, {self.classes})" if n == "labels" else "")
                                 + f", got {v.dtype} values from {v.min()} to {v.max()}")
            # NaN and infinity in float data are computed as IEEE does (the loss says so)
            st.inputs[n] = [np.asarray(_storage(v, self.low.acts[n]), np.float32)]
        self.step_count += 1
        if "optimizer.step" in self.low.acts:    # Adam's / LAMB's bias corrections read the step count
            self.engine.write(self.low.acts["optimizer.step"].tensor, [float(self.step_count)])
        rep = self.engine.run()
        self.seconds.append(rep.seconds)
        return float(self.engine.outputs["loss"].pop()[0])


class ChipModel:
    """A forward graph compiled for exact functional execution (held-out evaluation)."""

    def __init__(self, fwd, chip="gc200"):
        self.fwd = fwd
        self.chip = get_chip(chip) if isinstance(chip, str) else chip
        self.low = lower(fwd, self.chip, exact=True)
        self.exe = compile_program(self.low.graph, self.low.program)
        self.seconds = 0.0

    def __call__(self, x, weights):
        low, g = self.low, self.fwd
        (inp,) = [n for n in g.inputs if g.tensors[n].kind == "input"]
        eng = Engine(self.exe, self.chip, functional=True,
                     inputs={inp: [np.asarray(_storage(np.asarray(x), low.acts[inp]), np.float32)]})
        for name, t in g.tensors.items():
            if t.kind in ("param", "constant", "state") and name in low.acts and not t.inplace_of:
                v = weights.get(name, t.data)
                if v is None:
                    raise TrainError(f"no value for {t.kind} {name!r}")
                eng.write(low.acts[name].tensor, _storage(np.asarray(v), low.acts[name]))
        self.seconds = eng.run().seconds
        out = g.outputs[0]
        return _logical(np.asarray(eng.outputs[out][0], np.float64), low.acts[out])


def _storage(x, act):
    """Host array -> the storage order of ``act`` (channel-grouped images)."""
    x = np.asarray(x)
    if len(act.logical) == 4 and act.g > 1:
        N, C, H, W = act.logical
        return x.reshape(N, C // act.g, act.g, H, W).transpose(0, 1, 3, 4, 2).ravel()
    return x.ravel()


def _logical(flat, act):
    if len(act.logical) == 4 and act.g > 1:
        N, C, H, W = act.logical
        return flat.reshape(N, C // act.g, H, W, act.g).transpose(0, 1, 4, 2, 3).reshape(act.logical)
    return np.asarray(flat).reshape(act.logical)


def train(model="mnist-mlp", data="digits", steps=100, batch=32, optimizer="sgd", lr=None, momentum=0.9,
          chip="gc200", seed=0, test_fraction=0.2, model_kw=None, callback=None) -> TrainResult:
    """Train built-in ``model`` on data set ``data`` for ``steps`` steps of ``batch`` samples,
    functionally on the simulated chip (see the module docstring); ``callback(step, loss)``
    is called after each step.  Returns the losses, the held-out accuracy and the simulated
    time per step."""
    t0 = time.perf_counter()
    steps, batch = int(steps), int(batch)
    if steps < 1 or batch < 1:
        raise TrainError(f"steps and batch must be positive, got steps={steps}, batch={batch}")
    if data not in DATASETS:
        raise TrainError(f"unknown data set {data!r}; available: {', '.join(DATASETS)}")
    if not isinstance(model, str) or model not in models.list_models():
        raise TrainError(f"unknown model {model!r}: training takes a built-in ({', '.join(models.list_models())})")
    xtr, ytr, xte, yte = load_dataset(data, test_fraction, seed)
    if batch > len(ytr):
        raise TrainError(f"batch {batch} exceeds the {len(ytr)} training samples")
    kw = dict(_model_options(model, data, xtr), **dict(model_kw or {}))
    try:
        fwd = models.get_model(model, batch=batch, **kw)
        test_fwd = models.get_model(model, batch=len(yte), **kw)
    except models.ModelError as e:
        raise TrainError(str(e)) from None
    shape = tuple(fwd.tensors[fwd.inputs[0]].shape[1:])
    if shape != tuple(xtr.shape[1:]):
        raise TrainError(f"{model}: input samples of shape {shape}, data set {data!r} has {tuple(xtr.shape[1:])}")
    trainer = ChipTrainer(fwd, optimizer, chip=chip, lr=lr, momentum=momentum, seed=seed)
    rng = np.random.default_rng(seed + 1)
    order, pos = rng.permutation(len(ytr)), 0
    res = TrainResult(model, data, optimizer, batch, steps, train_samples=len(ytr), test_samples=len(yte),
                      params=fwd.params())
    for s in range(steps):
        if pos + batch > len(order):        # a new epoch, reshuffled
            order, pos = rng.permutation(len(ytr)), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = trainer.step(xtr[idx], ytr[idx])
        res.losses.append(loss)
        if callback is not None:
            callback(s + 1, loss)
    res.weights = trainer.weights()
    evaluator = ChipModel(test_fwd, trainer.chip)
    logits = evaluator(xte, res.weights)
    res.accuracy = float(np.mean(np.argmax(logits.reshape(len(yte), -1), axis=1) == yte))
    res.seconds_per_step = float(np.mean(trainer.seconds))
    res.eval_seconds = evaluator.seconds
    res.wall_seconds = time.perf_counter() - t0
    return res


def format_train(r: TrainResult) -> str:
    lines = [f"trained   {r.model} ({r.params:,} parameters) on {r.data}: {r.train_samples} training / "
             f"{r.test_samples} held-out samples, {r.optimizer}, batch {r.batch}, {r.steps} steps",
             f"loss      {r.losses[0]:.4f} (step 1) -> {r.losses[-1]:.4f} (step {r.steps})",
             f"accuracy  {100 * r.accuracy:.1f}% held out ({r.test_samples} samples, computed on the chip)",
             f"time      {1e6 * r.seconds_per_step:.1f} us simulated per step "
             f"({r.batch / r.seconds_per_step:,.0f} samples/s); held-out forward pass "
             f"{1e6 * r.eval_seconds:.1f} us; {r.wall_seconds:.1f} s on this host"]
    return "\n".join(lines)
