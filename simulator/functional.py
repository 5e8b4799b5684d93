"""Functional mode: execute the codelets' numpy semantics on the tiles' data.

The chip's memory is one float array over the graph's global element space
(fp16 values are rounded to half precision when written).  A compute set runs
batch by batch: the fields of all vertices of a batch with equal field sizes
are gathered into 2-D arrays, the codelet's semantics run once, and outputs
are scattered back.  No Python loop per vertex.

The gather plans (index arrays per batch and field) depend only on the graph,
so they are built once per executable and kept with it
(``exe.functional_cache``): a second run of the same executable starts
computing at once.
"""
from __future__ import annotations

import numpy as np

from compiler import intervals
from compiler.checks import batch_fields, field_columns, field_size_matrix
from compiler.codelets import CODELETS, apply_post
from compiler.exchange import StreamCopy
from compiler.program import Call, Copy, Execute, Repeat, Sequence, Sync


class FunctionalError(RuntimeError):
    pass


class _SingleThreadedBlas:
    """Run numpy's BLAS on one thread inside the block (threadpoolctl).

    The semantics make many medium-sized matrix products; BLAS worker threads
    gain little on them and, when the machine's cores are busy with other work,
    spin-wait for each other and make every product several times slower.
    """
    _controller = None

    def __enter__(self):
        if _SingleThreadedBlas._controller is None:
            from threadpoolctl import ThreadpoolController
            _SingleThreadedBlas._controller = ThreadpoolController()
        self._limit = _SingleThreadedBlas._controller.limit(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc):
        self._limit.restore_original_limits()
        return False


def _as_dtype(values, dtype):
    """Values as stored for a tensor of ``dtype``: fp16 ones rounded to half precision."""
    if dtype == "fp16":
        return np.asarray(values, np.float16).astype(np.float32)
    return np.asarray(values, np.float32)


def _memory_region(tensor):
    """A tensor's elements in memory: a slice where they are one contiguous range, else
    their index array (flat)."""
    st, ln = tensor.intervals()
    if len(st) == 1 and int(ln[0]) > 0:
        return slice(int(st[0]), int(st[0]) + int(ln[0]))
    return tensor.elements().ravel()


class _Span:
    """A field's elements when they are one contiguous range of memory, row after row:
    read as a view, written as one block copy."""
    __slots__ = ("sl", "shape")

    def __init__(self, start, rows, size):
        self.sl = slice(start, start + rows * size)
        self.shape = (rows, size)


class _Rows:
    """A field's elements as regions of one length ``L`` each: gathered (or, for an output,
    written) as rows of a sliding-window view of memory, with one index per region (not
    per element)."""
    __slots__ = ("starts", "L", "shape")

    def __init__(self, starts, L, rows, size):
        self.starts, self.L, self.shape = starts, L, (rows, size)


class _Grid:
    """A field's elements as regions of one length ``L`` each whose starts lie on a grid
    ``base + step * i`` with ``step >= L`` (no two overlap): rows of a strided view of
    memory, read and written with one index per region (not per element)."""
    __slots__ = ("base", "step", "count", "rows", "L", "shape")

    def __init__(self, base, step, rows, L, nrows, size):
        self.base, self.step, self.L = base, step, L
        self.rows = rows
        self.count = int(rows.max()) + 1
        self.shape = (nrows, size)

    def view(self, mem):
        return np.lib.stride_tricks.as_strided(mem[self.base:], shape=(self.count, self.L),
                                               strides=(self.step * mem.itemsize, mem.itemsize))


class _Strided:
    """A read-only field whose ``k`` regions per vertex, all of length ``L``, start at
    ``base + v * vstep + j * kstep`` (vertex ``v``, region ``j``): a strided view of memory
    [vertices, k, L], no index at all (a reduction's partials: one row per partial)."""
    __slots__ = ("base", "dims", "steps", "shape")

    def __init__(self, base, vstep, kstep, nv, k, L, size):
        self.base, self.dims, self.steps = base, (nv, k, L), (vstep, kstep, 1)
        self.shape = (nv, size)

    def view(self, mem):
        """[vertices, k, L] (read only: rows may overlap)."""
        v = np.lib.stride_tricks.as_strided(mem[self.base:], shape=self.dims,
                                            strides=tuple(s * mem.itemsize for s in self.steps))
        v.flags.writeable = False
        return v


