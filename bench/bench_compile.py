"""Compile and simulate speed / memory targets (issues 2 and 3).

    .venv/bin/python bench/bench_compile.py                 # ResNet-50 inference, batch 1, gc200
    .venv/bin/python bench/bench_compile.py --alexnet-train --batch 32 --batch 128
                                                            # + AlexNet training graph builds
Prints wall time per stage, graph size (with Poplar's published size beside it)
and peak RSS.  Each AlexNet build runs in a fresh process, so its peak RSS is
its own.  Poplar's figure does not give its batch size; 128 is the batch of
Krizhevsky et al. (2012).
"""
import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from simulator.run import build  # noqa: E402


def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(model, **kw):
    t = time.perf_counter()
    c = build(model, simulate=True, **kw)
    wall = time.perf_counter() - t
    g, s = c.report["graph"], c.report["sim"]
    pub = g.get("published")
    print(f"{model} {kw}: {wall:.1f} s compile+simulate "
          f"(load {c.report['timing']['load_s']:.2f}, compile {c.report['timing']['compile_s']:.2f}, "
          f"simulate {c.report['timing']['simulate_s']:.2f}); {g['vertices']:,} vertices placed, "
          f"{g['vertices_executed']:,} executed, {g['edges']:,} edges; {s['samples_per_second']:.0f} samples/s; "
          f"peak RSS {rss_gib():.2f} GiB")
    if pub:
        print(f"  Poplar's published graph: {pub['vertices'] / 1e6:.2f} M vertices, {pub['edges'] / 1e6:.1f} M edges; "
              f"ours / Poplar's: vertices {pub['ratio_vertices']:.2f}x, edges {pub['ratio_edges']:.2f}x")
    return wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alexnet-train", action="store_true")
    ap.add_argument("--batch", type=int, action="append", help="AlexNet training batch (repeatable; default 32)")
    ap.add_argument("--only-alexnet", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.only_alexnet:
        w = run("alexnet", chip="gc200", batch=a.only_alexnet, train=True)
        print(f"target: AlexNet training graph (batch {a.only_alexnet}) compiled + simulated < 180 s and < 8 GiB: "
              f"{'met' if w < 180 and rss_gib() < 8 else 'MISSED'}")
        return
    w = run("resnet50", chip="gc200", batch=1)
    print(f"target: ResNet-50 inference compile + simulate < 30 s: {'met' if w < 30 else 'MISSED'}")
    if a.alexnet_train:
        import subprocess
        for b in a.batch or [32]:
            subprocess.run([sys.executable, os.path.abspath(__file__), "--only-alexnet", str(b)], check=True)


if __name__ == "__main__":
    main()
