"""Per-tile memory of a compiled graph: liveness, allocation with reuse, categories.

Categories follow the vendor's memory report (PopVision Graph Analyser):

* ``always_live_variables``: weights, optimizer and other state, gradient accumulators, constants;
  they hold their bytes for the whole program;
* ``not_always_live_variables``: activations, gradients, temporaries, data
  inputs and offloaded variables while they are resident, and the exchange
  temporaries of each compute set (the remote inputs a tile receives for it
  and the outputs it computes for other tiles, live for that one step, as
  Poplar's copies into temporaries are): the per-tile size
  of the region the allocator (:mod:`compiler.allocator`) lays them out in,
  reusing bytes between tensors whose lives do not overlap;
* ``vertex_code`` (machine code of each codelet a tile runs, once per tile),
  ``vertex_state`` (per-vertex state: one pointer + size per connected
  region), ``exchange_code`` (a few words per message a tile sends),
  ``control_code`` (the program's control flow, on every tile) and
  ``stack`` (one stack per worker and supervisor context).

Liveness.  Steps are the program's Execute nodes in program order, function
bodies once per call (:func:`execute_order`); a Copy or host-stream copy
counts at the step that follows it.  A variable's life is made of closed step
intervals: from its first use to its last, split where a copy writes all of it
(a reload, e.g. of an offloaded variable) and, for a variable used only
inside graph-function calls, split per call.  A variable used in a ``Repeat``
body is live for the whole loop unless every use is in the body and the first
one writes it (loop-local).

In place.  An element-wise compute set whose output has exactly the tiles and
bytes of an input whose life ends at that step writes over that input: the two
share one allocation (Poplar's in-place ops).

    >>> from simulator.run import build
    >>> m = build("mnist-mlp", train=True, batch=16).memory
    >>> m["no_reuse_bytes"] >= m["always_live_bytes"] + m["not_always_live_peak_bytes"]
    True
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .allocator import ALIGN, _ranges, allocate
from .codelets import CODELETS
from hardware.dtypes import DTYPE_BYTES, FLOAT_DTYPES as FLOATS
from . import intervals
from .intervals import merge_per_key, unique
from .parallel import parallel_map, threads
from .program import Call, Copy, Execute, Repeat, Sequence, walk

#: variable kinds that hold their bytes for the whole program
ALWAYS_LIVE = ("weight", "state", "constant", "variable", "accumulator")
#: codelets whose output may be written over an input (element-wise, same size)
INPLACE_CODELETS = {"Add", "Sub", "Mul", "Div", "Max", "Copy", "Relu", "Exp", "Sqrt", "Tanh",
                    "Sigmoid", "Gelu", "ReluGrad", "BroadcastOp", "Affine", "ScaledAdd"}
#: CHOSEN: stack bytes per context (6 workers + 1 supervisor); Poplar's default
#: worker stack is a few hundred bytes.  Not published as a single figure.
STACK_BYTES_PER_CONTEXT = 256
CONTROL_BYTES_PER_NODE = 4

CATEGORIES = ("always_live_variables", "not_always_live_variables", "vertex_code", "vertex_state",
              "exchange_code", "control_code", "stack")


def execute_order(program):
    """Compute set ids in the order the program runs them (function bodies once per call);
    -1 for a step of merged copies (a function call's arguments or results)."""
    return [s for s, _, _ in _walk_steps(program)[0]]


def step_names(program, compute_sets) -> list:
    """The name of each step of :func:`execute_order` (the liveness curve's x axis)."""
    return [compute_sets[i].name if i >= 0 else "copy (function arguments / results)"
            for i in execute_order(program)]


def _walk_steps(program):
    """Steps (cs id, call instance, repeat depth), copies with their step, repeat ranges."""
    steps, copies, repeats = [], [], []
    ncall = [0]

    def visit(p, call):
        if isinstance(p, Sequence):
            pending = []
            last_cid = None
            prev = None
            for c in p.children:
                if isinstance(c, Copy):
                    if c.merge:   # merged copies: a step of their own, between compute sets
                        if not (isinstance(prev, Copy) and prev.merge and prev.call_result == c.call_result):
                            steps.append((-1, call, 0))
                        at = len(steps) - 1
                    else:
                        at = len(steps)
                    prev = c
                    if c.call_result and last_cid is not None:   # a result of the call before
                        copies.append([c, at, last_cid])
                        continue
                    pending.append(len(copies))
                    copies.append([c, at, call])
                    continue
                prev = c
                last_cid = None
                if isinstance(c, Call) and call < 0:
                    cid = ncall[0]
                    ncall[0] += 1
                    for k in pending:          # copies feeding a call belong to it
                        copies[k][2] = cid
                    visit(c.function.program, cid)
                    last_cid = cid
                else:
                    visit(c, call)
                pending = []
        elif isinstance(p, Repeat):
            s0 = len(steps)
            c0 = len(copies)
            visit(p.body, call)
            if len(steps) > s0 or len(copies) > c0:
                repeats.append((s0, len(steps) - 1, int(p.count)))
        elif isinstance(p, Call):
            if call < 0:
                cid = ncall[0]
                ncall[0] += 1
                visit(p.function.program, cid)
            else:
                visit(p.function.program, call)
        elif isinstance(p, Execute):
            steps.append((p.compute_set.id, call, 0))
        elif isinstance(p, Copy):
            copies.append([p, len(steps), call])

    visit(program, -1)
    return steps, copies, repeats


# -- per variable bytes on each tile -----------------------------------------------------
def variable_tile_bytes(g):
    """Sparse (var, tile, bytes) of every mapped variable."""
    vs, ts, bs = [], [], []
    for v in g.variables:
        runs = g.tile_map.runs(v.id)
        if runs is None or v.size == 0:
            continue
        ln = g.tile_map.run_lengths(v.id)
        c = np.bincount(runs[1] + 1, weights=ln)[1:].astype(np.int64)   # elements per tile (-1: unmapped)
        u = np.flatnonzero(c)
        c = c[u]
        vs.append(np.full(u.size, v.id, np.int64))
        ts.append(u.astype(np.int64))
        bs.append(c.astype(np.int64) * DTYPE_BYTES[v.dtype])
    if not vs:
        z = np.zeros(0, np.int64)
        return z, z, z
    return np.concatenate(vs), np.concatenate(ts), np.concatenate(bs)


def is_resident(v) -> bool:
    """Always-live (holds bytes all program long): weights, state, constants, unless offloaded."""
    return v.kind in ALWAYS_LIVE and not getattr(v, "offloaded", False)


@dataclass
class Liveness:
    """Lives of the not-always-live allocation items over the program's steps."""
    nsteps: int
    item_of_var: np.ndarray            # var id -> item id (-1: always live / unused)
    item_vars: list                    # item id -> [var ids]
    iv_item: np.ndarray                # intervals
    iv_start: np.ndarray
    iv_end: np.ndarray
    pair_item: np.ndarray              # (item, tile, bytes) placements
    pair_tile: np.ndarray
    pair_bytes: np.ndarray
    num_tiles: int
    inplace: list = field(default_factory=list)   # (input var, output var) pairs merged
    temps: dict = field(default_factory=dict)     # item id -> compute set: its exchange temporaries

    def item_bytes(self) -> np.ndarray:
        return np.bincount(self.pair_item, weights=self.pair_bytes, minlength=len(self.item_vars))

    def curve(self, temps=True) -> np.ndarray:
        """Not-always-live bytes live on the whole chip at each step (``temps=False``: the
        variables only, without the compute sets' exchange temporaries)."""
        ib = self.item_bytes()
        if not temps and self.temps:
            ib[np.array(list(self.temps), np.int64)] = 0
        d = np.zeros(self.nsteps + 1)
        np.add.at(d, self.iv_start, ib[self.iv_item])
        np.add.at(d, self.iv_end + 1, -ib[self.iv_item])
        return np.cumsum(d)[: self.nsteps]

    def tile_curve(self, tile) -> np.ndarray:
        """Not-always-live bytes live on one tile at each step."""
        sel = self.pair_tile == tile
        b = np.zeros(len(self.item_vars))
        b[self.pair_item[sel]] = self.pair_bytes[sel]
        d = np.zeros(self.nsteps + 1)
        np.add.at(d, self.iv_start, b[self.iv_item])
        np.add.at(d, self.iv_end + 1, -b[self.iv_item])
        return np.cumsum(d)[: self.nsteps]

    def tile_peaks(self) -> np.ndarray:
        """Per tile, the most not-always-live bytes live at one step (a lower bound of any allocation)."""
        T, S = self.num_tiles, self.nsteps
        out = np.zeros(T)
        if self.pair_item.size == 0 or S == 0:
            return out
        # pairs x intervals of their item: +bytes at start, -bytes after end, per tile
        o = np.argsort(self.iv_item, kind="stable")
        ii, st, en = self.iv_item[o], self.iv_start[o], self.iv_end[o]
        bounds = np.searchsorted(ii, np.arange(len(self.item_vars) + 1))
        cnt = bounds[self.pair_item + 1] - bounds[self.pair_item]
        d = np.zeros((S + 1) * T)
        # (pair x interval) rows in chunks of about 4 M, so that items with many
        # intervals on many tiles do not need gigabytes at once
        csum = np.cumsum(cnt)
        cuts = np.searchsorted(csum, np.arange(1 << 22, int(csum[-1]) if csum.size else 0, 1 << 22))
        for a, z in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [self.pair_item.size]))):
            if z <= a:
                continue
            pi = np.arange(a, z)
            rep = np.repeat(pi, cnt[a:z])
            k = _ranges(bounds[self.pair_item[a:z]], bounds[self.pair_item[a:z] + 1])
            tiles, b = self.pair_tile[rep], self.pair_bytes[rep].astype(np.float64)
            d += np.bincount(st[k] * T + tiles, weights=b, minlength=(S + 1) * T)
            d -= np.bincount((en[k] + 1) * T + tiles, weights=b, minlength=(S + 1) * T)
        live = np.cumsum(d.reshape(S + 1, T), axis=0)[:S]
        return live.max(axis=0)

    def live_at(self, step) -> np.ndarray:
        """Item ids live at ``step``."""
        return unique(self.iv_item[(self.iv_start <= step) & (self.iv_end >= step)])


