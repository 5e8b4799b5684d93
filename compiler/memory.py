"""Per-tile memory of a compiled graph, by category, with liveness.

Categories follow the vendor's memory report: always-live variables
(weights, optimizer state, constants, inputs), not-always-live variables
(activations, gradients, temporaries) at their peak over the program's steps,
vertex state, vertex code and exchange buffers.

Liveness: a not-always-live variable is live from the first step that writes
it to the last step that reads it (steps are the program's Execute nodes in
order).  Variables whose lives do not overlap can share bytes, so the peak per
tile is the maximum over steps of the bytes live at that step.
"""
from __future__ import annotations

import numpy as np

from .codelets import CODELETS
from .dtypes import DTYPE_BYTES
from .program import Call, Execute, Repeat, Sequence

ALWAYS_LIVE = ("weight", "state", "constant", "input", "variable")


def execute_order(program):
    """Compute set ids in the order the program runs them (function bodies once per call)."""
    out = []

    def visit(p):
        if isinstance(p, Sequence):
            for c in p.children:
                visit(c)
        elif isinstance(p, Repeat):
            visit(p.body)
        elif isinstance(p, Call):
            visit(p.function.program)
        elif isinstance(p, Execute):
            out.append(p.compute_set.id)

    visit(program)
    return out


def memory_report(exe, top=10) -> dict:
    g, arr = exe.graph, exe.arrays
    T = g.num_tiles
    sram = g.target.sram_bytes_per_tile
    nvar = len(g.variables)
    # bytes of each variable on each tile (sparse rows)
    var_tile_bytes = {}
    for v in g.variables:
        tm = g.tile_map.get(v.id)
        if tm is None or v.size == 0:
            continue
        u, c = np.unique(tm, return_counts=True)
        var_tile_bytes[v.id] = (u, c * DTYPE_BYTES[v.dtype])
    always = np.zeros(T)
    for v in g.variables:
        if v.kind in ALWAYS_LIVE and v.id in var_tile_bytes:
            u, b = var_tile_bytes[v.id]
            np.add.at(always, u, b)
    # liveness of the other variables over the steps
    order = execute_order(exe.program)
    step_of_cs = {}
    for i, cs in enumerate(order):
        step_of_cs.setdefault(cs, []).append(i)
    first = np.full(nvar, np.iinfo(np.int64).max)
    last = np.full(nvar, -1)
    if arr.edge_start.size:
        evar = g.variable_of(arr.edge_start)
        vcs = np.repeat(np.array([b.cs for b in g.batches]), [b.v1 - b.v0 for b in g.batches])
        ecs = vcs[arr.edge_vertex]
        pairs = np.unique(np.stack([evar, ecs]), axis=1)
        for vid, cs in pairs.T.tolist():
            steps = step_of_cs.get(cs)
            if steps:
                first[vid] = min(first[vid], steps[0])
                last[vid] = max(last[vid], steps[-1])
    nsteps = max(len(order), 1)
    delta = np.zeros((nsteps + 1, T))
    no_reuse = np.zeros(T)
    for v in g.variables:
        if v.kind in ALWAYS_LIVE or v.id not in var_tile_bytes:
            continue
        u, b = var_tile_bytes[v.id]
        no_reuse[u] += b
        if last[v.id] < 0:
            continue
        np.add.at(delta[int(first[v.id])], u, b)
        np.add.at(delta[int(last[v.id]) + 1], u, -b)
    live = np.cumsum(delta[:-1], axis=0)            # steps x tiles
    curve = live.sum(axis=1)
    not_always_peak_tile = live.max(axis=0) if live.size else np.zeros(T)
    # vertex state, code and exchange buffers
    nedges = np.diff(arr.vertex_edge_offsets)
    state = np.zeros(T)
    code = np.zeros(T)
    for b in g.batches:
        c = CODELETS[b.codelet]
        t = arr.vertex_tile[b.v0:b.v1]
        np.add.at(state, t, 4 + c.state_bytes_per_field * nedges[b.v0:b.v1])
    vb = arr.vertex_batch
    codelet_id = np.array([list(CODELETS).index(b.codelet) for b in g.batches], np.int64)
    if vb.size:
        pair = np.unique(arr.vertex_tile.astype(np.int64) * 1024 + codelet_id[vb])
        code_bytes = np.array([c.code_bytes for c in CODELETS.values()])
        np.add.at(code, pair // 1024, code_bytes[pair % 1024])
    exch = np.zeros(T)
    for plans in (exe.exchange_in, exe.exchange_out):
        for p in plans.values():
            np.maximum.at(exch, p.recv_tiles, p.recv_bytes)
            np.add.at(code, p.send_tiles, 8 * p.send_messages)   # exchange code: a few words per message
    control = np.full(T, 4.0 * len(g.compute_sets))
    total = always + not_always_peak_tile + state + code + exch + control
    by_cat = {"always_live_variables": always, "not_always_live_variables": not_always_peak_tile,
              "vertex_state": state, "vertex_and_exchange_code": code, "exchange_buffers": exch,
              "control_code": control}
    peak_tile = int(np.argmax(total))
    oom = np.flatnonzero(total > sram)
    worst = np.argsort(-total)[:top]
    peak_step = int(np.argmax(curve)) if curve.size else 0
    return {
        "fits": bool(oom.size == 0),
        "sram_bytes_per_tile": int(sram),
        "peak_tile_bytes": int(total.max()),
        "peak_tile": peak_tile,
        "total_bytes": int(total.sum()),
        "by_category": {k: int(v.sum()) for k, v in by_cat.items()},
        "always_live_bytes": int(always.sum()),
        "not_always_live_peak_bytes": int(curve.max()) if curve.size else 0,
        "no_reuse_bytes": int(no_reuse.sum() + always.sum()),
        "reuse_factor": float((no_reuse.sum() + always.sum()) / max(always.sum() + (curve.max() if curve.size else 0), 1)),
        "peak_step": peak_step,
        "oom_tiles": int(oom.size),
        "worst_tiles": [{"tile": int(t), "bytes": int(total[t]),
                         "dominant": max(by_cat, key=lambda k: by_cat[k][t])} for t in worst],
        "per_tile": {k: v for k, v in by_cat.items()} | {"total": total},
        "liveness_curve": curve,
    }


def oom_message(mem) -> str | None:
    """The vendor's wording for the worst tile, or None when everything fits."""
    if mem["fits"]:
        return None
    w = mem["worst_tiles"][0]
    return (f"Out of memory on tile {w['tile']}: {w['bytes']} bytes used but tiles only have "
            f"{mem['sram_bytes_per_tile']} ({mem['oom_tiles']} tiles over; dominated by {w['dominant']})")
