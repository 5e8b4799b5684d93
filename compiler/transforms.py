"""Program transforms on a lowered network (before ``compile_program``).

``offload(low, what)``
    Keep optimizer state (``"optimizer"``) and / or weights (``"weights"``) in
    the streaming memory beside the chip.  Before each run of consecutive
    program steps that use an offloaded variable, a host-to-device stream
    Copy loads it; after a run that writes it, a device-to-host Copy stores it
    back.  The streams are marked ``remote = True`` (streaming memory, not the
    host: the pipeline's engine times them at ``streaming_memory_bytes_per_s``)
    and the variables ``offloaded = True``, so memory planning counts them as
    resident only between their load and their last use.

``accumulate(low, n)``
    Gradient accumulation: ``Repeat(n, [inputs, forward, loss, backward])``
    then one weight update.  Each weight gradient gets an accumulator (same
    shape and tile mapping) that a ``ScaledAdd`` compute set adds it to right
    after the step that produces it; the update reads the accumulator.  The accumulators
    (kind ``accumulator``) are always live; the activations and the per-micro-batch
    gradients live inside one iteration.

Both expect the flat program the lowering makes for training graphs (no
graph-function calls); lower with ``use_functions=False`` for inference.
"""
from __future__ import annotations

import numpy as np

from hardware.dtypes import DTYPE_BYTES

from .checks import field_columns
from .codelets import CODELETS
from .intervals import unique
from .graph import GraphError
from .program import Call, Copy, Execute, Repeat, Sequence
from .tensor import Tensor

OFFLOAD_KINDS = ("optimizer", "weights")


def _whole(graph, var) -> Tensor:
    return Tensor(graph, var.dtype, var.shape, start=var.start, name=var.name)


def _uses(graph, chunk=1 << 22):
    """{cs id: {var id: writes?}} from the graph's edges, a vertex batch at a time (cut into
    chunks of ``chunk`` edges): a BERT-Large stage has hundreds of millions of edges, and arrays
    over all of them at once took gigabytes.  Kept with the graph until it gains vertices,
    edges or variables (offload and accumulate each ask, 1.7 s a time on a BERT-Large stage)."""
    key = (graph.num_vertices, graph.num_edges, len(graph.variables), len(graph.batches))
    hit = getattr(graph, "_uses_cache", None)
    if hit is not None and hit[0] == key:
        return {cs: dict(d) for cs, d in hit[1].items()}
    out = _uses_of(graph, chunk)
    graph._uses_cache = (key, out)
    return {cs: dict(d) for cs, d in out.items()}


def _uses_of(graph, chunk):
    arr = graph.finalize(check=False)   # checked when compiled (Graph.finalize)
    out = {}
    if not arr.edge_start.size:
        return out
    off = arr.vertex_edge_offsets
    for b in graph.batches:
        c = CODELETS[b.codelet]
        wf = np.array([x.writes for x in c.fields])
        e0, e1 = int(off[b.v0]), int(off[b.v1])
        d = out.setdefault(b.cs, {})
        cuts = field_columns(arr, b, len(c.fields)) if e1 > e0 else None
        if cuts is not None:
            for k in _column_keys(graph, arr.edge_start[e0:e1].reshape(b.v1 - b.v0, int(cuts[-1])), cuts, wf).tolist():
                v, w = k >> 1, k & 1
                d[v] = d.get(v, False) or bool(w)
            continue
        for lo in range(e0, e1, chunk):
            hi = min(lo + chunk, e1)
            evar = graph.variable_of(arr.edge_start[lo:hi])
            key = unique(evar.astype(np.int64) * 2 + wf[arr.edge_field[lo:hi]])
            for k in key.tolist():
                v, w = k >> 1, k & 1
                d[v] = d.get(v, False) or bool(w)
    return {cs: d for cs, d in out.items() if d}


