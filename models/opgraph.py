"""The op-level graph of a network: the data structure every model produces.

An :class:`OpGraph` is a small wrapper around a ``networkx.DiGraph`` whose nodes
are *ops* and whose edges carry the name of the tensor flowing between them.
Tensors are described once, in ``OpGraph.tensors``.

Every op node has these attributes (the compiler's lowering reads them):

``op``       ONNX-style op type ("Conv", "Gemm", "Relu", "ConvGrad", ...)
``family``   lowering family: one of :data:`FAMILIES`
``inputs``   list of tensor names read (order as in ONNX)
``outputs``  list of tensor names written
``attrs``    dict of op attributes (ONNX names: kernel_shape, strides, pads, group, ...)
``layer``    layer name used for clustering and colours ("conv1", "layer3.2.conv2")
``block``    id of the repeated block this op belongs to, or None
``block_type`` signature shared by blocks with identical shapes, or None
``phase``    "fwd", "loss", "bwd" or "update"
``flops``    floating-point operations of the op (a multiply-add counts as 2)

A tensor whose ``inplace_of`` is set is a new version of an existing tensor
written in place (optimizer updates of weights and optimizer state): it shares
that tensor's storage, takes no extra memory and is not counted by
:meth:`OpGraph.params`. Training graphs fill ``OpGraph.grads`` with
``{forward tensor: its gradient tensor}``.

Example:
    >>> g = OpGraph("tiny")
    >>> _ = g.add_tensor("x", (1, 4), kind="input")
    >>> _ = g.add_tensor("w", (4, 2), kind="param")
    >>> _ = g.add_tensor("y", (1, 2))
    >>> _ = g.add_op("fc", "MatMul", ["x", "w"], ["y"], family="matmul", flops=16)
    >>> g.params(), g.flops()
    (8, 16)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import networkx as nx

from hardware.dtypes import DTYPE_BYTES

FAMILIES = (
    "conv",        # convolutions and their gradients
    "matmul",      # Gemm / MatMul and their gradients
    "elementwise", # unary / binary maps (Relu, Add, Mul, Dropout, ...)
    "pool",        # MaxPool / AveragePool / GlobalAveragePool and gradients
    "norm",        # BatchNormalization, LayerNormalization, LRN and gradients
    "softmax",     # Softmax
    "reduce",      # ReduceSum / ReduceMean / gradient reductions
    "loss",        # loss functions
    "optimizer",   # weight updates
    "reshape",     # Reshape / Flatten / Transpose / Unsqueeze / Squeeze (views)
    "concat",      # Concat / Split
    "gather",      # Gather / embedding lookups / dynamic slices
    "indexed",     # any other ONNX op, lowered through index maps (compiler/planners/indexed.py)
)


TENSOR_KINDS = ("input", "param", "activation", "constant", "grad", "state", "output")


@dataclass
class TensorInfo:
    name: str
    shape: tuple
    dtype: str = "fp32"
    kind: str = "activation"
    producer: str | None = None  # op name, None for inputs / params / constants
    data: object = None          # numpy array for params / constants when known
    inplace_of: str | None = None  # written in place over this tensor (shares its storage)

    @property
    def size(self) -> int:
        return int(prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * DTYPE_BYTES[self.dtype]


@dataclass
class OpGraph:
    name: str
    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    tensors: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)   # graph input tensor names
    outputs: list = field(default_factory=list)  # graph output tensor names
    batch: int = 1
    grads: dict = field(default_factory=dict)  # training graphs: tensor -> its gradient tensor

    # -- building -------------------------------------------------------
    def add_tensor(self, name, shape, dtype="fp32", kind="activation", data=None,
                   inplace_of=None):
        if name in self.tensors:
            raise ValueError(f"{self.name}: tensor {name!r} defined twice")
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"{self.name}: tensor {name!r} has unknown dtype {dtype!r}")
        if kind not in TENSOR_KINDS:
            raise ValueError(f"{self.name}: tensor {name!r} has unknown kind {kind!r}")
        if inplace_of is not None and inplace_of not in self.tensors:
            raise ValueError(f"{self.name}: tensor {name!r} updates undefined tensor "
                             f"{inplace_of!r}")
        t = TensorInfo(name, tuple(int(s) for s in shape), dtype, kind, data=data,
                       inplace_of=inplace_of)
        self.tensors[name] = t
        if kind == "input":
            self.inputs.append(name)
        return t

    def add_op(self, name, op, inputs, outputs, *, family, attrs=None, layer=None,
               block=None, block_type=None, phase="fwd", flops=0):
        if name in self.graph:
            raise ValueError(f"{self.name}: op {name!r} defined twice")
        if family not in FAMILIES:
            raise ValueError(f"{self.name}: op {name!r} has unknown family {family!r}")
        for t in list(inputs) + list(outputs):
            if t not in self.tensors:
                raise ValueError(f"{self.name}: op {name!r} ({op}) uses undefined tensor {t!r}")
        self.graph.add_node(name, op=op, family=family, inputs=list(inputs),
                            outputs=list(outputs), attrs=dict(attrs or {}),
                            layer=layer or name, block=block, block_type=block_type,
                            phase=phase, flops=int(flops))
        for t in inputs:
            p = self.tensors[t].producer
            if p is not None:
                self.graph.add_edge(p, name, tensor=t)
        for t in outputs:
            self.tensors[t].producer = name
        return name

    def without_ops(self, name=None) -> "OpGraph":
        """A graph with this one's tensors (none produced yet), inputs, outputs, gradients and
        other attributes (an ONNX file's opset), and no ops: where a rewrite starts."""
        out = OpGraph(name or self.name, batch=self.batch)
        for k, v in vars(self).items():
            if k not in ("name", "graph", "tensors", "inputs", "outputs", "batch", "grads"):
                setattr(out, k, v)
        for t in self.tensors.values():
            out.add_tensor(t.name, t.shape, t.dtype, t.kind, data=t.data, inplace_of=t.inplace_of)
        out.inputs, out.outputs, out.grads = list(self.inputs), list(self.outputs), dict(self.grads)
        return out

    def add_op_like(self, d: dict, name, **changes):
        """Add op ``name`` as op dict ``d`` (another graph's :meth:`op`) describes it, but for
        ``changes`` (``inputs``, ``outputs``, ``attrs``, ``phase``...)."""
        d = {**d, **changes}
        return self.add_op(name, d["op"], d["inputs"], d["outputs"], family=d["family"], attrs=d["attrs"],
                           layer=d["layer"], block=d["block"], block_type=d["block_type"], phase=d["phase"],
                           flops=d["flops"])

    # -- queries --------------------------------------------------------
    def ops(self):
        """Op names in a topological order (stable: insertion order breaks ties).

        Weight updates (phase ``update``) run as early as they can: right after
        the last op that produces one of their inputs or reads a tensor they
        overwrite in place, so that each gradient dies as soon as its layer's
        backward pass is done (as TensorFlow / PopART schedule them), instead of
        every gradient staying live until the end of the backward pass.
        """
        order = {n: i for i, n in enumerate(self.graph.nodes)}
        topo = list(nx.lexicographical_topological_sort(self.graph, key=order.__getitem__))
        nodes = self.graph.nodes
        upd = [n for n in topo if nodes[n]["phase"] == "update"]
        if not upd or len(upd) == len(topo):
            return topo
        rest = [n for n in topo if nodes[n]["phase"] != "update"]
        pos = {n: i for i, n in enumerate(rest)}
        readers = {}
        for n in rest:
            for t in nodes[n]["inputs"]:
                readers.setdefault(t, []).append(n)
        slot, after = {}, {}
        for u in upd:
            d = nodes[u]
            deps = list(self.graph.predecessors(u))
            for t in d["outputs"]:
                src = self.tensors[t].inplace_of
                if src is not None:
                    deps += readers.get(src, [])
            k = max((pos[p] if p in pos else slot[p] for p in deps), default=-1)
            slot[u] = k
            after.setdefault(k, []).append(u)
        out = list(after.get(-1, []))
        for i, n in enumerate(rest):
            out.append(n)
            out += after.get(i, [])
        return out

    def op(self, name) -> dict:
        return self.graph.nodes[name]

    def params(self) -> int:
        """Number of parameter elements (in-place updated copies not counted)."""
        return sum(t.size for t in self.tensors.values()
                   if t.kind == "param" and t.inplace_of is None)

    def flops(self) -> int:
        return sum(d["flops"] for _, d in self.graph.nodes(data=True))

    def __len__(self):
        return self.graph.number_of_nodes()
