"""Recomputation (activation checkpointing) for training graphs: OpGraph -> OpGraph.

Backward ops read forward activations.  Keeping them all from the forward pass
to their backward use is what makes training memory large.  With
recomputation only some forward tensors (the *checkpoints*) are kept; just
before the backward ops of a *unit* (a block, a segment) run, the forward ops
that produce what those backward ops need are run again from the checkpoints
(phase ``"recompute"``, op names ``<op>@rc<unit>``), and the backward ops read
the recomputed tensors (``<tensor>@rc<unit>``).  The forward tensors that are
not checkpoints then die at their last forward use.

Modes:

``none``    keep everything (the graph is returned unchanged);
``blocks``  keep the inputs of each repeated block (ResNet bottleneck, BERT
            layer) and everything outside blocks; recompute a block's forward
            ops just before its backward ops;
``sqrt``    Chen et al. 2016: cut the forward ops into about sqrt(n) segments
            at tensors that alone cross a cut (articulation points), keep the
            segment boundaries, recompute a segment just before its backward;
``all``     keep only the graph inputs: each unit (a block, or a single op
            outside blocks) recomputes everything it needs from the input.
            Least memory, quadratic extra work.
``checkpoints``  keep the outputs of the layers (or blocks) named in
            ``checkpoints`` (Graphcore's recomputation checkpoints / pipeline
            splits on one chip); each segment between two is recomputed before
            its backward ops, as in ``sqrt``; the last segment (after the last
            checkpoint) is kept, since its backward pass follows at once.

The loss op and its outputs are never recomputed.

    >>> import models
    >>> g = models.get_model("mnist-mlp", train=True, batch=4)
    >>> r = recompute(g, "sqrt")
    >>> sorted({r.op(n)["phase"] for n in r.graph})
    ['bwd', 'fwd', 'loss', 'recompute', 'update']
    >>> recompute_summary(g, r)["extra_ops"] > 0
    True
"""
from __future__ import annotations

import difflib
import math

MODES = ("none", "blocks", "sqrt", "all", "checkpoints")


def _fwd_produced(opg):
    return {t for o in opg.ops() if opg.op(o)["phase"] == "fwd" for t in opg.op(o)["outputs"]}


def articulation_tensors(opg) -> list:
    """Forward activations that alone cross a cut of the forward op order, in order."""
    fwd = [o for o in opg.ops() if opg.op(o)["phase"] == "fwd"]
    pos = {o: i for i, o in enumerate(fwd)}
    produced = _fwd_produced(opg)
    last = {}
    for i, o in enumerate(fwd):
        for t in opg.op(o)["inputs"]:
            if t in produced:
                last[t] = i
    start = {}
    for o in fwd:
        for t in opg.op(o)["outputs"]:
            start[t] = pos[o]
    # crossing count after position i: tensors with start <= i < last
    n = len(fwd)
    delta = [0] * (n + 1)
    for t, s in start.items():
        e = last.get(t, s)
        if e > s:
            delta[s] += 1
            delta[e] -= 1
    out, cur = [], 0
    for i in range(n - 1):
        cur += delta[i]
        if cur == 1:
            outs = [t for t in opg.op(fwd[i])["outputs"] if last.get(t, -1) > i]
            if len(outs) == 1:
                out.append(outs[0])
    return out


def layer_names(opg, *, blocks=True) -> list:
    """Forward layer names in forward order, then the block names (what a checkpoint or a split may name)."""
    out, seen = [], set()
    for o in opg.ops():
        d = opg.op(o)
        if d["phase"] == "fwd" and d["layer"] not in seen:
            seen.add(d["layer"])
            out.append(d["layer"])
    if blocks:
        for o in opg.ops():
            b = opg.op(o)["block"]
            if opg.op(o)["phase"] == "fwd" and b is not None and b not in seen:
                seen.add(b)
                out.append(b)
    return out


def unknown_layer(opg, option, name) -> ValueError:
    """The error for a layer name that ``opg`` does not have, with a few valid names."""
    names = layer_names(opg)
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.4)
    close += [n for n in names if n not in close][:4 - len(close)]
    return ValueError(f"{option}: {name!r} is not a layer or block of {opg.name} (e.g. {', '.join(close)}; "
                      f"{len(names)} names in all, see `ipusim layers MODEL`)")


def named_outputs(opg, names, option="recompute_checkpoints") -> list:
    """Per name (a forward layer, or a block), the forward tensors it hands to later layers."""
    fwd = [o for o in opg.ops() if opg.op(o)["phase"] == "fwd"]
    out = []
    for name in names:
        mine = [o for o in fwd if opg.op(o)["layer"] == name] or [o for o in fwd if opg.op(o)["block"] == name]
        if not mine:
            raise unknown_layer(opg, option, name)
        inside = set(mine)
        ts = [t for o in mine for t in opg.op(o)["outputs"]
              if any(c not in inside for c in _consumers(opg, t))]
        out.append(ts or list(opg.op(mine[-1])["outputs"]))
    return out


def _consumers(opg, t):
    return [o for o in opg.ops() if opg.op(o)["phase"] == "fwd" and t in opg.op(o)["inputs"]]


