"""The picture of a network's whole compute graph, every vertex drawn.

Like Graphcore's published images of AlexNet and ResNet-50 compiled by
Poplar: each vertex is a point, vertices of one layer cluster together
because they share data, layers join through lighter traffic, on a dark
background.

    >>> from viz.graph_image import render_model_graph
    >>> render_model_graph("resnet50", "out/resnet50.png")          # doctest: +SKIP
    >>> g = graph_of(build("mnist-mlp"), level="vertex")            # doctest: +SKIP

What is drawn (:func:`graph_of`)
--------------------------------
``level="vertex"`` (default): one point per vertex of the compiled graph.
In Poplar a vertex is connected by edges to *regions of tensors*; two
vertices communicate when one writes elements the other reads, or when both
read the same elements (weights).  The construction is linear in the size
of the graph:

1. every variable is cut into **chunks**: its tile-mapping runs (the
   elements it has on one tile), further cut into blocks of at most
   ``chunk`` elements when ``chunk`` is given;
2. every edge region is split at chunk boundaries (``searchsorted``) which
   gives a bipartite graph *vertex <-> chunk* weighted by the bytes of the
   overlap (duplicate pairs summed);
3. the bipartite graph is laid out (chunks are nodes of the layout) and the
   picture draws the vertices and, for each edge, the line from the vertex
   to its chunk's position; chunk nodes themselves are not drawn as points.
   A chunk written by one layer and read by the next therefore sits between
   the two and its lines are the producer -> consumer traffic; a weight
   chunk read by many vertices is the hub of their star.  No fan-out is
   sampled away: every edge is drawn.
4. ``Copy`` programs between tensors (the copies into and out of graph
   functions, i.e. repeated blocks) add chunk <-> chunk links, so a
   repeated block, compiled once as a function, reads as one structure
   joined to the rest of the network.

Each vertex's **group** is the layer of its compute set
(``compute_sets[cs].layer``); a chunk takes the layer (and tile) of its
main writer (or, if nothing writes it, its main reader).  The layout merges
nodes of one layer before anything else, so layers become compact clouds;
``subgroup="cs"`` (default) adds a finer constraint inside each layer (its
compute sets); ``"tile"`` (per tile) breaks layers into beads joined by
parallel bands; None: layers only.  In training graphs a layer's backward
pass and update are clusters of their own ("fc1 (bwd)", "fc1 (update)").
Layout weights are ``bytes ** 0.5`` (:func:`place`).

``level="tile"``: one node per tile, edges = bytes moved between tiles (the
remote part of the vertex <-> chunk graph, i.e. the exchange); a tile takes
the colour of the layer (or codelet) with most vertices on it.
``level="op"``: the op graph, edges = tensor bytes.

Colours (``color=``): ``"layer"`` (default), ``"op"`` (codelet at vertex
and tile level, op type at op level) or ``"tile"`` (a hue ramp over tile
ids; vertex and tile level).  The legend names the ``legend_max`` largest
categories; the rest keep their own colours and are summed up in one last
"+N other" entry.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import models
from compiler import intervals
from compiler.codelets import CODELETS
from compiler.program import Copy, walk
from compiler.tensor import Tensor
from hardware.dtypes import DTYPE_BYTES
from simulator.config import RunConfig
from simulator.run import build

from .layout import layout
from .render import _hsv2rgb, default_palette, render

__all__ = ["DrawGraph", "graph_of", "render_model_graph", "draw", "LEVELS", "COLORS"]

LEVELS = ("vertex", "tile", "op")
COLORS = ("layer", "op", "tile")
_OTHER_RGB = (0.55, 0.57, 0.62)


@dataclass
class DrawGraph:
    """What is laid out and drawn: flat numpy arrays only.

    ``n`` nodes; at vertex level the first ``n_vertices`` nodes are the
    compiled graph's vertices (in vertex id order) and the rest are tensor
    chunks (laid out, not drawn as points: ``drawn`` is False for them).
    """
    level: str
    n: int
    n_vertices: int
    src: np.ndarray            # int32 (m,)
    dst: np.ndarray            # int32 (m,)
    weight: np.ndarray         # float32 (m,), bytes
    group: np.ndarray          # int32 (n,), index into group_names
    subgroup: Optional[np.ndarray]
    group_names: list
    color_index: np.ndarray    # int32 (n,), index into palette
    palette: np.ndarray        # float32 (k, 3), 0..1
    legend: list               # [(label, rgb)]
    drawn: Optional[np.ndarray] = None   # bool (n,): drawn as a point
    title: str = ""
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------
# colours and legend
# --------------------------------------------------------------------------
def _categorical(cat, names, weight_nodes, legend_max, what):
    """Colours for categories ``cat`` (n,) with ``names``: palette in the
    order of ``names`` (network order), legend = largest ``legend_max``."""
    k = max(len(names), 1)
    pal = default_palette(k)
    size = np.bincount(cat[weight_nodes] if weight_nodes is not None else cat, minlength=k)
    order = [int(i) for i in np.argsort(-size, kind="stable") if size[i] > 0]
    legend = [(names[i], pal[i]) for i in order[:legend_max]]
    rest = order[legend_max:]
    if rest:
        legend.append((f"+{len(rest)} other {what}", _OTHER_RGB))
    return cat.astype(np.int32), pal, legend


def _tile_ramp(tile, num_tiles):
    k = max(int(num_tiles), 1)
    h = np.arange(k) / k * 0.85
    pal = _hsv2rgb(h, np.full(k, 0.8), np.ones(k))
    ticks = sorted(set(int(round(x)) for x in np.linspace(0, k - 1, min(k, 5))))
    legend = [(f"tile {t}", pal[t]) for t in ticks]
    return np.clip(tile, 0, k - 1).astype(np.int32), pal, legend


def _check(level, color):
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r} (choose one of {', '.join(LEVELS)})")
    if color not in COLORS:
        raise ValueError(f"unknown color {color!r} (choose one of {', '.join(COLORS)})")
    if level == "op" and color == "tile":
        raise ValueError("color 'tile' is not available at level 'op' (ops span many tiles); "
                         "use --color layer or --color op")


# --------------------------------------------------------------------------
# vertex <-> chunk bipartite graph
# --------------------------------------------------------------------------
def _chunks(graph, chunk=None):
    """Chunk boundaries of the global element space (sorted starts) and the
    tile of each chunk (-1: unmapped)."""
    starts, tiles = [], []
    for var in graph.variables:
        if var.size == 0:
            continue
        runs = graph.tile_map.runs(var.id)
        if runs is None:
            st = np.zeros(1, np.int64)
            tl = np.full(1, -1, np.int32)
        else:
            st, tl = runs
        if chunk:
            # cut runs longer than ``chunk`` elements into blocks
            en = np.append(st[1:], var.size)
            nb = np.maximum(-(-(en - st) // int(chunk)), 1)
            if (nb > 1).any():
                rep = np.repeat(np.arange(st.size), nb)
                first = np.cumsum(nb) - nb
                k = np.arange(rep.size) - np.repeat(first, nb)
                st = st[rep] + k * int(chunk)
                tl = tl[rep]
        starts.append(st + var.start)
        tiles.append(tl)
    if not starts:
        return np.zeros(1, np.int64), np.full(1, -1, np.int32)
    s = np.concatenate(starts)
    t = np.concatenate(tiles).astype(np.int32)
    o = np.argsort(s, kind="stable")
    return s[o], t[o]


def _edge_directions(graph, arrays):
    """(writes, reads) bool per edge, from the codelets' field directions."""
    m = arrays.edge_start.size
    writes = np.zeros(m, bool)
    reads = np.zeros(m, bool)
    off = arrays.vertex_edge_offsets
    for b in graph.batches:
        c = CODELETS[b.codelet]
        e0, e1 = int(off[b.v0]), int(off[b.v1])
        if e1 <= e0:
            continue
        f = arrays.edge_field[e0:e1]
        writes[e0:e1] = np.array([x.writes for x in c.fields])[f]
        reads[e0:e1] = np.array([x.reads for x in c.fields])[f]
    return writes, reads


