"""The interactive trade-off explorer: a local Dash app over the compile / simulate pipeline.

    ipusim explore [--port 8050] [--host 127.0.0.1]

Controls (left): model (built-in or an uploaded ``.onnx``), training or inference,
chip preset or custom fields (tiles, SRAM per tile, clock, exchange rate), number
of chips and how they are used (spread: one graph over all their tiles; shard,
pipeline, replicate, pipeline+replicate: :func:`simulator.multichip.run_multichip`,
with optional replicas and micro-batches), batch size, precision, recomputation
(when ``pipeline.build`` has a ``recompute`` option), available memory
proportion, and the axis of the trade-off chart.

Views (right): fits / out of memory with the worst tiles, throughput and latency,
the trade-off chart (throughput and peak tile memory against tiles, SRAM per tile
or batch, fit boundary drawn; a mini-sweep of 7 points around the current
setting), the tile memory map, the liveness curve, the execution trace and the
cycles per layer (figures from :mod:`viz.views`).  For the multichip modes: fits /
out of memory per stage with its worst tiles, throughput, step time, pipeline
bubble, link and host traffic, a tile memory map per stage (the chips of one
stage's replicas hold the same bytes), each stage's liveness curve, a trace with
one row per chip and the cycles per stage.

How it stays responsive: every compile runs in a small pool of worker processes
(:class:`Jobs`); a callback that finds its setting still compiling shows a
progress line and polls (``dcc.Interval``) until the result is there. Results are
cached by setting (least recently used, 256 entries), so a setting seen before
comes back at once. Any error (an impossible chip, a broken ONNX file, a
compile failure) is shown in the page; the app keeps running.
"""
from __future__ import annotations

import base64
import functools
import inspect
import json
import multiprocessing as mp
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

__all__ = ["make_app", "serve", "compute_point", "Jobs", "tradeoff_values", "CHIP_FIELDS", "CHIP_MODES",
           "settings_to_params"]

#: the chip fields the page edits: (field, control id, label, unit factor from the control to the field)
CHIP_FIELDS = (("tiles", "tiles", "tiles per chip", 1),
               ("sram_bytes_per_tile", "sram", "SRAM per tile (KiB)", 1024),
               ("clock_hz", "clock", "clock (GHz)", 1e9),
               ("exchange_bytes_per_cycle_per_tile", "exch", "exchange (B/cycle/tile)", 1))
AXES = {"tiles": "tiles per chip", "sram_bytes_per_tile": "SRAM per tile", "batch": "batch size"}
#: how several chips are used: (value, label, what it does). "spread" is pipeline.build(ipus=N);
#: the others are simulator.multichip.run_multichip's modes.
CHIP_MODES = (("spread", "spread", "one graph over all the chips' tiles"),
              ("shard", "shard", "layers split over the chips, run in turn"),
              ("pipeline", "pipeline", "the same stages, micro-batches flow through them"),
              ("replicate", "replicate", "data-parallel copies, gradients all-reduced"),
              ("pipeline+replicate", "pipeline + replicate", "replicas of a pipeline"))
MULTICHIP_MODES = tuple(m for m, _, _ in CHIP_MODES if m != "spread")
#: the point parameters that are run_multichip's, not pipeline.build's
MULTICHIP_KEYS = ("mode", "replicas", "micro_batches")
USES_REPLICAS = ("replicate", "pipeline+replicate")
USES_MICRO_BATCHES = ("pipeline", "replicate", "pipeline+replicate")
ORANGE, BLUE, RED, GREEN, GREY = "#EF8A2F", "#3B76AF", "#E3242B", "#2E8B57", "#A0A7B0"


# ------------------------------------------------------------------------------------------
# the work done in a worker process
def _build_options():
    from simulator.run import build
    return inspect.signature(build).parameters


def recompute_modes():
    """``(default, [modes])`` of build's ``recompute`` option, or None when it has none."""
    try:
        par = _build_options().get("recompute")
    except Exception:  # noqa: BLE001
        return None
    if par is None:
        return None
    default = par.default if par.default is not inspect.Parameter.empty else None
    if isinstance(default, bool) or default is None:
        return False, [False, True]
    try:
        from compiler.recompute import MODES
        modes = list(MODES)
    except Exception:  # noqa: BLE001
        modes = [default]
    return default, ([default] + [m for m in modes if m != default])


def _message(e: BaseException) -> str:
    msg = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    return f"{type(e).__name__}: {msg}"


def _figures(c) -> dict:
    """The per-run views as plain figure dicts (they travel back from the worker process)."""
    try:
        from viz import views
    except Exception:  # noqa: BLE001 - viz.views missing or broken: simple stand-ins
        views = None
    out = {}
    makers = ({"memory": views.memory_map, "liveness": views.liveness, "trace": views.execution_trace,
               "layers": views.layer_cycles} if views is not None else
              {"memory": _simple_memory_map, "liveness": _simple_liveness, "trace": _simple_trace})
    for name, fn in makers.items():
        try:
            out[name] = fn(c).to_plotly_json()
        except Exception as e:  # noqa: BLE001 - one broken view must not hide the others
            out[name] = _empty_figure(f"{name} view failed: {_message(e)}").to_plotly_json()
    return out


def split_point(params: dict):
    """``params`` -> ``(model, Chip, build keywords, multichip keywords)``; the last is ``{}`` for one
    graph (one chip, or several chips in the "spread" mode)."""
    from simulator.sweep import split_params
    params = dict(params)
    mc = {k: params.pop(k) for k in MULTICHIP_KEYS if k in params}
    model, chip, kw = split_params(params)
    if mc and mc.get("mode", "spread") != "spread" and int(kw.get("ipus", 1)) > 1:
        return model, chip, kw, mc
    return model, chip, kw, {}


def _run_multichip(model, chip, kw: dict, mc: dict, figures: bool) -> dict:
    """One multichip point (run_multichip): its JSON-able report and, with ``figures``, the views."""
    from simulator.multichip import run_multichip
    from simulator.sweep import _jsonable
    kw = dict(kw)
    args = {k: kw.pop(k) for k in ("ipus", "batch", "train", "dtype", "partials", "optimizer",
                                    "available_memory_proportion", "use_functions", "model_kw") if k in kw}
    if kw.get("recompute") in (None, "none", False):
        kw.pop("recompute", None)          # the default: nothing to recompute
    if kw:
        raise ValueError(f"option {next(iter(kw))!r} does not apply to the {mc['mode']} mode "
                         "(several chips run by simulator.multichip)")
    rep = run_multichip(model, chip=chip, mode=mc["mode"], replicas=mc.get("replicas"),
                        micro_batches=mc.get("micro_batches"), workers=1, stage_detail=figures, strict=True,
                        **args)
    sim = rep.pop("_sim")
    detail = rep.pop("_stage_memory", None)
    out = {"report": _jsonable({k: v for k, v in rep.items() if not k.startswith("_")})}
    if figures:
        out["figures"] = _multichip_figures(out["report"], sim, detail)
    return out


