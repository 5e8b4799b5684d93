"""The main job of `make demo`: compile, simulate and draw ResNet-50 on a GC200.

Writes to --out (default out/):
  tutorial.txt          Poplar's add-and-reduce tutorial run functionally on the chip
  resnet50.json         the compile + simulate report (graph, memory, timing)
  resnet50_trace.json   Chrome trace of the run (open in https://ui.perfetto.dev)
  resnet50_graph.png    the clustered image of every vertex of the compiled graph
  resnet50_report.html  one page: summary, tile memory map, execution trace, liveness,
                        per-layer breakdown, graph image
"""
import argparse
import contextlib
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples import tutorial_add_reduce  # noqa: E402
from ipusim_cli.text import summary  # noqa: E402
from simulator.config import RunConfig  # noqa: E402
from simulator.run import run  # noqa: E402
from viz.graph_image import render_model_graph  # noqa: E402
from viz.report_html import write_report  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--chip", default="gc200")
    ap.add_argument("--no-image", action="store_true", help="skip the graph image (the slowest step)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        got, want, _ = tutorial_add_reduce.main(["--chip", args.chip, "--n", "100000"])
    print(buf.getvalue(), end="")
    with open(os.path.join(args.out, "tutorial.txt"), "w") as f:
        f.write(buf.getvalue())
    if abs(got - want) > 1e-3 * abs(want):
        raise SystemExit(f"tutorial result {got} differs from numpy's {want}")

    stem = os.path.join(args.out, args.model)
    r = run(RunConfig(model=args.model, chip=args.chip))
    c = r.compiled
    print(summary(r.report))
    r.to_json(stem + ".json")
    r.chrome_trace(stem + "_trace.json")
    print(f"report    {stem}.json\ntrace     {stem}_trace.json (open in https://ui.perfetto.dev)")

    image = None
    if not args.no_image:
        t = time.perf_counter()
        image = render_model_graph(c, stem + "_graph.png")
        print(f"image     {image} ({time.perf_counter() - t:.0f} s)")
    info = write_report(c, stem + "_report.html", model=args.model, graph_image=False, graph_image_path=image)
    print(f"page      {info['path']}")
    print(f"demo done: {c.report['graph']['vertices']:,} vertices, "
          f"{c.report['sim']['samples_per_second']:.0f} samples/s; outputs in {args.out}/")


if __name__ == "__main__":
    main()