def _bipartite(graph, arrays, bounds, say):
    """Pieces (vertex, chunk, bytes, writes) of every edge region cut at
    the chunk ``bounds``; duplicate (vertex, chunk) pairs merged."""
    ev = arrays.edge_vertex
    es = arrays.edge_start.astype(np.int64, copy=False)
    el = arrays.edge_len.astype(np.int64)
    writes, _ = _edge_directions(graph, arrays)
    var_starts = np.array([v.start for v in graph.variables], np.int64)
    var_bytes = np.array([DTYPE_BYTES[v.dtype] for v in graph.variables], np.float32)
    ebytes = var_bytes[np.searchsorted(var_starts, es, side="right") - 1]
    ps, pl, parent = intervals.split_at(es, el, bounds[1:])
    del es, el
    ch = (np.searchsorted(bounds, ps, side="right") - 1).astype(np.int64)
    del ps
    pv = ev[parent].astype(np.int64)
    pb = pl.astype(np.float32) * ebytes[parent]
    pw = writes[parent]
    del pl, parent, ebytes, writes
    say(f"vertex level: {pv.size:,} vertex-chunk pieces")
    # merge duplicate (vertex, chunk) pairs: bytes summed, written if any piece writes
    C = int(bounds.size)
    key = pv * C + ch
    del pv, ch
    if key.size and not np.all(key[1:] >= key[:-1]):
        o = np.argsort(key, kind="stable")
        key, pb, pw = key[o], pb[o], pw[o]
        del o
    if key.size:
        first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        b = np.add.reduceat(pb, first).astype(np.float32)
        w = np.maximum.reduceat(pw.view(np.uint8), first).astype(bool)
        key = key[first]
    else:
        b = np.zeros(0, np.float32)
        w = np.zeros(0, bool)
    return (key // C).astype(np.int32), (key % C).astype(np.int64), b, w


def _copy_links(graph, program, bounds, functions=None):
    """(chunk_src, chunk_dst, bytes) of Copy programs between tensors."""
    cs, cd, cb = [], [], []
    for p in walk(program):
        if not isinstance(p, Copy) or not isinstance(p.src, Tensor) or not isinstance(p.dst, Tensor):
            continue
        n = min(p.src.numel, p.dst.numel)
        if n == 0:
            continue
        eb = DTYPE_BYTES.get(p.src.dtype, 4)
        if p.src.is_contiguous() and p.dst.is_contiguous():
            s0 = int(p.src.intervals()[0][0])
            d0 = int(p.dst.intervals()[0][0])
            cut = np.concatenate(([0], bounds - s0, bounds - d0, [n]))
            cut = np.unique(cut[(cut >= 0) & (cut <= n)])
            off, ln = cut[:-1], np.diff(cut)
            a = np.searchsorted(bounds, s0 + off, side="right") - 1
            b = np.searchsorted(bounds, d0 + off, side="right") - 1
        else:
            se = p.src.elements().ravel()[:n]
            de = p.dst.elements().ravel()[:n]
            a = np.searchsorted(bounds, se, side="right") - 1
            b = np.searchsorted(bounds, de, side="right") - 1
            ln = np.ones(n, np.int64)
        cs.append(a)
        cd.append(b)
        cb.append(ln * eb)
    if not cs:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, np.float32)
    return np.concatenate(cs), np.concatenate(cd), np.concatenate(cb).astype(np.float32)


