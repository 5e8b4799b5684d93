"""Peak host memory of real runs against compiler.hostmem's estimate (its calibration).

    .venv/bin/python bench/bench_hostmem.py                       # the runs docs/memory.md lists
    .venv/bin/python bench/bench_hostmem.py resnet50:16 vgg16:4:train

Each run is a fresh process (``IPUSIM_HOST_MEMORY=off``) that loads the op graph, then builds
and simulates it; its peak RSS (``VmHWM``: the child's own, not ``ru_maxrss``, which Linux
carries over from the parent across a vfork + exec) less the RSS before the build is what the
estimate must cover.  Prints one row per run: measured, estimated, estimate / measured.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ["mnist-mlp:16:train", "resnet50:1", "resnet50:4", "resnet50:16", "resnet50:32", "resnet50:1:train",
        "resnet50:4:train", "vgg16:1", "vgg16:1:train", "vgg16:4:train", "vgg16:8:train", "bert-base:1",
        "bert-base:1:train", "gpt2:1", "alexnet:4:train"]

CHILD = r"""
import json, resource, sys
import models
from compiler.hostmem import estimate_bytes
from simulator.config import RunConfig
from simulator.run import build
model, batch, train = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
og = models.load(model, batch=batch, train=train)
est = estimate_bytes(og, outlined=True)   # what lower() checks (functions on by default)
before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
build(RunConfig(model=model, batch=batch, train=train, suggest=False), simulate=True)
peak = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0] * 1024
print(json.dumps({"estimate": est, "measured": peak - before}))
"""


def measure(spec: str) -> dict:
    model, batch, *rest = spec.split(":")
    out = subprocess.run([sys.executable, "-c", CHILD, model, batch, "1" if rest == ["train"] else "0"],
                         capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, IPUSIM_HOST_MEMORY="off", PYTHONPATH=str(ROOT)))
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    specs = (argv if argv is not None else sys.argv[1:]) or RUNS
    print(f"{'run':22s} {'measured MiB':>13s} {'estimate MiB':>13s} {'ratio':>6s}")
    for s in specs:
        r = measure(s)
        if "error" in r:
            print(f"{s:22s} failed: {r['error']}")
            continue
        print(f"{s:22s} {r['measured'] / 2**20:13,.0f} {r['estimate'] / 2**20:13,.0f} "
              f"{r['estimate'] / r['measured']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
