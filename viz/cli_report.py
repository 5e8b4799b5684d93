"""``ipusim report`` and ``ipusim dot``: the HTML run report and Graphviz drawings.

    ipusim report MODEL [compile options] --html out/report.html [--graph-image PNG | --no-graph-image]
    ipusim dot MODEL [compile options] --what ops|program --out FILE.svg|.dot [--collapse N]

Registered through ``ipusim_cli.EXTRA_COMMANDS`` (module path ``viz.cli_report``).
"""
from __future__ import annotations

import json
import os

__all__ = ["add_parser", "cmd_report", "cmd_dot"]


def _build(args, simulate):
    from ipusim_cli import build_from_args
    return build_from_args(args, simulate)


def cmd_report(args):
    from ipusim_cli import _jsonable, summary

    from .report_html import write_report
    c = _build(args, simulate=not args.no_simulate)
    print(summary(c.report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_jsonable(c.report), f, indent=2)
        print(f"report    {args.json}")
    out = args.html or os.path.join("out", f"{os.path.splitext(os.path.basename(str(args.model)))[0]}_report.html")
    info = write_report(c, out, model=args.model, graph_image=not args.no_graph_image,
                        graph_image_path=args.graph_image)
    print(f"html      {out} ({info['bytes'] / 2 ** 20:.1f} MiB, self-contained)")
    if not info["graph_image"]:
        print(f"          no graph image: {info['note']}")
    return c


def cmd_dot(args):
    from simulator.pipeline import load_model

    from .dot import op_graph_dot, program_dot, write
    if args.what == "ops":
        og = load_model(args.model, batch=args.batch, train=args.train, optimizer=args.optimizer,
                        dtype=args.dtype)
        d = op_graph_dot(og, cluster=not args.no_clusters)
    else:
        c = _build(args, simulate=False)
        d = program_dot(c.lowered.program, collapse=args.collapse, calls=c.lowered.calls)
    out = args.out or f"{os.path.splitext(os.path.basename(str(args.model)))[0]}_{args.what}.svg"
    write(d, out)
    print(f"{args.what:<9} {out}")
    return d


def add_parser(sub, add_model_args):
    p = sub.add_parser("report", help="compile + simulate a model and write one self-contained HTML report")
    add_model_args(p)
    p.add_argument("--html", help="write the page here (default out/MODEL_report.html)")
    p.add_argument("--graph-image", help="embed this PNG as the graph image instead of making one")
    p.add_argument("--no-graph-image", action="store_true", help="do not try to make a graph image")
    p.add_argument("--no-simulate", action="store_true", help="compile only (no trace, no cycles per layer)")
    p = sub.add_parser("dot", help="draw a model's op graph or its program tree with Graphviz")
    add_model_args(p)
    p.add_argument("--what", choices=["ops", "program"], default="ops")
    p.add_argument("--out", help="FILE.svg, FILE.dot (or .png / .pdf); default MODEL_WHAT.svg")
    p.add_argument("--collapse", type=int, default=4,
                   help="program: draw runs of at least N Execute (or Copy) as one node (0: never)")
    p.add_argument("--no-clusters", action="store_true", help="ops: do not cluster ops by repeated block")
    return {"report": cmd_report, "dot": cmd_dot}
