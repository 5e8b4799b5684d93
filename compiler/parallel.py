"""Independent pieces of the compiler's numpy work on several cores.

The compiler's passes over millions of edges (exchange planning, vertex state) work in
chunks that do not depend on each other; numpy releases the GIL inside its sorts,
searches, gathers and arithmetic, so threads run the chunks' heavy parts at once.
:func:`parallel_map` keeps the results in input order, so a pass gives exactly what it
gives one chunk after another.  ``IPUSIM_THREADS`` (default: the CPUs this process may
use, at most 8) sets the number of threads; 1 runs everything in the calling thread.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice


def threads() -> int:
    """Threads for the compiler's parallel passes (``IPUSIM_THREADS``, else the usable CPUs, at most 8)."""
    env = os.environ.get("IPUSIM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"IPUSIM_THREADS must be a positive integer, not {env!r}") from None
        if n < 1:
            raise ValueError(f"IPUSIM_THREADS must be a positive integer, not {env!r}")
        return n
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def parallel_map(fn, items, workers=None):
    """``[fn(x) for x in items]``, on up to ``workers`` (default :func:`threads`) threads,
    yielded in input order; at most twice as many items in flight as threads, so that
    the temporaries stay bounded."""
    items = list(items)
    n = min(workers or threads(), len(items))
    if n <= 1:
        for x in items:
            yield fn(x)
        return
    with ThreadPoolExecutor(max_workers=n) as pool:
        it = iter(items)
        pending = deque(pool.submit(fn, x) for x in islice(it, 2 * n))
        for x in it:
            r = pending.popleft().result()
            pending.append(pool.submit(fn, x))
            yield r
        while pending:
            yield pending.popleft().result()