def compute_point(params: dict, figures: bool = True) -> dict:
    """Compile + simulate one setting; return ``{"report", "figures", "wall_s"}`` or ``{"error"}``.

    ``params`` are sweep parameters (:func:`simulator.sweep.split_params`), plus, for several
    chips used otherwise than as one graph, ``mode`` (shard, pipeline, replicate,
    pipeline+replicate) and optionally ``replicas`` / ``micro_batches``: then the point is
    :func:`simulator.multichip.run_multichip` and its report has a ``multichip`` section.
    Never raises.
    """
    t0 = time.perf_counter()
    try:
        model, chip, kw, mc = split_point(params)
        if mc:
            out = _run_multichip(model, chip, kw, mc, figures)
        else:
            from simulator.run import build
            from simulator.sweep import _jsonable
            c = build(model, chip=chip, simulate=True, **kw)
            out = {"report": _jsonable(c.report)}
            if figures:
                out["figures"] = _figures(c)
    except Exception as e:  # noqa: BLE001 - shown in the page
        out = {"error": _message(e)}
    out["wall_s"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------
# jobs: a worker pool, the futures in flight and an LRU cache of results
class Jobs:
    """Runs :func:`compute_point` in the background and caches the results by setting."""

    def __init__(self, workers: int = 2, kind: str = "process", cache_size: int = 256):
        self.workers, self.kind, self.cache_size = max(1, workers), kind, cache_size
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
            res = {"error": f"the compile worker stopped: {_message(e)}", "wall_s": 0.0}
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
                self._futures[key] = self._executor().submit(compute_point, params, figures)
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


# ------------------------------------------------------------------------------------------
# settings
def _optional_count(label, v):
    """A blank field is None ("automatic"); otherwise a whole number of at least 1."""
    if v is None or v == "":
        return None
    if not float(v).is_integer() or v < 1:
        raise ValueError(f"{label} must be a whole number of at least 1 (or blank: automatic), got {v}")
    return int(v)


def settings_to_params(model, mode, preset, fields: dict, ipus, batch, dtype, recompute, amp,
                       recompute_spec=None, chip_mode=None, replicas=None, micro_batches=None) -> dict:
    """Control values -> point parameters (validated: raises ValueError with a message for the page).

    ``chip_mode``: how several chips are used (:data:`CHIP_MODES`); ignored for one chip and
    for "spread" (one graph over all tiles: ``pipeline.build(ipus=N)``).  The multichip modes
    add ``mode`` and, when given, ``replicas`` / ``micro_batches`` (blank: run_multichip's
    defaults) to the parameters.
    """
    from hardware.chips import get_chip
    from simulator.sweep import split_params
    if not model:
        raise ValueError("choose a model")
    base = "gc200" if preset in (None, "custom") else preset
    chip = get_chip(base)
    params = {"model": model, "chip": base}
    for field, cid, label, scale in CHIP_FIELDS:
        v = fields.get(cid)
        if v is None or v == "":
            raise ValueError(f"{label}: enter a number")
        v = v * scale
        if field == "sram_bytes_per_tile" or (field == "tiles" and float(v).is_integer()):
            v = int(round(v))           # a fractional tile count is left for the chip to reject
        elif field == "clock_hz":
            v = float(round(v))
        if v != getattr(chip, field):
            params[field] = v
    for label, v in (("number of chips", ipus), ("batch size", batch)):
        if v is None or v == "":
            raise ValueError(f"{label}: enter a whole number")
        if not float(v).is_integer() or v < 1:
            raise ValueError(f"{label} must be a whole number of at least 1, got {v}")
    params.update(train=(mode == "train"), batch=int(batch), ipus=int(ipus), dtype=dtype or "fp32",
                  available_memory_proportion=round(float(amp if amp is not None else 0.6), 3))
    multi = int(ipus) > 1 and chip_mode not in (None, "", "spread")
    if recompute_spec and mode == "train" and recompute is not None and recompute != recompute_spec[0] \
            and not multi:
        params["recompute"] = recompute   # only when not the default: same setting, same cache entry
    split_params(params)    # chip errors (tiles=0 ...) and unknown options now, before any compile
    if multi:
        from simulator.multichip import resolve
        if chip_mode not in MULTICHIP_MODES:
            raise ValueError(f"unknown way to use the chips {chip_mode!r}; choose from "
                             f"{', '.join(m for m, _, _ in CHIP_MODES)}")
        params["mode"] = chip_mode
        r = _optional_count("replicas", replicas) if chip_mode in USES_REPLICAS else None
        m = _optional_count("micro-batches", micro_batches) if chip_mode in USES_MICRO_BATCHES else None
        if r is not None:
            params["replicas"] = r
        if m is not None:
            params["micro_batches"] = m
        try:
            resolve(chip_mode, int(ipus), r, m, int(batch))
        except ValueError as e:
            raise ValueError(str(e).replace(f"--ipus {int(ipus)}", f"{int(ipus)} chips")) from None
    return params


def tradeoff_values(axis: str, params: dict) -> list:
    """5-8 values of ``axis`` around the current setting (the current one included).

    For a multichip setting, batch sizes that the replicas x micro-batches do not divide are left out.
    """
    _, chip, kw, mc = split_point(params)
    if axis == "tiles":
        step = chip.tiles_per_supertile
        vals = {max(step, int(round(chip.tiles * f / step)) * step) for f in (0.25, 0.5, 0.75, 1, 1.25, 1.5, 2)}
    elif axis == "sram_bytes_per_tile":
        kib = chip.sram_bytes_per_tile / 1024
        vals = {int(round(kib * f)) * 1024 for f in (0.25, 0.5, 0.75, 1, 1.5, 2, 3)}
        vals.add(chip.sram_bytes_per_tile)
    elif axis == "batch":
        b = int(kw.get("batch", 1))
        vals = {max(1, b // 4), max(1, b // 2), b, 2 * b, 4 * b, 8 * b}
        if mc:
            from simulator.multichip import resolve

            def ok(v):
                try:
                    resolve(mc["mode"], kw.get("ipus", 1), mc.get("replicas"), mc.get("micro_batches"), v)
                    return True
                except ValueError:
                    return v == b
            vals = {v for v in vals if ok(v)}
    else:
        raise ValueError(f"unknown trade-off axis {axis!r}")
    return sorted(v for v in vals if v > 0)


def _with(params: dict, axis: str, value) -> dict:
    p = dict(params)
    p[axis] = value
    if axis in ("tiles", "sram_bytes_per_tile"):
        from hardware.chips import get_chip
        if getattr(get_chip(p["chip"]), axis) == value:
            p.pop(axis)            # the same point as "no override": share its cache entry
    return p


# ------------------------------------------------------------------------------------------
# figures drawn here (the per-run views come from viz.views)
def _empty_figure(text: str, height: int = 320):
    import plotly.graph_objects as go
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#607D8B"))
    fig.update_layout(template="plotly_white", height=height, xaxis=dict(visible=False),
                      yaxis=dict(visible=False), margin=dict(l=20, r=20, t=30, b=20))
    return fig


def tradeoff_figure(axis: str, current, rows: list, total: int, sram_bytes: int):
    """Throughput (left axis) and peak tile memory (right axis) against ``axis``; fit boundary drawn.

    ``rows``: (value, result) for the points done so far.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    scale = 1024 if axis == "sram_bytes_per_tile" else 1
    ok = [(v, r["report"]) for v, r in rows if "report" in r]
    bad = [(v, r["error"]) for v, r in rows if "report" not in r]
    ok.sort(key=lambda t: t[0])
    xs = [v / scale for v, _ in ok]
    thr = [rep.get("sim", {}).get("samples_per_second", 0.0) for _, rep in ok]
    peak = [rep["memory"]["peak_tile_bytes"] / 1024 for _, rep in ok]
    fits = [bool(rep["memory"]["fits"]) for _, rep in ok]
    lat = [rep.get("sim", {}).get("step_seconds", rep.get("sim", {}).get("seconds", 0.0)) * 1e3 for _, rep in ok]
    sram = [rep["memory"]["sram_bytes_per_tile"] / 1024 for _, rep in ok]
    hover = [f"{AXES[axis]} {x:,.0f}<br>throughput {t:,.1f} samples/s<br>latency {l:.3f} ms<br>"
             f"peak tile {p:,.1f} KiB of {s:,.0f} KiB<br><b>{'fits' if f else 'OUT OF MEMORY'}</b>"
             for x, t, l, p, s, f in zip(xs, thr, lat, peak, sram, fits)]
    # out-of-memory ranges shaded, the boundary between fit and no fit drawn
    for i, (x, f) in enumerate(zip(xs, fits)):
        if not f:
            lo = (xs[i - 1] + x) / 2 if i else x
            hi = (xs[i + 1] + x) / 2 if i + 1 < len(xs) else x
            fig.add_vrect(x0=lo, x1=hi, fillcolor="rgba(227,36,43,0.08)", line_width=0, layer="below")
    for i in range(1, len(xs)):
        if fits[i] != fits[i - 1]:
            xb = (xs[i] + xs[i - 1]) / 2
            fig.add_vline(x=xb, line=dict(color=RED, dash="dash", width=2))
            fig.add_annotation(x=xb, y=1.0, yref="paper", showarrow=False, yanchor="bottom",
                               text=("fits →" if fits[i] else "← fits"), font=dict(color=RED, size=12))
    fig.add_trace(go.Scatter(x=xs, y=thr, name="throughput (samples/s)", mode="lines+markers",
                             line=dict(color=BLUE, width=2), hovertext=hover, hoverinfo="text",
                             marker=dict(size=9, color=[BLUE if f else RED for f in fits],
                                         symbol=["circle" if f else "x" for f in fits])),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=xs, y=peak, name="peak tile memory (KiB)", mode="lines+markers",
                             line=dict(color=ORANGE, width=2), hovertext=hover, hoverinfo="text",
                             marker=dict(size=8, symbol="square")), secondary_y=True)
    fig.add_trace(go.Scatter(x=xs, y=sram, name="SRAM per tile (fit limit)", mode="lines",
                             line=dict(color=RED, width=1.5, dash="dot"), hoverinfo="skip"),
                  secondary_y=True)
    if current is not None:
        fig.add_vline(x=current / scale, line=dict(color="#263238", width=1, dash="dot"))
        fig.add_annotation(x=current / scale, y=0.98, yref="paper", text=" current", showarrow=False,
                           yanchor="top", xanchor="left", font=dict(size=11, color="#263238"))
    sub = f"{len(rows)} of {total} points" + ("" if len(rows) >= total else " (computing the rest…)")
    if bad:
        sub += f"; {len(bad)} failed: {bad[0][1][:80]}"
    fig.update_layout(template="plotly_white", height=400, hovermode="closest",
                      title=dict(text=f"Trade-off: throughput and peak tile memory vs {AXES[axis]}"
                                      f"<br><sup>{sub}</sup>", x=0.01, xanchor="left", font=dict(size=16)),
                      legend=dict(orientation="h", yanchor="bottom", y=-0.32, x=0),
                      margin=dict(l=70, r=70, t=70, b=60))
    fig.update_xaxes(title_text=AXES[axis] + (" (KiB)" if scale == 1024 else ""))
    fig.update_yaxes(title_text="samples/s", secondary_y=False, rangemode="tozero", color=BLUE)
    fig.update_yaxes(title_text="KiB per tile", secondary_y=True, rangemode="tozero", color=ORANGE,
                     showgrid=False)
    return fig


def _simple_memory_map(c):
    import numpy as np
    import plotly.graph_objects as go
    total = np.asarray(c.memory["per_tile"]["total"], float)
    cols = 46 if total.size % 46 == 0 else int(np.ceil(np.sqrt(total.size * 1.5)))
    rows = int(np.ceil(total.size / cols))
    z = np.full(rows * cols, np.nan)
    z[:total.size] = total / 1024
    fig = go.Figure(go.Heatmap(z=z.reshape(rows, cols), colorscale="Viridis", zmin=0,
                               zmax=c.memory["sram_bytes_per_tile"] / 1024, colorbar=dict(title="KiB")))
    fig.update_layout(template="plotly_white", title="Tile memory", height=380)
    return fig


def _simple_liveness(c):
    import plotly.graph_objects as go
    curve = c.memory["liveness_curve"]
    fig = go.Figure(go.Scatter(y=curve / 2**20, mode="lines", line_shape="hv", fill="tozeroy"))
    fig.update_layout(template="plotly_white", title="Liveness", height=380,
                      xaxis_title="program step", yaxis_title="MiB live")
    return fig


def _simple_trace(c):
    import plotly.graph_objects as go
    us = 1e6 / c.sim.chip.clock_hz
    fig = go.Figure()
    for kind in ("compute", "sync", "exchange"):
        base, dur = [], []
        for s in c.sim.steps:
            off = {"compute": 0, "sync": s["compute"], "exchange": s["compute"] + s["sync"]}[kind]
            base.append((s["start"] + s.get("host_wait", 0) + off) * us)
            dur.append(s[kind] * us)
        fig.add_trace(go.Bar(name=kind, orientation="h", base=base, x=dur, y=[kind] * len(dur)))
    fig.update_layout(template="plotly_white", title="Execution trace", barmode="overlay", height=300,
                      xaxis_title="µs")
    return fig


# ------------------------------------------------------------------------------------------
# several chips (simulator.multichip): the views drawn from its report, its SimPy run and the
# per-stage memory detail (one compiled stage per chip of a replica; replicas are identical)
KIND_COLOURS = {"compute": BLUE, "sync": GREY, "exchange": ORANGE, "link": "#8E6BB5", "host": "#4CA35A",
                "idle": "#E4E8EC"}
#: bars of the multichip trace, over all chips (more events are merged into blocks)
TRACE_BARS = 12000
FONT = dict(family="Inter, 'Segoe UI', Helvetica, Arial, sans-serif", size=12, color="#263238")


def _stage_chips(rep: dict) -> list:
    """Per stage, the chips that run it (one per replica)."""
    return [row["ipus"] for row in rep["multichip"]["per_stage"]]


def _chips_label(ipus: list) -> str:
    return ("IPU " if len(ipus) == 1 else "IPUs ") + ", ".join(str(i) for i in ipus)


def _multichip_figures(rep: dict, sim, detail) -> dict:
    """The four views of a multichip point, each as a plain figure dict (one failing view shows a note)."""
    makers = {"memory": lambda: multichip_memory_map(rep, detail, ROW_MIN_HEIGHT),
              "liveness": lambda: multichip_liveness(rep, detail),
              "trace": lambda: multichip_trace(rep, sim),
              "layers": lambda: multichip_stage_cycles(rep)}
    figs = {}
    for name, fn in makers.items():
        try:
            figs[name] = fn()
        except Exception as e:  # noqa: BLE001
            figs[name] = _empty_figure(f"{name} view failed: {_message(e)}")
    _align_row(figs["memory"], figs["liveness"])
    return {name: f.to_plotly_json() for name, f in figs.items()}


#: the smallest height of the tile memory / liveness row of a multichip setting
ROW_MIN_HEIGHT = 380


def _align_row(memory, liveness):
    """The tile grids and the liveness curves sit side by side in one row, whose cards stretch to
    the taller one (and the figures fill their cards): the liveness takes the grids' height (at
    least :data:`ROW_MIN_HEIGHT`), so neither card is left with empty space below its figure."""
    liveness.update_layout(height=max(ROW_MIN_HEIGHT, int(memory.layout.height or ROW_MIN_HEIGHT)))


def _fig_layout(fig, title, height, **kw):
    fig.update_layout(template="plotly_white", font=FONT, height=height,
                      title=dict(text=title, x=0.01, xanchor="left", font=dict(size=16)),
                      margin=dict(l=70, r=30, t=80, b=50), **kw)
    return fig


def multichip_memory_map(rep: dict, detail, min_height: int = 300) -> "go.Figure":
    """One tile grid per stage (the chips of its replicas hold the same bytes), one colour scale
    from 0 to the SRAM per tile (under the grids); out-of-memory tiles circled red.  The figure is
    as tall as its grids need, and at least ``min_height``."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    from viz.views import CATEGORY_LABELS, grid_shape
    if not detail or any(d is None for d in detail):
        return _empty_figure("no tile memory map: the stages were compiled without their memory report", 480)
    chips = _stage_chips(rep)
    S = len(detail)
    sram = float(detail[0]["sram_bytes_per_tile"])
    ncol = 1 if S == 1 else 2 if S <= 4 else 3 if S <= 9 else 4
    nrow = -(-S // ncol)
    titles = []
    for i, (d, ipus) in enumerate(zip(detail, chips)):
        total = d["per_tile"]["total"]
        peak = float(total.max()) if total.size else 0.0
        oom = int((total > sram).sum())
        # side by side, a panel is narrow: its chips on one line, its peak on the next
        titles.append(f"stage {i} · {_chips_label(ipus)}" + (": " if ncol == 1 else "<br>")
                      + f"peak {_kib(peak)} ({peak / sram:.0%})"
                      + (f" <b style='color:{RED}'>{oom} tiles OOM</b>" if oom else ""))
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.05)
    kib = sram / 1024
    n_oom = 0
    for i, (d, ipus) in enumerate(zip(detail, chips)):
        per = d["per_tile"]
        total = np.asarray(per["total"], dtype=np.float64)
        T = total.size
        rows, cols = grid_shape(d.get("tiles", T) or T)
        z = np.full(rows * cols, np.nan)
        z[:T] = total / 1024
        cats = [(k, CATEGORY_LABELS.get(k, k.replace("_", " ")), np.asarray(v)) for k, v in per.items()
                if k != "total"]
        text = np.full(rows * cols, "", dtype=object)
        for t in range(T):
            lines = [f"<b>stage {i}, tile {t}</b> ({_chips_label(ipus)})",
                     f"total <b>{_kib(total[t])}</b> of {_kib(sram)} ({total[t] / sram:.1%})"
                     + (" <b>OUT OF MEMORY</b>" if total[t] > sram else "")]
            lines += [f"{lab}: {_kib(a[t])}" for _, lab, a in cats if a[t]]
            text[t] = "<br>".join(lines)
        r, c = divmod(i, ncol)
        fig.add_trace(go.Heatmap(z=z.reshape(rows, cols), text=text.reshape(rows, cols), coloraxis="coloraxis",
                                 xgap=1, ygap=1, hoverongaps=False, hovertemplate="%{text}<extra></extra>",
                                 name=f"stage {i}"), row=r + 1, col=c + 1)
        oom = np.flatnonzero(total > sram)
        if oom.size:
            fig.add_trace(go.Scatter(x=oom % cols, y=oom // cols, mode="markers", name="out of memory",
                                     legendgroup="oom", showlegend=n_oom == 0,
                                     marker=dict(symbol="square-open", color=RED, size=6, line=dict(width=2)),
                                     text=text[oom], hovertemplate="%{text}<extra></extra>"),
                          row=r + 1, col=c + 1)
            n_oom += int(oom.size)
        # fixed ranges: the out-of-memory markers do not pad the grid
        fig.update_yaxes(range=[rows - 0.5, -0.5], showticklabels=False, showgrid=False, zeroline=False,
                         constrain="domain", constraintoward="top", row=r + 1, col=c + 1)
        yname = "y" if i == 0 else f"y{i + 1}"
        fig.update_xaxes(range=[-0.5, cols - 0.5], showticklabels=False, showgrid=False, zeroline=False,
                         scaleanchor=yname, scaleratio=1, constrain="domain", row=r + 1, col=c + 1)
    for a in fig.layout.annotations:
        a.font = dict(size=11.5)
    peak = max(float(d["per_tile"]["total"].max()) for d in detail)
    sub = (f"{S} stage{'s' if S > 1 else ''} on {rep['chip']['ipus']} chips; worst peak {_kib(peak)} "
           f"({peak / sram:.0%} of {_kib(sram)} SRAM); "
           + (f"<b style='color:{RED}'>{n_oom} tiles out of memory</b>" if n_oom else "all tiles fit"))
    # about 490 px of plot width in the card (the colour bar lies under the grids, not beside them):
    # a row of panels is as tall as its grids' aspect makes them, with a title above each row but
    # the first (that one sits in the top margin); the rows get exactly that height, from the top,
    # and the colour bar goes just under them, whatever is left of the figure below
    g_rows, g_cols = grid_shape(detail[0].get("tiles", 0) or detail[0]["per_tile"]["total"].size)
    grid_h = 490 * (1 - 0.06 * (ncol - 1)) / ncol * g_rows / g_cols
    gap = 32 if ncol == 1 else 46         # room for the panel titles of the next row
    top_m, bottom_m = (100 if ncol == 1 else 112), 66
    need = nrow * grid_h + (nrow - 1) * gap
    height = int(max(min_height, top_m + bottom_m + need + 4))
    plot_h = height - top_m - bottom_m
    for r in range(nrow):
        y1 = 1 - r * (grid_h + gap) / plot_h
        for c in range(ncol):
            if r * ncol + c < S:
                fig.update_yaxes(domain=[max(y1 - grid_h / plot_h, 0.0), y1], row=r + 1, col=c + 1)
    for k, a in enumerate(fig.layout.annotations[:S]):        # the panel titles follow their rows
        a.y = 1 - (k // ncol) * (grid_h + gap) / plot_h
    bar_y = max(1 - need / plot_h - 0.02, 0.0)
    _fig_layout(fig, f"Tile memory per chip<br><sup>{sub}</sup>", height,
                coloraxis=dict(colorscale="Viridis", cmin=0, cmax=kib,
                               colorbar=dict(title=dict(text="KiB used", side="right"), orientation="h",
                                             x=0, xanchor="left", y=bar_y, yanchor="top", len=0.6,
                                             thickness=12)),
                legend=dict(orientation="h", yanchor="top", y=bar_y, x=1, xanchor="right"))
    top = max(peak / 1024, 1e-3)
    fig.update_layout(margin=dict(l=20, r=20, t=top_m, b=bottom_m), plot_bgcolor="#ffffff", updatemenus=[dict(
        type="buttons", direction="left", x=1.0, xanchor="right", y=1.0, yanchor="bottom", showactive=True,
        pad=dict(b=52, r=4), font=dict(size=11), bgcolor="#f3f5f7", bordercolor="#cfd8dc",
        buttons=[dict(label="colour scale: 0 to SRAM", method="relayout", args=[{"coloraxis.cmax": kib}]),
                 dict(label="0 to busiest tile", method="relayout", args=[{"coloraxis.cmax": top}])])])
    return fig


def multichip_liveness(rep: dict, detail) -> "go.Figure":
    """Every stage's not-always-live bytes per program step; the worst stage's peak is marked."""
    import numpy as np
    import plotly.graph_objects as go
    if not detail or any(d is None for d in detail):
        return _empty_figure("no liveness: the stages were compiled without their memory report", 480)
    chips = _stage_chips(rep)
    palette = [BLUE, ORANGE, GREEN, "#8E6BB5", RED, "#17BECF", "#8C564B", "#E377C2"]
    fig = go.Figure()
    worst = max(range(len(detail)), key=lambda i: float(np.max(detail[i]["curve_bytes"], initial=0)))
    for i, (d, ipus) in enumerate(zip(detail, chips)):
        x = np.asarray(d["curve_steps"])
        y = np.asarray(d["curve_bytes"], dtype=np.float64) / 2**20
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"stage {i} ({_chips_label(ipus)})",
                                 line=dict(color=palette[i % len(palette)], width=2.5 if i == worst else 1.5,
                                           shape="hv"),
                                 customdata=d["curve_names"],
                                 hovertemplate=f"stage {i}, step %{{x}}: <b>%{{y:,.3f}} MiB</b><br>%{{customdata}}"
                                               "<extra></extra>"))
    d = detail[worst]
    y = np.asarray(d["curve_bytes"], dtype=np.float64)
    if y.size:
        k = int(np.argmax(y))
        p = int(d["curve_steps"][k])
        fig.add_trace(go.Scatter(x=[p], y=[y[k] / 2**20], mode="markers", name="peak", showlegend=False,
                                 marker=dict(color=RED, size=11, symbol="diamond", line=dict(width=1, color="white")),
                                 hoverinfo="skip"))
        fig.add_annotation(x=p, y=y[k] / 2**20, text=f"stage {worst} peak {_kib(y[k])}<br>{d['curve_names'][k]}",
                           showarrow=True, arrowhead=2, ax=50, ay=-36, bgcolor="rgba(255,255,255,0.9)",
                           bordercolor=RED, font=dict(size=11))
    sub = (f"program steps of each stage's chip; worst: stage {worst}, {_kib(d['not_always_live_peak_bytes'])}"
           f"<br>(always-live {_kib(d['always_live_bytes'])} not shown)")
    _fig_layout(fig, f"Liveness per stage: not-always-live memory<br><sup>{sub}</sup>", 480,
                legend=dict(orientation="h", yref="container", yanchor="bottom", y=0, x=0))
    fig.update_layout(margin=dict(t=96, b=84))
    fig.update_xaxes(title="program step of the stage")
    fig.update_yaxes(title="MiB live (one chip)", rangemode="tozero")
    return fig


def _merge_events(events, cap: int) -> list:
    """At most about ``cap`` bars for one chip: consecutive events merged into blocks named by the
    kind that fills most of them. ``events``: (start, dur, name, kind) sorted by start."""
    if len(events) <= cap:
        return [(s, d, n, k, None) for s, d, n, k in events]
    span = (events[-1][0] + events[-1][1] - events[0][0]) / cap
    out, block = [], []

    def flush():
        if not block:
            return
        t0 = block[0][0]
        t1 = max(s + d for s, d, _, _ in block)
        by = {}
        for _, d, _, k in block:
            by[k] = by.get(k, 0.0) + d
        kind = max(by, key=by.get)
        out.append((t0, t1 - t0, f"{block[0][2]} … ({len(block)} events)", kind, by))
        block.clear()
    for e in events:
        if block and e[0] - block[0][0] >= span:
            flush()
        block.append(e)
    flush()
    return out


def multichip_trace(rep: dict, sim) -> "go.Figure":
    """One row per chip: compute / sync / exchange (the stage's supersteps), link sends, host waits
    and idle time over the simulated steps (microseconds)."""
    import plotly.graph_objects as go
    mc = rep["multichip"]
    S, R = mc["stages"], mc["replicas"]
    n = S * R
    us = 1e6 / float(sim.chip.clock_hz)
    cap = max(200, TRACE_BARS // max(n, 1))
    per = {k: {"base": [], "x": [], "y": [], "text": []} for k in KIND_COLOURS}
    rows = []
    merged = False
    for c in range(n):
        r, s = divmod(c, S)
        row = f"IPU {c} · stage {s}" + (f" · replica {r}" if R > 1 else "")
        rows.append(row)
        evs = sorted(sim.chip_events[c], key=lambda e: e[0])
        bars = _merge_events(evs, cap)
        merged |= len(bars) < len(evs)
        for start, dur, name, kind, by in bars:
            d = per.setdefault(kind, {"base": [], "x": [], "y": [], "text": []})
            d["base"].append(start * us)
            d["x"].append(dur * us)
            d["y"].append(row)
            extra = "" if by is None else "<br>" + ", ".join(f"{k} {v * us:,.2f} µs" for k, v in by.items())
            d["text"].append(f"<b>{name}</b><br>{kind}: {dur:,.0f} cycles = {dur * us:,.3f} µs"
                             f"<br>starts at {start * us:,.3f} µs{extra}")
    fig = go.Figure()
    for kind, d in per.items():
        if not d["x"]:
            continue
        fig.add_trace(go.Bar(name=kind, orientation="h", base=d["base"], x=d["x"], y=d["y"], text=d["text"],
                             textposition="none", hovertemplate="%{text}<extra></extra>",
                             marker=dict(color=KIND_COLOURS.get(kind, GREY), line=dict(width=0))))
    s_ = rep["sim"]
    total_us = s_["cycles"] * us
    sub = (f"{mc['steps']} steps, {mc['micro_batches']} micro-batch{'es' if mc['micro_batches'] > 1 else ''} each, "
           f"{total_us:,.1f} µs; step {s_['step_seconds'] * 1e6:,.1f} µs"
           + (f", bubble {s_['bubble_fraction']:.0%}" if mc["mode"] in ("pipeline", "pipeline+replicate") else "")
           + (" (short events merged into blocks)" if merged else ""))
    _fig_layout(fig, f"Execution trace per chip ({mc['mode']})<br><sup>{sub}</sup>", 170 + 46 * n,
                barmode="overlay", bargap=0.3,
                legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))
    fig.update_yaxes(categoryorder="array", categoryarray=rows[::-1], title=None, ticksuffix="  ")
    fig.update_xaxes(title="time (µs) — drag to zoom, double-click to reset",
                     range=[0, total_us * 1.005 if total_us else 1])
    return fig


def multichip_stage_cycles(rep: dict) -> "go.Figure":
    """Forward / backward / update cycles of one micro-batch per stage, with the layers it holds."""
    import plotly.graph_objects as go
    rows = rep["multichip"]["per_stage"]
    names = [f"stage {r['stage']}<br>{_chips_label(r['ipus'])}" for r in rows]
    hover = [f"{r['first_layer']} … {r['last_layer']} ({r['layers']} layers, {r['ops']} ops)<br>"
             f"{r['vertices']:,} vertices, {r['params']:,} params" for r in rows]
    # a bar is at most about a fifth of the plot wide: one stage is not one wall of colour
    width = min(0.7, 0.2 * len(rows))
    fig = go.Figure()
    for key, label, colour in (("fwd_cycles", "forward", BLUE), ("bwd_cycles", "backward", ORANGE),
                               ("update_cycles", "update", GREEN)):
        ys = [r[key] for r in rows]
        if any(ys):
            fig.add_trace(go.Bar(x=names, y=ys, name=label, marker_color=colour, customdata=hover, width=width,
                                 hovertemplate=f"%{{x}}<br>{label}: <b>%{{y:,.0f}} cycles</b><br>%{{customdata}}"
                                               "<extra></extra>"))
    totals = [sum(r[k] for k in ("fwd_cycles", "bwd_cycles", "update_cycles")) for r in rows]
    fig.add_trace(go.Scatter(x=names, y=totals, mode="text", text=[f"{t:,.0f}" for t in totals],
                             textposition="top center", textfont=dict(size=11.5, color="#455A64"),
                             showlegend=False, hoverinfo="skip", name="total"))
    mc = rep["multichip"]
    sub = f"one micro-batch of {rep['model']['micro_batch']} samples; placement {mc['placement'].get('method', '')}"
    _fig_layout(fig, f"Cycles per stage<br><sup>{sub}</sup>", 380, barmode="stack",
                legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1, traceorder="normal"))
    fig.update_yaxes(title="cycles", rangemode="tozero", range=[0, max(totals + [1]) * 1.12])
    return fig