def _column_keys(graph, es, cuts, wf) -> np.ndarray:
    """The distinct ``var * 2 + writes`` of a batch in the bulk layout (``es``: its edge starts as
    [vertices, edges] rows, ``cuts``: :func:`compiler.checks.field_columns`): a column whose lowest
    and highest start lie in one variable lies in it all along (variables are contiguous), one
    key for the column; else a lookup per edge (as compiler.memory's liveness keys)."""
    keys = []
    for fi in range(len(cuts) - 1):
        w = int(wf[fi])
        for j in range(int(cuts[fi]), int(cuts[fi + 1])):
            col = es[:, j]
            lo, hi = graph.variable_of(np.array([col.min(), col.max()]))
            if lo == hi:
                keys.append(np.array([int(lo) * 2 + w], np.int64))
            else:
                keys.append(graph.variable_of(col).astype(np.int64) * 2 + w)
    return unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)


def _flat(low, what):
    """The program as one sequence of steps.  Graph-function calls may be among them when
    the variables the transform moves are used outside the functions: a training graph's
    calls exchange weights and gradients with the caller through copies in the sequence
    (compiler/lower.py), and the optimizer runs outside them."""
    prog = low.program
    if not isinstance(prog, Sequence) or any(isinstance(c, Repeat) for c in prog.children):
        raise GraphError(f"{what} needs a flat program (no loops): apply offload before accumulate")
    if any(isinstance(c, Call) for c in prog.children) and not low.opgraph_is_training():
        raise GraphError(f"{what} needs a flat program (no graph-function calls): lower with use_functions=False")
    return prog


def _phase(node):
    if isinstance(node, Execute):
        return node.compute_set.phase
    return getattr(node, "phase", None)


def _state_copy(g, c) -> bool:
    """A copy that only loads or stores offloaded optimizer state (offload's streaming-memory
    copies around the update): it belongs with the update, after the accumulation loop."""
    if not isinstance(c, Copy):
        return False
    vs = [g.variable(t) for t in (c.src, c.dst) if hasattr(t, "elements") and t.numel]
    return bool(vs) and all(v.kind == "state" and getattr(v, "offloaded", False) for v in vs)


def offloadable(low, what) -> list:
    """Variable ids that ``offload(low, what)`` would move to streaming memory."""
    g = low.graph
    uses = _uses(g)
    phases = {}
    for cs, vs in uses.items():
        ph = g.compute_sets[cs].phase
        for v in vs:
            phases.setdefault(v, set()).add(ph)
    out = []
    for v in g.variables:
        if "optimizer" in what and v.kind == "state" and phases.get(v.id) == {"update"}:
            out.append(v.id)
        elif "weights" in what and v.kind == "weight" and v.id in phases:
            out.append(v.id)
    return out


def offload(low, what=("optimizer",)) -> dict:
    """Move optimizer state / weights to streaming memory (see the module docstring)."""
    what = tuple(what)
    bad = [w for w in what if w not in OFFLOAD_KINDS]
    if bad:
        raise ValueError(f"unknown offload {bad[0]!r}; choose from {', '.join(OFFLOAD_KINDS)}")
    prog = _flat(low, "offload")
    g = low.graph
    uses = _uses(g)
    targets = set(offloadable(low, what))
    children = list(prog.children)
    var_of_copy = {}
    for i, c in enumerate(children):
        if isinstance(c, Copy):
            vs = {}
            for t, w in ((c.src, False), (c.dst, True)):
                if hasattr(t, "elements") and t.numel:
                    v = g.variable(t).id
                    vs[v] = vs.get(v, False) or w
            var_of_copy[i] = vs
    before = {i: [] for i in range(len(children) + 1)}
    after = {i: [] for i in range(len(children) + 1)}
    loads = stores = 0
    moved = 0
    for vid in sorted(targets):
        var = g.variables[vid]
        pos = []
        for i, c in enumerate(children):
            u = uses.get(c.compute_set.id, {}) if isinstance(c, Execute) else var_of_copy.get(i, {})
            if vid in u:
                pos.append((i, u[vid]))
        if not pos:
            continue
        runs, cur = [], [pos[0]]
        for p in pos[1:]:
            if p[0] == cur[-1][0] + 1:
                cur.append(p)
            else:
                runs.append(cur)
                cur = [p]
        runs.append(cur)
        t = _whole(g, var)
        for k, run in enumerate(runs):
            s = g.add_host_to_device_fifo(f"remote:{var.name}:load{k}", var.dtype, var.size, buffers=1)
            s.remote = True
            cp = Copy(s, t)
            cp.phase = _phase(children[run[0][0]])
            before[run[0][0]].append(cp)
            loads += 1
            if any(w for _, w in run):
                s2 = g.add_device_to_host_fifo(f"remote:{var.name}:store{k}", var.dtype, var.size, buffers=1)
                s2.remote = True
                cp2 = Copy(t, s2)
                cp2.phase = _phase(children[run[-1][0]])
                after[run[-1][0]].append(cp2)
                stores += 1
        var.offloaded = True
        moved += var.size * _bytes(var.dtype)
    prog.children = splice(children, before, after)
    return {"offload": list(what), "variables": len(targets), "bytes": moved, "loads": loads, "stores": stores}