def _layers(graph, arrays):
    """Layer id per vertex, layer names (network order), codelet id per vertex
    and codelet names."""
    names, index = [], {}
    cs_layer = np.zeros(len(graph.compute_sets), np.int32)
    for cs in graph.compute_sets:
        lab = cs.layer or cs.op or cs.name
        if cs.phase not in (None, "fwd") and cs.phase != lab:
            lab = f"{lab} ({cs.phase})"      # a layer's backward pass / update is its own cluster
        if lab not in index:
            index[lab] = len(names)
            names.append(lab)
        cs_layer[cs.id] = index[lab]
    cod_names, cod_index = [], {}
    b_cs = np.zeros(len(graph.batches), np.int32)
    b_cod = np.zeros(len(graph.batches), np.int32)
    for i, b in enumerate(graph.batches):
        b_cs[i] = b.cs
        if b.codelet not in cod_index:
            cod_index[b.codelet] = len(cod_names)
            cod_names.append(b.codelet)
        b_cod[i] = cod_index[b.codelet]
    vb = arrays.vertex_batch
    return cs_layer[b_cs[vb]], names, b_cod[vb], cod_names


def _dominant(chunk, vertex, bytes_, writes, nchunks):
    """Per chunk: the vertex with most bytes among its writers (else readers)."""
    o = np.lexsort((-bytes_, ~writes, chunk))
    c = chunk[o]
    first = np.flatnonzero(np.concatenate(([True], c[1:] != c[:-1]))) if c.size else np.zeros(0, np.int64)
    dom = np.full(nchunks, -1, np.int64)
    dom[c[first]] = vertex[o[first]]
    return dom


