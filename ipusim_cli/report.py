"""``ipusim report`` and ``ipusim dot``: the HTML run report and Graphviz drawings.

    ipusim report MODEL [run options] --html out/report.html [--graph-image PNG | --no-graph-image]
    ipusim dot MODEL [run options] --what ops|program --out FILE.svg|.dot [--collapse N]
"""
from __future__ import annotations

import os

import models
from simulator.run import run
from viz.dot import op_graph_dot, program_dot, write
from viz.report_html import write_report

from .commands import help_of
from .options import add_run_options, check_output_path, config_from_args
from .text import summary

__all__ = ["add_parser", "cmd_report", "cmd_dot"]


def cmd_report(args):
    cfg = config_from_args(args)
    out = args.html or os.path.join("out", f"{os.path.splitext(os.path.basename(str(getattr(cfg.model, 'name', cfg.model))))[0]}_report.html")
    check_output_path(args.json)
    if args.html:
        check_output_path(out, "--html")
    r = run(cfg, simulate=not args.no_simulate, stage_detail=True)      # several chips: the per-stage views
    if r.compiled is not None:
        print(summary(r.report))
    if args.json:
        r.to_json(args.json)
        print(f"report    {args.json}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    info = write_report(r, out, model=cfg.model, graph_image=not args.no_graph_image,
                        graph_image_path=args.graph_image)
    print(f"html      {out} ({info['bytes'] / 2 ** 20:.1f} MiB, self-contained)")
    if not info["graph_image"]:
        print(f"          no graph image: {info['note']}")
    return r


def cmd_dot(args):
    cfg = config_from_args(args)
    if args.what == "ops":
        og = models.load(cfg.model, batch=cfg.micro_batch, train=cfg.train, optimizer=cfg.optimizer,
                         model_kw=cfg.model_kw)
        d = op_graph_dot(og, cluster=not args.no_clusters)
    else:
        c = run(cfg.one_chip() if cfg.multichip else cfg, simulate=False).compiled
        d = program_dot(c.lowered.program, collapse=args.collapse, calls=c.lowered.calls)
    out = args.out or f"{os.path.splitext(os.path.basename(str(getattr(cfg.model, 'name', cfg.model))))[0]}_{args.what}.svg"
    write(d, out)
    print(f"{args.what:<9} {out}")
    return d


def add_parser(sub):
    p = sub.add_parser("report", help=help_of("report"))
    add_run_options(p)
    p.add_argument("--json", help="write the report here")
    p.add_argument("--html", help="write the page here (default out/MODEL_report.html)")
    p.add_argument("--graph-image", help="embed this PNG as the graph image instead of making one")
    p.add_argument("--no-graph-image", action="store_true", help="do not try to make a graph image")
    p.add_argument("--no-simulate", action="store_true", help="compile only (no trace, no cycles per layer)")
    p = sub.add_parser("dot", help=help_of("dot"))
    add_run_options(p)
    p.add_argument("--what", choices=["ops", "program"], default="ops")
    p.add_argument("--out", help="FILE.svg, FILE.dot (or .png / .pdf); default MODEL_WHAT.svg")
    p.add_argument("--collapse", type=int, default=4,
                   help="program: draw runs of at least N Execute (or Copy) as one node (0: never)")
    p.add_argument("--no-clusters", action="store_true", help="ops: do not cluster ops by repeated block")
    return {"report": cmd_report, "dot": cmd_dot}
