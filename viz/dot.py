"""Graphviz drawings: a model's op graph and a compiled program's tree (DOT and SVG).

* :func:`op_graph_dot` -- one node per op (layer, op type, output shape),
  coloured by op family, clustered by repeated block (ResNet bottlenecks, BERT
  encoder layers), graph inputs and outputs as ellipses;
* :func:`program_dot` -- the program tree: ``Sequence``, ``Repeat``, ``Call``,
  ``Execute``, ``Copy``, ``Sync``.  Graph functions are drawn once, in a
  cluster, with a dashed edge from every ``Call``; runs of ``Execute`` (and of
  ``Copy``) longer than ``collapse`` become one node with a count.

Both return a ``graphviz.Digraph``: ``.source`` is the DOT text,
``.pipe(format="svg")`` the SVG.  :func:`write` picks the format from the
file name.

    >>> import models
    >>> d = op_graph_dot(models.load("mnist-mlp"))
    >>> d.source.startswith("digraph") and "Gemm" in d.source
    True
"""
from __future__ import annotations

import os

import graphviz

from compiler.program import Call, Copy, Execute, Repeat, Sequence, Sync

__all__ = ["op_graph_dot", "program_dot", "write", "FAMILY_COLOURS"]

FAMILY_COLOURS = {
    "conv": "#9ecae1", "matmul": "#a1d99b", "elementwise": "#fdd0a2", "pool": "#dadaeb",
    "norm": "#c7e9c0", "softmax": "#fcbba1", "reduce": "#d9d9d9", "loss": "#fb6a4a",
    "optimizer": "#bcbddc", "reshape": "#f0f0f0", "concat": "#e5f5e0", "gather": "#fee391",
}
PHASE_BORDER = {"fwd": "#455a64", "loss": "#c62828", "bwd": "#6a1b9a", "update": "#1565c0"}

