"""Gather / embedding lookup."""
from __future__ import annotations

import numpy as np

from .base import Planner, spread

class GatherPlanner(Planner):
    """Gather / embedding lookup: one DynamicSlice per (row, column block) on the
    tile holding that block of the table."""
    family = "gather"

    def lower(self, op, opt, ctx):
        tname, iname = op["inputs"][0], op["inputs"][1]
        table = ctx.act(tname) if tname in ctx.acts else ctx.weights_by_name(tname)
        index = ctx.act(iname) if iname in ctx.acts else ctx.weights_by_name(iname)
        y = ctx.new_act(op, 0)
        rows = index.numel
        C = table.C
        cb = min(C, 64)
        nb = -(-C // cb)
        ri, bi = [a.ravel() for a in np.indices((rows, nb))]
        V = ri.size
        vrows = table.numel // max(C, 1)
        t_s = table.start + bi * vrows * cb
        t_l = np.minimum(vrows * cb, table.start + table.numel - t_s)
        # read the part of the block held by the tile the vertex runs on (no exchange of the table)
        runs = ctx.graph.tile_map.runs(table.var)
        if runs is not None:
            brk = runs[0][1:]
            rel = t_s - table.start
            nxt = np.concatenate((brk, [ctx.graph.variables[table.var].size]))[np.searchsorted(brk, rel, side="right")]
            t_l = np.maximum(np.minimum(t_l, nxt - rel), 1)
        tiles = ctx.graph.tile_of_elements(t_s)
        tiles = np.where(tiles < 0, spread(V, ctx.tiles), tiles)
        o_s = y.start + (ri * C + bi * cb) % max(y.numel, 1)
        o_l = np.minimum(cb, C - bi * cb)
        ctx.graph.map_intervals(o_s, o_l, tiles)
        idx_t = ctx.int_index(index)
        cs = ctx.compute_set(op, "gather")
        ctx.graph.add_vertices(cs, "DynamicSlice", tiles, {
            "table": (np.arange(V), t_s, t_l),
            "index": (np.arange(V), idx_t.start + ri % idx_t.numel, np.ones(V, np.int64)),
            "out": (np.arange(V), o_s, o_l)}, dtype=ctx.dtype, params={"row": int(cb)})
        return [cs]