#: (compute set, variable, direction) keys up to which :func:`_events` finds the distinct ones
#: in a table of flags (a byte per possible key) rather than by sorting
EVENT_TABLE_MAX = 1 << 27


def _batch_keys(g, arr, b, cuts, span, seen, step_e):
    """Mark in ``seen`` the (compute set, variable, direction) keys of batch ``b``'s edges.
    ``cuts``: its bulk layout's field columns (checks.field_columns), or None.  In the bulk
    layout a column of the [vertices, edges] starts is one field's: when its lowest and
    highest start lie in one variable, every start between them does (variables are
    contiguous in the element space), one key for the column; else a lookup per edge."""
    off = arr.vertex_edge_offsets
    e0, e1 = int(off[b.v0]), int(off[b.v1])
    if e1 == e0:
        return
    c = CODELETS[b.codelet]
    rwf = np.array([int(x.reads) + 2 * int(x.writes) for x in c.fields], np.int64)
    base = b.cs * span
    if cuts is not None:
        n = b.v1 - b.v0
        es = arr.edge_start[e0:e1].reshape(n, int(cuts[-1]))
        for fi in range(len(c.fields)):
            for j in range(int(cuts[fi]), int(cuts[fi + 1])):
                col = es[:, j]
                lo, hi = g.variable_of(np.array([col.min(), col.max()]))
                if lo == hi:
                    seen[base + int(lo) * 4 + int(rwf[fi])] = True
                else:
                    seen[base + g.variable_of(col).astype(np.int64) * 4 + int(rwf[fi])] = True
        return
    for c0 in range(e0, e1, step_e):
        sl = slice(c0, min(c0 + step_e, e1))
        seen[base + g.variable_of(arr.edge_start[sl]).astype(np.int64) * 4 + rwf[arr.edge_field[sl]]] = True


