"""Gather / embedding lookup, and its gradient (a scatter-add into a zeroed tensor).

A gather along ``axis`` of data of shape ``outer + (D,) + inner`` is seen as ``O = prod(outer)``
tables of ``D`` rows of ``Cin = prod(inner)`` columns; its output is ``(O, N, Cin)`` for ``N``
indices.  Each table is modelled as column blocks of ``D`` rows, each block one contiguous
region (exact when ``Cin`` fits one block).

``GatherGrad`` (inputs: the output's gradient, the indices; output: the data's gradient)
writes every element of the data-shaped gradient, as PopLibs' ``multiUpdateAdd`` does: the
gradient is mapped like the data it belongs to (so a weight's update reads it in place),
zeroed by ``Fill`` vertices, then one ``MultiUpdateAdd`` per piece of a column block held by
one tile receives all ``N`` indices and the ``N`` gradient rows of its columns and adds those
that fall in its rows.  Blocks are narrow (about one tile's share of ``D`` rows), so each tile
receives ``N`` rows of a few columns rather than the whole gradient.
"""
from __future__ import annotations

from math import prod

import numpy as np

from .base import Planner, spread
from .chunking import chunks
from .cost import codelet_cycles


def _split(shape, axis):
    """(O, D, Cin) of a gather along ``axis`` of a tensor of ``shape``."""
    shape = tuple(int(s) for s in shape) or (1,)
    ax = int(axis) % len(shape)
    return prod(shape[:ax]), shape[ax], prod(shape[ax + 1:])