def _vertex_level(c, color, legend_max, chunk, subgroup, say):
    low = c.lowered
    graph = low.graph
    arrays = c.exe.arrays
    nv = int(graph.num_vertices)
    if nv == 0:
        raise ValueError("the compiled graph has no vertices: nothing to draw")
    t0 = time.perf_counter()
    bounds, ctile = _chunks(graph, chunk)
    pv, pc, pb, pw = _bipartite(graph, arrays, bounds, say)
    # compact the used chunks into nodes nv..nv+k-1
    used = np.unique(pc)
    node_of_chunk = np.full(bounds.size, -1, np.int64)
    node_of_chunk[used] = np.arange(used.size)
    pcn = node_of_chunk[pc]
    del pc
    k = int(used.size)
    vlayer, layer_names, vcod, cod_names = _layers(graph, arrays)
    vtile = arrays.vertex_tile.astype(np.int32)
    dom = _dominant(pcn, pv, pb, pw, k)
    # copies between tensors (repeated blocks = graph functions)
    a, b, cb = _copy_links(graph, low.program, bounds)
    ok = np.zeros(a.size, bool)
    if a.size:
        na, nb = node_of_chunk[a], node_of_chunk[b]
        ok = (na >= 0) & (nb >= 0) & (na != nb)
        na, nb, cb = na[ok], nb[ok], cb[ok]
    else:
        na = nb = np.zeros(0, np.int64)
    n = nv + k
    src = np.concatenate((pv.astype(np.int32), (nv + na).astype(np.int32)))
    dst = np.concatenate(((nv + pcn).astype(np.int32), (nv + nb).astype(np.int32)))
    weight = np.concatenate((pb, cb)).astype(np.float32)
    npieces = int(pv.size)
    del pv, pcn, pb, pw
    group = np.concatenate((vlayer, vlayer[dom]))
    tile_c = ctile[used]
    tile_c = np.where(tile_c >= 0, tile_c, vtile[dom])
    tiles_all = np.concatenate((vtile, tile_c)).astype(np.int32)
    if subgroup == "tile":
        sub = tiles_all
    elif subgroup == "cs":
        vcs = np.array([b.cs for b in graph.batches], np.int32)[arrays.vertex_batch]
        sub = np.concatenate((vcs, vcs[dom])).astype(np.int32)
    else:
        sub = None
    drawn = np.zeros(n, bool)
    drawn[:nv] = True
    if color == "layer":
        ci, pal, legend = _categorical(np.concatenate((vlayer, vlayer[dom])), layer_names,
                                       np.arange(nv), legend_max, "layers")
    elif color == "op":
        ci, pal, legend = _categorical(np.concatenate((vcod, vcod[dom])), cod_names,
                                       np.arange(nv), legend_max, "codelets")
    else:
        ci, pal, legend = _tile_ramp(tiles_all, graph.num_tiles)
    info = {"vertices": nv, "graph_edges": int(graph.num_edges), "chunks": k,
            "vertex_chunk_edges": npieces, "copy_links": int(na.size), "layers": len(layer_names),
            "tiles": int(graph.num_tiles), "graph_of_s": time.perf_counter() - t0}
    say(f"vertex level: {nv:,} vertices + {k:,} tensor chunks, {src.size:,} lines")
    return DrawGraph("vertex", n, nv, src, dst, weight, group.astype(np.int32), sub,
                     layer_names, ci, pal, legend, drawn, info=info)