def _events(exe, steps, copies):
    """(var, step, reads, writes, full write, call instance) of every use of every variable."""
    g, arr = exe.graph, exe.arrays
    nsteps = len(steps)
    ev = []
    if arr.edge_start.size and nsteps:
        off = arr.vertex_edge_offsets
        span = len(g.variables) * 4 + 4
        nkeys = (max(b.cs for b in g.batches) + 1) * span if g.batches else 0
        # the distinct keys: marked in a table of every possible key where it is small (ResNet-50
        # b20: 5 M keys; a scatter of the edges' keys, not a sort of them: 1.6 s -> 0.2 s), else
        # sorted out chunk by chunk
        seen = np.zeros(nkeys, bool) if nkeys <= EVENT_TABLE_MAX else None
        keys = []
        step_e = 1 << 23
        if seen is not None:
            cols = arr.extra.get("field_columns")
            if cols is None or len(cols) != len(g.batches):
                cols = [None] * len(g.batches)
            for b, cuts in zip(g.batches, cols):
                _batch_keys(g, arr, b, cuts, span, seen, step_e)
        else:
            # direction of every edge (1 byte each), then (cs, var, direction) keys in chunks of
            # edges so that 100 M edges need no gigabytes of int64 temporaries
            rw = np.zeros(arr.edge_start.size, np.int8)
            for b in g.batches:
                c = CODELETS[b.codelet]
                e0, e1 = int(off[b.v0]), int(off[b.v1])
                f = arr.edge_field[e0:e1]
                rw[e0:e1] = np.array([int(x.reads) + 2 * int(x.writes) for x in c.fields], np.int8)[f]
            vcs = np.repeat(np.array([b.cs for b in g.batches], np.int32), [b.v1 - b.v0 for b in g.batches])
            for c0 in range(0, arr.edge_start.size, step_e):
                sl = slice(c0, c0 + step_e)
                code = g.variable_of(arr.edge_start[sl]).astype(np.int64) * 4 + rw[sl]
                keys.append(unique(vcs[arr.edge_vertex[sl]].astype(np.int64) * span + code))
        key = np.flatnonzero(seen).astype(np.int64) if seen is not None else unique(np.concatenate(keys))
        pcs = key // span
        pcode = key % span
        # one row per (cs, var, direction); several directions of one var are combined below
        step_cs = np.array([s[0] for s in steps], np.int64)
        step_call = np.array([s[1] for s in steps], np.int64)
        o = np.argsort(step_cs, kind="stable")
        sc = step_cs[o]
        lo = np.searchsorted(sc, pcs, side="left")
        hi = np.searchsorted(sc, pcs, side="right")
        cnt = hi - lo
        rows = np.repeat(np.arange(pcs.size), cnt)
        stp = o[_ranges(lo, hi)]
        pv = pcode[rows] // 4
        ev.append(np.stack([pv, stp, (pcode[rows] & 1), (pcode[rows] >> 1) & 1,
                            np.zeros(rows.size, np.int64), step_call[stp]], axis=1))
    rows = []
    last = max(nsteps - 1, 0)
    for c, s, call in copies:
        s = min(s, last)
        src, dst = c.src, c.dst
        for t, w in ((src, False), (dst, True)):
            if not hasattr(t, "elements"):
                continue     # a host stream
            if t.numel == 0:
                continue
            v = g.variable(t)
            full = w and t.numel == v.size
            rows.append((v.id, s, int(not w), int(w), int(full), call))
    if rows:
        ev.append(np.array(rows, np.int64))
    if not ev:
        return np.zeros((0, 6), np.int64)
    e = np.concatenate(ev)
    # combine the rows of one (var, step): reads | writes, full | ...
    k = e[:, 0] * (nsteps + 1) + e[:, 1]
    o = np.lexsort((-e[:, 4], k))
    e, k = e[o], k[o]
    u, first = np.unique(k, return_index=True)
    out = e[first].copy()
    out[:, 2] = np.maximum.reduceat(e[:, 2], first)
    out[:, 3] = np.maximum.reduceat(e[:, 3], first)
    return out


