"""What a new page of host memory costs on this machine (docs/functional-speed.md).

    .venv/bin/python bench/bench_page_faults.py [--mb 328] [--idle 3]

The functional backend's first run writes the tiles' memory (ResNet-50: 86 M float32
elements, 328 MiB), and the system gives each page at its first write.  This script
allocates that much with numpy (which asks for transparent huge pages on large arrays),
touches every page, frees it, and again: at once, and after ``--idle`` seconds idle; then the
same with numpy's huge-page request off (4 KiB pages).  It prints milliseconds per MiB of
each pass and whether the VM reports freed memory to its host (virtio-balloon's free page
reporting, feature bit 5), after which the host must back those pages again at their next
use.
"""
import argparse
import glob
import time

import numpy as np


def _reporting():
    """True / False where a virtio balloon is present (its feature bit 5), else None."""
    for path in glob.glob("/sys/bus/virtio/drivers/virtio_balloon/virtio*/features"):
        with open(path) as f:
            bits = f.read().strip()
        return len(bits) > 5 and bits[5] == "1"
    return None


def _pass(n):
    t = time.perf_counter()
    a = np.zeros(n, np.float32)
    a[::1024] = 0               # one write per 4 KiB page
    dt = time.perf_counter() - t
    del a
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=328, help="MiB per pass")
    ap.add_argument("--idle", type=float, default=3, help="seconds idle before the last passes")
    a = ap.parse_args()
    n = int(a.mb * 2**20 / 4)
    madvise = getattr(getattr(np, "_core", None), "multiarray", None)
    can = madvise is not None and hasattr(madvise, "_set_madvise_hugepage")
    print(f"free page reporting to the host: {_reporting()}")
    for huge in ((True, False) if can else (None,)):
        if can:
            madvise._set_madvise_hugepage(huge)
        rows = [("first", _pass(n)), ("again at once", _pass(n)), ("again at once", _pass(n))]
        time.sleep(a.idle)
        rows.append((f"after {a.idle:g} s idle", _pass(n)))
        rows.append(("again at once", _pass(n)))
        label = {True: "huge pages asked for", False: "4 KiB pages", None: "numpy's default"}[huge]
        print(f"{label}: " + "; ".join(f"{k} {dt * 1e3 / a.mb:.2f} ms/MiB" for k, dt in rows))
    if can:
        madvise._set_madvise_hugepage(True)


if __name__ == "__main__":
    main()