ROWS_MIN_LEN = 4     # regions at least this long are gathered as rows


def _index(starts, lens, rows, size, itype, write=False, k=None):
    """What a field's regions (in order, ``rows`` x ``size`` elements; ``k`` per row when
    every row has as many) gather: a :class:`_Span` when they follow each other in memory,
    a :class:`_Strided` view when they are read only, all of one length and evenly spaced
    along both vertices and each vertex's regions, a :class:`_Grid` when they are written
    and all of one length on a grid, :class:`_Rows` when they are all of one length
    otherwise (written through a writable sliding-window view: a compute set's written
    regions never overlap), else an index array."""
    starts = np.asarray(starts, np.int64)
    lens = np.asarray(lens, np.int64)
    if starts.size and np.array_equal(starts[1:], starts[:-1] + lens[:-1]):
        return _Span(int(starts[0]), rows, size)
    if not write and k and rows > 1 and starts.size == rows * k and np.all(lens == lens[0]):
        S = starts.reshape(rows, k)
        vstep = int(S[1, 0] - S[0, 0])
        kstep = int(S[0, 1] - S[0, 0]) if k > 1 else 0
        if vstep >= 0 and kstep >= 0 and np.array_equal(
                S, S[0, 0] + vstep * np.arange(rows)[:, None] + kstep * np.arange(k)):
            return _Strided(int(S[0, 0]), vstep, kstep, rows, k, int(lens[0]), size)
    if starts.size and int(lens[0]) >= ROWS_MIN_LEN and np.all(lens == lens[0]):
        cs, L = _coalesce(starts, int(lens[0]))
        if not write:
            return _Rows(cs.astype(itype), L, rows, size)
        base = int(cs.min())
        step = int(np.gcd.reduce(cs - base))
        if step >= L:
            return _Grid(base, step, ((cs - base) // step).astype(itype), L, rows, size)
        # rows of a writable sliding-window view: the written regions never overlap (no two
        # edges of a compute set write the same element: compiler/checks.py)
        return _Rows(cs.astype(itype), L, rows, size)
    return intervals.expand(starts, lens, dtype=itype).reshape(rows, size)


def _coalesce(starts, L):
    """Regions of length ``L`` at ``starts`` (in order) as fewer, longer ones: where every run
    of regions that follow each other in memory is a multiple of ``g`` regions long, ``g``
    consecutive regions are one region of ``g * L`` (one index per ``g`` regions: a gather or
    scatter by rows pays per row)."""
    brk = np.flatnonzero(starts[1:] != starts[:-1] + L) + 1
    if brk.size + 1 == starts.size:
        return starts, L
    runs = np.diff(brk, prepend=0, append=starts.size)
    g = int(np.gcd.reduce(runs))
    if g <= 1:
        return starts, L
    return starts[::g], L * g


def _gather(mem, idx, windows):
    if isinstance(idx, _Span):
        v = mem[idx.sl].reshape(idx.shape)
        v.flags.writeable = False     # a view of the tiles' memory: semantics must not write it
        return v
    if isinstance(idx, _Rows):
        w = windows.get(idx.L)
        if w is None:
            w = windows[idx.L] = np.lib.stride_tricks.sliding_window_view(mem, idx.L)
        return w[idx.starts].reshape(idx.shape)
    if isinstance(idx, _Grid):
        return idx.view(mem)[idx.rows].reshape(idx.shape)
    if isinstance(idx, _Strided):
        return idx.view(mem).reshape(idx.shape)    # a view where the steps allow, else one strided copy
    return mem[idx]


# random odd multipliers: a row's hash is a wrapping dot product with them
_HASH = np.random.default_rng(12345).integers(1, 2**62, size=(2, 4096), dtype=np.int64) | 1


def _distinct_rows(S, L=None):
    """Rows (vertices) of region lists ``S``/``L`` [n, k] that are identical:
    (index of each distinct row's first vertex, which distinct row each vertex reads),
    distinct rows in order of first appearance.  None if ``k`` is too large."""
    n, k = S.shape
    if L is not None and n > 1 and k:
        hit = _distinct_by_first(S, L)
        if hit is not None:
            return hit
    if k > _HASH.shape[1]:
        if L is not None:
            return None
        _, first, inv = np.unique(S, axis=0, return_index=True, return_inverse=True)
        return first, inv.ravel()
    # wrapping int64 dot products (a matrix-vector product: a third of the time of a
    # product then a sum, the same hash, as the wrapping sum does not depend on the order)
    h = S @ _HASH[0, :k]
    if L is not None:
        h += L @ _HASH[1, :k]
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.ravel()
    # hashes can collide: check exactly
    if not (np.array_equal(S, S[first][inv]) and (L is None or np.array_equal(L, L[first][inv]))):
        if L is not None:
            return None
        _, first, inv = np.unique(S, axis=0, return_index=True, return_inverse=True)
        inv = inv.ravel()
    if first.size > 1 and np.any(first[1:] < first[:-1]):
        perm = np.argsort(first)
        rank = np.empty_like(perm)
        rank[perm] = np.arange(perm.size)
        first, inv = first[perm], rank[inv]
    return first, inv


def _distinct_by_first(S, L):
    """:func:`_distinct_rows` without a sort, where rows that start at the same element are
    the same row (checked exactly) and the first starts span a range of at most a few times
    the rows: each row's first vertex from a table over that range.  None otherwise."""
    n = S.shape[0]
    s0 = S[:, 0]
    lo = int(s0.min())
    key = s0 - lo
    span = int(key.max()) + 1
    if span > 8 * n + 4096:
        q = int(np.gcd.reduce(key))      # starts on a grid: one table entry per grid point
        if q <= 1 or span // q > 8 * n + 4096:
            return None
        key = key // q
        span = span // q + 1
    table = np.full(span, n, np.int64)
    np.minimum.at(table, key, np.arange(n, dtype=np.int64))
    firstof = table[key]         # the first vertex whose rows start where this one's do
    if S.shape[1] > 1 and not np.array_equal(S, S[firstof]):     # one region per row: the key itself
        return None
    if int(L.min()) != int(L.max()) and not np.array_equal(L, L[firstof]):    # equal lengths: nothing to compare
        return None
    isfirst = firstof == np.arange(n)
    first = np.flatnonzero(isfirst)          # in order of first appearance
    rank = np.cumsum(isfirst) - 1
    return first, rank[firstof]


class _Args(dict):
    """A vertex batch's fields, gathered from memory when the semantics first use them
    (an in-out field only read under some parameters costs nothing otherwise)."""
    __slots__ = ("mem", "idx", "rows", "windows", "dests", "given")

    def dest(self, name):
        """Where output ``name`` goes, as a writable [vertices, elements] view of memory,
        when it is one contiguous range that no other field of the batch reads (so writing
        it early changes no input), in a float32 batch: semantics that do not read ``name``
        itself may compute into it and return it (then it is not copied again).  None
        otherwise."""
        sl = self.dests.get(name) if self.dests else None
        if sl is None:
            return None
        v = self.given[name] = self.mem[sl.sl].reshape(sl.shape)
        return v

    def regions(self, name):
        """Read-only field ``name`` as a [vertices, regions, region length] view of memory
        when its regions are evenly spaced (:class:`_Strided`), else None: semantics that
        combine a vertex's regions (a reduction's partials) read them in place, uncopied."""
        idx = self.idx.get(name)
        if not isinstance(idx, _Strided) or name in self.rows:
            return None
        return idx.view(self.mem)

    def __missing__(self, name):
        idx = self.idx.get(name)
        if idx is None:
            raise KeyError(name)
        val = _gather(self.mem, idx, self.windows)
        inv = self.rows.get(name)
        if inv is not None:
            val = val[inv]
        self[name] = val
        return val

    def get(self, name, default=None):
        return self[name] if name in self or name in self.idx else default

    def __contains__(self, name):
        return dict.__contains__(self, name) or name in self.idx


class _Group:
    """Vertices of one batch with equal field sizes: what to gather, compute and scatter."""
    __slots__ = ("gather", "rows", "shared", "outs", "dests")

    def __init__(self):
        self.gather = {}     # field -> index array [rows, elements]
        self.rows = {}       # field -> which gathered row each vertex reads (expanded when gathered)
        self.shared = {}     # field -> which row each vertex reads: given to the semantics as f"{f}__rows"
        self.outs = {}       # field -> index array [vertices, elements]
        self.dests = {}      # write-only field -> its _Span, when no field of the group reads there


def _extent(idx):
    """[first, last + 1) of the memory an index reads or writes."""
    if isinstance(idx, _Span):
        return idx.sl.start, idx.sl.stop
    if isinstance(idx, _Rows):
        return int(idx.starts.min()), int(idx.starts.max()) + idx.L
    if isinstance(idx, _Grid):
        return idx.base, idx.base + (idx.count - 1) * idx.step + idx.L
    if isinstance(idx, _Strided):
        return idx.base, idx.base + sum((n - 1) * s for n, s in zip(idx.dims, idx.steps)) + 1
    return (int(idx.min()), int(idx.max()) + 1) if idx.size else (0, 0)


class FunctionalState:
    def __init__(self, exe, inputs=None, memory=True):
        """``memory``: True, a new memory (:meth:`new_memory`); an array :meth:`new_memory` made
        for this graph, used as it is (values written into it since, e.g. weights, stay); False,
        none (nothing can run), for building the gather plans alone (:meth:`prepare`), where
        ``exe`` needs only ``graph``, ``arrays`` and ``functional_cache``."""
        self.exe = exe
        g = exe.graph
        cache = getattr(exe, "functional_cache", None)
        if cache is None:
            cache = {}
            try:
                exe.functional_cache = cache
            except AttributeError:
                pass
        self._cache = cache
        if memory is True:
            self.mem = self.new_memory(g)
        elif memory is False or memory is None:
            self.mem = None
        else:
            if memory.shape != (g.num_elements,) or memory.dtype != np.float32:
                raise FunctionalError(f"memory of shape {memory.shape} and dtype {memory.dtype}: the graph "
                                      f"has {g.num_elements} float32 elements")
            self.mem = memory
        self._itype = np.int32 if g.num_elements < 2**31 else np.int64
        self._blas_limited = False     # inside run_program's _SingleThreadedBlas
        self._windows = {}      # region length -> sliding-window view of mem
        self._wwindows = {}     # the same, writable (for writes of disjoint regions)
        self.inputs = {k: list(np.asarray(x, np.float32).reshape(-1, g.streams[k].numel))
                       if k in g.streams else None for k, x in (inputs or {}).items()}
        for k in self.inputs:
            if k not in g.streams:
                raise FunctionalError(f"input given for unknown stream {k!r} "
                                      f"(streams: {', '.join(g.streams) or 'none'})")
        self.outputs = {}
        self._plans = cache.setdefault("plans", {})
        self._copies = cache.setdefault("copies", {})
        self._by_cs = cache.get("by_cs")

    @staticmethod
    def new_memory(graph, touch=False):
        """The tiles' memory before a run: zeros, and every constant's value.  ``touch``: every
        page written now (the system otherwise gives a new array's pages, and zeroes them, at
        their first write, in the middle of the run)."""
        mem = np.zeros(graph.num_elements, np.float32)
        if touch:
            mem[::1024] = 0
        for v in graph.variables:
            if v.constant is not None:
                mem[v.start: v.start + v.size] = _as_dtype(np.asarray(v.constant).ravel(), v.dtype)
        return mem

    # -- host access --------------------------------------------------------------------
    def write(self, tensor, value):
        self.mem[_memory_region(tensor)] = _as_dtype(np.asarray(value).ravel(), tensor.dtype)

    def view(self, tensor):
        """``tensor``'s elements in memory as a writable flat view where they are one
        contiguous range, else None."""
        region = _memory_region(tensor)
        return self.mem[region] if isinstance(region, slice) else None

    def read(self, tensor):
        return self.mem[tensor.elements()].copy()

    # -- execution --------------------------------------------------------------------------
    def prepare(self):
        """Build every batch's gather plan now (they are otherwise built at first use)."""
        for b in self.exe.graph.batches:
            self._batch_plan(b)

    def _batch_plan(self, b):
        """Gather index arrays per field for the vertices of one batch, grouped by sizes."""
        key = (b.v0, b.v1, b.cs)
        plans = self._plans.get(key)
        if plans is None:
            plans = self._plans[key] = self._build_plan(b)
        return plans

    def _columns(self, b, nf):
        """checks.field_columns of batch ``b``: as the graph's checks found it at finalize
        (``arrays.extra["field_columns"]``), else found here."""
        arr = self.exe.arrays
        cols = arr.extra.get("field_columns")
        batches = self.exe.graph.batches
        if cols is not None and len(cols) == len(batches):
            where = self._cache.get("batch_index")
            if where is None:
                where = self._cache["batch_index"] = {id(x): i for i, x in enumerate(batches)}
            i = where.get(id(b))
            if i is not None:
                return cols[i]
        return field_columns(arr, b, nf)

    def _build_plan(self, b):
        arr = self.exe.arrays
        c = CODELETS[b.codelet]
        off = arr.vertex_edge_offsets
        e0, e1 = int(off[b.v0]), int(off[b.v1])
        n = b.v1 - b.v0
        nf = len(c.fields)
        if n == 0:
            return []
        es, el = arr.edge_start[e0:e1], arr.edge_len[e0:e1].astype(np.int64)
        if "field_columns" in arr.extra:    # checked: the checks' columns
            cuts = self._columns(b, nf)
            sizes, counts = field_size_matrix(arr, b, nf, cuts)     # elements / edges per vertex and field
        else:       # before the checks: computed once, for them too (checks.batch_fields)
            cuts, sizes, counts = batch_fields(arr, b, nf)
        if np.all(sizes == sizes[0]):
            sig, group = sizes[:1], np.zeros(n, np.int64)
        else:
            first, group = _distinct_rows(sizes, None)
            sig = sizes[first]
        ng = sig.shape[0]
        if cuts is None:
            # edges ordered by (group, field), each vertex's edges in their order (a radix sort
            # where the keys are small)
            ef = arr.edge_field[e0:e1].astype(np.int64)
            ekey = ef if ng == 1 else group[arr.edge_vertex[e0:e1].astype(np.int64) - b.v0] * nf + ef
            if ng * nf < 2**15:
                ekey = ekey.astype(np.int16)
            o = np.argsort(ekey, kind="stable")
            bounds = np.searchsorted(ekey[o], np.arange(ng * nf + 1))
        else:
            # every vertex's edges are the same fields' in the same order: a field's edges are
            # columns [cuts[f], cuts[f + 1]) of the [vertices, edges] rows, no sort
            K = int(cuts[-1])
            es2, el2 = es.reshape(n, K), el.reshape(n, K)
        itype = self._itype
        plans = []
        for gi in range(ng):
            gverts = slice(None) if ng == 1 else np.flatnonzero(group == gi)
            nv = n if ng == 1 else gverts.size
            grp = _Group()
            for fi, f in enumerate(c.fields):
                if cuts is None:
                    sel = o[bounds[gi * nf + fi]: bounds[gi * nf + fi + 1]]
                    s, ln = es[sel], el[sel]
                else:
                    s = es2[gverts, cuts[fi]: cuts[fi + 1]].reshape(-1)
                    ln = el2[gverts, cuts[fi]: cuts[fi + 1]].reshape(-1)
                    sel = s
                size = int(sig[gi, fi])
                dist = None
                if f.reads and not f.writes and nv > 1 and sel.size % nv == 0:
                    k = sel.size // nv
                    s0 = s[::k]
                    if np.all(s0[1:] > s0[:-1]) and f.name not in c.shared:
                        pass    # every vertex starts further on: no two read the same regions
                    elif np.all(counts[gverts, fi] == k):
                        dist = _distinct_rows(s.reshape(nv, k).astype(np.int64, copy=False), ln.reshape(nv, k))
                        # sharing pays when rows repeat; the semantics that accept shared rows always want them
                        if dist is not None and dist[0].size * 2 > nv and f.name not in c.shared:
                            dist = None
                if dist is not None:
                    first, inv = dist
                    k = sel.size // nv
                    S = s.reshape(nv, k)[first].ravel()
                    Ls = ln.reshape(nv, k)[first].ravel()
                    grp.gather[f.name] = _index(S, Ls, first.size, size, itype, k=k)
                    if f.name in c.shared:
                        grp.shared[f.name + "__rows"] = inv
                    else:
                        grp.rows[f.name] = inv
                    continue
                idx = _index(s, ln, nv, size, itype, write=f.writes,
                             k=sel.size // nv if nv and sel.size % nv == 0 else None)
                if f.reads or f.name == "out":
                    grp.gather[f.name] = idx
                if f.writes:
                    grp.outs[f.name] = idx
            if b.dtype != "fp16":
                for name, idx in grp.outs.items():
                    if isinstance(idx, _Span):
                        a, z = idx.sl.start, idx.sl.stop
                        if all(e[1] <= a or e[0] >= z for e in map(_extent, (i for n, i in grp.gather.items()
                                                                              if n != name))):
                            grp.dests[name] = idx
            plans.append(grp)
        return plans

    def execute(self, csid):
        g = self.exe.graph
        if self._by_cs is None:
            by_cs = {}
            for b in g.batches:
                by_cs.setdefault(b.cs, []).append(b)
            self._by_cs = self._cache["by_cs"] = by_cs
        batches = self._by_cs.get(csid, ())
        if batches and self._blas_limited:
            self._execute(batches)
        elif batches:
            with _SingleThreadedBlas():
                self._execute(batches)

    def _execute(self, batches):
        g = self.exe.graph
        mem = self.mem
        for b in batches:
            c = CODELETS[b.codelet]
            for grp in self._batch_plan(b):
                # float32 in, as the chip computes (fp16 values are stored rounded)
                args = _Args(grp.shared)
                args.mem, args.idx, args.rows, args.windows = mem, grp.gather, grp.rows, self._windows
                args.dests, args.given = grp.dests, {}
                try:
                    outs = apply_post(c, dict(c.compute(args, b.params)), b.params)
                except Exception as e:  # a codelet's semantics failed: say which
                    raise FunctionalError(f"codelet {b.codelet} in compute set "
                                          f"{g.compute_sets[b.cs].name!r} failed: {e}") from e
                for name, val in outs.items():
                    if val is args.given.get(name):    # computed in place (_Args.dest)
                        continue
                    idx = grp.outs[name]
                    val = np.asarray(val).reshape(idx.shape)
                    if b.dtype == "fp16":
                        val = val.astype(np.float16)
                    elif np.may_share_memory(val, mem):   # an input returned as it is
                        val = val.copy()
                    if isinstance(idx, _Span):
                        mem[idx.sl] = val.reshape(-1)
                    elif isinstance(idx, _Grid):     # whole rows: far faster than element by element
                        idx.view(mem)[idx.rows] = np.ascontiguousarray(val).reshape(-1, idx.L)
                    elif isinstance(idx, _Rows):     # whole rows, at any starts (disjoint regions)
                        w = self._wwindows.get(idx.L)
                        if w is None:
                            w = self._wwindows[idx.L] = np.lib.stride_tricks.sliding_window_view(
                                mem, idx.L, writeable=True)
                        w[idx.starts] = np.ascontiguousarray(val).reshape(-1, idx.L)
                    else:
                        mem[idx] = val

    def run_program(self, program=None):
        """Run ``program`` (default: the executable's) for its values alone: its compute sets,
        copies and host streams in program order, as :class:`~simulator.engine.Engine` runs
        them, without the timing (no exchange plans, no SimPy events)."""
        if not self._blas_limited:      # once for the whole program, not per compute set
            self._blas_limited = True
            try:
                with _SingleThreadedBlas():
                    return self.run_program(program)
            finally:
                self._blas_limited = False
        p = self.exe.program if program is None else program
        if isinstance(p, Sequence):
            for c in p.children:
                self.run_program(c)
        elif isinstance(p, Repeat):
            for _ in range(int(p.count)):
                self.run_program(p.body)
        elif isinstance(p, Call):
            self.run_program(p.function.program)
        elif isinstance(p, Execute):
            self.execute(p.compute_set.id)
        elif isinstance(p, Copy):
            plan = self.exe.copies[id(p)]
            if isinstance(plan, StreamCopy):
                self.stream_copy(plan)
            else:
                self.copy(p.src, p.dst)
        elif not isinstance(p, Sync):
            raise TypeError(f"unknown program node {p!r}")

    def _copy_plan(self, src, dst):
        key = (id(src), id(dst))
        hit = self._copies.get(key)
        if hit is None or hit[0] is not src or hit[1] is not dst:
            hit = (src, dst, _memory_region(src), _memory_region(dst))
            self._copies[key] = hit
        return hit[2], hit[3]

    def copy(self, src, dst):
        s, d = self._copy_plan(src, dst)
        self.mem[d] = self.mem[s]

    def stream_copy(self, plan):
        name = plan.stream.name
        if plan.direction == "h2d":
            q = self.inputs.get(name)
            if not q:
                raise FunctionalError(f"stream {name!r}: the program reads more data than was given "
                                      f"(pass inputs={{{name!r}: [...]}})")
            self.mem[plan.tensor.elements().ravel()] = _as_dtype(q.pop(0), plan.tensor.dtype)
        else:
            self.outputs.setdefault(name, []).append(self.read(plan.tensor).reshape(-1))
