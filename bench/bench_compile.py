"""Compile and simulate speed / memory targets (issues 2 and 3).

    .venv/bin/python bench/bench_compile.py                 # ResNet-50 inference, batch 1, gc200
    .venv/bin/python bench/bench_compile.py --alexnet-train # + AlexNet training graph build
Prints wall time per stage, graph size and peak RSS.
"""
import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from simulator.pipeline import build  # noqa: E402


def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(model, **kw):
    t = time.perf_counter()
    c = build(model, simulate=True, **kw)
    wall = time.perf_counter() - t
    g, s = c.report["graph"], c.report["sim"]
    print(f"{model} {kw}: {wall:.1f} s compile+simulate "
          f"(load {c.report['timing']['load_s']:.2f}, compile {c.report['timing']['compile_s']:.2f}, "
          f"simulate {c.report['timing']['simulate_s']:.2f}); {g['vertices']:,} vertices placed, "
          f"{g['vertices_executed']:,} executed, {g['edges']:,} edges; {s['samples_per_second']:.0f} samples/s; "
          f"peak RSS {rss_gib():.2f} GiB")
    return wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alexnet-train", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args()
    w = run("resnet50", chip="gc200", batch=1)
    print(f"target: ResNet-50 inference compile + simulate < 30 s: {'met' if w < 30 else 'MISSED'}")
    if a.alexnet_train:
        w = run("alexnet", chip="gc200", batch=a.batch, train=True)
        print(f"target: AlexNet training graph < 180 s and < 8 GiB: "
              f"{'met' if w < 180 and rss_gib() < 8 else 'MISSED'}")


if __name__ == "__main__":
    main()
