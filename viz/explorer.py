"""The interactive trade-off explorer: a local Dash app over the compile / simulate pipeline.

    ipusim explore [--port 8050] [--host 127.0.0.1]

Controls (left): model (built-in or an uploaded ``.onnx``), training or inference,
chip preset or custom fields (tiles, SRAM per tile, clock, exchange rate), number
of chips, batch size, precision, recomputation (when ``pipeline.build`` has a
``recompute`` option), available memory proportion, and the axis of the
trade-off chart.

Views (right): fits / out of memory with the worst tiles, throughput and latency,
the trade-off chart (throughput and peak tile memory against tiles, SRAM per tile
or batch, fit boundary drawn; a mini-sweep of 7 points around the current
setting), the tile memory map, the liveness curve, the execution trace and the
cycles per layer (figures from :mod:`viz.views`).

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

__all__ = ["make_app", "serve", "compute_point", "Jobs", "tradeoff_values", "CHIP_FIELDS"]

#: the chip fields the page edits: (field, control id, label, unit factor from the control to the field)
CHIP_FIELDS = (("tiles", "tiles", "tiles per chip", 1),
               ("sram_bytes_per_tile", "sram", "SRAM per tile (KiB)", 1024),
               ("clock_hz", "clock", "clock (GHz)", 1e9),
               ("exchange_bytes_per_cycle_per_tile", "exch", "exchange (B/cycle/tile)", 1))
AXES = {"tiles": "tiles per chip", "sram_bytes_per_tile": "SRAM per tile", "batch": "batch size"}
ORANGE, BLUE, RED, GREEN, GREY = "#EF8A2F", "#3B76AF", "#E3242B", "#2E8B57", "#A0A7B0"


# ------------------------------------------------------------------------------------------
# the work done in a worker process
def _build_options():
    from simulator.pipeline import build
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


def compute_point(params: dict, figures: bool = True) -> dict:
    """Compile + simulate one setting; return ``{"report", "figures", "wall_s"}`` or ``{"error"}``.

    ``params`` are sweep parameters (:func:`simulator.sweep.split_params`). Never raises.
    """
    t0 = time.perf_counter()
    try:
        from simulator.pipeline import build
        from simulator.sweep import _jsonable, split_params
        model, chip, kw = split_params(params)
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
def settings_to_params(model, mode, preset, fields: dict, ipus, batch, dtype, recompute, amp,
                       recompute_spec=None) -> dict:
    """Control values -> sweep parameters (validated: raises ValueError with a message for the page)."""
    from simulator.chips import get_chip
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
    if recompute_spec and mode == "train" and recompute is not None and recompute != recompute_spec[0]:
        params["recompute"] = recompute   # only when not the default: same setting, same cache entry
    split_params(params)    # chip errors (tiles=0 ...) and unknown options now, before any compile
    return params


def tradeoff_values(axis: str, params: dict) -> list:
    """5-8 values of ``axis`` around the current setting (the current one included)."""
    from simulator.sweep import split_params
    _, chip, kw = split_params(params)
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
    else:
        raise ValueError(f"unknown trade-off axis {axis!r}")
    return sorted(v for v in vals if v > 0)


def _with(params: dict, axis: str, value) -> dict:
    p = dict(params)
    p[axis] = value
    if axis in ("tiles", "sram_bytes_per_tile"):
        from simulator.chips import get_chip
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
    lat = [rep.get("sim", {}).get("seconds", 0.0) * 1e3 for _, rep in ok]
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


def _control_layout(models: list, presets: list, recompute_spec, default_model: str):
    from dash import dcc, html
    from simulator.chips import get_chip
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
    from simulator.chips import get_chip, list_chips
    from simulator.sweep import split_params
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

    # -- recomputation applies to training graphs only ----------------------------------------
    @app.callback(Output("recompute", "disabled"), Input("mode", "value"))
    def _recompute_enabled(mode):
        return not (recompute_spec and mode == "train")

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
                  Input("recompute", "value"), Input("amp", "value"), Input("poll-main", "n_intervals"))
    def _compile(model, mode, preset, tiles, sram, clock, exch, ipus, batch, dtype, recompute, amp, _n):
        keep = [no_update] * 4
        try:
            params = settings_to_params(model, mode, preset, {"tiles": tiles, "sram": sram, "clock": clock,
                                                              "exch": exch}, ipus, batch, dtype,
                                        recompute, amp, recompute_spec)
        except Exception as e:  # noqa: BLE001 - ChipError, bad numbers...
            blank = _empty_figure("no result for this setting")
            return _error_box(_message(e), "impossible setting"), "", blank, blank, blank, blank, True, None
        try:
            cached = jobs.lookup(params, True) is not None and ctx.triggered_id != "poll-main"
            state, res = jobs.get(params, True)
            if state == "running":
                label = os.path.basename(str(params["model"]))
                return (no_update, _progress(f"compiling and simulating {label} — {res:.0f} s so far "
                                             "(views below are from the previous setting)"),
                        *keep, False, no_update)
            if "error" in res:
                blank = _empty_figure("no result for this setting")
                return _error_box(res["error"]), "", blank, blank, blank, blank, True, None
            figs = res["figures"]
            return (_status_card(res["report"], res["wall_s"], cached), "", figs.get("memory"),
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
            _, chip, kw = split_params(params)
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