# ------------------------------------------------------------------------------------------
# the page
CSS = """
body { margin:0; font-family: Inter, 'Segoe UI', Helvetica, Arial, sans-serif; background:#F4F6F8; color:#263238; }
.topbar { background:#1F2A36; color:white; padding:12px 24px; display:flex; align-items:baseline; gap:16px; }
.topbar h1 { font-size:20px; margin:0; font-weight:600; }
.topbar span { color:#B0BEC5; font-size:13px; }
.wrap { display:flex; gap:18px; padding:18px; align-items:flex-start; }
.side { width:290px; flex:none; background:white; border-radius:10px; padding:16px 18px;
        box-shadow:0 1px 3px rgba(0,0,0,.08); position:sticky; top:12px; }
.side h3 { font-size:12px; letter-spacing:.08em; text-transform:uppercase; color:#78909C; margin:16px 0 6px; }
.side h3:first-child { margin-top:0; }
.side label.ctl { display:block; font-size:13px; margin:8px 0 3px; color:#455A64; }
.side input[type=number] { width:100%; box-sizing:border-box; padding:5px 8px; border:1px solid #CFD8DC;
        border-radius:6px; font-size:14px; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:0 10px; }
.main { flex:1; min-width:0; display:flex; flex-direction:column; gap:16px; }
.card { background:white; border-radius:10px; padding:12px 14px; box-shadow:0 1px 3px rgba(0,0,0,.08); }
.row2 { display:grid; grid-template-columns: minmax(0,1.25fr) minmax(0,1fr); gap:16px; }
.upload { border:1.5px dashed #90A4AE; border-radius:8px; padding:8px; text-align:center; font-size:12.5px;
          color:#546E7A; cursor:pointer; margin-top:6px; background:#FAFBFC; }
.note { font-size:12px; color:#78909C; margin-top:4px; }
.msg-error { background:#FDECEA; border:1px solid #F5C2C0; color:#8A1C17; border-radius:8px; padding:10px 12px;
             font-size:13.5px; white-space:pre-wrap; }
.msg-ok { color:#2E7D32; font-size:12.5px; }
.badge { display:inline-block; padding:5px 12px; border-radius:14px; font-weight:700; font-size:14px; color:white; }
.badge.fit { background:#2E8B57; } .badge.oom { background:#E3242B; }
.kpis { display:flex; flex-wrap:wrap; gap:10px; margin-top:10px; }
.kpi { background:#F7F9FA; border-radius:8px; padding:8px 12px; min-width:120px; }
.kpi b { display:block; font-size:19px; color:#1F2A36; }
.kpi small { color:#78909C; font-size:11.5px; text-transform:uppercase; letter-spacing:.05em; }
.status-head { display:flex; gap:12px; align-items:center; flex-wrap:wrap; }
.status-line { font-size:13px; color:#546E7A; }
table.worst { border-collapse:collapse; font-size:12.5px; margin-top:8px; }
table.worst td, table.worst th { padding:3px 10px; border-bottom:1px solid #ECEFF1; text-align:right; }
table.worst th { color:#78909C; font-weight:600; }
.progress { font-size:13.5px; color:#37474F; display:flex; align-items:center; gap:10px; }
.spinner { width:14px; height:14px; border:2px solid #CFD8DC; border-top-color:#3B76AF; border-radius:50%;
           animation:spin 0.8s linear infinite; }
@keyframes spin { to { transform: rotate(360deg); } }
.chip-mode { font-size:13.5px; margin-top:2px; }
.chip-mode label { margin:2px 0; }
.opt-note { color:#90A4AE; font-size:11.5px; }
.status-grid { display:grid; grid-template-columns:minmax(0,1.3fr) minmax(0,1fr); gap:16px; }
"""