def liveness(exe) -> Liveness:
    """Lives of the not-always-live variables of ``exe`` (see the module docstring)."""
    g = exe.graph
    T = g.num_tiles
    steps, copies, repeats = _walk_steps(exe.program)
    S = len(steps)
    nvar = len(g.variables)
    e = _events(exe, steps, copies)
    resident = np.array([is_resident(v) for v in g.variables], bool) if nvar else np.zeros(0, bool)
    if e.size:
        e = e[~resident[e[:, 0]]]
    var, step, rd, wr, full, call = (e[:, i] for i in range(6)) if e.size else (np.zeros(0, np.int64),) * 6
    o = np.lexsort((step, var))
    var, step, rd, wr, full, call = var[o], step[o], rd[o], wr[o], full[o], call[o]
    n = var.size
    newvar = np.ones(n, bool)
    newvar[1:] = var[1:] != var[:-1]
    # variables used only inside function calls: one life per call
    allcall = np.ones(nvar, bool)
    if n:
        np.logical_and.at(allcall, var, call >= 0)
    brk = newvar.copy()
    if n:
        brk[1:] |= (full[1:] == 1) & ~newvar[1:]
        brk[1:] |= allcall[var[1:]] & (call[1:] != call[:-1])
    heads = np.flatnonzero(brk)
    tails = (np.append(heads[1:], n) - 1)[:heads.size]
    s_var, s_start, s_end = var[heads], step[heads], step[tails]
    s_firstw = wr[heads] == 1
    # Repeat: loop-carried or used outside -> live over the whole loop
    for r0, r1, _cnt in sorted(repeats, key=lambda r: r[1] - r[0]):
        inside = (s_start >= r0) & (s_end <= r1)
        local = inside & s_firstw
        # a var with another life outside this loop, or read first, is carried
        touch = (s_start <= r1) & (s_end >= r0)
        ext = touch & ~local
        s_start = np.where(ext, np.minimum(s_start, r0), s_start)
        s_end = np.where(ext, np.maximum(s_end, r1), s_end)
    # merge overlapping lives of one variable
    if s_var.size:
        first, s_start, s_end = merge_per_key(s_var, s_start, s_end, closed=True)
        s_var = s_var[first]
    # bytes per tile
    pv, pt, pb = variable_tile_bytes(g)
    used = np.zeros(nvar, bool)
    used[s_var] = True
    keep = used[pv] if pv.size else np.zeros(0, bool)
    pv, pt, pb = pv[keep], pt[keep], pb[keep]
    # in place: element-wise compute sets writing over an input whose life ends there
    parent = np.arange(nvar)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    inplace = []
    if n and S:
        first_of = np.full(nvar, -1, np.int64)
        last_of = np.full(nvar, -1, np.int64)
        nlife = np.bincount(s_var, minlength=nvar)
        first_of[s_var] = s_start          # only used for single-life variables
        last_of[s_var] = s_end
        sig = {}
        if pv.size:
            o = np.argsort(pv, kind="stable")
            bnd = np.searchsorted(pv[o], np.arange(nvar + 1))
            pto, pbo = pt[o], pb[o]       # once: a slice of a fresh copy per variable kept every copy alive
            for vid in np.flatnonzero(used & (nlife == 1)).tolist():
                a, b = bnd[vid], bnd[vid + 1]
                if b > a:
                    sig[vid] = (pto[a:b], pbo[a:b])
        ew_cs = {b.cs for b in g.batches if b.codelet in INPLACE_CODELETS}
        non_ew = {b.cs for b in g.batches if b.codelet not in INPLACE_CODELETS}
        ok_cs = ew_cs - non_ew
        by_step = {}
        sel = (nlife[var] == 1)
        for v, s, r, w in zip(var[sel].tolist(), step[sel].tolist(), rd[sel].tolist(), wr[sel].tolist()):
            if steps[s][0] in ok_cs:
                by_step.setdefault(s, ([], []))
                if r and not w and last_of[v] == s:
                    by_step[s][0].append(v)
                if w and not r and first_of[v] == s:
                    by_step[s][1].append(v)
        for s, (ins, outs) in by_step.items():
            free = [i for i in ins if i in sig]
            for ov in outs:
                if ov not in sig:
                    continue
                ot, ob = sig[ov]
                for iv in free:
                    it, ib = sig[iv]
                    if it.size == ot.size and np.array_equal(it, ot) and np.all(ob <= ib):
                        parent[find(ov)] = find(iv)
                        inplace.append((iv, ov))
                        free.remove(iv)
                        break
    root = np.array([find(x) for x in range(nvar)], np.int64) if nvar else np.zeros(0, np.int64)
    roots = unique(root[s_var]) if s_var.size else np.zeros(0, np.int64)
    item_of_var = np.full(nvar, -1, np.int64)
    rid = np.full(nvar, -1, np.int64)
    rid[roots] = np.arange(roots.size)
    item_of_var[used] = rid[root[used]]
    item_vars = [[] for _ in range(roots.size)]
    for v in np.flatnonzero(used).tolist():
        item_vars[item_of_var[v]].append(v)
    # item placements: the larger member's bytes on each tile
    pi = item_of_var[pv]
    key = pi * T + pt
    u, inv = np.unique(key, return_inverse=True)
    mb = np.zeros(u.size, np.int64)
    np.maximum.at(mb, inv, pb)
    # item lives: union of the members' lives, merged
    iv_item = item_of_var[s_var]
    first, st, en = merge_per_key(iv_item, s_start, s_end, closed=True)
    ii = iv_item[first]
    pair_item, pair_tile, pair_bytes = u // T, u % T, mb
    # exchange temporaries: what a tile receives for a compute set (remote inputs) and the
    # outputs it computes for another tile, held for the one step that runs the compute set
    temps = {}
    nitem = len(item_vars)
    if S:
        step_cs = np.array([s[0] for s in steps], np.int64)
        t_items, t_tiles, t_bytes, t_iv, t_st = [], [], [], [], []
        for cs in np.unique(step_cs[step_cs >= 0]).tolist():
            tiles, nbytes = _exchange_temp(exe, cs)
            if tiles.size == 0:
                continue
            it = nitem + len(temps)
            temps[it] = g.compute_sets[cs].name
            t_items.append(np.full(tiles.size, it, np.int64))
            t_tiles.append(tiles)
            t_bytes.append(nbytes)
            at = np.flatnonzero(step_cs == cs)
            t_iv.append(np.full(at.size, it, np.int64))
            t_st.append(at)
        if temps:
            item_vars = item_vars + [[] for _ in temps]
            pair_item = np.concatenate([pair_item, *t_items])
            pair_tile = np.concatenate([pair_tile, *t_tiles])
            pair_bytes = np.concatenate([pair_bytes, *t_bytes])
            tst = np.concatenate(t_st)
            ii = np.concatenate([ii, *t_iv])
            st = np.concatenate([st, tst])
            en = np.concatenate([en, tst])
    return Liveness(max(S, 1), item_of_var, item_vars, ii, st, en, pair_item, pair_tile, pair_bytes, T,
                    inplace, temps)