def checkpoints(opg, mode, names=()) -> set:
    """Forward-produced tensors kept from the forward pass under ``mode`` (``names``: the layers of
    mode ``checkpoints``)."""
    produced = _fwd_produced(opg)
    if mode == "checkpoints":
        if not names:
            raise ValueError("recompute_checkpoints: mode 'checkpoints' needs the layers to keep")
        keep = {t for ts in named_outputs(opg, names) for t in ts}
        fwd = [o for o in opg.ops() if opg.op(o)["phase"] == "fwd"]
        last = max(i for i, o in enumerate(fwd) if any(t in keep for t in opg.op(o)["outputs"]))
        for o in fwd[last + 1:]:          # the last segment is not recomputed
            keep.update(opg.op(o)["outputs"])
        return keep & produced
    if mode == "none":
        return set(produced)
    if mode == "all":
        return set()
    if mode == "blocks":
        keep = set()
        for o in opg.ops():
            d = opg.op(o)
            if d["phase"] != "fwd":
                continue
            if d["block"] is None:
                keep.update(d["outputs"])
            for t in d["inputs"]:
                p = opg.tensors[t].producer
                if p is not None and t in produced and opg.op(p)["block"] != d["block"]:
                    keep.add(t)
        return keep
    if mode == "sqrt":
        cands = articulation_tensors(opg)
        k = max(1, math.ceil(math.sqrt(max(len(cands), 1))))
        return set(cands[k - 1::k])
    raise ValueError(f"unknown recompute mode {mode!r}; choose from {', '.join(MODES)}")


def _units(opg, mode, keep):
    """Unit of each backward op: the key its recomputation is grouped by."""
    fwd = [o for o in opg.ops() if opg.op(o)["phase"] == "fwd"]
    pos = {o: i for i, o in enumerate(fwd)}
    seg = {}
    if mode in ("sqrt", "checkpoints"):
        s = 0
        for o in fwd:
            seg[o] = s
            if any(t in keep for t in opg.op(o)["outputs"]):
                s += 1
    unit = {}
    for o in opg.ops():
        d = opg.op(o)
        if d["phase"] != "bwd":
            continue
        f = d["attrs"].get("forward")
        fd = opg.op(f) if f in opg.graph else None
        if mode in ("sqrt", "checkpoints"):
            unit[o] = f"s{seg.get(f, 0)}" if f in seg else f"o{o}"
        elif fd is not None and fd.get("block") is not None:
            unit[o] = f"b{fd['block']}"
        else:
            unit[o] = f"o{pos.get(f, o)}"
    return unit


def recompute(opg, mode="none", checkpoints_=()):
    """A copy of training graph ``opg`` with recomputation ``mode`` (see the module docstring);
    ``checkpoints_``: the layer or block names of mode ``checkpoints``."""
    if mode not in MODES:
        raise ValueError(f"unknown recompute mode {mode!r}; choose from {', '.join(MODES)}")
    if mode == "none":
        return opg
    phases = {opg.op(o)["phase"] for o in opg.graph}
    if "bwd" not in phases:
        raise ValueError(f"{opg.name}: recomputation needs a training graph (no backward ops)")
    produced = _fwd_produced(opg)
    keep = checkpoints(opg, mode, checkpoints_)
    unit_of = _units(opg, mode, keep)
    out = opg.without_ops(f"{opg.name}+rc-{mode}")
    emitted_units = {}

    def rc_name(t, u):
        return f"{t}@rc{u}"

    def emit_recompute(u, needed):
        """Clone the forward ops producing ``needed`` (and what they need) for unit ``u``."""
        done = emitted_units.setdefault(u, set())
        order = []
        seen = set()

        def visit(t):
            if t in done or t in seen:
                return
            seen.add(t)
            p = opg.tensors[t].producer
            for x in opg.op(p)["inputs"]:
                if x in produced and x not in keep:
                    visit(x)
            order.append(p)

        for t in needed:
            visit(t)
        ops_done = set()
        for p in order:
            if p in ops_done:
                continue
            ops_done.add(p)
            d = opg.op(p)
            outs = []
            for t in d["outputs"]:
                name = rc_name(t, u)
                if name not in out.tensors:
                    ti = opg.tensors[t]
                    out.add_tensor(name, ti.shape, ti.dtype, "activation")
                outs.append(name)
                done.add(t)
            ins = [rc_name(x, u) if (x in produced and x not in keep) else x for x in d["inputs"]]
            out.add_op_like(d, f"{p}@rc{u}", inputs=ins, outputs=outs, phase="recompute",
                            block_type=d["block_type"] and f"{d['block_type']}:recompute")

    for o in opg.ops():
        d = opg.op(o)
        ins = list(d["inputs"])
        if d["phase"] == "bwd":
            u = unit_of[o]
            need = [t for t in ins if t in produced and t not in keep]
            if need:
                emit_recompute(u, need)
                ins = [rc_name(t, u) if (t in produced and t not in keep) else t for t in ins]
        out.add_op_like(d, o, inputs=ins)
    return out


def recompute_summary(before, after) -> dict:
    """Extra ops and FLOPs that recomputation added."""
    rc = [o for o in after.graph if after.op(o)["phase"] == "recompute"]
    fwd_flops = sum(before.op(o)["flops"] for o in before.graph if before.op(o)["phase"] == "fwd")
    extra = sum(after.op(o)["flops"] for o in rc)
    return {"extra_ops": len(rc), "extra_flops": int(extra),
            "extra_forward_passes": float(extra / fwd_flops) if fwd_flops else 0.0}