def _kib(b):
    b = float(b)
    return f"{b / 2**20:,.2f} MiB" if b >= 2**20 else f"{b / 1024:,.1f} KiB"


def _rate(x):
    for unit, k in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= k:
            return f"{x / k:,.2f} {unit}"
    return f"{x:,.1f}"


def _status_card(rep: dict, wall_s: float, cached: bool):
    from dash import html
    mem, sim, g, m, chip = rep["memory"], rep.get("sim", {}), rep["graph"], rep["model"], rep["chip"]
    fits = mem["fits"]
    sram = mem["sram_bytes_per_tile"]
    head = html.Div(className="status-head", children=[
        html.Span("FITS" if fits else "OUT OF MEMORY", className="badge " + ("fit" if fits else "oom"),
                  id="fit-badge"),
        html.Span(f"{m['name']} · {'training' if m['train'] else 'inference'} · batch {m['batch']} · {m['dtype']} · "
                  f"{chip['name']} × {chip['ipus']}: {chip['tiles']:,} tiles × {_kib(sram)}",
                  className="status-line", id="status-summary"),
    ])
    kpis = html.Div(className="kpis", children=[
        html.Div(className="kpi", children=[html.Small("throughput"),
                                             html.B(f"{_rate(sim.get('samples_per_second', 0.0))} /s",
                                                    id="kpi-throughput")]),
        html.Div(className="kpi", children=[html.Small("latency (one step)"),
                                             html.B(f"{sim.get('seconds', 0.0) * 1e3:,.3f} ms", id="kpi-latency")]),
        html.Div(className="kpi", children=[html.Small("peak tile memory"),
                                             html.B(f"{_kib(mem['peak_tile_bytes'])}"),
                                             html.Span(f"{mem['peak_tile_bytes'] / sram:.0%} of SRAM",
                                                       className="note")]),
        html.Div(className="kpi", children=[html.Small("graph"),
                                             html.B(f"{g['vertices']:,} vertices"),
                                             html.Span(f"{g['edges']:,} edges, {g['tiles_used']:,} tiles used",
                                                       className="note")]),
        html.Div(className="kpi", children=[html.Small("compile + simulate"),
                                             html.B(f"{wall_s:.2f} s"),
                                             html.Span("from the cache" if cached else "just computed",
                                                       className="note")]),
    ])
    worst = mem.get("worst_tiles", [])[:5]
    table = html.Table(className="worst", children=[
        html.Thead(html.Tr([html.Th("tile"), html.Th("bytes"), html.Th("% SRAM"), html.Th("mostly")])),
        html.Tbody([html.Tr([html.Td(w["tile"]), html.Td(f"{w['bytes']:,}"),
                             html.Td(f"{w['bytes'] / sram:.0%}",
                                     style={"color": RED} if w["bytes"] > sram else None),
                             html.Td(w["dominant"].replace("_", " "), style={"textAlign": "left"})])
                    for w in worst])])
    right = [html.Div("worst tiles", className="status-line"), table]
    out = [html.Div(className="status-grid", children=[html.Div([head, kpis]), html.Div(right)])]
    if mem.get("message"):
        out.append(html.Div(mem["message"], className="msg-error", id="oom-message",
                            style={"marginTop": "10px", "fontSize": "12.5px"}))
    return html.Div(out)


