"""``ipusim sweep`` and ``ipusim plot``: design-space sweeps and their Pareto front.

    ipusim sweep SWEEP.toml --out results.parquet [--workers N] [--dask ADDRESS] [--retry-failed]
    ipusim plot results.parquet --html out/pareto.html
"""
from __future__ import annotations

from .commands import help_of
from .options import check_output_path

import argparse

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from simulator.sweep import load_sweep, read_results, run_sweep
from viz.pareto import write_pareto_html


def add_parser(sub):
    p = sub.add_parser("sweep", help=help_of("sweep"),
                       description="Run every point of a sweep file (see docs/explorer.md) in parallel; "
                                   "one row per point in the output. Points already done (in OUT.parts/) "
                                   "are skipped, so an interrupted sweep continues where it stopped.")
    p.add_argument("sweep", help="sweep file (.toml)")
    p.add_argument("--out", required=True, help="results table (.parquet, or .csv)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: number of cores)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on an existing Dask cluster (scheduler address)")
    p.add_argument("--retry-failed", action="store_true", help="run again the points that failed before")
    p = sub.add_parser("plot", help=help_of("plot"))
    p.add_argument("results", help="results table written by `ipusim sweep`")
    p.add_argument("--html", required=True, help="output HTML file")
    p.add_argument("--title", default=None)
    return {"sweep": cmd_sweep, "plot": cmd_plot}


def cmd_sweep(args):
    check_output_path(args.out, "--out")
    spec = load_sweep(args.sweep)
    console = Console(stderr=True)
    state = {"errors": 0, "task": None}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("[red]{task.fields[errors]} failed"), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console) as prog:

        def on_start(total, to_run):
            if total - to_run:
                console.print(f"{total - to_run} of {total} points already done in the checkpoint; skipping them")
            state["task"] = prog.add_task(spec.name, total=to_run, errors=0)

        def on_result(row):
            if row.get("error"):
                state["errors"] += 1
                console.print(f"[red]point {row['point_id']} failed:[/] {row['error']}")
            prog.update(state["task"], advance=1, errors=state["errors"])

        res = run_sweep(spec, args.out, workers=args.workers, dask=args.dask,
                        retry_failed=args.retry_failed, on_start=on_start, on_result=on_result)
    n = len(res.frame)
    if res.interrupted:
        print(f"interrupted: {n} points done, written to {args.out}; run the same command again to continue")
        return 130
    print(f"{n} points ({len(res.ran)} run now, {len(res.skipped)} from the checkpoint, "
          f"{res.errors} failed) -> {args.out}")
    return 0


def cmd_plot(args):
    df = read_results(args.results)
    info = write_pareto_html(df, args.html, title=args.title)
    print(f"{info['points']} points, {info['fit']} fit, {info['front']} on the Pareto front -> {args.html}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys
    ap = argparse.ArgumentParser(prog="ipusim")
    handlers = add_parser(ap.add_subparsers(dest="cmd", required=True))
    a = ap.parse_args()
    sys.exit(handlers[a.cmd](a))
