#!/usr/bin/env python
"""Benchmark of the large-graph layout (viz.layout) and renderer (viz.render).

Builds synthetic compiler-like graphs -- a chain of layers of very different
sizes, each layer spread over tiles, with local intra-layer traffic (vertices
sharing tensor regions), heavier inter-layer traffic to the next layer and
skip connections every few layers -- then times layout and render and prints
peak RSS.  For the 100 k case it also runs Graphviz ``sfdp -Tsvg`` on the
same graph and prints the speed-up.

    python bench/bench_layout.py                    # 100k (+ sfdp) and 3.2M
    python bench/bench_layout.py --n 100k --sfdp
    python bench/bench_layout.py --n 3.2M
    python bench/bench_layout.py --n 18.7M          # AlexNet-sized (slow)
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from viz.layout import layout               # noqa: E402
from viz.render import default_palette, render_png, render_svg   # noqa: E402

SIZES = {                 # name: (vertices, edges, layers)
    "20k": (20_000, 40_000, 16),
    "100k": (100_000, 200_000, 24),
    "3.2M": (3_220_000, 6_210_000, 54),     # ResNet-50 figures
    "18.7M": (18_700_000, 115_800_000, 24),  # AlexNet figures
}


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def make_graph(n, m, layers, tiles=1216, seed=0):
    """Synthetic compiler-like graph; returns src, dst, weight, group, subgroup."""
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(0.0, 0.8, layers)
    sizes = np.maximum(1, np.round(sizes / sizes.sum() * n)).astype(np.int64)
    sizes[-1] += n - sizes.sum()
    if sizes[-1] < 1:
        raise ValueError("bad sizes")
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    group = np.repeat(np.arange(layers, dtype=np.int32), sizes)
    pos = (np.arange(n) - start[group]).astype(np.float64) / sizes[group]  # 0..1 inside layer
    subgroup = np.minimum((pos * tiles).astype(np.int32), tiles - 1)
    m_intra = int(m * 0.82)
    m_next = int(m * 0.14)
    m_skip = m - m_intra - m_next
    # intra-layer: half tile-local (vertices sharing tensor regions on the
    # same / neighbouring tiles), a third medium range (partial-sum
    # reductions over groups of tiles), the rest anywhere in the layer
    a = rng.integers(0, n, m_intra)
    g = group[a]
    sz = sizes[g]
    r = rng.random(m_intra)
    tile_w = np.maximum(1.0, sz / tiles)
    off_local = rng.normal(0, 2.0, m_intra) * tile_w
    off_mid = rng.normal(0, 0.04, m_intra) * sz
    off_any = rng.random(m_intra) * sz
    rel = (a - start[g]).astype(np.float64)
    relb = np.where(r < 0.5, rel + off_local, np.where(r < 0.85, rel + off_mid, off_any))
    b = start[g] + np.clip(np.round(relb), 0, sz - 1).astype(np.int64)
    del r, off_local, off_mid, off_any, rel, relb
    w_intra = rng.uniform(1, 4, m_intra)
    # next layer: vertex at relative position p talks to position ~p there
    a2 = rng.integers(0, n - sizes[-1], m_next)
    g2 = group[a2] + 1
    p2 = np.clip(pos[a2] + rng.normal(0, 0.02, m_next), 0, 1 - 1e-9)
    b2 = start[g2] + (p2 * sizes[g2]).astype(np.int64)
    w_next = rng.uniform(0.5, 1.5, m_next)
    # skip connections (residual adds) three layers ahead
    ok = group < layers - 3
    cand = np.flatnonzero(ok)
    a3 = cand[rng.integers(0, cand.size, m_skip)]
    g3 = group[a3] + 3
    b3 = start[g3] + (pos[a3] * sizes[g3]).astype(np.int64)
    w_skip = rng.uniform(0.2, 0.6, m_skip)
    src = np.concatenate([a, a2, a3]).astype(np.int32)
    dst = np.concatenate([b, b2, b3]).astype(np.int32)
    w = np.concatenate([w_intra, w_next, w_skip]).astype(np.float32)
    return src, dst, w, group, subgroup


def write_dot(path, n, src, dst, group, palette):
    cols = ['#%02x%02x%02x' % tuple(int(255 * c) for c in p) for p in palette]
    with open(path, "w") as f:
        f.write("graph G {\n node [shape=point, width=0.02, label=\"\"];\n edge [penwidth=0.3];\n")
        f.write("".join(f'{i} [color="{cols[g]}"];\n' for i, g in enumerate(group.tolist())))
        f.write("".join(f"{a} -- {b};\n" for a, b in zip(src.tolist(), dst.tolist())))
        f.write("}\n")


def run(name, out, sfdp, png_size, svg):
    n, m, layers = SIZES[name]
    t0 = time.perf_counter()
    src, dst, w, group, subgroup = make_graph(n, m, layers)
    t_gen = time.perf_counter() - t0
    print(f"[{name}] graph: {n:,} vertices, {src.size:,} edges, {layers} layers "
          f"(generated in {t_gen:.1f} s)", flush=True)
    t0 = time.perf_counter()
    xy = layout(n, src, dst, w, group=group, subgroup=subgroup, seed=0)
    t_lay = time.perf_counter() - t0
    print(f"[{name}] layout: {t_lay:7.1f} s   peak RSS so far {peak_rss_gib():.2f} GiB", flush=True)
    pal = default_palette(layers)
    legend = [(f"layer {i}", pal[i]) for i in range(layers)]
    png = os.path.join(out, f"bench_{name}.png")
    t0 = time.perf_counter()
    render_png(xy, src, dst, group, pal, png, size=png_size, legend=legend,
               title=f"synthetic compute graph: {n:,} vertices, {src.size:,} edges")
    t_ren = time.perf_counter() - t0
    print(f"[{name}] render PNG {png_size}px: {t_ren:7.1f} s   peak RSS so far {peak_rss_gib():.2f} GiB",
          flush=True)
    t_svg = 0.0
    if svg:
        t0 = time.perf_counter()
        render_svg(xy, src, dst, group, pal, os.path.join(out, f"bench_{name}.svg"), size=png_size,
                   legend=legend, title=f"synthetic compute graph: {n:,} vertices")
        t_svg = time.perf_counter() - t0
        print(f"[{name}] render SVG: {t_svg:7.1f} s", flush=True)
    total = t_lay + t_ren
    print(f"[{name}] TOTAL layout+render: {total:.1f} s, peak RSS {peak_rss_gib():.2f} GiB", flush=True)
    if sfdp:
        if not shutil.which("sfdp"):
            print("sfdp not installed; skipping")
            return
        with tempfile.TemporaryDirectory() as td:
            dot = os.path.join(td, "g.dot")
            write_dot(dot, n, src, dst, group, pal)
            t0 = time.perf_counter()
            subprocess.run(["sfdp", "-Tsvg", "-o", os.path.join(td, "g.svg"), dot], check=True)
            t_sfdp = time.perf_counter() - t0
        ours = t_lay + (t_svg or t_ren)
        print(f"[{name}] sfdp -Tsvg: {t_sfdp:.1f} s;  ours (layout + {'SVG' if svg else 'PNG'}) "
              f"{ours:.1f} s  ->  speed-up x{t_sfdp / ours:.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", action="append", choices=sorted(SIZES),
                    help="graph size(s) to run (default: 100k and 3.2M)")
    ap.add_argument("--sfdp", action="store_true", help="also time Graphviz sfdp (100k or smaller only)")
    ap.add_argument("--size", type=int, default=2048, help="PNG size in pixels")
    ap.add_argument("--svg", action="store_true", help="also time render_svg")
    ap.add_argument("--out", default="bench_out", help="output folder for the images")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for name in a.n or ["100k", "3.2M"]:
        run(name, a.out, a.sfdp and SIZES[name][0] <= 200_000, a.size, a.svg)


if __name__ == "__main__":
    main()