def _tile_level(c, color, legend_max, chunk, say):
    graph = c.lowered.graph
    arrays = c.exe.arrays
    T = int(graph.num_tiles)
    t0 = time.perf_counter()
    bounds, ctile = _chunks(graph, chunk)
    pv, pc, pb, pw = _bipartite(graph, arrays, bounds, say)
    vt = arrays.vertex_tile.astype(np.int64)[pv]
    ct = ctile[pc].astype(np.int64)
    remote = (ct >= 0) & (ct != vt)
    a, b, w = vt[remote], ct[remote], pb[remote]
    del pv, pc, pb, pw, vt, ct
    key = np.minimum(a, b) * T + np.maximum(a, b)
    uk, inv = np.unique(key, return_inverse=True)
    bw = np.bincount(inv.ravel(), w).astype(np.float32)
    src = (uk // T).astype(np.int32)
    dst = (uk % T).astype(np.int32)
    vlayer, layer_names, vcod, cod_names = _layers(graph, arrays)
    vtile = arrays.vertex_tile.astype(np.int64)

    def dominant(cat, k):
        cnt = np.bincount(vtile * k + cat, minlength=T * k).reshape(T, k)
        d = cnt.argmax(1)
        return d, cnt.sum(1) > 0

    glayer, busy = dominant(vlayer, max(len(layer_names), 1))
    if color == "layer":
        ci, pal, legend = _categorical(glayer, layer_names, np.flatnonzero(busy), legend_max,
                                       "layers")
        legend = [(f"{lab}", rgb) for lab, rgb in legend]
    elif color == "op":
        gcod, _ = dominant(vcod, max(len(cod_names), 1))
        ci, pal, legend = _categorical(gcod, cod_names, np.flatnonzero(busy), legend_max, "codelets")
    else:
        ci, pal, legend = _tile_ramp(np.arange(T), T)
    info = {"tiles": T, "tiles_used": int(busy.sum()), "tile_pairs": int(src.size),
            "exchange_bytes": float(bw.sum()), "graph_of_s": time.perf_counter() - t0}
    say(f"tile level: {T} tiles, {src.size:,} tile pairs exchanging data")
    return DrawGraph("tile", T, T, src, dst, bw, glayer.astype(np.int32), None, layer_names,
                     ci, pal, legend, None, info=info)


def _op_level(og, color, legend_max, say):
    ops = og.ops()
    idx = {o: i for i, o in enumerate(ops)}
    layer_names, lidx = [], {}
    type_names, tidx = [], {}
    group = np.zeros(len(ops), np.int32)
    otype = np.zeros(len(ops), np.int32)
    for i, o in enumerate(ops):
        d = og.op(o)
        lab = d.get("layer") or o
        if lab not in lidx:
            lidx[lab] = len(layer_names)
            layer_names.append(lab)
        group[i] = lidx[lab]
        t = d.get("op") or "?"
        if t not in tidx:
            tidx[t] = len(type_names)
            type_names.append(t)
        otype[i] = tidx[t]
    src, dst, w = [], [], []
    for a, b, d in og.graph.edges(data=True):
        t = og.tensors.get(d.get("tensor"))
        src.append(idx[a])
        dst.append(idx[b])
        w.append(t.size * DTYPE_BYTES.get(t.dtype, 4) if t is not None else 1)
    src = np.asarray(src, np.int32)
    dst = np.asarray(dst, np.int32)
    w = np.asarray(w, np.float32)
    if color == "layer":
        ci, pal, legend = _categorical(group, layer_names, None, legend_max, "layers")
    else:
        ci, pal, legend = _categorical(otype, type_names, None, legend_max, "op types")
    say(f"op level: {len(ops)} ops, {src.size} tensors between them")
    return DrawGraph("op", len(ops), len(ops), src, dst, w, group, None, layer_names, ci, pal,
                     legend, None, info={"ops": len(ops), "op_edges": int(src.size)})


def graph_of(compiled, level: str = "vertex", color: str = "layer", *, legend_max: int = 24,
             chunk: Optional[int] = None, subgroup: Optional[str] = "cs",
             progress: Optional[Callable] = None) -> DrawGraph:
    """What to draw for a compiled model (``simulator.run.build``'s result).

    ``level``: "vertex" (every vertex + the tensor chunks they share),
    "tile" (tiles and the bytes they exchange) or "op" (the op graph; an
    ``OpGraph`` is accepted too).  ``color``: "layer", "op" or "tile".
    ``chunk``: cut tile-mapping runs into blocks of at most this many
    elements (default: one chunk per run).  ``subgroup`` (vertex level):
    "cs" (default), "tile" or None: a second, finer clustering constraint
    for the layout inside each layer (see the module docstring).
    """
    _check(level, color)
    if subgroup not in (None, "tile", "cs"):
        raise ValueError(f"unknown subgroup {subgroup!r} (choose None, 'tile' or 'cs')")
    if chunk is not None and int(chunk) < 1:
        raise ValueError(f"chunk must be a positive number of elements, got {chunk}")

    def say(msg):
        if progress:
            progress(msg, 0.0)

    if level == "op":
        og = getattr(compiled, "opgraph", compiled)
        if not hasattr(og, "ops"):
            raise ValueError("level 'op' needs a compiled model or an OpGraph")
        return _op_level(og, color, legend_max, say)
    if not hasattr(compiled, "lowered") or not hasattr(compiled, "exe"):
        raise ValueError(f"level {level!r} needs a compiled model (simulator.run.build(...)), "
                         f"got {type(compiled).__name__}")
    if level == "vertex":
        return _vertex_level(compiled, color, legend_max, chunk, subgroup, say)
    return _tile_level(compiled, color, legend_max, chunk, say)


# --------------------------------------------------------------------------
# layout + render
# --------------------------------------------------------------------------
def place(g: DrawGraph, seed: int = 0, progress=None, weight_power: float = 0.5,
          **layout_kw) -> np.ndarray:
    """Positions (g.n, 2) of every node of ``g`` (viz.layout.layout).

    The layout's edge weights are ``bytes ** weight_power`` (default 0.5:
    a 100x bigger region pulls 10x harder; with raw bytes a few huge
    regions dominate and small layers are strung out into thin bands).
    """
    w = g.weight if weight_power == 1 else np.power(g.weight, np.float32(weight_power))
    return layout(g.n, g.src, g.dst, w, group=g.group if g.level != "tile" else None,
                  subgroup=g.subgroup, seed=seed, progress=progress, **layout_kw)


def draw(g: DrawGraph, xy: np.ndarray, path, *, size: int = 2048, title: Optional[str] = None, **kw):
    """Render ``g`` at positions ``xy`` to ``path`` (.png or .svg)."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in (".png", ".svg"):
        raise ValueError(f"unsupported image format {ext!r} for {path!r} (use .png or .svg)")
    if g.drawn is not None:
        kw.setdefault("node_mask", g.drawn)
    if g.level == "vertex":
        kw.setdefault("node_size", _vertex_node_size(g.n_vertices, size))
    return render(path, xy, g.src, g.dst, g.color_index, g.palette, size=size, legend=g.legend,
                  title=title if title is not None else g.title, **kw)


def _vertex_node_size(nv, size):
    # about 0.5 px at 1 M vertices on 2048 px, bigger for small graphs
    return float(np.clip(0.35 * size / math.sqrt(max(nv, 1)), 0.0, 4.0))


def _describe(c, model, level):
    m = c.report.get("model", {}) if getattr(c, "report", None) else {}
    name = m.get("name") or (model if isinstance(model, str) else getattr(model, "name", "model"))
    bits = [str(name)]
    if m:
        bits.append(("training" if m.get("train") else "inference") + f", batch {m.get('batch')}, "
                    f"{m.get('dtype')}")
    return " \u2014 ".join(bits)


def render_model_graph(model_or_compiled, path, *, level: str = "vertex", color: str = "layer",
                       size: int = 2048, seed: int = 0, progress: Optional[Callable] = None,
                       timings: Optional[dict] = None, chunk: Optional[int] = None,
                       legend_max: int = 24, subgroup: Optional[str] = "cs"):
    """Compile ``model_or_compiled`` (a :class:`~simulator.config.RunConfig`, a built-in
    name, an .onnx path, an ``OpGraph``, or an already compiled ``Compiled``) and draw its
    graph to ``path`` (.png or .svg; big graphs embed a raster in the SVG under vector
    text).  Returns ``path``.

    ``level``: vertex | tile | op; ``color``: layer | op | tile; ``size``: image side in
    pixels; ``progress``: ``progress(message, fraction)``; ``timings``: a dict filled with
    the seconds of each stage (compile, graph, layout, render) and counts.
    """
    _check(level, color)
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in (".png", ".svg"):
        raise ValueError(f"unsupported image format {ext!r} for {path!r} (use .png or .svg)")
    if not isinstance(size, (int, np.integer)) or not 64 <= int(size) <= 16384:
        raise ValueError(f"size must be an integer number of pixels in 64..16384, got {size!r}")
    timings = {} if timings is None else timings

    def say(msg, frac=0.0):
        if progress:
            progress(msg, frac)

    t0 = time.perf_counter()
    c = model_or_compiled
    if not (hasattr(c, "lowered") and hasattr(c, "exe")):
        cfg = c if isinstance(c, RunConfig) else RunConfig(model=c)
        if level == "op":
            c = models.load(cfg.model, batch=cfg.batch, train=cfg.train, optimizer=cfg.optimizer,
                            model_kw=cfg.model_kw)
        else:
            say("compiling")
            c = build(cfg.replace(suggest=False))
    timings["compile_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = graph_of(c, level=level, color=color, legend_max=legend_max, chunk=chunk, subgroup=subgroup,
                 progress=progress)
    timings["graph_s"] = time.perf_counter() - t0
    if hasattr(c, "lowered"):
        desc = _describe(c, getattr(model_or_compiled, "model", model_or_compiled), level)
        gr = c.lowered.graph
        counts = {"vertex": f"{gr.num_vertices:,} vertices, {gr.num_edges:,} edges",
                  "tile": f"{g.info.get('tiles_used', g.n):,} tiles, {g.src.size:,} tile pairs exchanging",
                  "op": f"{g.n:,} ops"}[level]
    else:
        desc = str(getattr(c, "name", model_or_compiled))
        counts = f"{g.n:,} ops, {g.src.size:,} tensors"
    g.title = f"{desc} \u2014 {counts}"
    t0 = time.perf_counter()
    xy = place(g, seed=seed, progress=progress)
    timings["layout_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    draw(g, xy, path, size=int(size))
    timings["render_s"] = time.perf_counter() - t0
    timings.update({"nodes": g.n, "lines": int(g.src.size)} | {k: v for k, v in g.info.items()})
    say(f"wrote {path}", 1.0)
    return path