def splice(children, before, after) -> list:
    """``children`` with ``before[i]`` inserted ahead of step ``i`` and ``after[i]`` behind it."""
    new = []
    for i, c in enumerate(children):
        new += before[i]
        new.append(c)
        new += after[i]
    return new


def _bytes(dtype):
    return DTYPE_BYTES[dtype]


#: codelets that can add their result to what their output holds (PopLibs' reductions with
#: ``update``, a matmul accumulating into its output): a weight gradient that only one such
#: compute set writes is reduced straight into its accumulator, as the IPU TensorFlow backend's
#: ``conv_scaled_inplace`` fusion and PopART's accumulate ops do, with no copy of the gradient
#: and no ScaledAdd step
_UPDATABLE = {"ReducePartials": None, "MatMulPartial": "accumulate", "MatMulPartialMAC": "accumulate"}


def _fusable(g, uses, vids) -> dict:
    """{gradient var id: [its writer batches]} for the gradients whose writing compute sets
    (one, or the serial steps of one matmul, each writing its own part) write them with
    :data:`_UPDATABLE` vertices only (no other variable, not already accumulating, no
    element twice), read by nothing but the update."""
    ups = {cs.id for cs in g.compute_sets if cs.phase == "update"}
    users = {}
    for cs, d in uses.items():
        for v, w in d.items():
            users.setdefault(v, []).append((cs, w))
    by_cs = {}
    for b in g.batches:
        by_cs.setdefault(b.cs, []).append(b)
    arr = g.finalize(check=False)
    off = arr.vertex_edge_offsets
    out = {}
    for vid in vids:
        us = users.get(vid, [])
        wcs = {cs for cs, w in us if w}
        if not wcs or any(cs not in ups for cs, w in us if cs not in wcs):
            continue
        v = g.variables[vid]
        mine, ok, written = [], True, 0
        for b in (b for cs in sorted(wcs) for b in by_cs[cs]):
            c = CODELETS[b.codelet]
            outs = [i for i, f in enumerate(c.fields) if f.writes]
            e0, e1 = int(off[b.v0]), int(off[b.v1])
            ef = arr.edge_field[e0:e1]
            w = np.isin(ef, outs)
            est = arr.edge_start[e0:e1][w]
            hit = (est >= v.start) & (est < v.start + v.size)
            if not hit.any():
                continue
            if b.codelet not in _UPDATABLE or not hit.all() or \
                    (_UPDATABLE[b.codelet] and b.params.get(_UPDATABLE[b.codelet])):
                ok = False
                break
            written += int(arr.edge_len[e0:e1][w].sum())
            mine.append(b)
        # each element written once (by one vertex of one step): a sum over the writes equal
        # to the gradient's size, with every write inside it
        if ok and mine and written == v.size:
            out[vid] = mine
    return out