class GatherPlanner(Planner):
    """Gather / embedding lookup: one DynamicSlice per (table, index, column block) on the
    tile holding that block of the table; GatherGrad: Fill, then MultiUpdateAdd."""
    family = "gather"

    def estimate(self, op, opt, ctx):
        if op["op"] != "GatherGrad":
            return 0.0, 0.0
        n_out = int(np.prod(ctx.out_shape(op, 0)))
        n_idx = ctx.numel(op["inputs"][1])
        per_tile = -(-n_out // ctx.tiles)
        fill = codelet_cycles("Fill", {"out": per_tile / ctx.chip.workers_per_tile}, ctx.dtype, {}, ctx.chip)
        upd = codelet_cycles("MultiUpdateAdd", {"in": n_idx, "index": n_idx, "table": 1}, ctx.dtype,
                             {"row": 1, "rows": 1}, ctx.chip)
        return float(fill + upd), 0.0

    def lower(self, op, opt, ctx):
        if op["op"] == "GatherGrad":
            return self._lower_grad(op, ctx)
        tname, iname = op["inputs"][0], op["inputs"][1]
        table = ctx.act(tname) if tname in ctx.acts else ctx.weights_by_name(tname)
        index = ctx.act(iname) if iname in ctx.acts else ctx.weights_by_name(iname)
        y = ctx.new_act(op, 0)
        O, D, Cin = _split(ctx.shape(tname), op.get("attrs", {}).get("axis", 0))
        N = index.numel
        cb = min(Cin, 64)
        nb = -(-Cin // cb)
        oi, ri, bi = [a.ravel() for a in np.indices((O, N, nb))]
        V = ri.size
        cols = np.minimum(cb, Cin - bi * cb)
        t_s = table.start + oi * D * Cin + bi * D * cb
        t_l = D * cols
        # read the part of the block held by the tile the vertex runs on (no exchange of the table)
        runs = ctx.graph.tile_map.runs(table.var)
        if runs is not None:
            brk = runs[0][1:]
            rel = t_s - table.start
            nxt = np.concatenate((brk, [ctx.graph.variables[table.var].size]))[np.searchsorted(brk, rel, side="right")]
            t_l = np.maximum(np.minimum(t_l, nxt - rel), 1)
        tiles = ctx.graph.tile_of_elements(t_s)
        tiles = np.where(tiles < 0, spread(V, ctx.tiles), tiles)
        o_s = y.start + (oi * N + ri) * Cin + bi * cb
        # the output spread evenly over the tiles, as PopLibs' createSliceTensor maps it (on the
        # table blocks' tiles it piled N rows onto the few tiles where the column blocks start:
        # 128 KiB of BERT-Large's embedding output on each of 16 tiles)
        ctx.graph.map_intervals(o_s, cols, spread(V, ctx.tiles))
        idx_t = ctx.int_index(index)
        cs = ctx.compute_set(op, "gather")
        ctx.graph.add_vertices(cs, "DynamicSlice", tiles, {
            "table": (np.arange(V), t_s, t_l),
            "index": (np.arange(V), idx_t.start + ri % idx_t.numel, np.ones(V, np.int64)),
            "out": (np.arange(V), o_s, cols)}, dtype=ctx.dtype, params={"row": int(cb)})
        return [cs]

    def _lower_grad(self, op, ctx):
        dy = ctx.act(op["inputs"][0])
        index = ctx.act(op["inputs"][1]) if op["inputs"][1] in ctx.acts else ctx.weights_by_name(op["inputs"][1])
        out = op["outputs"][0]
        O, D, Cin = _split(ctx.shape(out), op.get("attrs", {}).get("axis", 0))
        N = index.numel
        dx = ctx.new_act(op, 0)
        g = ctx.graph
        # map the gradient like the data it is the gradient of (the weight update then reads it in place)
        fwd = ctx.opg.op(op["attrs"]["forward"]) if op.get("attrs", {}).get("forward") in ctx.opg.graph else None
        like = ctx.acts.get(fwd["inputs"][0]) if fwd else None
        if like is not None and like.numel != dx.numel:
            like = None
        st, ln, tiles, _ = chunks(ctx, dx, like)
        ctx.graph.map_intervals(dx.start + st, ln, tiles)
        zero = ctx.compute_set(op, "zero")
        ctx.graph.add_vertices(zero, "Fill", tiles, {"out": (np.arange(st.size), dx.start + st, ln)},
                               dtype=ctx.dtype, params={"value": 0.0})
        # column blocks of D rows, about one tile's share each, cut where the tile mapping changes
        per_tile = -(-dx.numel // ctx.tiles)
        cb = int(min(Cin, max(1, per_tile // max(D, 1))))
        nb = -(-Cin // cb)
        blk_s = (np.arange(O * nb) // nb) * D * Cin + (np.arange(O * nb) % nb) * D * cb
        blk_cols = np.minimum(cb, Cin - (np.arange(O * nb) % nb) * cb)
        blk_e = blk_s + D * blk_cols
        runs = ctx.graph.tile_map.runs(dx.var)[0]
        cuts = np.union1d(np.union1d(blk_s, blk_e), runs)
        cuts = cuts[cuts < dx.numel]
        p_s = cuts
        p_e = np.append(cuts[1:], dx.numel)
        blk = np.searchsorted(blk_s, p_s, side="right") - 1
        keep = p_e > p_s
        p_s, p_e, blk = p_s[keep], p_e[keep], blk[keep]
        P = p_s.size
        p_tiles = ctx.graph.tile_of_elements(dx.start + p_s)
        o, b = blk // nb, blk % nb
        pv = np.repeat(np.arange(P), N)
        n = np.tile(np.arange(N), P)
        in_s = dy.start + (o[pv] * N + n) * Cin + b[pv] * cb
        in_l = blk_cols[blk][pv]
        idx_t = ctx.int_index(index)
        # where each piece starts in its block (a block may be cut mid-row at a tile boundary)
        offs = g.add_constant("int32", (P,), (p_s - blk_s[blk]).astype(np.int32), f"{op['name']}/offsets")
        g.map_intervals(offs._start + np.arange(P), np.ones(P, np.int64), p_tiles)
        upd = ctx.compute_set(op, "update")
        # one batch per block width (the last block of a table may be narrower)
        for w in np.unique(blk_cols[blk]):
            sel = np.flatnonzero(blk_cols[blk] == w)
            local = np.full(P, -1, np.int64)
            local[sel] = np.arange(sel.size)
            esel = np.flatnonzero(local[pv] >= 0)
            k = np.arange(sel.size)
            g.add_vertices(upd, "MultiUpdateAdd", p_tiles[sel], {
                "in": (local[pv[esel]], in_s[esel], in_l[esel]),
                "index": (k, np.full(sel.size, idx_t.start, np.int64), np.full(sel.size, N, np.int64)),
                "offset": (k, offs._start + sel, np.ones(sel.size, np.int64)),
                "table": (k, dx.start + p_s[sel], p_e[sel] - p_s[sel])},
                dtype=ctx.dtype, params={"row": int(w), "rows": int(D)})
        return [zero, upd]
