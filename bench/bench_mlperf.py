"""Benchmark: the measured MLPerf systems, each run from its preset as `ipusim validate --slow` runs it.

    PYTHONPATH=. .venv/bin/python bench/bench_mlperf.py [--preset NAME ...] [--json out/bench_mlperf.json]

For each preset (default: simulator.validation.SYSTEMS) prints the predicted and the measured
throughput (per chip for ResNet-50, per 4-chip replica for BERT-Large, two sequences per pack),
the error against the preset's tolerance, whether every chip fits and its peak tile bytes, and the
wall time of compile + simulate (issue 12's targets: ResNet-50 micro-batch 20 under 20 s, BERT-Large
pipeline under 60 s on a 2-core machine).  The measured figures are read from the preset files.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from simulator.report import jsonable  # noqa: E402
from simulator.validation import SYSTEMS, system_rows, system_table  # noqa: E402


def _line(r) -> str:
    pred = "not run" if math.isnan(r["predicted"]) else f"{r['predicted']:,.0f}"
    err = "-" if math.isnan(r["error"]) else f"{r['error'] * 100:+.1f}%"
    fits = "-" if r["fits"] is None else ("fits" if r["fits"] else "DOES NOT FIT")
    peaks = " / ".join(f"{b:,}" for b in r["peak_tile_bytes"]) or "-"
    out = (f"{r['preset']:<34} {pred:>8} vs {r['published']:,.0f} {r['unit']} per {r['per']} ({err}, "
           f"±{r['tolerance'] * 100:.0f}%: {'ok' if r['ok'] else 'OUTSIDE'}); {fits}, peak tile {peaks} B; "
           f"wall {r['wall_s']:.1f} s")
    if r["note"].startswith("not run"):
        out += f"\n{'':<35}{r['note']}"
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", help="a preset to run (repeatable; default: the validation's "
                    f"systems: {', '.join(SYSTEMS)})")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    rows = system_rows(a.preset or SYSTEMS, on_row=lambda r: print(_line(r), flush=True))
    print()
    print("\n".join(system_table(rows)))
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(jsonable(rows), f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
