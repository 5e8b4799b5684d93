"""A small helper to write networks op by op, and block-type bookkeeping.

:class:`GraphBuilder` computes every output shape and FLOP count from the
rules in :mod:`models.oprules`; nothing is hard-coded per model.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from . import oprules
from .errors import ModelError
from .opgraph import OpGraph


class GraphBuilder:
    """Builds an :class:`OpGraph` one op at a time.

    Ops get their ``layer`` from :meth:`op` (default: the op name) and their
    ``block`` from the enclosing :meth:`block` context; ``block_type`` is
    filled in by :meth:`finish` (see :func:`assign_block_types`).
    """

    def __init__(self, name: str, batch: int = 1, dtype: str = "fp32"):
        if int(batch) < 1:
            raise ModelError(f"{name}: batch must be >= 1, got {batch}")
        self.g = OpGraph(name, batch=int(batch))
        self.dtype = dtype
        self._block = None
        self._block_kind = {}

    # -- tensors ----------------------------------------------------------
    def input(self, name, shape, dtype=None):
        """A graph input (data or labels)."""
        self.g.add_tensor(name, shape, dtype or self.dtype, kind="input")
        return name

    def param(self, name, shape, kind="param"):
        """A trainable weight (``kind="param"``) or persistent state."""
        self.g.add_tensor(name, shape, self.dtype, kind=kind)
        return name

    def const(self, name, data):
        """A constant with known value (shape vectors, scalars, indices)."""
        if name in self.g.tensors:
            return name
        data = np.asarray(data)
        if data.dtype.kind == "f":
            data = data.astype(oprules.numpy_dtype(self.dtype))
        self.g.add_tensor(name, data.shape, oprules.dtype_of_array(data),
                          kind="constant", data=data)
        return name

    def shape(self, t):
        """Shape of tensor ``t``."""
        return self.g.tensors[t].shape

    # -- ops ----------------------------------------------------------------
    def op(self, op, inputs, attrs=None, *, name, layer=None, n_out=1):
        """Add op ``name`` of type ``op``; returns its output tensor name(s).

        Output tensors are called ``<name>.out`` (``<name>.out<i>`` when several).
        """
        attrs = dict(attrs or {})
        ins = [self.g.tensors[t] for t in inputs]
        if op == "Conv":
            attrs = oprules.window_attrs(attrs, ins[0].shape[2:], kernel=ins[1].shape[2:])
            attrs.setdefault("group", 1)
        elif op in ("MaxPool", "AveragePool"):
            attrs = oprules.window_attrs(attrs, ins[0].shape[2:])
        try:
            outs = oprules.infer(op, ins, attrs, n_out)
        except ModelError as e:
            raise ModelError(f"{self.g.name}: op {name!r} ({op}): {e}") from None
        names = [f"{name}.out"] if n_out == 1 else [f"{name}.out{i}" for i in range(n_out)]
        for t, (shape, dt) in zip(names, outs):
            self.g.add_tensor(t, shape, dt)
        fl = oprules.flops(op, [t.shape for t in ins], [s for s, _ in outs], attrs)
        self.g.add_op(name, op, inputs, names, family=oprules.family(op), attrs=attrs,
                      layer=layer or name, block=self._block, flops=fl)
        return names[0] if n_out == 1 else names

    def custom(self, op, inputs, outputs, attrs=None, *, name, family, flops, layer=None):
        """An op type with no rule in :mod:`models.oprules` (the sparse / conditional ops of
        :mod:`models.sparse`): ``outputs`` are ``(shape, dtype)`` pairs, named like :meth:`op`'s;
        its family and FLOPs are given; ``(shape, dtype, tensor)`` writes that tensor in place."""
        names = [f"{name}.out"] if len(outputs) == 1 else [f"{name}.out{i}" for i in range(len(outputs))]
        for t, (shape, dt, *over) in zip(names, outputs):
            if over:     # (shape, dtype, tensor): written in place over that tensor
                self.g.add_tensor(t, shape, dt, kind=self.g.tensors[over[0]].kind, inplace_of=over[0])
            else:
                self.g.add_tensor(t, shape, dt)
        self.g.add_op(name, op, inputs, names, family=family, attrs=dict(attrs or {}),
                      layer=layer or name, block=self._block, flops=flops)
        return names[0] if len(names) == 1 else names

    @contextmanager
    def block(self, block: str, kind: str):
        """Ops added inside belong to repeated block ``block`` of kind ``kind``."""
        outer, self._block = self._block, block
        self._block_kind[block] = kind
        try:
            yield
        finally:
            self._block = outer

    # -- common layers ------------------------------------------------------
    def conv(self, x, name, cout, k, stride=1, pad=0, bias=True, group=1, layer=None):
        """Conv2d with torch-style weight ``<name>.weight`` (cout, cin/group, k, k)."""
        cin = self.shape(x)[1]
        w = self.param(f"{name}.weight", (cout, cin // group, k, k))
        ins = [x, w] + ([self.param(f"{name}.bias", (cout,))] if bias else [])
        return self.op("Conv", ins, dict(kernel_shape=[k, k], strides=[stride] * 2,
                                         pads=[pad] * 4, dilations=[1, 1], group=group),
                       name=name, layer=layer)

    def bn(self, x, name, eps=1e-5, momentum=0.9, layer=None):
        """BatchNormalization; running mean / var are ``state`` tensors."""
        c = self.shape(x)[1]
        ins = [x, self.param(f"{name}.weight", (c,)), self.param(f"{name}.bias", (c,)),
               self.param(f"{name}.running_mean", (c,), kind="state"),
               self.param(f"{name}.running_var", (c,), kind="state")]
        return self.op("BatchNormalization", ins, dict(epsilon=eps, momentum=momentum),
                       name=name, layer=layer)

    def linear(self, x, name, cout, bias=True, layer=None):
        """Gemm with torch-style weight (cout, cin) and ``transB=1``."""
        cin = self.shape(x)[1]
        ins = [x, self.param(f"{name}.weight", (cout, cin))]
        if bias:
            ins.append(self.param(f"{name}.bias", (cout,)))
        return self.op("Gemm", ins, dict(alpha=1.0, beta=1.0, transA=0, transB=1),
                       name=name, layer=layer)

    def layernorm(self, x, name, eps=1e-12, layer=None):
        """LayerNormalization over the last axis."""
        c = self.shape(x)[-1]
        ins = [x, self.param(f"{name}.weight", (c,)), self.param(f"{name}.bias", (c,))]
        return self.op("LayerNormalization", ins, dict(axis=-1, epsilon=eps),
                       name=name, layer=layer)

    def reshape(self, x, name, target, layer=None):
        """Reshape to ``target``; the batch dim is written as -1 in the constant."""
        target = list(target)
        data = np.array(target, dtype=np.int64)
        cname = f"shape[{','.join(str(t) for t in target)}]"
        return self.op("Reshape", [x, self.const(cname, data)], {}, name=name, layer=layer)

    def maxpool(self, x, name, k, stride, pad=0, layer=None):
        """MaxPool2d."""
        return self.op("MaxPool", [x], dict(kernel_shape=[k, k], strides=[stride] * 2,
                                            pads=[pad] * 4), name=name, layer=layer)

    def adaptive_avgpool(self, x, name, out_hw):
        """torch AdaptiveAvgPool2d: nothing when the input already has ``out_hw``,
        an AveragePool when the input size is a multiple of it."""
        h, w = self.shape(x)[2:]
        oh, ow = out_hw
        if (h, w) == (oh, ow):
            return x
        if h % oh or w % ow:
            raise ModelError(f"{self.g.name}: {name}: cannot pool {h}x{w} to {oh}x{ow} "
                             "(input size must be a multiple of the output size)")
        k = [h // oh, w // ow]
        return self.op("AveragePool", [x], dict(kernel_shape=k, strides=k, pads=[0] * 4),
                       name=name)

    def finish(self, outputs):
        """Mark ``outputs`` as graph outputs, assign block types; return the graph."""
        for t in outputs:
            self.g.tensors[t].kind = "output"
        self.g.outputs = list(outputs)
        assign_block_types(self.g, self._block_kind)
        return self.g


# -- blocks -------------------------------------------------------------------
def block_ops(g: OpGraph) -> dict:
    """``{block: [op names in g.ops() order]}`` for every block of ``g``."""
    out = {}
    for n in g.ops():
        b = g.op(n)["block"]
        if b is not None:
            out.setdefault(b, []).append(n)
    return out


def block_signature(g: OpGraph, ops: list, phase=None) -> tuple:
    """What must be equal for two blocks to share a ``block_type``: the ops in
    order with their types, attrs, shapes and internal wiring."""
    ops = [n for n in ops if phase is None or g.op(n)["phase"] == phase]
    pos = {}
    sig = []
    for i, n in enumerate(ops):
        d = g.op(n)
        for j, t in enumerate(d["outputs"]):
            pos[t] = (i, j)
        ins = []
        for t in d["inputs"]:
            ti = g.tensors[t]
            ins.append(("int",) + pos[t] if t in pos else
                       ("ext", ti.shape, ti.dtype, ti.kind))
        outs = tuple((g.tensors[t].shape, g.tensors[t].dtype) for t in d["outputs"])
        attrs = tuple(sorted((k, repr(v)) for k, v in d["attrs"].items() if k != "forward"))
        sig.append((d["op"], d["family"], d["phase"], attrs, tuple(ins), outs))
    return tuple(sig)


def _shape_str(shape):
    return "x".join(str(s) for s in shape) or "scalar"


def assign_block_types(g: OpGraph, kinds: dict, phase="fwd", suffix=""):
    """Give every op of ``phase`` inside a block a ``block_type``.

    Blocks get ``"<kind>:<input shape>-><output shape><suffix>"``, where ``kind``
    is ``kinds[block]``; blocks with equal names but different signatures are
    told apart with ``#2``, ``#3``.
    """
    def name(b, ops):
        first, last = g.op(ops[0]), g.op(ops[-1])
        return (f"{kinds[b]}:{_shape_str(g.tensors[first['inputs'][0]].shape)}"
                f"->{_shape_str(g.tensors[last['outputs'][0]].shape)}{suffix}")
    set_block_types(g, phase, name)


def set_block_types(g: OpGraph, phase, name_of):
    """Set ``block_type`` of the ``phase`` ops of each block to
    ``name_of(block, ops)``, adding ``#k`` where equal names hide different
    signatures (so equal ``block_type`` always means identical blocks)."""
    seen = {}   # name -> [signatures]
    for b, ops in block_ops(g).items():
        ops = [n for n in ops if g.op(n)["phase"] == phase]
        if not ops:
            continue
        name = name_of(b, ops)
        if name is None:
            continue
        sig = block_signature(g, ops)
        sigs = seen.setdefault(name, [])
        if sig not in sigs:
            sigs.append(sig)
        k = sigs.index(sig)
        bt = name if k == 0 else f"{name}#{k + 1}"
        for n in ops:
            g.op(n)["block_type"] = bt
