"""The explorer's work: one setting run and drawn (:func:`compute_point`, in a worker process),
and :class:`Jobs`, the pool of worker processes with its cache of results."""
from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from simulator.report import jsonable
from simulator.run import run
from simulator.sweep import point_config
from viz import views

from .cards import empty_figure

__all__ = ["compute_point", "point_figures", "Jobs", "message"]

#: the page's four figures (memory, liveness, trace, layers) -> the views that draw them, for one
#: graph and for several chips (the stages' tile grids and liveness curves share a row)
VIEWS = ((("memory",), views.memory_map), (("liveness",), views.liveness), (("trace",), views.execution_trace),
         (("layers",), views.layer_cycles))
MULTICHIP_VIEWS = ((("memory", "liveness"), views.multichip_memory_row), (("trace",), views.multichip_trace),
                   (("layers",), views.multichip_stage_cycles))


def message(e: BaseException) -> str:
    """``ErrorType: message`` for the page."""
    msg = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    return f"{type(e).__name__}: {msg}"


def point_figures(r) -> dict:
    """The page's figures of a :class:`simulator.run.Run` as plain dicts (they travel back from the
    worker process); a view that fails shows its error, the others are drawn."""
    figs = {}

    def draw(names, fn):
        try:
            out = fn(r)
            figs.update(zip(names, out if len(names) > 1 else [out]))
        except Exception as e:  # noqa: BLE001 - one broken view must not hide the others
            figs.update((n, empty_figure(f"{n} view failed: {message(e)}")) for n in names)
    for names, fn in (VIEWS if r.compiled is not None else MULTICHIP_VIEWS):
        draw(names, fn)
    return {name: f.to_plotly_json() for name, f in figs.items()}


def compute_point(params: dict, figures: bool = True) -> dict:
    """Compile + simulate one setting; return ``{"report", "figures", "wall_s"}`` or ``{"error", "wall_s"}``.

    ``params``: plain values of a :class:`simulator.config.RunConfig` (chip fields override the
    chip's; :func:`simulator.sweep.point_config`).  Several chips not used as one graph run in
    :mod:`simulator.multichip` (one stage compile at a time: this is already a worker process;
    a model with fewer layers than stages is an error, not fewer chips).  Never raises.
    """
    t0 = time.perf_counter()
    try:
        r = run(point_config(params), stage_detail=figures, workers=1, strict=True)
        out = {"report": jsonable(r.report)}
        if figures:
            out["figures"] = point_figures(r)
    except Exception as e:  # noqa: BLE001 - shown in the page
        out = {"error": message(e)}
    out["wall_s"] = time.perf_counter() - t0
    return out


class Jobs:
    """Runs :func:`compute_point` (or ``fn``: a module-level function ``(params, figures) -> result``,
    e.g. the LLM mode's :func:`viz.explorer.llm.llm_point`) in the background and caches the
    results by setting."""

    def __init__(self, workers: int = 2, kind: str = "process", cache_size: int = 256, fn=None):
        self.workers, self.kind, self.cache_size = max(1, workers), kind, cache_size
        self.fn = fn or compute_point
        self._pool = None
        self._lock = threading.Lock()
        self._futures: dict = {}
        self._started: dict = {}
        self.cache: OrderedDict = OrderedDict()
        self.submitted = 0

    @staticmethod
    def key(params: dict, figures: bool) -> str:
        return json.dumps({"p": params, "f": bool(figures)}, sort_keys=True, default=str)

    def _executor(self):
        if self._pool is None:
            if self.kind == "thread":
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ipusim-compile")
            else:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        return self._pool

    def _remember(self, key, value):
        self.cache[key] = value
        self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def lookup(self, params: dict, figures: bool = True):
        """The cached result, or None. A result with figures also answers a request without."""
        with self._lock:
            for k in ([self.key(params, True)] if figures else [self.key(params, False), self.key(params, True)]):
                if k in self.cache:
                    self.cache.move_to_end(k)
                    return self.cache[k]
                fut = self._futures.get(k)
                if fut is not None and fut.done():
                    return self._collect(k)
        return None

    def _collect(self, key):
        fut = self._futures.pop(key)
        self._started.pop(key, None)
        try:
            res = fut.result()
        except Exception as e:  # noqa: BLE001 - a worker died (memory?): report it, start a new pool
            res = {"error": f"the compile worker stopped: {message(e)}", "wall_s": 0.0}
            try:
                self._pool.shutdown(wait=False, cancel_futures=True)
            except Exception:  # noqa: BLE001
                pass
            self._pool = None
        self._remember(key, res)
        return res

    def get(self, params: dict, figures: bool = True):
        """``("done", result)`` or ``("running", seconds since submitted)``; submits when needed."""
        res = self.lookup(params, figures)
        if res is not None:
            return "done", res
        key = self.key(params, figures)
        with self._lock:
            if key not in self._futures:
                self._futures[key] = self._executor().submit(self.fn, params, figures)
                self._started[key] = time.monotonic()
                self.submitted += 1
            return "running", time.monotonic() - self._started[key]

    def running(self, params: dict, figures: bool) -> bool:
        with self._lock:
            return self.key(params, figures) in self._futures

    def busy(self) -> int:
        with self._lock:
            return sum(not f.done() for f in self._futures.values())

    def shutdown(self):
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            self._futures.clear()


def serve_app(app, title: str, host: str, port: int, debug: bool = False):
    """Run a Dash explorer app until Ctrl+C, then stop its compile workers."""
    print(f"{title}: http://{host}:{port}/  (Ctrl+C to stop)", flush=True)
    try:
        app.run(host=host, port=port, debug=debug)
    finally:
        app.jobs.shutdown()