def _oom_text(rows: list, sram: int) -> str | None:
    """The vendor-style message, per stage that does not fit."""
    lines = []
    for r in rows:
        m = r.get("memory", {})
        if m.get("fits", True) or not m.get("worst_tiles"):
            continue
        w = m["worst_tiles"][0]
        lines.append(f"Stage {r['stage']} ({_chips_label(r['ipus'])}): out of memory on tile {w['tile']}: "
                     f"{w['bytes']} bytes used but tiles only have {sram} ({m.get('oom_tiles', 0)} tiles over; "
                     f"dominated by {w['dominant']})")
    return "\n".join(lines) or None


def _multichip_status_card(rep: dict, wall_s: float, cached: bool):
    """Fits / OOM per stage (worst tiles of each), throughput, step time, bubble, link and host traffic."""
    from dash import html
    mem, sim, m, chip, mc = rep["memory"], rep["sim"], rep["model"], rep["chip"], rep["multichip"]
    fits = mem["fits"]
    sram = mem["sram_bytes_per_tile"]
    mode = mc["mode"]
    pipelined = mode in ("pipeline", "pipeline+replicate")
    head = html.Div(className="status-head", children=[
        html.Span("FITS" if fits else "OUT OF MEMORY", className="badge " + ("fit" if fits else "oom"),
                  id="fit-badge"),
        html.Span(f"{m['name']} · {'training' if m['train'] else 'inference'} · batch {m['batch']} · {m['dtype']} · "
                  f"{chip['name']} × {chip['ipus']}: {chip['tiles_per_ipu']:,} tiles × {_kib(sram)} · {mode}: "
                  f"{mc['stages']} stage{'s' if mc['stages'] > 1 else ''} × {mc['replicas']} "
                  f"replica{'s' if mc['replicas'] > 1 else ''}, {mc['micro_batches']} micro-batch"
                  f"{'es' if mc['micro_batches'] > 1 else ''} of {m['micro_batch']}",
                  className="status-line", id="status-summary"),
    ])

    def kpi(label, value, note=None, kid=None):
        kids = [html.Small(label), html.B(value, id=kid) if kid else html.B(value)]
        if note:
            kids.append(html.Span(note, className="note"))
        return html.Div(className="kpi", children=kids)
    hidden = sim.get("hidden_transfer_fraction", 0.0)
    kpis = [kpi("throughput", f"{_rate(sim.get('samples_per_second', 0.0))} /s", kid="kpi-throughput"),
            kpi("latency (one step)", f"{sim.get('step_seconds', 0.0) * 1e3:,.3f} ms",
                f"{sim.get('step_cycles', 0):,.0f} cycles", kid="kpi-latency")]
    if pipelined:
        kpis.append(kpi("pipeline bubble", f"{sim.get('bubble_fraction', 0.0):.0%}", "of a step idle",
                        kid="kpi-bubble"))
    kpis += [kpi("peak tile memory", _kib(mem["peak_tile_bytes"]), f"{mem['peak_tile_bytes'] / sram:.0%} of SRAM "
                 "(worst stage)"),
             kpi("chip-to-chip links", _kib(sim.get("link_bytes", 0)),
                 (f"all-reduce {_kib(sim.get('allreduce_bytes', 0))}" if sim.get("allreduce_bytes") else
                  "activations / gradients"), kid="kpi-links"),
             kpi("host traffic", _kib(sim.get("host_bytes", 0)), f"{hidden:.0%} of its time hidden"),
             kpi("compile + simulate", f"{wall_s:.2f} s", "from the cache" if cached else "just computed")]
    # graph size: every stage compiled once (a replica's graph; the other replicas are copies)
    rows = mc["per_stage"]
    n_vert = sum(int(r.get("vertices", 0)) for r in rows)
    has_edges = all("edges" in r for r in rows)
    n_edges = sum(int(r["edges"]) for r in rows) if has_edges else None
    where = (f"{len(rows)} stage{'s' if len(rows) > 1 else ''}"
             + (f" (each of {mc['replicas']} replicas)" if mc["replicas"] > 1 else ""))
    kpis.insert(-1, kpi("graph", f"{n_vert:,} vertices",
                        (f"{n_edges:,} edges" if has_edges else "edges not reported") + f", {where}",
                        kid="kpi-graph"))
    # per stage: its chips, layers, graph, fit, worst tiles
    body = []
    for r in rows:
        sm = r.get("memory", {})
        worst = sm.get("worst_tiles", [])[:3]
        ok = sm.get("fits", True)
        body.append(html.Tr([
            html.Td(r["stage"]), html.Td(", ".join(str(i) for i in r["ipus"])),
            html.Td(f"{r['layers']}", title=f"{r['first_layer']} … {r['last_layer']}"),
            html.Td(f"{int(r.get('vertices', 0)):,}"), html.Td(f"{int(r['edges']):,}" if "edges" in r else "—"),
            html.Td(_kib(sm.get("peak_tile_bytes", 0)), style=None if ok else {"color": RED}),
            html.Td("fits" if ok else f"OOM ({sm.get('oom_tiles', 0)})", style={"color": GREEN if ok else RED}),
            html.Td(", ".join(f"tile {w['tile']} {_kib(w['bytes'])} ({w['bytes'] / sram:.0%}, "
                              f"{w['dominant'].replace('_', ' ')})" for w in worst[:2]),
                    style={"textAlign": "left", "color": None if ok else RED})]))
    table = html.Table(className="worst", id="stage-table", children=[
        html.Thead(html.Tr([html.Th("stage"), html.Th("IPUs"), html.Th("layers"), html.Th("vertices"),
                            html.Th("edges"), html.Th("peak tile"),
                            html.Th(""), html.Th("worst tiles (bytes, % of SRAM, mostly)",
                                                 style={"textAlign": "left"})])),
        html.Tbody(body)])
    caption = ("fit per stage (the replicas of a stage hold the same bytes)" if mc["replicas"] > 1
               else "fit per chip")
    out = [head, html.Div(kpis, className="kpis"),
           html.Div(caption, className="status-line", style={"marginTop": "12px"}), table]
    notes = []
    if mc.get("stages_requested", mc["stages"]) > mc["stages"]:
        notes.append(f"{m['name']} has too few layers for {mc['stages_requested']} stages: {mc['stages']} used")
    if notes:
        out.append(html.Div("; ".join(notes), className="note"))
    msg = None if fits else _oom_text(mc["per_stage"], sram)
    if msg:
        out.append(html.Div(msg, className="msg-error", id="oom-message",
                            style={"marginTop": "10px", "fontSize": "12.5px"}))
    return html.Div(out)


