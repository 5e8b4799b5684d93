"""The graph: variables, tile mappings, compute sets, vertices and edges.

Poplar's concepts with Poplar's names.  A :class:`Graph` is built for a target
(any chip object with ``tiles`` and ``sram_bytes_per_tile``; the simulator's
presets are such objects).  Everything that grows with the size of a network
lives in numpy arrays (struct of arrays):

* variables own contiguous ranges of one global element space; their tile
  mapping is stored as runs per variable (:class:`TileMaps`; -1: unmapped);
* vertices are rows of ``vertex_tile`` grouped in *batches* (one codelet, one
  compute set, one dtype, one dict of parameters, a contiguous id range);
* edges are rows of (vertex, field, start, length): one contiguous region of a
  tensor connected to one field of one vertex.  :meth:`Graph.finalize` sorts
  them by vertex into CSR form.

A hand-written program (Poplar's tutorial):

    >>> from types import SimpleNamespace
    >>> g = Graph(SimpleNamespace(tiles=4, sram_bytes_per_tile=1 << 16))
    >>> a = g.add_variable("fp32", (8,), "a"); b = g.add_variable("fp32", (8,), "b")
    >>> c = g.add_variable("fp32", (8,), "c")
    >>> for t in (a, b, c): g.map_linearly(t, grain=2)
    >>> cs = g.add_compute_set("add")
    >>> for tile in range(4):
    ...     v = g.add_vertex(cs, "Add", {"a": a[2*tile:2*tile+2], "b": b[2*tile:2*tile+2],
    ...                                  "out": c[2*tile:2*tile+2]})
    ...     g.set_tile_mapping(v, tile)
    >>> g.num_vertices, g.num_edges
    (4, 12)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import intervals
from .codelets import CODELETS, field_dtype, get_codelet
from hardware.dtypes import DTYPE_BYTES, canonical
from .tensor import Tensor


class GraphError(ValueError):
    """A problem in a graph or program, found when it is built or compiled."""


class _Grow:
    """A growable 1-D numpy array (amortised appends)."""

    __slots__ = ("a", "n")

    def __init__(self, dtype, cap=16):
        self.a = np.empty(cap, dtype)
        self.n = 0

    def _reserve(self, k):
        if self.n + k > self.a.size:
            self._resize(max(self.a.size * 2, self.n + k))

    def _resize(self, size):
        """Capacity ``size``.  Growing: a new buffer holding the first ``n`` elements
        (``ndarray.resize`` would zero-fill the growth, a pass over pages that the appends
        write anyway).  Shrinking: in place (``realloc``) where no view of the buffer is
        alive (numpy's reference check), else a copy."""
        if size < self.a.size:
            try:
                self.a.resize(size, refcheck=True)
                return
            except ValueError:
                pass
        new = np.empty(size, self.a.dtype)
        new[: self.n] = self.a[: self.n]
        self.a = new

    def append(self, x):
        self._reserve(1)
        self.a[self.n] = x
        self.n += 1

    def extend(self, xs):
        xs = np.asarray(xs)
        self._reserve(xs.size)
        self.a[self.n: self.n + xs.size] = xs.ravel()
        self.n += xs.size

    def view(self):
        return self.a[: self.n]


@dataclass
class Variable:
    id: int
    name: str
    dtype: str
    shape: tuple
    start: int
    size: int
    constant: object = None      # numpy initial value for constants
    kind: str = "variable"       # variable | constant | weight | activation | ...
    op: str | None = None        # op that created it (for reports)


@dataclass
class ComputeSet:
    id: int
    name: str
    layer: str | None = None     # op layer this compute set belongs to (reports, colours)
    op: str | None = None
    phase: str | None = None

    def __hash__(self):
        return hash(self.id)


@dataclass
class Batch:
    """Vertices ``[v0, v1)``: one codelet, compute set, dtype and parameter set."""
    codelet: str
    cs: int
    dtype: str
    params: dict
    v0: int
    v1: int


@dataclass(frozen=True)
class FieldRef:
    vertex: int
    field: str


class VertexRef(int):
    """A vertex id; ``v["in"]`` names one of its fields for :meth:`Graph.connect`."""

    def __getitem__(self, name):
        return FieldRef(int(self), name)


@dataclass
class Function:
    """A graph function: a program placed once in the graph, run by every Call."""
    id: int
    name: str
    program: object


@dataclass
class DataStream:
    """A host FIFO: ``direction`` is "h2d" (host to device) or "d2h"."""
    name: str
    dtype: str
    numel: int
    direction: str
    buffers: int = 1      # prefetch depth: host transfers run this far ahead
    remote: bool = False  # streaming memory (an offloaded tensor), not the host

    @property
    def nbytes(self):
        return self.numel * DTYPE_BYTES[self.dtype]


class TileMaps:
    """Tile mapping of every variable as runs: per variable, sorted run starts
    (relative to the variable) covering ``[0, size)`` and each run's tile (-1:
    unmapped), adjacent runs on one tile merged.  Memory grows with the number
    of mapped regions, not with the elements (a training graph has hundreds of
    millions of elements and a few million regions).

    Dict-like for reading per-element arrays (``get`` / ``[]`` materialize one
    variable); :meth:`runs` is the cheap access.
    """

    def __init__(self, graph):
        self._g = graph
        self._runs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- runs -----------------------------------------------------------------------
    def runs(self, vid):
        """(starts, tiles) of the variable's runs, or None when nothing is mapped."""
        return self._runs.get(int(vid))

    def run_lengths(self, vid):
        st, tl = self._runs[int(vid)]
        return np.diff(np.append(st, self._g.variables[int(vid)].size))

    def set_runs(self, vid, starts, tiles):
        starts = np.asarray(starts, np.int64)
        tiles = np.asarray(tiles, np.int32)
        keep = np.ones(starts.size, bool)
        keep[1:] = tiles[1:] != tiles[:-1]
        self._runs[int(vid)] = (starts[keep], tiles[keep])

    def assign(self, vid, s, l, t):
        """Map pieces [s, s + l) of variable ``vid`` (relative starts) to tiles ``t``;
        later assignments override earlier ones, as do later pieces of one call."""
        size = self._g.variables[vid].size
        nz = l > 0
        if not np.all(nz):
            s, l, t = s[nz], l[nz], t[nz]
        if s.size == 0:
            if vid not in self._runs:
                self._runs[vid] = (np.zeros(1, np.int64), np.full(1, -1, np.int32))
            return
        if s.size > 1 and not np.all(s[1:] > s[:-1]):
            o = np.argsort(s, kind="stable")
            s, l, t = s[o], l[o], t[o]
        if s.size > 1 and np.any(s[1:] < s[:-1] + l[:-1]):
            # pieces of one call overlap (rare): the last one wins, element by element
            arr = self.get(vid)
            if arr is None:
                arr = np.full(size, -1, np.int32)
            arr[intervals.expand(s, l)] = np.repeat(t, l)
            self[vid] = arr
            return
        old = self._runs.get(vid)
        e = s + l
        if old is None or (old[0].size == 1 and old[1][0] == -1):
            # nothing mapped yet: the pieces, with unmapped gaps between them
            gap = np.empty(s.size, np.int64)
            gap[0] = s[0]
            gap[1:] = s[1:] - e[:-1]
            st = np.empty(2 * s.size + 1, np.int64)
            tl = np.full(2 * s.size + 1, -1, np.int32)
            st[0] = 0
            st[1::2] = s
            st[2::2] = e
            tl[1::2] = t
            keep = np.ones(st.size, bool)
            keep[0] = gap[0] > 0
            keep[2:-1:2] = gap[1:] > 0
            keep[-1] = e[-1] < size
            self.set_runs(vid, st[keep], tl[keep])
            return
        ost, otl = old
        bnd = intervals.unique(np.concatenate((ost, s, e)))
        bnd = bnd[bnd < size]
        k = np.searchsorted(s, bnd, side="right") - 1
        kc = np.clip(k, 0, None)
        covered = (k >= 0) & (bnd < e[kc])
        tile = np.where(covered, t[kc], otl[np.searchsorted(ost, bnd, side="right") - 1])
        self.set_runs(vid, bnd, tile)

    # -- dict-like access (per-element arrays) ---------------------------------------------
    def get(self, vid, default=None):
        r = self._runs.get(int(vid))
        if r is None:
            return default
        st, tl = r
        return np.repeat(tl, np.diff(np.append(st, self._g.variables[int(vid)].size)))

    def __getitem__(self, vid):
        out = self.get(vid)
        if out is None:
            raise KeyError(vid)
        return out

    def __setitem__(self, vid, arr):
        arr = np.asarray(arr, np.int32).ravel()
        if arr.size == 0:
            self._runs[int(vid)] = (np.zeros(1, np.int64), np.full(1, -1, np.int32))
            return
        st = np.concatenate(([0], np.flatnonzero(np.diff(arr)) + 1)).astype(np.int64)
        self._runs[int(vid)] = (st, arr[st])

    def __contains__(self, vid):
        return int(vid) in self._runs

    def __len__(self):
        return len(self._runs)

    def keys(self):
        return self._runs.keys()

    def tile_of(self, vid, rel):
        """Tile of elements at relative positions ``rel`` of variable ``vid`` (-1 unmapped)."""
        r = self._runs.get(int(vid))
        if r is None:
            return np.full(np.shape(rel), -1, np.int32)
        st, tl = r
        return tl[np.searchsorted(st, rel, side="right") - 1]

    @property
    def nbytes(self):
        return sum(a.nbytes + b.nbytes for a, b in self._runs.values())


class Graph:
    def __init__(self, target, name: str = "graph"):
        self.target = target
        self.name = name
        self.num_tiles = int(target.tiles) * int(getattr(target, "ipus", 1) or 1)
        self.variables: list[Variable] = []
        self.tile_map = TileMaps(self)
        self._var_starts = _Grow(np.int64)
        self._var_lookup = None       # intervals.Lookup over the variable starts (variable_of)
        self.num_elements = 0
        self.compute_sets: list[ComputeSet] = []
        self.batches: list[Batch] = []
        self.vertex_tile = _Grow(np.int32)
        self.e_vertex = _Grow(np.int32)
        self.e_field = _Grow(np.int8)
        self.e_start = _Grow(np.int64)
        self.e_len = _Grow(np.int32)
        self.functions: list[Function] = []
        self.streams: dict[str, DataStream] = {}
        self._finalized = None
        self._checked = False

    # -- variables ------------------------------------------------------------
    def add_variable(self, dtype, shape, name="", kind="variable", op=None) -> Tensor:
        dtype = canonical(dtype)
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise GraphError(f"variable {name!r}: negative dimension in shape {shape}")
        size = int(np.prod(shape)) if shape else 1
        vid = len(self.variables)
        var = Variable(vid, name or f"var{vid}", dtype, shape, self.num_elements, size, kind=kind, op=op)
        self.variables.append(var)
        self._var_starts.append(self.num_elements)
        self.num_elements += size
        self._finalized = None
        return Tensor(self, dtype, shape, start=var.start, name=var.name)

    def add_constant(self, dtype, shape, value, name="") -> Tensor:
        t = self.add_variable(dtype, shape, name, kind="constant")
        arr = np.broadcast_to(np.asarray(value), t.shape)
        self.variables[-1].constant = np.array(arr)
        return t

    LOOKUP_MIN_QUERIES = 1 << 16   # from this many elements on, variable_of uses a lookup table

    def variable_of(self, elements) -> np.ndarray:
        """Variable id of each global element index."""
        starts = self._var_starts.view()
        if np.size(elements) >= self.LOOKUP_MIN_QUERIES:
            look = self.variable_lookup()
            q = np.asarray(elements)
            if q.dtype.kind in "iu" and look.covers(q):
                return look(q)
        return np.searchsorted(starts, elements, side="right") - 1

    def variable_lookup(self) -> intervals.Lookup:
        """The variable starts as an :class:`intervals.Lookup` over the element space (built
        once, rebuilt when variables are added)."""
        starts = self._var_starts.view()
        look = self._var_lookup
        if look is None or look.bounds.size != starts.size or look.limit != max(self.num_elements, 1):
            look = self._var_lookup = intervals.Lookup(starts, max(self.num_elements, 1))
        return look

    def variable(self, tensor_or_name) -> Variable:
        if isinstance(tensor_or_name, str):
            for v in self.variables:
                if v.name == tensor_or_name:
                    return v
            raise KeyError(f"no variable named {tensor_or_name!r}")
        first = int(np.ravel(tensor_or_name.elements())[0]) if tensor_or_name._idx is not None else tensor_or_name._start
        return self.variables[int(self.variable_of(np.array([first]))[0])]

    # -- tile mapping ------------------------------------------------------------
    def _check_tile(self, tile, what):
        tile = np.asarray(tile)
        bad = (tile < 0) | (tile >= self.num_tiles)
        if np.any(bad):
            t = int(tile[bad].ravel()[0]) if tile.ndim else int(tile)
            raise GraphError(f"{what}: tile {t} out of range (target has {self.num_tiles} tiles, 0..{self.num_tiles - 1})")

    def map_intervals(self, starts, lengths, tiles):
        """Map global intervals of the graph's memory to tiles (vectorized): element
        ``starts[i] + j`` (``j < lengths[i]``) to ``tiles[i]`` (one tile for all, or one per
        interval); intervals may span variables.  Planners map their outputs with it."""
        starts = np.asarray(starts, np.int64)
        lengths = np.asarray(lengths, np.int64)
        tiles = np.broadcast_to(np.asarray(tiles, np.int32), starts.shape)
        self._finalized = None
        if starts.size == 0:
            return
        vstarts = self._var_starts.view()
        ps, pl, parent = intervals.split_at(starts, lengths, vstarts[1:])
        # a binary search, not variable_of: its lookup table would be rebuilt for every
        # variable added since the last call (planners add and map variables in turn)
        pvar = np.searchsorted(vstarts, ps, side="right") - 1
        if pvar[0] == pvar[-1] and np.all(pvar == pvar[0]):
            groups = [(int(pvar[0]), None)]
        else:
            o = np.argsort(pvar, kind="stable")
            u, first = np.unique(pvar[o], return_index=True)
            bounds = np.append(first, o.size)
            groups = [(int(v), o[bounds[i]:bounds[i + 1]]) for i, v in enumerate(u.tolist())]
        for vid, sel in groups:
            var = self.variables[vid]
            s_, l_, t_ = (ps, pl, tiles[parent]) if sel is None else (ps[sel], pl[sel], tiles[parent[sel]])
            self.tile_map.assign(vid, s_ - var.start, l_, t_.astype(np.int32))

    def set_tile_mapping(self, what, tile):
        """Map a tensor (or a slice of one) or a vertex to a tile."""
        if isinstance(what, (VertexRef, int, np.integer)) and not isinstance(what, Tensor):
            if not 0 <= int(what) < self.num_vertices:
                raise GraphError(f"vertex {int(what)} does not exist (graph has {self.num_vertices} vertices)")
            self._check_tile(tile, f"vertex {int(what)}")
            self.vertex_tile.a[int(what)] = tile
            self._finalized = None
            return
        self._check_tile(tile, f"tensor {what.name!r}")
        s, l = what.intervals()
        self.map_intervals(s, l, int(tile))

    def map_linearly(self, tensor: Tensor, grain: int = 1, tiles=None):
        """Spread a tensor's elements evenly over tiles in chunks of ``grain``.

        Like ``poputil::mapTensorLinearly``: chunks are dealt in order, so the
        first tiles get ``ceil`` shares and the mapping is contiguous per tile.
        """
        n = tensor.numel
        if n == 0:
            return
        tiles = np.arange(self.num_tiles) if tiles is None else np.asarray(tiles)
        chunks = -(-n // grain)
        per_tile = -(-chunks // tiles.size)
        if tensor._idx is None:
            # contiguous: one interval per tile, no per-element arrays
            st = np.arange(0, n, per_tile * grain, dtype=np.int64)
            ln = np.minimum(st + per_tile * grain, n) - st
            self.map_intervals(tensor._start + st, ln, tiles[np.arange(st.size)].astype(np.int32))
        else:
            # a scattered view: map element by element
            el = np.arange(n, dtype=np.int64)
            idx = tensor.elements().ravel()
            self.map_intervals(idx, np.ones_like(idx), tiles[(el // grain) // per_tile].astype(np.int32))

    def tile_of_elements(self, elements) -> np.ndarray:
        elements = np.asarray(elements, np.int64)
        out = np.full(elements.shape, -1, np.int32)
        vids = self.variable_of(elements)
        if vids.size and vids.min() == vids.max():
            vid = int(vids.flat[0])
            return self.tile_map.tile_of(vid, elements - self.variables[vid].start).astype(np.int32)
        for vid in np.unique(vids):
            if int(vid) in self.tile_map:
                sel = vids == vid
                out[sel] = self.tile_map.tile_of(int(vid), elements[sel] - self.variables[vid].start)
        return out

    def get_tile_mapping(self, tensor: Tensor) -> list:
        """Per tile, the intervals [begin, end) of the tensor's flattened elements.

        >>> from types import SimpleNamespace
        >>> g = Graph(SimpleNamespace(tiles=2, sram_bytes_per_tile=1024))
        >>> t = g.add_variable("fp16", (6,), "t"); g.map_linearly(t, grain=2)
        >>> g.get_tile_mapping(t)
        [[(0, 4)], [(4, 6)]]
        """
        tiles = self.tile_of_elements(tensor.elements().ravel())
        out = [[] for _ in range(self.num_tiles)]
        if tiles.size == 0:
            return out
        brk = np.flatnonzero(np.diff(tiles)) + 1
        st = np.concatenate(([0], brk))
        en = np.concatenate((brk, [tiles.size]))
        for s, e in zip(st.tolist(), en.tolist()):
            if tiles[s] >= 0:
                out[int(tiles[s])].append((s, e))
        return out

    # -- compute sets and vertices ---------------------------------------------------
    def add_compute_set(self, name: str, layer=None, op=None, phase=None) -> ComputeSet:
        cs = ComputeSet(len(self.compute_sets), name, layer, op, phase)
        self.compute_sets.append(cs)
        return cs

    @property
    def num_vertices(self) -> int:
        return self.vertex_tile.n

    @property
    def num_edges(self) -> int:
        return self.e_vertex.n

    def add_vertex(self, cs: ComputeSet, codelet: str, fields: dict | None = None, *,
                   dtype=None, params=None, tile=None) -> VertexRef:
        """Add one vertex; ``fields`` maps field names to tensors to connect."""
        c = get_codelet(codelet)
        if dtype is None:
            tdt = [t.dtype for n, t in (fields or {}).items()
                   if n in c.field_index and c.field(n).dtype == "T"]
            dtype = tdt[0] if tdt else "fp32"
        dtype = canonical(dtype)
        params = dict(params or {})
        vid = self.vertex_tile.n
        if tile is not None:   # before the graph changes: a bad tile leaves no vertex behind
            self._check_tile(tile, f"vertex {vid} ({codelet} in compute set {cs.name!r})")
        last = self.batches[-1] if self.batches else None
        if (last is not None and last.v1 == vid and last.codelet == codelet and last.cs == cs.id
                and last.dtype == dtype and last.params == params):
            last.v1 += 1
        else:
            self.batches.append(Batch(codelet, cs.id, dtype, params, vid, vid + 1))
        self.vertex_tile.append(-1 if tile is None else tile)
        v = VertexRef(vid)
        for name, t in (fields or {}).items():
            self.connect(v[name], t)
        self._finalized = None
        return v

    def _batch_of(self, vertex: int) -> Batch:
        last = self.batches[-1] if self.batches else None
        if last is not None and last.v0 <= vertex < last.v1:   # connect() right after add_vertex()
            return last
        starts = [b.v0 for b in self.batches]
        return self.batches[int(np.searchsorted(starts, vertex, side="right")) - 1]

    def connect(self, field: FieldRef, tensor: Tensor):
        """Connect a vertex field to a tensor region (one edge per contiguous interval)."""
        b = self._batch_of(field.vertex)
        c = CODELETS[b.codelet]
        try:
            f = c.field(field.field)
        except KeyError as e:
            raise GraphError(f"vertex {field.vertex} ({b.codelet} in compute set "
                             f"{self.compute_sets[b.cs].name!r}): {e.args[0]}") from None
        want = field_dtype(f, b.dtype, b.params)
        if tensor.dtype != want:
            raise GraphError(f"vertex {field.vertex} ({b.codelet} in compute set "
                             f"{self.compute_sets[b.cs].name!r}): field {f.name!r} expects {want} "
                             f"but tensor {tensor.name!r} is {tensor.dtype}")
        if not f.vector and tensor.numel != 1:
            raise GraphError(f"vertex {field.vertex} ({b.codelet}): scalar field {f.name!r} "
                             f"connected to tensor {tensor.name!r} of {tensor.numel} elements")
        s, l = tensor.intervals()
        s, l, _ = intervals.split_at(s, l, self._var_starts.view()[1:])  # never span variables
        k = s.size
        self.e_vertex.extend(np.full(k, field.vertex, np.int32))
        self.e_field.extend(np.full(k, c.field_index[f.name], np.int8))
        self.e_start.extend(s)
        self.e_len.extend(l.astype(np.int32))
        self._finalized = None

    def add_vertices(self, cs: ComputeSet, codelet: str, tiles, fields: dict, *,
                     dtype="fp32", params=None) -> np.ndarray:
        """Add many vertices of one codelet at once (the compiler's bulk path).

        ``tiles``: (n,) tile of each vertex.  ``fields``: field name ->
        (vertex_index, starts, lengths) arrays, one row per edge, where
        vertex_index is 0..n-1 within this call.  Returns the vertex ids.
        """
        c = get_codelet(codelet)
        tiles = np.asarray(tiles, np.int32)
        self._check_tile(tiles, f"{codelet} vertices in compute set {cs.name!r}")
        v0 = self.vertex_tile.n
        n = tiles.size
        self.batches.append(Batch(codelet, cs.id, canonical(dtype), dict(params or {}), v0, v0 + n))
        self.vertex_tile.extend(tiles)
        items = []
        for name, (vi, st, ln) in fields.items():
            fi = c.field_index.get(name)
            if fi is None:
                raise GraphError(f"codelet {codelet} has no field {name!r}")
            items.append((fi, np.asarray(vi), np.asarray(st), np.asarray(ln)))
        if not self._extend_by_vertex(v0, n, items):
            for fi, vi, st, ln in items:
                self.e_vertex.extend((vi + v0).astype(np.int32))
                self.e_field.extend(np.full(vi.size, fi, np.int8))
                self.e_start.extend(np.asarray(st, np.int64))
                self.e_len.extend(np.asarray(ln, np.int32))
        self._finalized = None
        return np.arange(v0, v0 + n)

    def _extend_by_vertex(self, v0, n, items):
        """Append the edges of ``items`` (field, vertex index, starts, lengths) already in
        vertex order, as finalize's stable sort by vertex would leave them (each vertex's
        edges field by field, in the order given), when every field gives every vertex the
        same number of edges in vertex order: then finalize has nothing to sort.  False
        (nothing appended) otherwise."""
        if n == 0:
            return False
        ks = []
        for fi, vi, st, ln in items:
            k = vi.size // n
            # vertex i's edges are rows i of [n, k] (compared by broadcasting: no n * k temporary)
            if (k * n != vi.size or st.shape != vi.shape or ln.shape != vi.shape
                    or (k and not (vi.reshape(n, k) == np.arange(n, dtype=vi.dtype)[:, None]).all())):
                return False
            ks.append(k)
        K = sum(ks)
        E = n * K
        grows = (self.e_vertex, self.e_field, self.e_start, self.e_len)
        for gr in grows:
            gr._reserve(E)
        base = self.e_vertex.n
        self.e_vertex.a[base: base + E].reshape(n, K)[:] = np.arange(v0, v0 + n, dtype=np.int32)[:, None]
        pattern = np.concatenate([np.full(k, fi, np.int8) for (fi, *_), k in zip(items, ks)]) if K else \
            np.zeros(0, np.int8)
        self.e_field.a[base: base + E].reshape(n, K)[:] = pattern
        es = self.e_start.a[base: base + E].reshape(n, K)
        el = self.e_len.a[base: base + E].reshape(n, K)
        a = 0
        for (fi, vi, st, ln), k in zip(items, ks):
            if k:
                es[:, a: a + k] = st.reshape(n, k)
                el[:, a: a + k] = ln.reshape(n, k)
                a += k
        for gr in grows:
            gr.n += E
        return True

    # -- functions and streams ----------------------------------------------------------
    def add_function(self, program, name="function") -> Function:
        f = Function(len(self.functions), name, program)
        self.functions.append(f)
        return f

    def add_host_to_device_fifo(self, name, dtype, numel, buffers=1) -> DataStream:
        return self._add_stream(name, dtype, numel, "h2d", buffers)

    def add_device_to_host_fifo(self, name, dtype, numel, buffers=1) -> DataStream:
        return self._add_stream(name, dtype, numel, "d2h", buffers)

    def _add_stream(self, name, dtype, numel, direction, buffers):
        if name in self.streams:
            raise GraphError(f"stream {name!r} defined twice")
        s = DataStream(name, canonical(dtype), int(numel), direction, int(buffers))
        self.streams[name] = s
        return s

    # -- finalisation -----------------------------------------------------------------------
    SORT_CHUNK = 1 << 23

    def _sort_edges(self):
        """Sort the edge rows by vertex (stable: a field's regions keep their order), in
        place in the graph's own buffers, batch by batch when every batch's edges are
        contiguous (as the bulk API writes them), so the temporaries are one batch's."""
        grows = (self.e_vertex, self.e_field, self.e_start, self.e_len)
        ev = self.e_vertex.view()
        n = ev.size
        if n == 0:
            return
        C = self.SORT_CHUNK
        if all(bool(np.all(ev[a + 1:min(a + C, n - 1) + 1] >= ev[a:min(a + C, n - 1)])) for a in range(0, n - 1, C)):
            del ev                  # no view of the buffers alive: they shrink in place
            self._trim(grows)
            return
        v0s = np.array([b.v0 for b in self.batches], np.int64)
        nv = self.num_vertices
        # batch of every vertex (the batches tile [0, nv) in order): a gather per edge, not a search
        vb = np.repeat(np.arange(len(self.batches), dtype=np.int32), [b.v1 - b.v0 for b in self.batches])
        counts = np.zeros(len(self.batches), np.int64)
        contiguous, last = True, -1
        for a in range(0, n, C):
            evc = ev[a:a + C]
            if vb.size == nv and int(evc.min()) >= 0 and int(evc.max()) < nv:
                bi = vb[evc]
            else:
                bi = np.searchsorted(v0s, evc, side="right") - 1
            if bi[0] < last or np.any(bi[1:] < bi[:-1]):
                contiguous = False
                break
            last = int(bi[-1])
            counts += np.bincount(bi, minlength=len(self.batches))
        if contiguous:
            offs = np.concatenate(([0], np.cumsum(counts)))
            for b in range(len(self.batches)):
                e0, e1 = int(offs[b]), int(offs[b + 1])
                seg = ev[e0:e1]
                if e1 - e0 > 1 and not np.all(seg[1:] >= seg[:-1]):
                    o = np.argsort(seg, kind="stable")
                    for gr in grows:
                        a = gr.a
                        a[e0:e1] = a[e0:e1][o]
        else:
            o = np.argsort(ev, kind="stable")
            for gr in grows:
                gr.a = gr.a[:gr.n][o]
        ev = seg = evc = a = None      # no view of the buffers alive: they shrink in place
        self._trim(grows)

    @staticmethod
    def _trim(grows):
        for gr in grows:     # give back the growth slack (in place, or one array copied at a time)
            if gr.a.size > gr.n + (gr.n >> 4) + 16:
                gr._resize(gr.n)

    def finalize(self, check=True) -> "GraphArrays":
        """Freeze the graph into arrays (CSR edges sorted by vertex) and check it.

        ``check=False``: the arrays without the checks, for a transform that reads the edges
        of a graph it then grows (offload, accumulate: a BERT-Large stage's checks took 1.4 s,
        thrown away with the arrays when vertices were added); the checks run when the graph
        is next finalized with ``check=True`` (``compile_program``), on these arrays if the
        graph has not changed since."""
        from .checks import check_graph
        if self._finalized is not None:
            if check and not getattr(self, "_checked", True):
                check_graph(self, self._finalized)
                self._checked = True
            return self._finalized
        self._sort_edges()
        ev = self.e_vertex.view()
        nv = self.num_vertices
        arrays = GraphArrays(
            vertex_tile=self.vertex_tile.view(),
            vertex_batch=np.repeat(np.arange(len(self.batches), dtype=np.int32),
                                   [b.v1 - b.v0 for b in self.batches]) if self.batches else np.zeros(0, np.int32),
            edge_vertex=ev, edge_field=self.e_field.view(),
            edge_start=self.e_start.view(), edge_len=self.e_len.view(),
            vertex_edge_offsets=_csr_offsets(ev, nv),
        )
        if check:
            check_graph(self, arrays)
        self._finalized = arrays
        self._checked = check
        return arrays


def _csr_offsets(ev, nv) -> np.ndarray:
    """Offsets (``nv + 1``) of each vertex's first edge in ``ev``, the edges' vertices sorted:
    from where the vertex changes, not a bincount (which casts 76 M int32 vertex ids to a
    600 MB int64 temporary: ResNet-50 b20's finalize spent 0.7-1 s of system time faulting it in)."""
    cnt = np.zeros(nv + 1, np.int64)
    if ev.size:
        first = np.flatnonzero(ev[1:] != ev[:-1])
        first += 1
        first = np.concatenate(([0], first))
        cnt[ev[first].astype(np.int64) + 1] = np.diff(np.append(first, ev.size))
    return np.cumsum(cnt)


@dataclass
class GraphArrays:
    """A finalized graph: vertices and CSR edges as flat arrays."""
    vertex_tile: np.ndarray
    vertex_batch: np.ndarray
    edge_vertex: np.ndarray
    edge_field: np.ndarray
    edge_start: np.ndarray
    edge_len: np.ndarray
    vertex_edge_offsets: np.ndarray
    extra: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.vertex_tile, self.vertex_batch, self.edge_vertex,
                                      self.edge_field, self.edge_start, self.edge_len,
                                      self.vertex_edge_offsets))
