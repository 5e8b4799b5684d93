"""How a network's tensors are laid out in the graph's memory.

Activations of logical shape (N, C, H, W) are stored channel-grouped, as
Poplar's convolution library does: ``[N][C/g][H][W][g]``, so that a row of
``w`` pixels of one channel group is one contiguous region (one edge).
Tensors of any other rank are viewed as (rows, columns) and stored
row-major, which is the same layout with H = W = 1.

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

    def alias(self, name, shape):
        """The same storage seen with another logical shape (Reshape, Flatten...)."""
        N, C, H, W = self.dims(shape)
        if N * C * H * W != self.numel:
            raise ValueError(f"cannot view {self.name!r} {self.logical} as {tuple(shape)}")
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