def _error_box(msg: str, what: str = "cannot compile this setting"):
    from dash import html
    return html.Div(className="msg-error", id="error-message", children=[html.B(what + ": "), msg])


def _progress(text: str):
    from dash import html
    return html.Div(className="progress", id="progress", children=[html.Div(className="spinner"), text])


def _field_values(chip) -> list:
    """The chip fields in the units of the controls (tiles, KiB, GHz, B/cycle/tile)."""
    out = []
    for field, _, _, scale in CHIP_FIELDS:
        v = getattr(chip, field) / scale
        out.append(int(v) if float(v).is_integer() else round(v, 6))
    return out


def chip_mode_options(ipus) -> list:
    """The options of the chip-mode control: all disabled for one chip (nothing to choose)."""
    from dash import html
    one = not isinstance(ipus, (int, float)) or ipus <= 1
    return [{"label": html.Span([" " + label, html.Span(" — " + what, className="opt-note")]),
             "value": value, "disabled": one} for value, label, what in CHIP_MODES]


def chip_mode_note(ipus, chip_mode) -> str:
    if not isinstance(ipus, (int, float)) or ipus <= 1:
        return "one chip: set chips to 2 or more to choose how they are used"
    if chip_mode in (None, "spread"):
        return f"one graph compiled over the {int(ipus)} chips' tiles (pipeline.build)"
    bits = [f"simulated by simulator.multichip over {int(ipus)} chips"]
    if chip_mode in USES_REPLICAS:
        bits.append("replicas blank: " + ("one per chip" if chip_mode == "replicate" else "2"))
    if chip_mode in USES_MICRO_BATCHES:
        bits.append("micro-batches blank: " + ("1" if chip_mode == "replicate" else "automatic"))
    bits.append("recomputation does not apply")
    return "; ".join(bits)


