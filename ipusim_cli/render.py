"""``ipusim render``: the image of a model's whole compute graph.

    ipusim render MODEL [compile options] --out FILE.svg|FILE.png
                  [--level vertex|tile|op] [--color layer|op|tile] [--size PX] [--seed N]

See docs/graph-images.md.
"""
from __future__ import annotations

import json
import os
import sys
import time

from viz.graph_image import COLORS, LEVELS, render_model_graph

from .commands import help_of
from .options import add_run_options, config_from_args

__all__ = ["add_parser", "cmd_render"]


def cmd_render(args):
    cfg = config_from_args(args)
    if args.level not in LEVELS:
        raise ValueError(f"unknown level {args.level!r} (choose one of {', '.join(LEVELS)})")
    if args.color not in COLORS:
        raise ValueError(f"unknown color {args.color!r} (choose one of {', '.join(COLORS)})")
    out = args.out or f"{os.path.splitext(os.path.basename(str(getattr(cfg.model, 'name', cfg.model))))[0]}_{args.level}.png"
    ext = os.path.splitext(out)[1].lower()
    if ext not in (".png", ".svg"):
        raise ValueError(f"--out must end in .png or .svg, got {out!r}")
    if not 64 <= args.size <= 16384:
        raise ValueError(f"--size must be in 64..16384 pixels, got {args.size}")
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        raise FileNotFoundError(f"output folder {d!r} does not exist")
    t0 = time.perf_counter()

    def progress(msg, frac):
        if not args.quiet:
            print(f"  [{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    timings = {}
    render_model_graph(cfg, out, level=args.level, color=args.color, size=args.size,
                       seed=args.seed, progress=progress, timings=timings)
    t = timings
    print(f"image     {out} ({args.level} level, {t.get('nodes', 0):,} nodes laid out, "
          f"{t.get('lines', 0):,} lines)")
    print(f"wall      compile {t['compile_s']:.1f} s, graph {t['graph_s']:.1f} s, "
          f"layout {t['layout_s']:.1f} s, render {t['render_s']:.1f} s")
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump({k: (float(v) if isinstance(v, float) else v) for k, v in t.items()}, f, indent=2)
        print(f"timings   {args.json}")
    return out


def add_parser(sub):
    p = sub.add_parser("render", help=help_of("render"))
    add_run_options(p)
    p.add_argument("--json", help="write the stage timings here")
    p.add_argument("--out", help="FILE.png or FILE.svg (default MODEL_LEVEL.png)")
    p.add_argument("--level", default="vertex", help="vertex (default), tile or op")
    p.add_argument("--color", default="layer", help="layer (default), op or tile")
    p.add_argument("--size", type=int, default=2048, help="image side in pixels (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="layout seed")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    return {"render": cmd_render}
