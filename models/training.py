"""Training graphs: forward + loss + automatically derived backward + update.

:func:`make_training_graph` works on any forward :class:`OpGraph` (built-in or
imported from ONNX). The backward pass is derived by walking the forward ops
in reverse topological order and applying a gradient rule per forward *op
type* (:data:`GRAD_RULES`); nothing is written per model.

Conventions of the result:

* forward ops keep phase ``"fwd"``; ``BatchNormalization`` switches to
  ``training_mode=1`` and gains outputs ``saved_mean`` / ``saved_inv_std``,
  ``LayerNormalization`` gains ``Mean`` / ``InvStdDev`` and ``Dropout`` its
  ``mask``, all read by their gradients;
* ``SoftmaxCrossEntropyLoss`` (family ``loss``, phase ``loss``) on the logits
  (class dim 1) and an int64 ``labels`` input; its outputs are ``loss`` (a
  scalar, the graph output) and ``log_prob``;
* backward ops (phase ``bwd``) keep the ``layer`` / ``block`` of their forward
  op, ``block_type`` gets ``":bwd"`` appended and ``attrs["forward"]`` names
  the forward op; gradient tensors have kind ``grad`` and are listed in
  ``OpGraph.grads``. A tensor read by several ops gets its gradient from a
  ``Sum`` op (family elementwise); a gradient summed over broadcast dims comes
  from a ``ReduceSum`` whose ``target_shape`` attr is its result shape.
  Tensors that depend on no parameter (the data input and whatever is
  computed from it alone) get no gradient;
* one optimizer op per parameter (phase ``update``, family ``optimizer``):
  ``SGDMomentumUpdate`` (state ``<p>.momentum``), ``AdamUpdate`` (state
  ``<p>.adam_m``, ``<p>.adam_v``) or ``LambUpdate`` (state ``<p>.lamb_m``,
  ``<p>.lamb_v``: LAMB, You et al. 2019, Adam's bias-corrected moments and
  weight decay, the step scaled per tensor by the trust ratio ||w|| / ||update||). Updated values are new tensors with
  ``inplace_of`` set to the tensor they overwrite. ``g.ops()`` lists each
  update op right after the last op that reads its weight or produces its
  gradient, so every read of a weight comes before its in-place update and
  each gradient dies as soon as its layer is done.

Backward FLOPs: each of the two Conv / Gemm / MatMul gradients costs the
forward FLOPs without bias; bias gradients and ``Sum`` / reductions 1 per
element read; elementwise gradients 1 per element; pool gradients as the
forward pool; BatchNormalization / LayerNormalization gradients 8 per element;
Softmax gradient 4 per element; loss 5 per logit (+1 per sample), its gradient
3 per logit; SGD with momentum 4, Adam 12 and LAMB 18 FLOPs per parameter element
(Adam's 12, weight decay 2, the two sums of squares 2 each, the scaled step 2).
"""
from __future__ import annotations

from math import prod

import numpy as np

from hardware.dtypes import FLOAT_DTYPES as _FLOAT

from . import oprules
from .builder import block_ops, set_block_types
from .errors import ModelError
from .opgraph import OpGraph

OPTIMIZERS = ("sgd", "adam", "lamb")

#: optimizer -> (state tensor suffixes, update op type, FLOPs per parameter element)
_UPDATES = {"sgd": (["momentum"], "SGDMomentumUpdate", 4),
            "adam": (["adam_m", "adam_v"], "AdamUpdate", 12),
            "lamb": (["lamb_m", "lamb_v"], "LambUpdate", 18)}


