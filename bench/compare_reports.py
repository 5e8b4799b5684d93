"""Behaviour check for refactors: three reports must equal the references in bench/reference/.

    PYTHONPATH=. .venv/bin/python bench/compare_reports.py            # run the three, compare
    PYTHONPATH=. .venv/bin/python bench/compare_reports.py --update   # take new references

The references were last taken on 5 December 2026: inference after 7be6349 (outlining only the
block types that repeat), training at 8d988a5 (stale since 4 December: issue 12's ConvGradInput and
memory work changed them on purpose; this session's commits leave training batch 4 identical):
ResNet-50 inference, ResNet-50 training batch 4, and ResNet-50 training batch 16 as a
4-chip pipeline, all on a GC200 through the command line.  Only the ``timing`` section
(host wall-clock seconds) is left out of the comparison; every other key and value must be
identical.  Prints one line per report and exits 1 when any differs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REF = Path(__file__).with_name("reference")
CASES = {
    "resnet50_inference": ["simulate", "resnet50"],
    "resnet50_train_b4": ["simulate", "resnet50", "--train", "--batch", "4"],
    "resnet50_train_b16_pipeline4": ["simulate", "resnet50", "--train", "--batch", "16", "--ipus", "4",
                                     "--mode", "pipeline"],
}
IGNORED = ("timing",)


def differences(a, b, path="") -> list[str]:
    """Every path where two JSON values differ (keys in ``IGNORED`` skipped at the top level)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if not path and k in IGNORED:
                continue
            if k not in a or k not in b:
                out.append(f"{path}{k}: only in {'reference' if k in a else 'new'}")
            else:
                out += differences(a[k], b[k], f"{path}{k}.")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path.rstrip('.')}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}{i}.")]
    return [] if a == b else [f"{path.rstrip('.')}: {a!r} != {b!r}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help="write the new reports as the references")
    ap.add_argument("--only", choices=list(CASES), help="one case")
    args = ap.parse_args(argv)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in CASES.items():
            if args.only and name != args.only:
                continue
            out = Path(tmp) / f"{name}.json"
            subprocess.run([sys.executable, "-m", "ipusim_cli", *cmd, "--json", str(out)], check=True,
                           stdout=subprocess.DEVNULL)
            new = json.loads(out.read_text())
            if args.update:
                (REF / f"{name}.json").write_text(json.dumps(new, indent=2))
                print(f"{name}: reference written")
                continue
            diff = differences(json.loads((REF / f"{name}.json").read_text()), new)
            bad += bool(diff)
            print(f"{name}: {'identical' if not diff else f'{len(diff)} differences'}")
            for d in diff[:20]:
                print(f"    {d}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
