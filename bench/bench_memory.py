"""Memory planning figures: reuse, ResNet-50 figures, out of memory -> suggestion -> fits, recompute.

    PYTHONPATH=. .venv/bin/python bench/bench_memory.py            # everything (ResNet-50 training: minutes)
    PYTHONPATH=. .venv/bin/python bench/bench_memory.py --quick    # skip ResNet-50 training

Prints one block per experiment; every figure comes from the same code as
the JSON report (``memory.*``).
"""
from __future__ import annotations

import argparse
import sys
import time

import models
from simulator.run import build


def mib(b):
    return f"{b / 2**20:,.1f} MiB"


def reuse_line(name, c):
    m = c.memory
    return (f"{name:38s} no reuse {mib(m['no_reuse_bytes']):>11s}  with reuse {mib(m['with_reuse_bytes']):>11s}  "
            f"factor {m['reuse_factor']:.2f}x  (in-place pairs {m['in_place_pairs']}, not-always-live peak "
            f"{mib(m['not_always_live_peak_bytes'])} at '{m['peak_step_name']}')")


def timed(label, model, **kw):
    t = time.perf_counter()
    c = build(model, **kw)
    print(f"  [{label}: {time.perf_counter() - t:.1f} s]", file=sys.stderr)
    return c


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip ResNet-50 training")
    ap.add_argument("--batch", type=int, default=8, help="ResNet-50 training batch (default 8: does not fit one gc200)")
    ap.add_argument("--chip", default="gc200")
    a = ap.parse_args(argv)

    print("== published ResNet-50 figures (batch 1) ==")
    g = models.get_model("resnet50", batch=1)
    outs = [t for t in g.tensors.values() if t.producer is not None]
    by = {}
    for t in outs:
        by[g.op(t.producer)["op"]] = by.get(g.op(t.producer)["op"], 0) + t.size
    print(f"weights (op graph)                     {g.params() / 1e6:.2f} M   (published: about 26 M, 25,557,032)")
    print(f"every op output, forward               {sum(by.values()) / 1e6:.2f} M")
    print(f"conv + residual-add outputs            {(by['Conv'] + by['Add']) / 1e6:.2f} M   (published: about 16 M)")
    print(f"conv outputs (BN, ReLU, Add in place)  {by['Conv'] / 1e6:.2f} M")
    c = timed("resnet50 inference, no functions", model="resnet50", functions=False)
    vs = c.exe.graph.variables
    print(f"lowered: weight variables {sum(v.size for v in vs if v.kind == 'weight') / 1e6:.2f} M elements, "
          f"activation variables {sum(v.size for v in vs if v.kind == 'activation') / 1e6:.2f} M elements")

    print("\n== liveness + in-place reuse (published claim: 2-3x) ==")
    print(reuse_line("resnet50 inference, batch 1", c))
    c = timed("resnet50 inference, functions", model="resnet50")
    print(reuse_line("resnet50 inference, batch 1, functions", c))
    print(reuse_line("mnist-mlp training, batch 16", timed("mnist", model="mnist-mlp", train=True, batch=16)))
    print(reuse_line("mnist-mlp inference, batch 16", timed("mnist", model="mnist-mlp", batch=16)))

    if a.quick:
        return 0
    B = a.batch
    print(f"\n== ResNet-50 training, batch {B}, {a.chip} ==")
    try:
        base = timed(f"resnet50 train b{B}", model="resnet50", train=True, batch=B, chip=a.chip, simulate=True)
    except ValueError as e:
        print(f"does not compile: {e}")
        return 1
    m = base.report["memory"]
    print(f"fits: {m['fits']}  peak tile {m['peak_tile_bytes']:,} B  oom tiles {m['oom_tiles']}")
    print(reuse_line(f"resnet50 training, batch {B}", base))
    if m.get("message"):
        print(m["message"])
    fitting = [s for s in m.get("suggestions", []) if s["fits"]]
    for s in fitting[:3]:
        args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in s["args"].items()}
        kw = dict(train=True, batch=B, chip=a.chip, suggest=False, simulate=True) | args
        try:
            c = timed(s["option"], "resnet50", **kw)
        except ValueError as e:
            print(f"  {s['option']}: does not compile: {e}")
            continue
        print(f"  {s['option']:36s} estimated {s['peak_tile_bytes']:>9,} B  compiled {c.memory['peak_tile_bytes']:>9,} B"
              f"  fits {c.memory['fits']}  cycles {c.report['sim']['cycles']:,.0f}")
    print(f"\n== recompute, ResNet-50 training batch {B} (cycles vs none) ==")
    cyc0 = base.report["sim"]["cycles"]
    for mode in ("blocks", "sqrt"):
        try:
            c = timed(mode, model="resnet50", train=True, batch=B, chip=a.chip, recompute=mode, simulate=True,
                      suggest=False)
        except ValueError as e:
            print(f"  {mode}: does not compile: {e}")
            continue
        r = c.report["memory"]["recompute"]
        print(f"  {mode:7s} not-always-live peak {mib(c.memory['not_always_live_peak_bytes'])} "
              f"(none: {mib(base.memory['not_always_live_peak_bytes'])}), peak tile {c.memory['peak_tile_bytes']:,} B "
              f"(none: {base.memory['peak_tile_bytes']:,}), +{r['extra_ops']} ops, "
              f"+{r['extra_forward_passes']:.2f} forward passes, cycles {c.report['sim']['cycles'] / cyc0:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
