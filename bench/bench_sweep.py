"""Time a whole sweep: by default examples/sweep_resnet50.toml (100 ResNet-50 compiles + simulations).

    PYTHONPATH=. .venv/bin/python bench/bench_sweep.py [--sweep FILE] [--workers N] [--limit N] [--out DIR]

Starts from an empty checkpoint (a fresh temporary folder unless --out is given),
prints the wall time and where it went (model load, lowering + compile, simulation,
process overhead) and writes ``bench_sweep.json`` beside the results.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.sweep import SweepSpec, load_sweep, run_sweep  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default=str(Path(__file__).resolve().parents[1] / "examples" / "sweep_resnet50.toml"))
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--limit", type=int, default=None, help="run only the first N points (a quick estimate)")
    ap.add_argument("--out", default=None, help="folder for results (default: a temporary folder, removed)")
    a = ap.parse_args(argv)
    spec = load_sweep(a.sweep)
    if a.limit:
        pts = spec.points()[: a.limit]
        spec = _explicit(spec, pts)
    folder = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    out = folder / "results.parquet"
    shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
    n = len(spec.points())
    print(f"{spec.name}: {n} points, {a.workers} worker processes, {os.cpu_count()} cores", flush=True)
    done = [0]
    t0 = time.perf_counter()

    def on_result(row):
        done[0] += 1
        if done[0] % 10 == 0 or done[0] == n:
            print(f"  {done[0]:4d}/{n}  {time.perf_counter() - t0:7.1f} s", flush=True)

    res = run_sweep(spec, out, workers=a.workers, on_result=on_result)
    wall = time.perf_counter() - t0
    df = res.frame
    col = lambda c: float(df[c].fillna(0).sum()) if c in df else 0.0  # noqa: E731
    summary = {
        "sweep": a.sweep, "points": n, "workers": a.workers, "cores": os.cpu_count(), "wall_s": wall,
        "errors": res.errors, "fits": int(df["memory.fits"].fillna(False).astype(bool).sum()) if "memory.fits" in df else 0,
        "sum_point_wall_s": col("wall_s"), "sum_load_s": col("timing.load_s"),
        "sum_compile_s": col("timing.compile_s"), "sum_simulate_s": col("timing.simulate_s"),
        "mean_point_s": col("wall_s") / max(n, 1),
        "slowest_point_s": float(df["wall_s"].max()) if "wall_s" in df else 0.0,
        "fastest_point_s": float(df["wall_s"].min()) if "wall_s" in df else 0.0,
    }
    summary["parallel_efficiency"] = summary["sum_point_wall_s"] / max(wall * a.workers, 1e-9)
    print(f"wall {wall:.1f} s for {n} points ({wall / max(n, 1):.2f} s per point with {a.workers} workers); "
          f"{summary['errors']} errors, {summary['fits']} fit")
    print(f"per point: mean {summary['mean_point_s']:.1f} s, min {summary['fastest_point_s']:.1f} s, "
          f"max {summary['slowest_point_s']:.1f} s; summed over points: load {summary['sum_load_s']:.0f} s, "
          f"lower+compile {summary['sum_compile_s']:.0f} s, simulate {summary['sum_simulate_s']:.0f} s; "
          f"parallel efficiency {summary['parallel_efficiency']:.0%}")
    if "tiles" in df and "wall_s" in df:
        print("mean seconds per point by tiles:",
              ", ".join(f"{int(t)}: {s:.1f}" for t, s in df.groupby("tiles")["wall_s"].mean().items()))
    with open(folder / "bench_sweep.json", "w") as f:
        json.dump(summary, f, indent=2)
    if not a.out:
        shutil.rmtree(folder, ignore_errors=True)
    return summary


def _explicit(spec: SweepSpec, pts: list) -> SweepSpec:
    sub = SweepSpec(axes={}, fixed=dict(spec.fixed), simulate=spec.simulate, name=f"{spec.name} (first {len(pts)})")
    sub.points = lambda: pts  # type: ignore[method-assign]
    return sub


if __name__ == "__main__":
    main()