def _control_layout(models: list, presets: list, recompute_spec, default_model: str):
    from dash import dcc, html
    from hardware.chips import get_chip
    g = get_chip("gc200")
    num = functools.partial(dcc.Input, type="number", debounce=True)
    return html.Div(className="side", children=[
        html.H3("model"),
        dcc.Dropdown(id="model", options=[{"label": m, "value": m} for m in models], value=default_model,
                     clearable=False),
        dcc.Upload(id="upload", className="upload", accept=".onnx", max_size=512 * 2**20,
                   children=html.Div(["drop an ", html.B(".onnx"), " file here or click"])),
        html.Div(id="upload-msg"),
        dcc.RadioItems(id="mode", options=[{"label": " inference", "value": "infer"},
                                           {"label": " training", "value": "train"}],
                       value="infer", inline=True, style={"marginTop": "8px", "fontSize": "14px"},
                       labelStyle={"marginRight": "14px"}),
        html.H3("chip"),
        dcc.Dropdown(id="chip-preset", options=[{"label": p, "value": p} for p in presets]
                     + [{"label": "custom (from gc200)", "value": "custom"}], value="gc200", clearable=False),
        html.Div(className="grid2", children=[
            html.Div([html.Label(label, className="ctl", htmlFor=cid),
                      num(id=cid, value=v, step="any")])
            for (field, cid, label, scale), v in zip(CHIP_FIELDS, _field_values(g))]),
        html.Div(className="grid2", children=[
            html.Div([html.Label("chips", className="ctl", htmlFor="ipus"), num(id="ipus", value=1, step=1)]),
            html.Div([html.Label("batch size", className="ctl", htmlFor="batch"), num(id="batch", value=1, step=1)]),
        ]),
        html.Label("how the chips are used", className="ctl", htmlFor="chip-mode"),
        dcc.RadioItems(id="chip-mode", options=chip_mode_options(1), value="spread", className="chip-mode",
                       labelStyle={"display": "block"}),
        html.Div(className="grid2", children=[
            html.Div([html.Label("replicas", className="ctl", htmlFor="replicas"),
                      num(id="replicas", step=1, placeholder="auto", disabled=True)]),
            html.Div([html.Label("micro-batches", className="ctl", htmlFor="micro-batches"),
                      num(id="micro-batches", step=1, placeholder="auto", disabled=True)]),
        ]),
        html.Div(chip_mode_note(1, "spread"), className="note", id="chip-mode-note"),
        html.H3("compiler"),
        dcc.RadioItems(id="dtype", options=[{"label": " fp32", "value": "fp32"}, {"label": " fp16", "value": "fp16"}],
                       value="fp32", inline=True, labelStyle={"marginRight": "14px"}, style={"fontSize": "14px"}),
        html.Label("recomputation (training)", className="ctl", htmlFor="recompute"),
        dcc.Dropdown(id="recompute", clearable=False, disabled=True,
                     options=[{"label": str(m), "value": m} for m in (recompute_spec or (None, ["none"]))[1]],
                     value=(recompute_spec or (None, ["none"]))[1][0]),
        html.Div("available for training graphs" if recompute_spec else
                 "not available: pipeline.build has no recompute option", className="note", id="recompute-note"),
        html.Label("available memory proportion", className="ctl", htmlFor="amp"),
        dcc.Slider(id="amp", min=0.1, max=1.0, step=0.05, value=0.6,
                   marks={v: f"{v:g}" for v in (0.1, 0.3, 0.6, 1.0)}, tooltip={"placement": "bottom"}),
        html.H3("trade-off chart"),
        dcc.Dropdown(id="axis", options=[{"label": f"vs {v}", "value": k} for k, v in AXES.items()],
                     value="tiles", clearable=False),
        html.Div("7 points around the current setting, computed in the background and cached.",
                 className="note"),
    ])


