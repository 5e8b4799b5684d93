#!/usr/bin/env python
"""Benchmark of the compute-graph image (viz.graph_image): compile vs graph
extraction vs layout vs render, with peak RSS, on real compiled models; and a
side-by-side with Graphviz ``sfdp -Tsvg`` on the same ~100k-vertex graph.

    python bench/bench_render.py                         # resnet50 + sfdp (alexnet inference)
    python bench/bench_render.py --case resnet50         # ResNet-50 inference, batch 1
    python bench/bench_render.py --case alexnet-train    # AlexNet training, batch 32 (--batch 8 if memory is tight)
    python bench/bench_render.py --case sfdp             # AlexNet inference (107k vertices): ours vs sfdp

Each case runs in a child process so that its peak RSS is its own.
Targets: ResNet-50 render under 2 minutes and 8 GiB; AlexNet training under
15 minutes; at least 10x faster than sfdp.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

CASES = {  # name: (model, train, batch)
    "resnet50": ("resnet50", False, 1),
    "alexnet-train": ("alexnet", True, 32),
    "sfdp": ("alexnet", False, 1),
}


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def write_dot(path, g):
    """The drawn graph (vertices + tensor chunks, every line) as DOT for sfdp."""
    import numpy as np
    cols = ['#%02x%02x%02x' % tuple(int(255 * c) for c in p) for p in g.palette]
    ci = g.color_index.tolist()
    with open(path, "w") as f:
        f.write('graph G {\n outputorder=edgesfirst; node [shape=point, width=0.02, label=""];\n'
                ' edge [penwidth=0.3];\n')
        f.write("".join(f'{i} [color="{cols[c]}"];\n' for i, c in enumerate(ci)))
        s, d = g.src.tolist(), g.dst.tolist()
        f.write("".join(f"{a} -- {b};\n" for a, b in zip(s, d)))
        f.write("}\n")
    return int(np.asarray(g.src).size)


def child(name, model, train, batch, out, size, sfdp_timeout):
    from simulator.run import build
    from viz.graph_image import draw, graph_of, place
    r = {"case": name, "model": model, "train": train, "batch": batch}
    t0 = time.perf_counter()
    c = build(model, train=train, batch=batch, suggest=False)
    r["compile_s"] = time.perf_counter() - t0
    r["vertices"] = int(c.lowered.graph.num_vertices)
    r["edges"] = int(c.lowered.graph.num_edges)
    r["rss_after_compile_gib"] = peak_rss_gib()
    t0 = time.perf_counter()
    g = graph_of(c)
    r["graph_s"] = time.perf_counter() - t0
    r["nodes_laid_out"], r["lines"] = int(g.n), int(g.src.size)
    g.title = f"{model} {'training' if train else 'inference'}, batch {batch}: " \
              f"{r['vertices']:,} vertices, {r['edges']:,} edges"
    del c                                   # layout / render need only the arrays
    t0 = time.perf_counter()
    xy = place(g)
    r["layout_s"] = time.perf_counter() - t0
    png = os.path.join(out, f"{name}.png")
    t0 = time.perf_counter()
    draw(g, xy, png, size=size)
    r["render_png_s"] = time.perf_counter() - t0
    r["png"] = png
    if name == "sfdp":
        svg = os.path.join(out, f"{name}.svg")
        t0 = time.perf_counter()
        draw(g, xy, svg, size=size)
        r["render_svg_s"] = time.perf_counter() - t0
        r["ours_layout_plus_svg_s"] = r["graph_s"] + r["layout_s"] + r["render_svg_s"]
        if shutil.which("sfdp"):
            with tempfile.TemporaryDirectory() as td:
                dot = os.path.join(td, "g.dot")
                write_dot(dot, g)
                t0 = time.perf_counter()
                try:
                    subprocess.run(["sfdp", "-Tsvg", "-o", os.path.join(td, "g.svg"), dot], check=True,
                                   timeout=sfdp_timeout, stdout=subprocess.DEVNULL)
                    r["sfdp_s"] = time.perf_counter() - t0
                except subprocess.TimeoutExpired:
                    r["sfdp_s"] = None
                    r["sfdp_timeout_s"] = sfdp_timeout
            if r.get("sfdp_s"):
                r["speedup"] = r["sfdp_s"] / r["ours_layout_plus_svg_s"]
        else:
            r["sfdp_s"] = "sfdp not installed"
    r["total_s"] = r["compile_s"] + r["graph_s"] + r["layout_s"] + r["render_png_s"]
    r["image_s"] = r["graph_s"] + r["layout_s"] + r["render_png_s"]
    r["peak_rss_gib"] = peak_rss_gib()
    print("RESULT " + json.dumps(r), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="default: resnet50 and sfdp")
    ap.add_argument("--batch", type=int, help="override the case's batch size")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--sfdp-timeout", type=int, default=1200)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.child:
        model, train, batch = CASES[a.child]
        child(a.child, model, train, a.batch or batch, a.out, a.size, a.sfdp_timeout)
        return
    for name in a.case or ["resnet50", "sfdp"]:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--size", str(a.size),
               "--out", a.out, "--sfdp-timeout", str(a.sfdp_timeout)]
        if a.batch:
            cmd += ["--batch", str(a.batch)]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not lines:
            print(f"[{name}] failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
            continue
        r = json.loads(lines[-1][7:])
        print(f"[{name}] {r['model']} {'training' if r['train'] else 'inference'} batch {r['batch']}: "
              f"{r['vertices']:,} vertices, {r['edges']:,} edges -> {r['nodes_laid_out']:,} nodes, "
              f"{r['lines']:,} lines")
        print(f"[{name}] compile {r['compile_s']:.1f} s | graph {r['graph_s']:.1f} s | layout "
              f"{r['layout_s']:.1f} s | render PNG {r['render_png_s']:.1f} s | image (graph+layout+render) "
              f"{r['image_s']:.1f} s | total {r['total_s']:.1f} s | peak RSS {r['peak_rss_gib']:.2f} GiB "
              f"(after compile {r['rss_after_compile_gib']:.2f}) | {r['png']}")
        if name == "sfdp":
            s = r.get("sfdp_s")
            ours = r["ours_layout_plus_svg_s"]
            if isinstance(s, float):
                print(f"[{name}] ours graph+layout+SVG {ours:.1f} s vs sfdp -Tsvg {s:.1f} s -> x{r['speedup']:.1f}")
            elif s is None:
                print(f"[{name}] ours graph+layout+SVG {ours:.1f} s vs sfdp -Tsvg > {r['sfdp_timeout_s']} s "
                      f"(killed) -> more than x{r['sfdp_timeout_s'] / ours:.0f}")
            else:
                print(f"[{name}] {s}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