def make_training_graph(fwd: OpGraph, optimizer: str = "sgd", momentum: float = 0.9, *,
                        lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.999,
                        epsilon: float | None = None, weight_decay: float = 0.01,
                        logits: str | None = None) -> OpGraph:
    """A training step for forward graph ``fwd``.

    ``logits`` (default: the first graph output) must have the classes on dim
    1. ``optimizer`` is ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"lamb"``
    (with ``weight_decay``); ``epsilon`` defaults to 1e-8 for Adam and 1e-6 for LAMB.
    """
    if optimizer not in OPTIMIZERS:
        raise ModelError(f"{fwd.name}: unknown optimizer {optimizer!r}; "
                         f"choose from {', '.join(OPTIMIZERS)}")
    if any(fwd.op(n)["phase"] != "fwd" for n in fwd.graph):
        raise ModelError(f"{fwd.name}: already a training graph")
    logits = logits or (fwd.outputs[0] if fwd.outputs else None)
    if logits not in fwd.tensors:
        raise ModelError(f"{fwd.name}: no logits tensor {logits!r}")
    lt = fwd.tensors[logits]
    if len(lt.shape) < 2 or lt.dtype not in _FLOAT:
        raise ModelError(f"{fwd.name}: logits {logits!r} {lt.shape} {lt.dtype} must be a "
                         "float tensor (batch, classes, ...)")
    tg = _copy_forward(fwd)
    b = _Backward(tg, fwd, logits)
    b.loss()
    b.backward()
    if optimizer == "sgd":
        hyper = dict(lr=lr, momentum=momentum)
    else:
        hyper = dict(lr=lr, beta1=beta1, beta2=beta2,
                     epsilon=epsilon if epsilon is not None else (1e-6 if optimizer == "lamb" else 1e-8))
        if optimizer == "lamb":
            hyper["weight_decay"] = weight_decay
    b.update(optimizer, hyper)
    fwd_types = {}
    for blk, ops in block_ops(tg).items():
        fwd_types[blk] = next((tg.op(n)["block_type"] for n in ops
                               if tg.op(n)["phase"] == "fwd"), None)
    for phase in ("bwd", "update"):
        set_block_types(tg, phase, lambda blk, ops, phase=phase:
                        None if fwd_types[blk] is None else f"{fwd_types[blk]}:{phase}")
    return tg


def _copy_forward(fwd: OpGraph) -> OpGraph:
    tg = OpGraph(f"{fwd.name}.train", batch=fwd.batch)
    for t in fwd.tensors.values():
        kind = "activation" if t.kind == "output" else t.kind
        tg.add_tensor(t.name, t.shape, t.dtype, kind, data=t.data)
    tg.inputs = list(fwd.inputs)
    for n in fwd.ops():
        d = dict(fwd.op(n))
        outs, attrs = list(d["outputs"]), dict(d["attrs"])
        x = tg.tensors[d["inputs"][0]]
        if d["op"] == "BatchNormalization":
            attrs["training_mode"] = 1
            for s in ("saved_mean", "saved_inv_std"):
                outs.append(tg.add_tensor(f"{n}.{s}", (x.shape[1],), "fp32").name)
        elif d["op"] in ("LayerNormalization", "RMSNormalization") and len(outs) == 1:
            ax = attrs.get("axis", -1) % len(x.shape)
            stat = x.shape[:ax] + (1,) * (len(x.shape) - ax)
            for s in (("mean", "inv_std") if d["op"] == "LayerNormalization" else ("inv_rms",)):
                outs.append(tg.add_tensor(f"{n}.{s}", stat, "fp32").name)
        elif d["op"] == "Dropout" and len(outs) == 1:
            outs.append(tg.add_tensor(f"{n}.mask", x.shape, "bool").name)
        fl = d["flops"]
        if d["op"] == "BatchNormalization":
            fl = oprules.flops("BatchNormalization", [x.shape], [x.shape], attrs)
        tg.add_op(n, d["op"], d["inputs"], outs, family=d["family"], attrs=attrs,
                  layer=d["layer"], block=d["block"], block_type=d["block_type"],
                  phase="fwd", flops=fl)
    return tg


