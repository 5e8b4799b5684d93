"""The main job of `make demo`: compile and simulate ResNet-50 on a GC200.

Writes to --out (default out/):
  tutorial.txt          Poplar's add-and-reduce tutorial run functionally on the chip
  resnet50.json         the compile + simulate report (graph, memory, timing)
  resnet50_trace.json   Chrome trace of the run (open in https://ui.perfetto.dev)
  resnet50_graph.png    the clustered image of every vertex (when viz/ is available)
"""
import argparse
import contextlib
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ipusim_cli  # noqa: E402
from examples import tutorial_add_reduce  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--chip", default="gc200")
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
    rc = ipusim_cli.main(["simulate", args.model, "--chip", args.chip, "--json", stem + ".json",
                          "--trace", stem + "_trace.json"])
    if rc:
        raise SystemExit(rc)
    try:
        from viz.graph_image import render_model_graph  # noqa: F401
    except ImportError:
        render_model_graph = None
    if render_model_graph is not None:
        path = render_model_graph(args.model, stem + "_graph.png", chip=args.chip)
        print(f"image     {path}")
    with open(stem + ".json") as f:
        rep = json.load(f)
    print(f"demo done: {rep['graph']['vertices']:,} vertices, {rep['sim']['samples_per_second']:.0f} samples/s; "
          f"outputs in {args.out}/")


if __name__ == "__main__":
    main()
