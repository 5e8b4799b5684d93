"""FLOP / parameter summaries of an :class:`OpGraph`."""
from __future__ import annotations

from .opgraph import OpGraph


def summary(g: OpGraph) -> dict:
    """Totals and a per-layer table of ``g``.

    Returns ``{"name", "batch", "params", "flops", "ops", "by_family",
    "by_phase", "layers"}``; ``by_family`` / ``by_phase`` map to
    ``{"ops", "flops"}`` and ``layers`` is a list (first-op order) of
    ``{"layer", "ops", "op_types", "params", "flops", "output_shape"}``; a
    parameter counts towards the first layer that reads it.
    """
    layers, by_family, by_phase = {}, {}, {}
    seen_params = set()
    for n in g.ops():
        d = g.op(n)
        row = layers.setdefault(d["layer"], {"layer": d["layer"], "ops": 0, "op_types": [],
                                             "params": 0, "flops": 0, "output_shape": None})
        row["ops"] += 1
        row["flops"] += d["flops"]
        if d["op"] not in row["op_types"]:
            row["op_types"].append(d["op"])
        if d["phase"] == "fwd" and d["outputs"]:
            row["output_shape"] = g.tensors[d["outputs"][0]].shape
        for t in d["inputs"]:
            ti = g.tensors[t]
            if ti.kind == "param" and ti.inplace_of is None and t not in seen_params:
                seen_params.add(t)
                row["params"] += ti.size
        for key, table in ((d["family"], by_family), (d["phase"], by_phase)):
            e = table.setdefault(key, {"ops": 0, "flops": 0})
            e["ops"] += 1
            e["flops"] += d["flops"]
    return {"name": g.name, "batch": g.batch, "params": g.params(), "flops": g.flops(),
            "ops": len(g), "by_family": by_family, "by_phase": by_phase,
            "layers": list(layers.values())}


def format_summary(s: dict, max_rows: int | None = None) -> str:
    """A plain-text table of :func:`summary`'s result."""
    rows = s["layers"][:max_rows] if max_rows else s["layers"]
    w = max([len("layer")] + [len(r["layer"]) for r in rows])
    out = [f"{s['name']}: {s['params']:,} params, {s['flops'] / 1e9:.3f} GFLOPs, "
           f"{s['ops']} ops (batch {s['batch']})",
           f"{'layer':<{w}}  {'params':>12}  {'MFLOPs':>12}  output"]
    for r in rows:
        shape = "x".join(map(str, r["output_shape"])) if r["output_shape"] else ""
        out.append(f"{r['layer']:<{w}}  {r['params']:>12,}  {r['flops'] / 1e6:>12.2f}  {shape}")
    if max_rows and len(s["layers"]) > max_rows:
        out.append(f"... {len(s['layers']) - max_rows} more layers")
    return "\n".join(out)
