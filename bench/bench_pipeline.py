"""Benchmark: ResNet-50 training, batch 16, a 4-stage pipeline on 4 GC200 chips.

    PYTHONPATH=. .venv/bin/python bench/bench_pipeline.py [--micro-batches 16] [--batch 16]
        [--compare-even] [--json out/bench_pipeline.json] [--trace out/pipeline_trace.json]

Prints the wall time of compile + simulate (the target is under 60 s on a
2-core machine), the throughput and the per-chip utilisation.  The stages
compile in parallel processes (``--workers``, default: CPU count).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from simulator.config import RunConfig  # noqa: E402
from simulator.multichip import run_multichip  # noqa: E402
from simulator.report import jsonable  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--chip", default="gc200")
    ap.add_argument("--ipus", type=int, default=4)
    ap.add_argument("--mode", default="pipeline")
    ap.add_argument("--replicas", type=int, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro-batches", type=int, default=16)
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--placement", default="auto")
    ap.add_argument("--inference", action="store_true")
    ap.add_argument("--compare-even", action="store_true")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-stage memory report")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--trace", default=None)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    cfg = RunConfig(model=a.model, chip=a.chip, ipus=a.ipus, mode=a.mode, replicas=a.replicas,
                    micro_batches=a.micro_batches, batch=a.batch, train=not a.inference, dtype=a.dtype,
                    placement=a.placement)
    r = run_multichip(cfg, compare_even=a.compare_even, trace=a.trace, workers=a.workers, memory=not a.no_memory)
    wall = time.perf_counter() - t0
    s, m = r["sim"], r["multichip"]
    print(f"{a.model} {'inference' if a.inference else 'training'} batch {a.batch} on {a.ipus} x {a.chip}, "
          f"{a.mode}: {m['stages']} stages x {m['replicas']} replicas, {m['micro_batches']} micro-batches "
          f"of {r['model']['micro_batch']}, {a.dtype}")
    print(f"wall time (compile + simulate): {wall:.1f} s  [{json.dumps({k: round(v, 1) for k, v in r['timing'].items()})}]")
    print(f"step: {s['step_cycles']:.0f} cycles = {s['step_seconds'] * 1e3:.2f} ms; "
          f"{s['samples_per_second']:.0f} samples/s; bubble {s['bubble_fraction']:.2f}; "
          f"host transfer hidden {s['hidden_transfer_fraction']:.2f}; link bytes {s['link_bytes']:,}")
    for st in m["per_stage"]:
        print(f"  stage {st['stage']}: {st['first_layer']} .. {st['last_layer']} ({st['layers']} layers, "
              f"{st['params']:,} params, {st['vertices']:,} vertices) fwd {st['fwd_cycles']:.0f} "
              f"bwd {st['bwd_cycles']:.0f} upd {st['update_cycles']:.0f} cycles; memory {st['memory']}")
    for p in s["per_ipu"]:
        print(f"  IPU {p['ipu']}: utilisation {p['utilisation']:.2f} (compute {p['compute_utilisation']:.2f}), "
              f"idle {p['idle_cycles']:.0f} cycles")
    cmp = m["placement"]["comparison"]
    print(f"placement estimate: even max stage {cmp['even']['est_max_stage_cycles']:.0f} cycles, auto "
          f"{cmp['auto']['est_max_stage_cycles']:.0f} (x{cmp['est_speedup_auto_vs_even']:.2f}); fits estimate "
          f"even {cmp['even']['fits_estimate']} auto {cmp['auto']['fits_estimate']}")
    if "simulated" in m["placement"]:
        print("simulated placements:", json.dumps(m["placement"]["simulated"]))
    if a.json:
        os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(jsonable({k: v for k, v in r.items() if not k.startswith("_")} | {"bench": {"wall_s": wall}}),
                      f, indent=2)
    return r, wall


if __name__ == "__main__":
    main()
