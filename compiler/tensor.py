"""Tensors: views of a graph's global element space, without copies of data.

Every variable owns a contiguous range of the graph's element space.  A
:class:`Tensor` is a shaped view of element indices: a whole variable keeps
only (start, shape); slicing, indexing, reshaping, transposing and
concatenating produce views whose indices are computed with numpy.

Example:
    >>> from compiler.graph import Graph
    >>> from types import SimpleNamespace
    >>> g = Graph(SimpleNamespace(tiles=4, sram_bytes_per_tile=1024))
    >>> v = g.add_variable("fp32", (2, 3), "v")
    >>> v[1].shape, v.transpose().shape, v.flatten()[2:5].shape
    ((3,), (3, 2), (3,))
    >>> concat([v[0], v[1]]).elements().tolist()
    [0, 1, 2, 3, 4, 5]
"""
from __future__ import annotations

from math import prod

import numpy as np

from . import intervals


class Tensor:
    __slots__ = ("graph", "dtype", "shape", "_start", "_idx", "name")

    def __init__(self, graph, dtype, shape, start=None, idx=None, name=""):
        self.graph = graph
        self.dtype = dtype
        self.shape = tuple(int(s) for s in shape)
        self._start = start          # contiguous view of [start, start + numel)
        self._idx = idx              # or explicit index array with self.shape
        self.name = name

    # -- basic properties ---------------------------------------------------
    @property
    def numel(self) -> int:
        return int(prod(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"Tensor({self.name or '<view>'}, {self.dtype}, shape={self.shape})"

    def elements(self) -> np.ndarray:
        """Global element indices of this view, shaped like the tensor."""
        if self._idx is not None:
            return self._idx
        return np.arange(self._start, self._start + self.numel, dtype=np.int64).reshape(self.shape)

    def intervals(self):
        """Contiguous (starts, lengths) covering the view in row-major order."""
        if self._idx is None:
            return np.array([self._start], np.int64), np.array([self.numel], np.int64)
        return intervals.runs(self._idx)

    def is_contiguous(self) -> bool:
        return self._idx is None or len(self.intervals()[0]) <= 1

    def _view(self, idx, suffix=""):
        idx = np.asarray(idx, dtype=np.int64)
        return Tensor(self.graph, self.dtype, idx.shape, idx=idx, name=self.name + suffix)

    # -- views ----------------------------------------------------------------
    def __getitem__(self, key):
        if (self._idx is None and isinstance(key, slice) and key.step in (None, 1)
                and self.rank >= 1):
            a, b, _ = key.indices(self.shape[0])
            b = max(a, b)
            inner = prod(self.shape[1:])
            return Tensor(self.graph, self.dtype, (b - a,) + self.shape[1:],
                          start=self._start + a * inner, name=self.name)
        if self._idx is None and isinstance(key, (int, np.integer)) and self.rank >= 1:
            k = int(key)
            if not -self.shape[0] <= k < self.shape[0]:
                raise IndexError(f"index {k} out of range for tensor {self.name!r} of shape {self.shape}")
            k %= self.shape[0]
            inner = prod(self.shape[1:])
            return Tensor(self.graph, self.dtype, self.shape[1:], start=self._start + k * inner,
                          name=self.name)
        try:
            return self._view(self.elements()[key])
        except IndexError as e:
            raise IndexError(f"tensor {self.name!r} of shape {self.shape}: {e}") from None

    def slice(self, begin, end, dim=0):
        key = [slice(None)] * self.rank
        key[dim] = slice(begin, end)
        return self[tuple(key)]

    def index(self, i):
        return self[i]

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        if -1 in shape:
            known = prod(s for s in shape if s != -1)
            shape = tuple(self.numel // known if s == -1 else s for s in shape)
        if prod(shape) != self.numel:
            raise ValueError(f"cannot reshape tensor {self.name!r} of shape {self.shape} "
                             f"({self.numel} elements) to {tuple(shape)}")
        if self._idx is None:
            return Tensor(self.graph, self.dtype, shape, start=self._start, name=self.name)
        return self._view(self._idx.reshape(shape))

    def flatten(self):
        return self.reshape(self.numel)

    def transpose(self, *perm):
        perm = perm[0] if len(perm) == 1 and isinstance(perm[0], (tuple, list)) else perm
        return self._view(np.transpose(self.elements(), perm or None), ".T")

    @property
    def T(self):
        return self.transpose()


def concat(tensors, dim=0) -> Tensor:
    """Concatenate views (of one graph and one dtype) along ``dim``."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concat of no tensors")
    g, d = tensors[0].graph, tensors[0].dtype
    for t in tensors:
        if t.graph is not g:
            raise ValueError("concat of tensors from different graphs")
        if t.dtype != d:
            raise ValueError(f"concat of tensors with different dtypes: {tensors[0].name!r} is {d}, "
                             f"{t.name!r} is {t.dtype}")
    idx = np.concatenate([t.elements() for t in tensors], axis=dim)
    return Tensor(g, d, idx.shape, idx=idx, name="concat")