def make_app(jobs: Jobs | None = None, *, default_model: str | None = None, poll_ms: int = 400):
    """The Dash app. ``app.jobs`` is its :class:`Jobs` (call ``app.jobs.shutdown()`` when done)."""
    import dash
    from dash import Input, Output, State, ctx, dcc, html, no_update

    import models
    from hardware.chips import get_chip, list_chips
    jobs = jobs or Jobs(workers=min(2, os.cpu_count() or 1))
    recompute_spec = recompute_modes()
    model_names = models.list_models()
    default_model = default_model or ("mnist-mlp" if "mnist-mlp" in model_names else model_names[0])
    upload_dir = tempfile.mkdtemp(prefix="ipusim-upload-")

    app = dash.Dash(__name__, title="ipusim explorer", update_title=None)
    app.jobs = jobs
    app.upload_dir = upload_dir
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")
    graph_cfg = {"displaylogo": False, "responsive": True}

    def graph(gid, height):
        return dcc.Graph(id=gid, figure=_empty_figure("waiting for the first compile…", height), config=graph_cfg)

    app.layout = html.Div([
        html.Div(className="topbar", children=[html.H1("ipusim explorer"),
                                               html.Span("how a network compiles and runs on a tile-SRAM chip")]),
        html.Div(className="wrap", children=[
            _control_layout(model_names, list_chips(), recompute_spec, default_model),
            html.Div(className="main", children=[
                html.Div(className="card", children=[html.Div(id="progress-line"), html.Div(id="status")]),
                html.Div(className="card", children=[graph("fig-tradeoff", 400), html.Div(id="tradeoff-msg",
                                                                                           className="note")]),
                html.Div(className="row2", children=[html.Div(className="card", children=[graph("fig-memory", 480)]),
                                                     html.Div(className="card", children=[graph("fig-liveness", 480)])]),
                html.Div(className="card", children=[graph("fig-trace", 330)]),
                html.Div(className="card", children=[graph("fig-layers", 420)]),
            ]),
        ]),
        dcc.Store(id="current"),
        dcc.Interval(id="poll-main", interval=poll_ms, disabled=True),
        dcc.Interval(id="poll-trade", interval=poll_ms + 300, disabled=True),
    ])

    # -- chip preset -> the chip fields --------------------------------------------------------
    @app.callback([Output(cid, "value") for _, cid, _, _ in CHIP_FIELDS], Input("chip-preset", "value"),
                  prevent_initial_call=True)
    def _preset(preset):
        if preset in (None, "custom"):
            return [no_update] * len(CHIP_FIELDS)
        return _field_values(get_chip(preset))

    # -- how several chips are used: only with 2 chips or more --------------------------------
    @app.callback(Output("chip-mode", "options"), Output("replicas", "disabled"), Output("micro-batches", "disabled"),
                  Output("chip-mode-note", "children"), Input("ipus", "value"), Input("chip-mode", "value"))
    def _chip_mode_enabled(ipus, chip_mode):
        multi = isinstance(ipus, (int, float)) and ipus > 1
        return (chip_mode_options(ipus), not (multi and chip_mode in USES_REPLICAS),
                not (multi and chip_mode in USES_MICRO_BATCHES), chip_mode_note(ipus, chip_mode))

    # -- recomputation applies to training graphs only ----------------------------------------
    @app.callback(Output("recompute", "disabled"), Input("mode", "value"), Input("ipus", "value"),
                  Input("chip-mode", "value"))
    def _recompute_enabled(mode, ipus, chip_mode):
        multi = isinstance(ipus, (int, float)) and ipus > 1 and chip_mode in MULTICHIP_MODES
        return not (recompute_spec and mode == "train" and not multi)

    # -- upload an ONNX file -------------------------------------------------------------------
    @app.callback(Output("model", "options"), Output("model", "value"), Output("upload-msg", "children"),
                  Input("upload", "contents"), State("upload", "filename"), State("model", "options"),
                  prevent_initial_call=True)
    def _upload(contents, filename, options):
        if not contents:
            return no_update, no_update, no_update
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(filename or "model.onnx")) or "model.onnx"
        if not name.lower().endswith(".onnx"):
            return no_update, no_update, _error_box(f"{filename}: not an .onnx file", "upload rejected")
        path = os.path.join(upload_dir, f"{int(time.time() * 1000)}-{name}")
        try:
            data = base64.b64decode(contents.split(",", 1)[1])
            with open(path, "wb") as f:
                f.write(data)
            og = models.load_onnx(path)
        except Exception as e:  # noqa: BLE001 - ModelError and anything onnx raises on a broken file
            try:
                os.remove(path)
            except OSError:
                pass
            return no_update, no_update, _error_box(_message(e), f"cannot load {filename}")
        options = list(options or []) + [{"label": f"{name} (uploaded)", "value": path}]
        return options, path, html.Div(f"loaded {name}: {len(og)} ops", className="msg-ok")

    # -- compile the current setting ---------------------------------------------------------
    field_inputs = [Input(cid, "value") for _, cid, _, _ in CHIP_FIELDS]

    @app.callback(Output("status", "children"), Output("progress-line", "children"),
                  Output("fig-memory", "figure"), Output("fig-liveness", "figure"), Output("fig-trace", "figure"),
                  Output("fig-layers", "figure"), Output("poll-main", "disabled"), Output("current", "data"),
                  Input("model", "value"), Input("mode", "value"), Input("chip-preset", "value"), *field_inputs,
                  Input("ipus", "value"), Input("batch", "value"), Input("dtype", "value"),
                  Input("recompute", "value"), Input("amp", "value"), Input("chip-mode", "value"),
                  Input("replicas", "value"), Input("micro-batches", "value"), Input("poll-main", "n_intervals"))
    def _compile(model, mode, preset, tiles, sram, clock, exch, ipus, batch, dtype, recompute, amp, chip_mode,
                 replicas, micro_batches, _n):
        keep = [no_update] * 4
        try:
            params = settings_to_params(model, mode, preset, {"tiles": tiles, "sram": sram, "clock": clock,
                                                              "exch": exch}, ipus, batch, dtype,
                                        recompute, amp, recompute_spec, chip_mode=chip_mode,
                                        replicas=replicas, micro_batches=micro_batches)
        except Exception as e:  # noqa: BLE001 - ChipError, bad numbers...
            blank = _empty_figure("no result for this setting")
            return _error_box(_message(e), "impossible setting"), "", blank, blank, blank, blank, True, None
        try:
            cached = jobs.lookup(params, True) is not None and ctx.triggered_id != "poll-main"
            state, res = jobs.get(params, True)
            if state == "running":
                label = os.path.basename(str(params["model"]))
                if params.get("mode"):
                    label += f" on {params['ipus']} chips ({params['mode']})"
                return (no_update, _progress(f"compiling and simulating {label} — {res:.0f} s so far "
                                             "(views below are from the previous setting)"),
                        *keep, False, no_update)
            if "error" in res:
                blank = _empty_figure("no result for this setting")
                return _error_box(res["error"]), "", blank, blank, blank, blank, True, None
            figs = res["figures"]
            card = (_multichip_status_card if "multichip" in res["report"] else _status_card)
            return (card(res["report"], res["wall_s"], cached), "", figs.get("memory"),
                    figs.get("liveness"), figs.get("trace"), figs.get("layers") or _empty_figure("—"), True, params)
        except Exception as e:  # noqa: BLE001 - never a dead page
            return _error_box(_message(e), "internal error"), "", *keep, True, None

    # -- the trade-off mini-sweep ------------------------------------------------------------
    @app.callback(Output("fig-tradeoff", "figure"), Output("poll-trade", "disabled"), Output("tradeoff-msg", "children"),
                  Input("current", "data"), Input("axis", "value"), Input("poll-trade", "n_intervals"))
    def _tradeoff(params, axis, _n):
        if not params:
            return _empty_figure("no trade-off: the current setting has no result", 400), True, ""
        try:
            values = tradeoff_values(axis, params)
            _, chip, kw, _mc = split_point(params)
            current = {"tiles": chip.tiles, "sram_bytes_per_tile": chip.sram_bytes_per_tile,
                       "batch": kw.get("batch", 1)}[axis]
            rows, missing, in_flight = [], [], False
            for v in values:
                p = _with(params, axis, v)
                r = jobs.lookup(p, figures=False)
                if r is not None:
                    rows.append((v, r))
                else:
                    missing.append(p)
                    in_flight |= jobs.running(p, False)
            # one point at a time, and only while no main compile waits: the page stays quick
            if missing and not in_flight and jobs.busy() == 0:
                jobs.get(missing[0], figures=False)
            fig = tradeoff_figure(axis, current, rows, len(values), chip.sram_bytes_per_tile)
            msg = "" if not missing else f"mini-sweep: {len(rows)}/{len(values)} points"
            return fig, not missing, msg
        except Exception as e:  # noqa: BLE001
            return _empty_figure(f"trade-off failed: {_message(e)}", 400), True, ""

    return app


def serve(host: str = "127.0.0.1", port: int = 8050, *, debug: bool = False):
    app = make_app()
    print(f"ipusim explorer: http://{host}:{port}/  (Ctrl+C to stop)", flush=True)
    try:
        app.run(host=host, port=port, debug=debug)
    finally:
        app.jobs.shutdown()