def accumulate(low, n, loop=True) -> dict:
    """Gradient accumulation over ``n`` micro-batches (see the module docstring).
    ``loop=False``: the accumulators and their ScaledAdd steps without the ``Repeat``, the
    program left as one micro-batch (a pipeline stage: the multi-chip model runs the
    micro-batches itself, and the accumulators are memory the stage holds all along)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"accumulate must be >= 1, got {n}")
    if n == 1:
        return {"accumulate": 1, "accumulators": 0}
    prog = _flat(low, "accumulate")
    g = low.graph
    arr = g.finalize(check=False)      # the edges sorted by vertex, in the graph's own buffers
    # weight gradients: what the update vertices read through their "grad" field
    upd = [b for b in g.batches if g.compute_sets[b.cs].phase == "update" and "grad" in CODELETS[b.codelet].field_index]
    if not upd:
        raise ValueError("accumulate needs a training graph (no weight-update vertices found)")
    ef, es = g.e_field.view(), g.e_start.view()
    # the edges of the update vertices' "grad" fields, ascending: each batch's own run of edges
    # (a pass over all of a BERT-Large stage's 70 M edges and an index of them all took 1.6 s)
    off = arr.vertex_edge_offsets
    idx = np.concatenate([e0 + np.flatnonzero(ef[e0:e1] == CODELETS[b.codelet].field_index["grad"])
                          for b in sorted(upd, key=lambda b: b.v0)
                          for e0, e1 in [(int(off[b.v0]), int(off[b.v1]))]])
    gvar = g.variable_of(es[idx])
    # each gradient is added to its accumulator right after the step that last writes it
    uses = _uses(g)
    last_writer = {}
    for i, c in enumerate(prog.children):
        if isinstance(c, Execute) and _phase(c) != "update":
            for v, w in uses.get(c.compute_set.id, {}).items():
                if w:
                    last_writer[v] = i
        elif isinstance(c, Copy) and hasattr(c.dst, "elements") and c.dst.numel:   # a function's result
            last_writer[g.variable(c.dst).id] = i
    grads = unique(gvar).tolist()
    fused = _fusable(g, uses, grads)
    acc_cs = {}
    acc_of = {}
    for vid in grads:
        v = g.variables[vid]
        t = g.add_variable(v.dtype, v.shape, f"{v.name}/accum", kind="accumulator", op="accumulate")
        a = g.variables[-1]
        if vid not in g.tile_map:
            g.map_linearly(t)
        else:
            g.tile_map.set_runs(a.id, *g.tile_map.runs(vid))
        acc_of[vid] = a
        if vid in fused:
            continue
        at = last_writer.get(vid, len(prog.children) - 1)
        if at not in acc_cs:
            acc_cs[at] = g.add_compute_set(f"accumulate gradients/{len(acc_cs)}", layer="accumulate",
                                           op="accumulate", phase="bwd")
        # one ScaledAdd vertex per run of elements on one tile
        st, tl = g.tile_map.runs(a.id)
        ln = g.tile_map.run_lengths(a.id)
        keep = tl >= 0
        st, ln, tl = st[keep], ln[keep], tl[keep]
        vi = np.arange(st.size)
        g.add_vertices(acc_cs[at], "ScaledAdd", tl, {"data": (vi, a.start + st, ln), "delta": (vi, v.start + st, ln)},
                       dtype=v.dtype, params={"scale": 1.0})
    # the update reads the accumulators, and the fused reductions write into them (a fresh
    # view: adding the ScaledAdd vertices may have moved the edge buffer, and a write through
    # the old view would be lost)
    es = g.e_start.view()
    for vid, a in acc_of.items():
        m = idx[gvar == vid]
        es[m] = es[m] - g.variables[vid].start + a.start
    if fused:
        # per fused batch (the last gradient named wins, as one table over the vertices did): its
        # edges into the gradient move to the accumulator; the batches' edges are where the
        # finalize above sorted them (the ScaledAdd vertices' edges were appended after them)
        moves = {}
        for vid, bs in fused.items():
            v = g.variables[vid]
            for b in bs:
                moves[(b.v0, b.v1)] = (acc_of[vid].start - v.start, v.start, v.start + v.size)
                if b.codelet == "ReducePartials":
                    b.codelet = "ReducePartialsUpdate"
                else:
                    b.params = dict(b.params, accumulate=True)
        for (v0, v1), (d, lo, hi) in moves.items():
            if d == 0:
                continue
            e0, e1 = int(off[v0]), int(off[v1])
            seg = es[e0:e1]
            seg[(seg >= lo) & (seg < hi)] += d
    g._finalized = None
    body, post = [], []
    for i, c in enumerate(prog.children):
        (post if _phase(c) == "update" or _state_copy(g, c) else body).append(c)
        if i in acc_cs:
            body.append(Execute(acc_cs[i]))
    prog.children = ([Repeat(n, Sequence(body))] if loop else body) + post
    return {"accumulate": n, "accumulators": len(acc_of),
            "accumulator_bytes": int(sum(a.size * _bytes(a.dtype) for a in acc_of.values()))}