class _Backward:
    def __init__(self, tg: OpGraph, fwd: OpGraph, logits: str):
        self.g, self.fwd, self.logits = tg, fwd, logits
        order = fwd.ops()
        T = tg.tensors
        req = {t.name for t in T.values() if t.kind == "param" and t.dtype in _FLOAT}
        for n in order:
            d = fwd.op(n)
            if any(t in req for t in d["inputs"]):
                req.update(t for t in d["outputs"] if T[t].dtype in _FLOAT)
        infl = {logits}
        for n in reversed(order):
            d = fwd.op(n)
            if any(t in infl for t in d["outputs"]):
                infl.update(d["inputs"])
        self.need = req & infl
        self.order = [n for n in order if any(t in self.need for t in fwd.op(n)["outputs"])]
        self.count = {}
        for n in self.order:
            for t in fwd.op(n)["inputs"]:
                if t in self.need:
                    self.count[t] = self.count.get(t, 0) + 1
        self.contribs = {}   # tensor -> [(grad tensor, forward op)]

    # -- helpers used by the rules ------------------------------------------
    def new_grad(self, t, shape=None):
        """A fresh gradient tensor for forward tensor ``t`` (not yet recorded)."""
        ti = self.g.tensors[t]
        k = len(self.contribs.get(t, []))
        name = f"{t}.grad" if self.count.get(t, 1) == 1 else f"{t}.grad{k}"
        while name in self.g.tensors:
            k += 1
            name = f"{t}.grad{k}"
        self.g.add_tensor(name, shape or ti.shape, ti.dtype, kind="grad")
        return name

    def tmp(self, like, shape=None, tag="tmp"):
        ti = self.g.tensors[like]
        name, k = f"{like}.{tag}", 1
        while name in self.g.tensors:
            k += 1
            name = f"{like}.{tag}{k}"
        self.g.add_tensor(name, shape or ti.shape, ti.dtype, kind="grad")
        return name

    def emit(self, fop, op, inputs, outputs, family, flops, attrs=None):
        d = self.g.op(fop)
        name, k = f"{fop}.{op}", 1
        while name in self.g.graph:
            k += 1
            name = f"{fop}.{op}{k}"
        a = dict(attrs or {})
        a["forward"] = fop
        bt = d["block_type"] and f"{d['block_type']}:bwd"
        self.g.add_op(name, op, inputs, outputs, family=family, attrs=a, layer=d["layer"],
                      block=d["block"], block_type=bt, phase="bwd", flops=flops)
        return name

    def give(self, t, grad, fop):
        self.contribs.setdefault(t, []).append((grad, fop))

    def reduce_to(self, fop, t, g):
        """Contribute ``g`` to input ``t``, summing over broadcast dims."""
        ts, gs = self.g.tensors[t].shape, self.g.tensors[g].shape
        if ts == gs:
            return self.give(t, g, fop)
        pad = len(gs) - len(ts)
        axes = [i for i in range(len(gs)) if i < pad or (ts[i - pad] == 1 and gs[i] != 1)]
        out = self.new_grad(t)
        self.emit(fop, "ReduceSum", [g], [out], "reduce", prod(gs),
                  dict(axes=axes, keepdims=int(pad == 0), target_shape=list(ts)))
        self.give(t, out, fop)

    def finalize(self, t):
        c = self.contribs.get(t, [])
        if not c:
            raise ModelError(f"{self.fwd.name}: internal error: no gradient reached {t!r}")
        if len(c) == 1:
            self.g.grads[t] = c[0][0]
            return
        blocks = {self.g.op(f)["block"] for _, f in c}
        first = min((f for _, f in c), key=self._pos)
        d = self.g.op(first)
        blk = blocks.pop() if len(blocks) == 1 else None
        bt = d["block_type"] and blk and f"{d['block_type']}:bwd"
        ti = self.g.tensors[t]
        out = f"{t}.grad"
        self.g.add_tensor(out, ti.shape, ti.dtype, kind="grad")
        self.g.add_op(f"{t}.grad_sum", "Sum", [g for g, _ in c], [out], family="elementwise",
                      attrs={"forward": first}, layer=d["layer"], block=blk,
                      block_type=bt, phase="bwd", flops=(len(c) - 1) * ti.size)
        self.g.grads[t] = out

    def _pos(self, n):
        if not hasattr(self, "_index"):
            self._index = {m: i for i, m in enumerate(self.fwd.ops())}
        return self._index.get(n, -1)

    # -- phases ----------------------------------------------------------------
    def loss(self):
        g, lt = self.g, self.g.tensors[self.logits]
        n, c = lt.shape[0], lt.shape[1]
        labels = g.add_tensor("labels", (n,) + lt.shape[2:], "int64", kind="input").name
        loss = g.add_tensor("loss", (), "fp32", kind="output").name
        logp = g.add_tensor("log_prob", lt.shape, lt.dtype).name
        g.add_op("loss", "SoftmaxCrossEntropyLoss", [self.logits, labels], [loss, logp],
                 family="loss", attrs=dict(reduction="mean"), layer="loss", phase="loss",
                 flops=5 * lt.size + lt.size // c)
        g.outputs = [loss]
        self.count[self.logits] = self.count.get(self.logits, 0) + 1
        if self.logits in self.need:
            dl = self.new_grad(self.logits)
            g.add_op("loss.grad", "SoftmaxCrossEntropyLossGrad", [logp, labels], [dl],
                     family="loss", attrs=dict(reduction="mean", forward="loss"),
                     layer="loss", phase="bwd", flops=3 * lt.size)
            self.give(self.logits, dl, "loss")

    def backward(self):
        for n in reversed(self.order):
            d = self.g.op(n)
            dys = []
            for t in d["outputs"]:
                if t in self.need:
                    self.finalize(t)
                    dys.append(self.g.grads[t])
                else:
                    dys.append(None)
            need = [t in self.need for t in d["inputs"]]
            if not any(need):
                continue
            before = {t: len(self.contribs.get(t, [])) for t in d["inputs"]}
            rule = GRAD_RULES.get(d["op"])
            if rule is None:
                raise ModelError(f"{self.fwd.name}: op {n!r} has op type {d['op']!r}, which "
                                 "has no gradient rule; supported: "
                                 + ", ".join(sorted(GRAD_RULES)))
            rule(self, n, d, need, dys)
            for t, nd in zip(d["inputs"], need):
                if nd and len(self.contribs.get(t, [])) == before[t]:
                    raise ModelError(f"{self.fwd.name}: the gradient rule of {d['op']} "
                                     f"(op {n!r}) gave no gradient for input {t!r}")
        for t in list(self.g.tensors):   # parameters: every consumer is done now (a tied one gets a Sum)
            if t in self.need and t not in self.g.grads:
                self.finalize(t)

    def update(self, optimizer, hyper):
        g = self.g
        params = [t for t in g.tensors.values() if t.kind == "param" and t.name in self.need]
        consumers = {}
        for n in self.fwd.ops():
            for t in self.fwd.op(n)["inputs"]:
                consumers.setdefault(t, n)
        for p in params:
            fop = g.op(consumers[p.name])
            states, op, per = _UPDATES[optimizer]
            st = [g.add_tensor(f"{p.name}.{s}", p.shape, p.dtype, kind="state").name
                  for s in states]
            outs = [g.add_tensor(f"{p.name}.new", p.shape, p.dtype, kind="param",
                                 inplace_of=p.name).name]
            outs += [g.add_tensor(f"{s}.new", p.shape, p.dtype, kind="state",
                                  inplace_of=s).name for s in st]
            bt = fop["block_type"] and f"{fop['block_type']}:update"
            g.add_op(f"{p.name}.update", op, [p.name, g.grads[p.name]] + st, outs,
                     family="optimizer", attrs=dict(hyper), layer=fop["layer"],
                     block=fop["block"], block_type=bt, phase="update", flops=per * p.size)


# -- gradient rules: fn(bwd, op name, op dict, need per input, dy per output) --
def _shape(b, t):
    return b.g.tensors[t].shape


def _conv(b, n, d, need, dys):
    dy, (x, w) = dys[0], d["inputs"][:2]
    f = 2 * prod(_shape(b, dy)) * prod(_shape(b, w)[1:])
    attrs = dict(d["attrs"])
    if need[0]:
        dx = b.new_grad(x)
        b.emit(n, "ConvGradInput", [dy, w], [dx], "conv", f, attrs)
        b.give(x, dx, n)
    if need[1]:
        dw = b.new_grad(w)
        b.emit(n, "ConvGradWeight", [dy, x], [dw], "conv", f, attrs)
        b.give(w, dw, n)
    if len(need) > 2 and need[2]:
        db = b.new_grad(d["inputs"][2])
        b.emit(n, "ReduceSum", [dy], [db], "reduce", prod(_shape(b, dy)),
               dict(axes=[0] + list(range(2, len(_shape(b, dy)))), keepdims=0))
        b.give(d["inputs"][2], db, n)


def _matmul_like(kind):
    def rule(b, n, d, need, dys):
        dy, (a, w) = dys[0], d["inputs"][:2]
        sa = _shape(b, a)
        k = sa[0] if (kind == "Gemm" and d["attrs"].get("transA", 0)) else sa[-1]
        f = 2 * prod(_shape(b, dy)) * k
        if need[0]:
            da = b.new_grad(a)
            b.emit(n, f"{kind}GradA", [dy, w], [da], "matmul", f, d["attrs"])
            b.give(a, da, n)
        if need[1]:
            dw = b.new_grad(w)
            b.emit(n, f"{kind}GradB", [a, dy], [dw], "matmul", f, d["attrs"])
            b.give(w, dw, n)
        if len(need) > 2 and need[2]:
            b.reduce_to(n, d["inputs"][2], dy)
    return rule


def _unary(uses_output):
    def rule(b, n, d, need, dys):
        x = d["inputs"][0]
        dx = b.new_grad(x)
        other = d["outputs"][0] if uses_output else x
        b.emit(n, f"{d['op']}Grad", [dys[0], other], [dx], "elementwise",
               prod(_shape(b, x)), d["attrs"])
        b.give(x, dx, n)
    return rule


def _passthrough(b, n, d, need, dys):
    x = d["inputs"][0]
    if b.g.tensors[x].dtype == b.g.tensors[dys[0]].dtype:
        return b.give(x, dys[0], n)
    dx = b.new_grad(x)
    b.emit(n, "Cast", [dys[0]], [dx], "elementwise", 0,
           dict(to=b.g.tensors[x].dtype))
    b.give(x, dx, n)


def _dropout(b, n, d, need, dys):
    x = d["inputs"][0]
    dx = b.new_grad(x)
    b.emit(n, "DropoutGrad", [dys[0], d["outputs"][1]], [dx], "elementwise",
           prod(_shape(b, x)), d["attrs"])
    b.give(x, dx, n)


def _binary_elementwise(b, n, d, need, dys, i, op, inputs):
    """Gradient op ``op`` producing the output-shaped grad of input ``i``."""
    t, dy = d["inputs"][i], dys[0]
    if _shape(b, t) == _shape(b, dy):
        out = b.new_grad(t)
        b.emit(n, op, inputs, [out], "elementwise", prod(_shape(b, dy)))
        return b.give(t, out, n)
    tmp = b.tmp(dy, tag=f"{op.lower()}")
    b.emit(n, op, inputs, [tmp], "elementwise", prod(_shape(b, dy)))
    b.reduce_to(n, t, tmp)


def _add(b, n, d, need, dys):
    for t, nd in zip(d["inputs"], need):
        if nd:
            b.reduce_to(n, t, dys[0])


def _sub(b, n, d, need, dys):
    a, c = d["inputs"]
    if need[0]:
        b.reduce_to(n, a, dys[0])
    if need[1]:
        _binary_elementwise(b, n, d, need, dys, 1, "Neg", [dys[0]])


def _mul(b, n, d, need, dys):
    a, c = d["inputs"]
    if need[0]:
        _binary_elementwise(b, n, d, need, dys, 0, "Mul", [dys[0], c])
    if need[1]:
        _binary_elementwise(b, n, d, need, dys, 1, "Mul", [dys[0], a])


def _div(b, n, d, need, dys):
    a, c = d["inputs"]
    if need[0]:
        _binary_elementwise(b, n, d, need, dys, 0, "Div", [dys[0], c])
    if need[1]:
        _binary_elementwise(b, n, d, need, dys, 1, "DivGradB", [dys[0], a, c])


def _pow(b, n, d, need, dys):
    a, e = d["inputs"]
    if need[0]:
        _binary_elementwise(b, n, d, need, dys, 0, "PowGradA", [dys[0], a, e])
    if need[1]:
        _binary_elementwise(b, n, d, need, dys, 1, "PowGradB", [dys[0], a, e])


def _pool(b, n, d, need, dys):
    x, dy = d["inputs"][0], dys[0]
    op = d["op"]
    ins = [dy, x, d["outputs"][0]] if op in ("MaxPool", "GlobalMaxPool") else [dy]
    f = d["flops"] if op in ("MaxPool", "AveragePool") else prod(_shape(b, x))
    dx = b.new_grad(x)
    b.emit(n, f"{op}Grad", ins, [dx], "pool", f, d["attrs"])
    b.give(x, dx, n)


def _norm(b, n, d, need, dys):
    ins = d["inputs"]
    x = ins[0]
    outs, which = [], []
    for i, tag in enumerate(("X", "scale", "B")):
        if len(ins) > i and need[i]:
            outs.append(b.new_grad(ins[i]))
            which.append(tag)
    saved = d["outputs"][-1:] if d["op"] == "RMSNormalization" else d["outputs"][-2:]
    attrs = dict(d["attrs"], gradients=which)
    b.emit(n, f"{d['op']}Grad", [dys[0], x, ins[1]] + saved, outs, "norm",
           8 * prod(_shape(b, x)), attrs)
    for i, tag in enumerate(("X", "scale", "B")):
        if tag in which:
            b.give(ins[i], outs[which.index(tag)], n)


def _lrn(b, n, d, need, dys):
    x = d["inputs"][0]
    dx = b.new_grad(x)
    b.emit(n, "LRNGrad", [dys[0], x, d["outputs"][0]], [dx], "norm", d["flops"], d["attrs"])
    b.give(x, dx, n)


def _softmax(b, n, d, need, dys):
    x = d["inputs"][0]
    dx = b.new_grad(x)
    b.emit(n, f"{d['op']}Grad", [dys[0], d["outputs"][0]], [dx], "softmax",
           4 * prod(_shape(b, x)), d["attrs"])
    b.give(x, dx, n)


def _reshape(b, n, d, need, dys):
    x = d["inputs"][0]
    shape = _shape(b, x)
    cname = f"shape[{','.join(str(s) for s in shape)}]"
    if cname not in b.g.tensors:
        b.g.add_tensor(cname, (len(shape),), "int64", kind="constant",
                       data=np.array(shape, dtype=np.int64))
    dx = b.new_grad(x)
    b.emit(n, "Reshape", [dys[0], cname], [dx], "reshape", 0)
    b.give(x, dx, n)


def _transpose(b, n, d, need, dys):
    x = d["inputs"][0]
    r = len(_shape(b, x))
    perm = list(d["attrs"].get("perm") or range(r)[::-1])
    inv = [perm.index(i) for i in range(r)]
    dx = b.new_grad(x)
    b.emit(n, "Transpose", [dys[0]], [dx], "reshape", 0, dict(perm=inv))
    b.give(x, dx, n)


def _concat(b, n, d, need, dys):
    ax = d["attrs"]["axis"] % len(_shape(b, dys[0]))
    split = [_shape(b, t)[ax] for t in d["inputs"]]
    idx = [i for i, nd in enumerate(need) if nd]
    outs = [b.new_grad(d["inputs"][i]) for i in idx]
    b.emit(n, "ConcatGrad", [dys[0]], outs, "concat", 0,
           dict(axis=ax, split=split, inputs_with_grad=idx))
    for i, o in zip(idx, outs):
        b.give(d["inputs"][i], o, n)


def _gather(b, n, d, need, dys):
    data, idx = d["inputs"][:2]
    dd = b.new_grad(data)
    b.emit(n, "GatherGrad", [dys[0], idx], [dd], "gather", prod(_shape(b, dys[0])),
           d["attrs"])
    b.give(data, dd, n)


def _copy_back(op, family):
    def rule(b, n, d, need, dys):
        x = d["inputs"][0]
        dx = b.new_grad(x)
        b.emit(n, op, [dys[0]] + d["inputs"][1:], [dx], family, 0, d["attrs"])
        b.give(x, dx, n)
    return rule


def _rotary(b, n, d, need, dys):
    """The rotation's transpose: the same rotation by the opposite angle (sin negated)."""
    x = d["inputs"][0]
    dx = b.new_grad(x)
    b.emit(n, "RotaryEmbeddingGrad", [dys[0]] + d["inputs"][1:3], [dx], "elementwise",
           d["flops"], dict(d["attrs"], inverse=1))
    b.give(x, dx, n)


def _topk_route(b, n, d, need, dys):
    """Top-k softmax router: only the gates carry a gradient, to the k chosen logits."""
    logits = d["inputs"][0]
    dl = b.new_grad(logits)
    T, k = _shape(b, d["outputs"][1])
    b.emit(n, "TopKRouteGrad", [dys[1], d["outputs"][0], d["outputs"][1]], [dl], "gather",
           4 * T * k, d["attrs"])
    b.give(logits, dl, n)


def _moe_dispatch(b, n, d, need, dys):
    """Tokens -> expert slots: its gradient brings each slot's gradient back to its token and
    sums the token's k choices (a combine without the gates)."""
    x, idx = d["inputs"][:2]
    dx = b.new_grad(x)
    b.emit(n, "MoECombine", [dys[0], idx], [dx], "gather", prod(_shape(b, dys[0])), d["attrs"])
    b.give(x, dx, n)


def _moe_combine(b, n, d, need, dys):
    """Expert outputs -> tokens, weighted by the gates: the experts' gradient is the token
    gradient dispatched back to the slots (the all-to-all again), scaled by the gates (the
    dispatch's third input); each gate's gradient is the dot product of the token's gradient
    with its expert's output."""
    ye, idx = d["inputs"][:2]
    E, C, dm = _shape(b, ye)
    T, k = _shape(b, idx)
    if need[0]:
        dye = b.new_grad(ye)
        b.emit(n, "MoEDispatch", [dys[0], idx] + d["inputs"][2:3], [dye], "gather", 0, dict(capacity=C))
        b.give(ye, dye, n)
    if len(need) > 2 and need[2]:
        gates = d["inputs"][2]
        dg = b.new_grad(gates)
        b.emit(n, "MoEGateGrad", [dys[0], ye, idx], [dg], "gather", 2 * T * k * dm)
        b.give(gates, dg, n)


def _reduce(b, n, d, need, dys):
    x = d["inputs"][0]
    dx = b.new_grad(x)
    b.emit(n, f"{d['op']}Grad", [dys[0]], [dx], "reduce", prod(_shape(b, x)), d["attrs"])
    b.give(x, dx, n)


#: forward op type -> gradient rule
GRAD_RULES = {
    "Conv": _conv, "Gemm": _matmul_like("Gemm"), "MatMul": _matmul_like("MatMul"),
    "Add": _add, "Sum": _add, "Sub": _sub, "Mul": _mul, "Div": _div, "Pow": _pow,
    "Identity": _passthrough, "Cast": _passthrough, "Dropout": _dropout,
    "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _pool,
    "GlobalMaxPool": _pool,
    "BatchNormalization": _norm, "LayerNormalization": _norm, "LRN": _lrn,
    "Softmax": _softmax, "LogSoftmax": _softmax,
    "Reshape": _reshape, "Flatten": _reshape, "Squeeze": _reshape, "Unsqueeze": _reshape,
    "Transpose": _transpose, "Concat": _concat, "Gather": _gather,
    "Slice": _copy_back("SliceGrad", "gather"), "Pad": _copy_back("PadGrad", "concat"),
    "ReduceMean": _reduce, "ReduceSum": _reduce, "RMSNormalization": _norm,
    "RotaryEmbedding": _rotary, "TopKRoute": _topk_route, "MoEDispatch": _moe_dispatch,
    "MoECombine": _moe_combine,
}
for _op in ("Relu", "Sigmoid", "Tanh", "Sqrt", "Exp"):
    GRAD_RULES[_op] = _unary(uses_output=True)
for _op in ("LeakyRelu", "Clip", "Erf", "Gelu", "Log", "Neg", "Abs", "Reciprocal",
            "Softplus", "Elu", "HardSigmoid", "Swish"):
    GRAD_RULES[_op] = _unary(uses_output=False)
