"""Functional mode: execute the codelets' numpy semantics on the tiles' data.

The chip's memory is one float array over the graph's global element space
(fp16 values are rounded to half precision when written).  A compute set runs
batch by batch: the fields of all vertices of a batch with equal field sizes
are gathered into 2-D arrays, the codelet's semantics run once, and outputs
are scattered back.  No Python loop per vertex.
"""
from __future__ import annotations

import numpy as np

from compiler import intervals
from compiler.codelets import CODELETS, apply_post


class FunctionalError(RuntimeError):
    pass


def _as_dtype(values, dtype):
    """Values as stored for a tensor of ``dtype``: fp16 ones rounded to half precision."""
    if dtype == "fp16":
        return np.asarray(values, np.float16).astype(np.float32)
    return np.asarray(values, np.float32)


class FunctionalState:
    def __init__(self, exe, inputs=None):
        self.exe = exe
        g = exe.graph
        self.mem = np.zeros(g.num_elements, np.float32)
        for v in g.variables:
            if v.constant is not None:
                self.mem[v.start: v.start + v.size] = _as_dtype(np.asarray(v.constant).ravel(), v.dtype)
        self.inputs = {k: list(np.asarray(x, np.float32).reshape(-1, g.streams[k].numel))
                       if k in g.streams else None for k, x in (inputs or {}).items()}
        for k in self.inputs:
            if k not in g.streams:
                raise FunctionalError(f"input given for unknown stream {k!r} "
                                      f"(streams: {', '.join(g.streams) or 'none'})")
        self.outputs = {}
        self._plans = {}
        self._by_cs = None
        self._fp16 = np.zeros(0, bool)

    # -- host access --------------------------------------------------------------------
    def write(self, tensor, value):
        self.mem[tensor.elements().ravel()] = _as_dtype(np.asarray(value).ravel(), tensor.dtype)

    def read(self, tensor):
        return self.mem[tensor.elements()].copy()

    # -- execution --------------------------------------------------------------------------
    def _batch_plan(self, b):
        """Gather index arrays per field for the vertices of one batch, grouped by sizes."""
        key = id(b)
        if key in self._plans:
            return self._plans[key]
        arr = self.exe.arrays
        c = CODELETS[b.codelet]
        off = arr.vertex_edge_offsets
        e0, e1 = int(off[b.v0]), int(off[b.v1])
        ev = arr.edge_vertex[e0:e1] - b.v0
        ef = arr.edge_field[e0:e1]
        es, el = arr.edge_start[e0:e1], arr.edge_len[e0:e1]
        n = b.v1 - b.v0
        nf = len(c.fields)
        sizes = np.zeros((n, nf), np.int64)
        np.add.at(sizes, (ev, ef), el)
        sig, group = np.unique(sizes, axis=0, return_inverse=True)
        group = group.ravel()
        plans = []
        for gi in range(sig.shape[0]):
            verts = np.flatnonzero(group == gi)
            sel_e = np.isin(ev, verts)
            fields = {}
            for fi, f in enumerate(c.fields):
                m = sel_e & (ef == fi)
                rows = self._shared_rows(f, es[m], el[m], verts.size) if f.reads and not f.writes else None
                if rows is not None:
                    rep_starts, rep_lens, inv = rows
                    idx = intervals.expand(rep_starts, rep_lens).reshape(inv.max() + 1, int(sig[gi, fi]))
                    fields[f.name + "__rows"] = inv
                else:
                    idx = intervals.expand(es[m], el[m]).reshape(verts.size, int(sig[gi, fi]))
                if self.mem.size < 2**31:
                    idx = idx.astype(np.int32)   # half the memory traffic of every gather
                fields[f.name] = idx
            plans.append(fields)
        self._plans[key] = plans
        return plans

    @staticmethod
    def _shared_rows(f, starts, lens, nv):
        """Vertices that read exactly the same regions through a field (a convolution's
        input window read by every output channel group): the distinct region lists,
        and which one each vertex reads.  None when nothing is shared."""
        if nv < 2 or starts.size % nv:
            return None
        k = starts.size // nv
        S = starts.reshape(nv, k)
        L = lens.reshape(nv, k)
        key = np.stack([S[:, 0], S[:, -1], S.sum(axis=1), L.sum(axis=1)], axis=1)
        _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
        inv = inv.ravel()
        if first.size * 2 > nv:
            return None
        if not (np.array_equal(S, S[first][inv]) and np.array_equal(L, L[first][inv])):
            return None
        return S[first].ravel(), L[first].ravel(), inv

    def execute(self, csid):
        g = self.exe.graph
        if self._by_cs is None:
            self._by_cs = {}
            for b in g.batches:
                self._by_cs.setdefault(b.cs, []).append(b)
        for b in self._by_cs.get(csid, ()):
            c = CODELETS[b.codelet]
            for fields in self._batch_plan(b):
                # float32 in, as the chip computes (fp16 values are stored rounded)
                args = {f.name: self.mem[fields[f.name]]
                        for f in c.fields if f.reads or f.direction == "inout" or f.name in ("out",)}
                for f in c.fields:   # fields read identically by several vertices: gathered once
                    inv = fields.get(f.name + "__rows")
                    if inv is not None:
                        if f.name in c.shared:
                            args[f.name + "__rows"] = inv
                        else:
                            args[f.name] = args[f.name][inv]
                try:
                    outs = apply_post(c, dict(c.compute(args, b.params)), b.params)
                except Exception as e:  # a codelet's semantics failed: say which
                    raise FunctionalError(f"codelet {b.codelet} in compute set "
                                          f"{g.compute_sets[b.cs].name!r} failed: {e}") from e
                for name, val in outs.items():
                    idx = fields[name]
                    val = np.asarray(val).reshape(idx.shape)
                    if b.dtype == "fp16":
                        val = val.astype(np.float16)
                    self.mem[idx] = val

    def copy(self, src, dst):
        self.mem[dst.elements().ravel()] = self.mem[src.elements().ravel()]

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
