"""A sparse or conditional layer beside its dense equivalent: compile and simulate both.

    PYTHONPATH=. .venv/bin/python bench/sparse_compare.py            # SLIDE and MoE examples

:func:`compare` builds the sparse and the dense version of a model from
models/sparse.py (``builder(dtype=..., dense=..., **kw)``), runs each through
``simulator.run.build`` on a copy of the chip with an infinitely fast host link
(the layer, not the host, is compared) and returns cycles, memory and FLOPs of each.
"""
from __future__ import annotations

import argparse
import json

from hardware.chips import get_chip
from models.sparse import moe_layer_model, slide_mlp
from simulator.config import RunConfig
from simulator.run import build


def compare(builder, chip="gc200", dtype="fp32", **kw) -> dict:
    """Compile + simulate the sparse and the dense version; cycles, memory and FLOPs of each."""
    chip = get_chip(chip) if isinstance(chip, str) else chip
    fast = chip.replace(host_link_bytes_per_s=1e18, host_link_latency_s=0.0)
    out = {}
    for dense in (False, True):
        g = builder(dtype=dtype, dense=dense, **kw)
        c = build(RunConfig(model=g, chip=fast, dtype=dtype, suggest=False), simulate=True)
        rep, m = c.sim, c.memory
        out["dense" if dense else "sparse"] = {
            "cycles": rep.cycles, "compute_cycles": rep.compute_cycles, "exchange_cycles": rep.exchange_cycles,
            "sync_cycles": rep.sync_cycles, "supersteps": rep.supersteps, "flops": int(g.flops()),
            "params": int(g.params()), "vertices": c.lowered.graph.num_vertices,
            "memory": {"peak_tile_bytes": int(m["peak_tile_bytes"]), "total_bytes": int(m.get("total_bytes", 0)),
                       "fits": bool(m["fits"])}}
    out["cycle_ratio"] = out["sparse"]["cycles"] / max(out["dense"]["cycles"], 1)
    out["flop_ratio"] = out["sparse"]["flops"] / max(out["dense"]["flops"], 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chip", default="gc200")
    args = ap.parse_args(argv)
    slide = compare(slide_mlp, chip=args.chip, batch=4, n_in=64, hidden=64, n_out=16384, active=1024,
                    tables=4, bits=6)
    moe = compare(moe_layer_model, chip=args.chip, k=1, batch=2, tokens_per_sample=128, d_model=256,
                  hidden=512, experts=16)
    print(json.dumps({"slide": slide, "moe": moe}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
