"""How a network's tensors are laid out in the graph's memory.

Activations of logical shape (N, C, H, W) are stored channel-grouped, as
Poplar's convolution library does: ``[N][C/g][H][W][g]``, so that a row of
``w`` pixels of one channel group is one contiguous region (one edge).
Tensors of any other rank are viewed as (rows, columns) and stored
row-major, which is the same layout with H = W = 1.

A 4-D tensor is an image only where an image op (a convolution, a pooling, a batch
norm...) reads or writes it, or one that shares an op with such a tensor
(:func:`row_major_4d`); any other 4-D tensor (attention's heads, scores and
probabilities, (batch, heads, tokens, head_dim)) is stored row-major, group 1, as
PopLibs / PopART store a tensor that no convolution creates: a Reshape of a row-major
tensor is then a view, and a head split or merge moves runs of head_dim elements.

    >>> from types import SimpleNamespace
    >>> from compiler.graph import Graph
    >>> g = Graph(SimpleNamespace(tiles=4, sram_bytes_per_tile=1 << 20))
    >>> a = Act.allocate(g, "x", (2, 16, 4, 4), "fp16", group=8)
    >>> a.shape5
    (2, 2, 4, 4, 8)
    >>> s, l = a.rows(np.array([1]), np.array([1]), np.array([2]), np.array([0]), np.array([4]))
    >>> int(s[0]), int(l[0])
    (448, 32)
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from .codelets import amp_width
from hardware.dtypes import DTYPE_BYTES


def channel_group(c: int, dtype: str) -> int:
    """Channels stored together: 16 for fp16 / int8, 8 for fp32 (the AMP's input width)."""
    want = amp_width(dtype)
    if c % want == 0:
        return want
    for g in range(min(want, c), 0, -1):
        if c % g == 0:
            return g
    return 1


#: op types that read or write their 4-D operands as (N, C, H, W) images (their gradients too)
IMAGE_OPS = frozenset({"Conv", "ConvTranspose", "ConvGradInput", "ConvGradWeight", "MaxPool", "AveragePool",
                       "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool", "MaxPoolGrad",
                       "AveragePoolGrad", "GlobalAveragePoolGrad", "BatchNormalization", "BatchNormalizationGrad",
                       "InstanceNormalization", "LRN", "LRNGrad", "DepthToSpace", "SpaceToDepth", "Resize",
                       "Upsample", "GroupNormalization", "MaxUnpool", "MaxRoiPool", "RoiAlign"})


def row_major_4d(opg) -> frozenset:
    """The 4-D tensors of op graph ``opg`` that are not images: stored row-major (group 1).

    The 4-D tensors that one op reads or writes share a layout (an element-wise op, a
    Transpose or a 4-D to 4-D Reshape keeps its operand's kind), so the 4-D tensors fall into
    groups joined by ops; a group is an image, channel-grouped, when an op of
    :data:`IMAGE_OPS` (or of family ``conv`` / ``pool``) is among its ops, else row-major."""
    parent = {}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    image = set()
    for n in opg.graph.nodes:
        d = opg.op(n)
        four = [t for t in list(d["inputs"]) + list(d["outputs"])
                if t and t in opg.tensors and len(opg.tensors[t].shape) == 4]
        if not four:
            continue
        for t in four:
            parent.setdefault(t, t)
        r = find(four[0])
        for t in four[1:]:
            q = find(t)
            if q != r:
                parent[q] = r
        if d["op"] in IMAGE_OPS or d.get("family") in ("conv", "pool"):
            image.add(r)
    for t, info in opg.tensors.items():
        if len(info.shape) == 4:
            parent.setdefault(t, t)
    image = {find(r) for r in image}
    return frozenset(t for t in parent if find(t) not in image)


@dataclass
class Act:
    """A network tensor placed in the graph, with its logical and stored shapes."""
    name: str
    tensor: object          # graph Tensor (a whole variable)
    logical: tuple          # the op graph's shape
    N: int
    C: int
    H: int
    W: int
    g: int
    dtype: str
    var: int = -1           # id of the graph variable holding it

    @property
    def start(self) -> int:
        return self.tensor._start

    @property
    def numel(self) -> int:
        return self.N * self.C * self.H * self.W

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]

    @property
    def Cg(self) -> int:
        return self.C // self.g

    @property
    def shape5(self):
        return (self.N, self.Cg, self.H, self.W, self.g)

    @staticmethod
    def dims(shape):
        shape = tuple(int(s) for s in shape)
        if len(shape) == 4:
            return shape
        if len(shape) == 0:
            return (1, 1, 1, 1)
        if len(shape) == 1:
            return (1, shape[0], 1, 1)
        return (prod(shape[:-1]), shape[-1], 1, 1)

    @classmethod
    def allocate(cls, graph, name, shape, dtype, group=None, kind="activation", op=None):
        N, C, H, W = cls.dims(shape)
        g = group or channel_group(C, dtype)
        t = graph.add_variable(dtype, (N, C // g, H, W, g), name, kind=kind, op=op)
        return cls(name, t, tuple(shape), N, C, H, W, g, dtype, len(graph.variables) - 1)

    def alias(self, name, shape, group=None):
        """The same storage seen with another logical shape (Reshape, Flatten...); ``group`` 1:
        a row-major view (a row-major tensor seen as a 4-D one that is not an image)."""
        N, C, H, W = self.dims(shape)
        if N * C * H * W != self.numel:
            raise ValueError(f"cannot view {self.name!r} {self.logical} as {tuple(shape)}")
        if group == 1 and self.H * self.W > 1 and self.g > 1:
            raise ValueError(f"cannot view the channel-grouped {self.name!r} {self.logical} as the row-major "
                             f"{tuple(shape)}")
        if group is not None:
            g = group
        else:
            g = self.g if (C % self.g == 0 and H * W == self.H * self.W) else channel_group(C, self.dtype)
        return Act(name, self.tensor, tuple(shape), N, C, H, W, g, self.dtype, self.var)

    def rows(self, n, cg, h, w0, w1):
        """Intervals of pixels [w0, w1) of row h, channel group cg, image n (vectorized)."""
        st = self.start + ((((n * self.Cg + cg) * self.H + h) * self.W + w0) * self.g)
        return st.astype(np.int64), ((w1 - w0) * self.g).astype(np.int64)

    def block(self, n, cg):
        """The whole [H][W][g] block of image n, channel group cg."""
        hw = self.H * self.W * self.g
        return (self.start + (n * self.Cg + cg) * hw).astype(np.int64), np.full(np.shape(n), hw, np.int64)