def _exchange_temp(exe, cs):
    """(tiles, bytes) a compute set holds in exchange temporaries while it runs: remote
    inputs received before it, and outputs computed for other tiles, sent after it."""
    parts = [(p.recv_tiles, p.recv_bytes) for p in (exe.exchange_in.get(cs),) if p is not None]
    parts += [(p.send_tiles, p.send_bytes) for p in (exe.exchange_out.get(cs),) if p is not None]
    parts = [(np.asarray(t, np.int64), np.asarray(b, np.int64)) for t, b in parts if len(t)]
    if not parts:
        z = np.zeros(0, np.int64)
        return z, z
    t = np.concatenate([x[0] for x in parts])
    b = np.concatenate([x[1] for x in parts])
    u, inv = np.unique(t, return_inverse=True)
    return u, np.bincount(inv, weights=b).astype(np.int64)


def memory_report(exe, top=10, *, lowered=None) -> dict:
    """The per-tile memory report of an executable (see the module docstring)."""
    g, arr = exe.graph, exe.arrays
    T = g.num_tiles
    sram = g.target.sram_bytes_per_tile
    pv, pt, pb = variable_tile_bytes(g)
    resident = np.array([is_resident(v) for v in g.variables], bool)
    always = np.bincount(pt[resident[pv]], weights=pb[resident[pv]], minlength=T) if pv.size else np.zeros(T)
    # without reuse every not-always-live variable has its own (aligned) bytes
    nb = np.where(resident[pv], pb, -(-pb // ALIGN) * ALIGN) if pv.size else pb
    no_reuse_tile = np.bincount(pt, weights=nb, minlength=T) if pv.size else np.zeros(T)
    # vertex state (on other threads, meanwhile), liveness and allocation of the rest
    with ThreadPoolExecutor(max_workers=1) as pool:
        state_f = pool.submit(vertex_state, g, arr) if threads() > 1 else None
        live = liveness(exe)
        alloc = best_allocation(live)
        not_always = alloc.peak.astype(np.float64)
        live_peak_tile = live.tile_peaks()
        curve = live.curve()
        # vertex state and code
        state = state_f.result() if state_f is not None else vertex_state(g, arr)
    code = np.zeros(T)
    vb = arr.vertex_batch
    names = list(CODELETS)
    if vb.size:
        codelet_id = np.array([names.index(b.codelet) for b in g.batches], np.int64)
        pair = unique(arr.vertex_tile.astype(np.int64) * 1024 + codelet_id[vb])
        code_bytes = np.array([c.code_bytes for c in CODELETS.values()])
        np.add.at(code, pair // 1024, code_bytes[pair % 1024])
    xcode = np.zeros(T)
    plans = list(exe.exchange_in.values()) + list(exe.exchange_out.values())
    plans += [p for p in exe.copies.values() if hasattr(p, "recv_tiles")]
    for p in plans:
        np.add.at(xcode, p.send_tiles, 8 * p.send_messages)   # a few words per message
    nodes = sum(1 for _ in walk(exe.program))
    control = np.full(T, float(CONTROL_BYTES_PER_NODE * nodes))
    workers = int(getattr(g.target, "workers_per_tile", 6) or 6)
    stack = np.full(T, float(STACK_BYTES_PER_CONTEXT * (workers + 1)))
    by_cat = {"always_live_variables": always, "not_always_live_variables": not_always,
              "vertex_code": code, "vertex_state": state, "exchange_code": xcode,
              "control_code": control, "stack": stack}
    total = sum(by_cat.values())
    peak_tile = int(np.argmax(total))
    oom = np.flatnonzero(total > sram)
    peak_step = int(np.argmax(curve)) if curve.size else 0
    order = execute_order(exe.program)
    # tensors live at the peak step, largest first
    ib = live.item_bytes()
    at_peak = live.live_at(peak_step) if curve.size else np.zeros(0, np.int64)
    at_peak = at_peak[np.argsort(-ib[at_peak], kind="stable")]
    peak_tensors = []
    for it in at_peak[:top].tolist():
        vs = live.item_vars[it]
        if not vs:
            peak_tensors.append({"tensor": f"{live.temps[it]} (exchange temporaries)", "kind": "temporary",
                                 "bytes": int(ib[it])})
            continue
        v = g.variables[vs[0]]
        peak_tensors.append({"tensor": v.name, "kind": v.kind, "bytes": int(ib[it]),
                             **({"in_place_with": [g.variables[x].name for x in vs[1:]]} if len(vs) > 1 else {})})
    offloaded = [v for v in g.variables if getattr(v, "offloaded", False)]
    always_sum = float(always.sum())
    # without reuse each compute set's exchange temporaries would have bytes of their own too
    temp_items = np.array(sorted(live.temps), np.int64)
    no_reuse = float(no_reuse_tile.sum()) + (float(ib[temp_items].sum()) if temp_items.size else 0.0)
    with_reuse = always_sum + float(not_always.sum())

    rep = {
        "fits": bool(oom.size == 0),
        "sram_bytes_per_tile": int(sram),
        "peak_tile_bytes": int(total.max()) if T else 0,
        "peak_tile": peak_tile,
        "total_bytes": int(total.sum()),
        "by_category": {k: int(round(v.sum())) for k, v in by_cat.items()},
        "always_live_bytes": int(always_sum),
        "not_always_live_peak_bytes": int(curve.max()) if curve.size else 0,
        "not_always_live_allocated_bytes": int(not_always.sum()),
        "fragmentation_bytes": int(max(not_always.sum() - live_peak_tile.sum(), 0)),
        "no_reuse_bytes": int(no_reuse),
        "with_reuse_bytes": int(with_reuse),
        "reuse_factor": float(no_reuse / max(with_reuse, 1.0)),
        "in_place_pairs": len(live.inplace),
        "peak_step": peak_step,
        "peak_step_name": step_names(exe.program, g.compute_sets)[peak_step] if order else "",
        "peak_step_tensors": peak_tensors,
        "steps": len(order),
        "oom_tiles": int(oom.size),
        "worst_tiles": worst_tiles(by_cat, total, top),
        "offloaded_variables": len(offloaded),
        "offloaded_bytes": int(sum(v.size * DTYPE_BYTES[v.dtype] for v in offloaded)),
        "per_tile": dict(by_cat) | {"total": total, "not_always_live_lower_bound": live_peak_tile,
                                    "exchange_temporary_peak": _temp_peak(live)},
        "liveness_curve": curve,
        "liveness": live,
        "allocation": alloc,
    }
    return rep


#: Bytes of one region's descriptor in a vertex's field data (Poplar keeps the vector
#: fields' descriptors beside the vertex state): a 32-bit pointer or DeltaN entry (18-bit
#: offset + 14-bit count, PopLibs' conv and reduction assembly) for a region a vertex
#: reads; a SPAN (pointer + 32-bit count, Poplar user guide, vertex vectors) for one it
#: writes.  16-bit scaled pointers (SCALED_PTR64) cannot address Mk2's 624 KiB, so
#: pointers are 32-bit.
READ_REGION_BYTES = 4
WRITE_REGION_BYTES = 8


def vertex_state(g, arr) -> np.ndarray:
    """Per tile, the bytes of vertex state and vertex field data, sized as Poplar sizes them.

    The vertices of this graph are partitions of work (a conv's output row segment, an
    element-wise op's region); Poplar puts all of a tile's partitions of one compute set
    into one supervisor vertex (convolutions, matmuls: ``supervisor`` codelets, a
    worklist entry of ``worklist_bytes`` per partition and kernel row) or into at most one
    vertex per worker (element-wise, reductions).  So, per tile:

    * each Poplar vertex's own fields: ``state_bytes`` of its codelet, once per
      (compute set, codelet) for supervisor codelets, else once per vertex up to the
      tile's worker count;
    * one region descriptor per contiguous region a vertex connects (edges of one
      vertex field that continue each other in memory are one region):
      :data:`READ_REGION_BYTES` for regions it only reads, :data:`WRITE_REGION_BYTES`
      for regions it writes;
    * worklists: ``worklist_bytes x kh`` per partition of a supervisor codelet.

    Sources: docs/memory.md ("Vertex state").
    """
    T = g.num_tiles
    state = np.zeros(T)
    if not g.batches:
        return state
    workers = int(getattr(g.target, "workers_per_tile", 6) or 6)
    # headers and worklists, per (compute set, codelet)
    groups = {}
    for b in g.batches:
        groups.setdefault((b.cs, b.codelet), []).append(b)
    for (_cs, name), bs in groups.items():
        c = CODELETS[name]
        cnt = np.zeros(T, np.int64)
        for b in bs:
            per_tile = np.bincount(arr.vertex_tile[b.v0:b.v1], minlength=T)
            cnt += per_tile
            if c.worklist_bytes:
                state += per_tile * (c.worklist_bytes * int(b.params.get("kh", 1) or 1))
        state += c.state_bytes * ((cnt > 0) if c.supervisor else np.minimum(cnt, workers))
    # region descriptors: per (compute set, codelet, tile, field), the contiguous regions of
    # memory its vertices connect (a Poplar vertex covering several partitions points at
    # each region once; worklists hold the offsets into it)
    if arr.edge_start.size:
        off = arr.vertex_edge_offsets
        runs = _tile_runs(g)
        # the run of each edge's start: a table and a step or two, not a binary search over 2.3 M
        # runs per edge (ResNet-50 b20: vertex state 4.4 s -> 3.5 s of CPU)
        lookup = intervals.Lookup(runs[0], g.num_elements) if runs[0].size else None

        def regions(item):
            (_cs, name), bs = item
            c = CODELETS[name]
            eb = np.array([WRITE_REGION_BYTES if f.writes else READ_REGION_BYTES for f in c.fields], np.int64)
            if all(x.v1 == y.v0 for x, y in zip(bs, bs[1:])):     # one run of edges: slices
                e = slice(int(off[bs[0].v0]), int(off[bs[-1].v1]))
                if e.stop == e.start:
                    return None
            else:
                e = np.concatenate([np.arange(off[b.v0], off[b.v1]) for b in bs])
                if e.size == 0:
                    return None
            t = arr.vertex_tile[arr.edge_vertex[e]].astype(np.int64)
            f = arr.edge_field[e].astype(np.int64)
            st = _tile_address(runs, arr.edge_start[e].astype(np.int64, copy=False), t, g.num_elements,
                               lookup)
            en = st + arr.edge_len[e]
            hi = t * len(c.fields) + f
            # sorted by (tile, field), then start: one stable argsort of the packed pair where it
            # fits an int64 (the order np.lexsort((st, hi)) gives, at a fraction of its time)
            lo_st = int(st.min())
            pb = (int(st.max()) - lo_st + 1).bit_length()
            if int(hi.max()).bit_length() + pb <= 62:
                o = np.argsort(hi << pb | (st - lo_st), kind="stable")
            else:
                o = np.lexsort((st, hi))
            hi, st, en = hi[o], st[o], en[o]
            # running end of the regions so far within each (tile, field)
            new = np.ones(hi.size, bool)
            if hi.size > 1:
                same = hi[1:] == hi[:-1]
                seg = np.cumsum(np.concatenate(([True], ~same)))
                run_end = _segmented_cummax(en, seg)
                new[1:] = ~same | (st[1:] > run_end[:-1])
            return np.bincount(hi[new] // len(c.fields), weights=eb[hi[new] % len(c.fields)], minlength=T)
        # the groups on every core (parallel_map); whole bytes, so the sum is exact in any order
        for r in parallel_map(regions, groups.items()):
            if r is not None:
                state += r
    return state


def worst_tiles(by_cat, total, top=10, extra=None) -> list:
    """The ``top`` tiles with the most bytes, each with its bytes per category, the category
    that dominates it, and ``extra`` ({name: per-tile array}) beside them."""
    extra = extra or {}
    return [{"tile": int(t), "bytes": int(total[t]),
             "dominant": max((k for k in CATEGORIES if k in by_cat), key=lambda k: by_cat[k][t]),
             **{k: int(by_cat[k][t]) for k in CATEGORIES if k in by_cat}, **{k: int(v[t]) for k, v in extra.items()}}
            for t in np.argsort(-total, kind="stable")[:top]]


def _tile_runs(g):
    """(global start, tile, address in the tile's copy) of every mapped run of every variable,
    sorted by start.  Poplar stores the elements of one variable that live on one tile as one
    block of that tile's memory (``Graph::getSortedContiguousRegions`` returns intervals of a
    tensor that are contiguous in memory, several index intervals per region), so two runs
    of a variable on a tile are adjacent there even when other tiles' runs lie between their
    indices: a run's tile address is its variable's start plus the elements of that variable
    in earlier runs on the same tile."""
    parts = [(v.start + r[0], r[1], np.diff(np.append(r[0], v.size)), np.full(r[0].size, v.id, np.int64))
             for v in g.variables if (r := g.tile_map.runs(v.id)) is not None]
    if not parts:
        z = np.zeros(0, np.int64)
        return z, z, z
    gst, gtl, gln, gvid = (np.concatenate(x) for x in zip(*parts))
    o = np.argsort(gst, kind="stable")
    gst, gtl, gln, gvid = gst[o], gtl[o].astype(np.int64), gln[o], gvid[o]
    key = gvid * (int(gtl.max()) + 2) + (gtl + 1)
    k = np.argsort(key, kind="stable")
    ks, ln = key[k], gln[k]
    before = np.cumsum(ln) - ln
    first = np.ones(ks.size, bool)
    first[1:] = ks[1:] != ks[:-1]
    grp = np.cumsum(first) - 1
    loc = np.empty(gst.size, np.int64)
    loc[k] = g._var_starts.view()[gvid[k]].astype(np.int64) + before - before[np.flatnonzero(first)][grp]
    return gst, gtl, loc


def _tile_address(runs, a, tiles, num_elements, lookup=None):
    """Addresses ``a`` as the vertices on ``tiles`` see them: an element on the vertex's own
    tile at its address in that tile's copy of its variable (offset past every global
    address), any other at its global address (exchanged into a buffer of its own)."""
    gst, gtl, loc = runs
    if gst.size == 0 or a.size == 0:
        return a
    r = lookup(a) if lookup is not None else np.searchsorted(gst, a, side="right") - 1
    rc = np.clip(r, 0, None)
    here = (r >= 0) & (gtl[rc] == tiles)
    return np.where(here, num_elements + loc[rc] + (a - gst[rc]), a)


def _temp_peak(live) -> np.ndarray:
    """Per tile, the largest exchange temporary it holds (one compute set's, at one step)."""
    out = np.zeros(live.num_tiles)
    if live.temps:
        sel = np.isin(live.pair_item, np.fromiter(live.temps, np.int64))
        np.maximum.at(out, live.pair_tile[sel], live.pair_bytes[sel])
    return out


def _segmented_cummax(x, seg):
    """Running maximum of ``x`` restarting where ``seg`` (non-decreasing ids) changes."""
    lo = int(x.min())
    x = x.astype(np.int64) - lo
    off = (seg - seg[0]).astype(np.int64) * (int(x.max()) + 1)   # each segment above the last
    return np.maximum.accumulate(x + off) - off + lo


def best_allocation(live):
    """First-fit in two orders (by first step; largest first), keep the better one.

    Better: the smaller highest tile, then the smaller sum over tiles.
    """
    args = (len(live.item_vars), live.iv_item, live.iv_start, live.iv_end,
            live.pair_item, live.pair_tile, live.pair_bytes)
    n = len(live.item_vars)
    if n < 2:
        return allocate(*args, num_tiles=live.num_tiles)
    size = np.bincount(live.pair_item, weights=live.pair_bytes, minlength=n)
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, live.iv_item, live.iv_start)
    # the two orders on two threads: each item's work is numpy over the blocks it conflicts
    # with (ResNet-50 b20: 2.55 s -> 1.74 s)
    a, b = parallel_map(lambda order: allocate(*args, num_tiles=live.num_tiles, order=order),
                        [None, np.lexsort((first, -size))])
    ka = (a.peak.max(), a.peak.sum())
    kb = (b.peak.max(), b.peak.sum())
    return b if kb < ka else a


#: report keys that are arrays / objects, left out of the JSON report
NON_JSON_KEYS = ("per_tile", "liveness_curve", "liveness", "allocation")


def oom_message(mem) -> str | None:
    """The vendor's wording for the worst tile, or None when everything fits."""
    if mem["fits"]:
        return None
    w = mem["worst_tiles"][0]
    lines = [f"Out of memory on tile {w['tile']}: {w['bytes']} bytes used but tiles only have "
             f"{mem['sram_bytes_per_tile']} ({mem['oom_tiles']} tiles over; dominated by {w['dominant']})"]
    for x in mem["worst_tiles"][1:5]:
        if x["bytes"] <= mem["sram_bytes_per_tile"]:
            break
        lines.append(f"  tile {x['tile']}: {x['bytes']} bytes ({x['dominant']} {x[x['dominant']]})")
    for s in mem.get("suggestions", [])[:6]:
        lines.append(f"  try {s['option']}: peak tile about {s['peak_tile_bytes']} bytes"
                     f" ({'fits' if s['fits'] else 'still over'}; {s['method']})")
    return "\n".join(lines)


# -- fast estimates on the op graph, for suggestions --------------------------------------


def opgraph_memory(opg, dtype="fp32", offload=()) -> dict:
    """Always-live bytes and the peak of live activation / gradient bytes over the op order.

    A fast model of the lowered memory (no in-place, no tile imbalance): used,
    calibrated against a real compile, to estimate the effect of an option.
    """
    eb = DTYPE_BYTES.get(dtype, 4)

    def nbytes(t):
        return t.size * (eb if t.dtype in FLOATS else 4)

    ops = opg.ops()
    pos = {n: i for i, n in enumerate(ops)}
    optimizer_only = _optimizer_state(opg)
    always = 0
    moved = set()
    for t in opg.tensors.values():
        if t.inplace_of or t.producer is not None:
            continue
        if t.kind in ("param", "state", "constant"):
            if (t.kind == "param" and "weights" in offload) or (t.name in optimizer_only and "optimizer" in offload):
                moved.add(t.name)
                continue
            always += nbytes(t)
    n = len(ops)
    d = np.zeros(n + 2)
    last = {}
    for i, o in enumerate(ops):
        for t in opg.op(o)["inputs"]:
            last[t] = i
            if t in moved:       # offloaded: resident while the op that reads it runs
                d[i] += nbytes(opg.tensors[t])
                d[i + 1] -= nbytes(opg.tensors[t])
    for t in opg.tensors.values():
        if t.inplace_of:
            continue
        if t.producer is None and t.kind != "input":
            continue
        s = pos[t.producer] if t.producer is not None else 0
        e = n - 1 if t.name in opg.outputs else last.get(t.name, s)
        d[s] += nbytes(t)
        d[e + 1] -= nbytes(t)
    curve = np.cumsum(d)[:n]
    pk = int(np.argmax(curve)) if n else 0
    return {"always": float(always), "peak": float(curve.max()) if n else 0.0,
            "peak_op": ops[pk] if n else None, "ops": n}


def _optimizer_state(opg) -> set:
    """State tensors read only by optimizer ops (momentum, Adam moments)."""
    readers = {}
    for o in opg.ops():
        d = opg.op(o)
        for t in d["inputs"]:
            readers.setdefault(t, set()).add(d["family"])
    return {t.name for t in opg.tensors.values()
            if t.kind == "state" and t.inplace_of is None and readers.get(t.name) == {"optimizer"}}


def estimate_tiles(mem, *, r_always=1.0, r_live=1.0, r_temp=1.0, r_state=1.0, r_all=1.0) -> np.ndarray:
    """Per-tile totals with the categories scaled (the calibrated fast estimate).

    ``r_always`` scales the always-live variables; the not-always-live region is split
    into the tile's largest exchange temporary, scaled by ``r_temp`` (data: batch x
    dtype), and the rest (live variables), scaled by ``r_live``; ``r_state`` scales
    vertex state and exchange code (the number of ops), ``r_all`` all of these (the tiles
    available); code, control and stack stay.
    """
    p = mem["per_tile"]
    temp = np.minimum(p.get("exchange_temporary_peak", 0.0), p["not_always_live_variables"])
    live = p["not_always_live_variables"] - temp
    return r_all * (p["always_live_variables"] * r_always + live * r_live + temp * r_temp
                    + (p["vertex_state"] + p["exchange_code"]) * r_state) \
        + p["vertex_code"] + p["control_code"] + p["stack"]