_NODE = dict(shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10", penwidth="1.2")
_EDGE = dict(color="#607d8b", arrowsize="0.6", penwidth="0.9")


def _shape(shape):
    return "×".join(str(s) for s in shape) if shape else "scalar"


def _q(s) -> str:
    """Escape a string for a DOT label: backslashes doubled, newlines as DOT's centred line break."""
    return str(s).replace("\\", "\\\\").replace("\n", "\\n")


def op_graph_dot(og, *, cluster=True, show_inputs=True, rankdir="TB", name=None) -> graphviz.Digraph:
    """The op-level graph of a model (an :class:`models.opgraph.OpGraph`)."""
    d = graphviz.Digraph(name or og.name, graph_attr=dict(rankdir=rankdir, fontname="Helvetica", fontsize="11",
                                                          nodesep="0.25", ranksep="0.3", label=f"{og.name}: "
                                                          f"{len(og)} ops", labelloc="t"),
                         node_attr=_NODE, edge_attr=_EDGE)
    ops = og.ops()
    ids = {n: f"op{i}" for i, n in enumerate(ops)}

    def node(g, n):
        o = og.op(n)
        outs = o.get("outputs") or []
        shp = _shape(og.tensors[outs[0]].shape) if outs and outs[0] in og.tensors else ""
        label = f"{n}\n{o['op']}" + (f"\n{shp}" if shp else "")
        if o.get("phase", "fwd") != "fwd":
            label += f"\n[{o['phase']}]"
        g.node(ids[n], _q(label), fillcolor=FAMILY_COLOURS.get(o.get("family"), "#ffffff"),
               color=PHASE_BORDER.get(o.get("phase"), "#455a64"),
               tooltip=_q(f"{n}: {o['op']} ({o.get('family')}), layer {o.get('layer')}, {o.get('flops', 0):,} FLOP"))

    blocks = {}
    for n in ops:
        b = og.op(n).get("block") if cluster else None
        blocks.setdefault(b, []).append(n)
    for b, members in blocks.items():
        if b is None:
            for n in members:
                node(d, n)
            continue
        bt = og.op(members[0]).get("block_type")
        with d.subgraph(name=f"cluster_{len(d.body)}_{abs(hash(b)) % 10 ** 8}") as sg:
            sg.attr(label=_q(f"{b}" + (f"\n{bt}" if bt else "")), style="rounded,filled", fillcolor="#f7f9fb",
                    color="#b0bec5", fontsize="10", fontname="Helvetica")
            for n in members:
                node(sg, n)
    for u, v, data in og.graph.edges(data=True):
        t = data.get("tensor")
        d.edge(ids[u], ids[v], tooltip=_q(f"{t} {_shape(og.tensors[t].shape)}" if t in og.tensors else ""))
    if show_inputs:
        for t in og.inputs:
            tid = f"in_{len(d.body)}"
            d.node(tid, _q(f"{t}\n{_shape(og.tensors[t].shape)}"), shape="ellipse", style="filled",
                   fillcolor="#e8f5e9", color="#2e7d32")
            for n in ops:
                if t in (og.op(n).get("inputs") or []):
                    d.edge(tid, ids[n])
        for t in og.outputs:
            p = og.tensors[t].producer if t in og.tensors else None
            if p in ids:
                tid = f"out_{len(d.body)}"
                d.node(tid, _q(f"{t}\n{_shape(og.tensors[t].shape)}"), shape="ellipse", style="filled",
                       fillcolor="#fff3e0", color="#e65100")
                d.edge(ids[p], tid)
    return d


def _copy_label(p):
    def nm(x):
        n = getattr(x, "name", None)
        if n is None:
            return type(x).__name__
        return f"host:{n}" if type(x).__name__ == "DataStream" else n
    return f"{nm(p.src)} → {nm(p.dst)}"


def program_dot(program, *, collapse=4, name="program", rankdir="LR", calls=None) -> graphviz.Digraph:
    """The program tree of a compiled model (``Lowered.program`` or ``Executable.program``).

    ``collapse``: a run of at least this many consecutive ``Execute`` (or
    ``Copy``) children of one Sequence is drawn as one node "N × Execute".
    ``calls`` (optional, e.g. ``Lowered.calls``): block type -> number of calls, shown on functions.
    """
    d = graphviz.Digraph(name, graph_attr=dict(rankdir=rankdir, fontname="Helvetica", fontsize="11",
                                               nodesep="0.12", ranksep="0.35"),
                         node_attr=_NODE, edge_attr=_EDGE)
    counter = [0]
    funcs = {}       # id(function) -> (root node id, function)
    pending = []     # functions to draw

    def new_id():
        counter[0] += 1
        return f"p{counter[0]}"

    def leaf(g, p):
        nid = new_id()
        if isinstance(p, Execute):
            cs = p.compute_set
            g.node(nid, _q(f"Execute\n{cs.name}"), fillcolor="#dbe9f6", color="#3B76AF",
                   tooltip=_q(f"compute set {cs.id}: layer {cs.layer}, {cs.phase}"))
        elif isinstance(p, Copy):
            g.node(nid, _q(f"Copy\n{_copy_label(p)}"), fillcolor="#fde6cf", color="#EF8A2F")
        elif isinstance(p, Sync):
            g.node(nid, "Sync", fillcolor="#eceff1", color="#78909c", shape="box")
        else:
            g.node(nid, _q(type(p).__name__), fillcolor="#ffffff")
        return nid

    def run_node(g, kind, items):
        nid = new_id()
        if kind is Execute:
            names = [c.compute_set.name for c in items]
            label = f"{len(items)} × Execute\n{names[0]}\n…\n{names[-1]}"
            g.node(nid, _q(label), fillcolor="#dbe9f6", color="#3B76AF", penwidth="2",
                   tooltip=_q("\n".join(names[:200])))
        else:
            label = f"{len(items)} × Copy\n{_copy_label(items[0])}\n…\n{_copy_label(items[-1])}"
            g.node(nid, _q(label), fillcolor="#fde6cf", color="#EF8A2F", penwidth="2")
        return nid

    def visit(g, p):
        if isinstance(p, Sequence):
            nid = new_id()
            g.node(nid, _q(f"Sequence\n{len(p.children)} children"), fillcolor="#ffffff", color="#455a64")
            kids = p.children
            i = 0
            while i < len(kids):
                k = kids[i]
                if isinstance(k, (Execute, Copy)):
                    j = i
                    while j < len(kids) and type(kids[j]) is type(k):
                        j += 1
                    if collapse and j - i >= collapse:
                        cid = run_node(g, type(k), kids[i:j])
                        g.edge(nid, cid)
                        i = j
                        continue
                g.edge(nid, visit(g, k))
                i += 1
            return nid
        if isinstance(p, Repeat):
            nid = new_id()
            g.node(nid, _q(f"Repeat × {int(p.count)}"), shape="hexagon", fillcolor="#fff8e1", color="#f9a825")
            g.edge(nid, visit(g, p.body))
            return nid
        if isinstance(p, Call):
            f = p.function
            nid = new_id()
            g.node(nid, _q(f"Call\n{f.name}"), shape="cds", fillcolor="#ede7f6", color="#5e35b1")
            key = id(f)
            if key not in funcs:
                funcs[key] = (new_id(), f)
                pending.append(key)
            d.edge(nid, funcs[key][0], style="dashed", color="#5e35b1", constraint="true")
            return nid
        return leaf(g, p)

    root = visit(d, program)
    d.node("start", "program", shape="doublecircle", fillcolor="#263238", fontcolor="white", style="filled",
           fontsize="9")
    d.edge("start", root)
    i = 0   # functions discovered while drawing (and those called from function bodies)
    while i < len(pending):
        key = pending[i]
        fid, f = funcs[key]
        n = (calls or {}).get(f.name)
        with d.subgraph(name=f"cluster_f{i}") as sg:
            sg.attr(label=_q(f"function {f.id}: {f.name}" + (f" ({n} calls)" if n else "")), style="rounded,filled",
                    fillcolor="#f5f3fa", color="#9575cd", fontname="Helvetica", fontsize="10")
            sg.node(fid, _q(f"function\n{f.name}"), shape="component", fillcolor="#d1c4e9", color="#5e35b1")
            body = visit(sg, f.program)
            sg.edge(fid, body)
        i += 1
    return d


def write(dot: graphviz.Digraph, path: str) -> str:
    """Write DOT (``.dot``/``.gv``) or any Graphviz format by extension (``.svg``, ``.png``, ``.pdf``)."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext in ("dot", "gv", ""):
        with open(path, "w", encoding="utf-8") as f:
            f.write(dot.source)
    else:
        data = dot.pipe(format=ext)
        with open(path, "wb") as f:
            f.write(data)
    return path
