"""The explorer's page: the controls, the callbacks that run a setting and draw it, the
trade-off chart, and :func:`serve`."""
from __future__ import annotations

import base64
import functools
import os
import re
import tempfile
import time

import dash
import plotly.graph_objects as go
from dash import Input, Output, State, ctx, dcc, html, no_update
from plotly.subplots import make_subplots

import models
from hardware.chips import get_chip, list_chips
from simulator.sweep import point_config
from viz.views import PHASE_COLOURS, RED

from .cards import CSS, card_for, empty_figure, error_box, progress
from .jobs import Jobs, message, serve_app
from .settings import (AXES, CHIP_FIELDS, CHIP_MODES, DEFAULT, RECOMPUTE_MODES, choices, field_values,
                       layout_note, mode_uses, settings_to_params, tradeoff_values, with_value)

__all__ = ["make_app", "serve", "tradeoff_figure", "chip_mode_options"]

BLUE, ORANGE = PHASE_COLOURS["compute"], PHASE_COLOURS["exchange"]


def tradeoff_figure(axis: str, current, rows: list, total: int, sram_bytes: int):
    """Throughput (left axis) and peak tile memory (right axis) against ``axis``; fit boundary drawn.

    ``rows``: (value, result) for the points done so far.
    """
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


def chip_mode_options(ipus) -> list:
    """The options of the chip-mode control: all disabled for one chip (nothing to choose)."""
    one = not isinstance(ipus, (int, float)) or ipus <= 1
    return [{"label": html.Span([" " + label, html.Span(" — " + what, className="opt-note")]),
             "value": value, "disabled": one} for value, label, what in CHIP_MODES]


def _control_layout(model_names: list, presets: list, default_model: str):
    g = get_chip(DEFAULT.chip)
    num = functools.partial(dcc.Input, type="number", debounce=True)
    return html.Div(className="side", children=[
        html.H3("model"),
        dcc.Dropdown(id="model", options=[{"label": m, "value": m} for m in model_names], value=default_model,
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
                     + [{"label": "custom (from gc200)", "value": "custom"}], value=DEFAULT.chip, clearable=False),
        html.Div(className="grid2", children=[
            html.Div([html.Label(label, className="ctl", htmlFor=cid),
                      num(id=cid, value=v, step="any")])
            for (field, cid, label, scale), v in zip(CHIP_FIELDS, field_values(g))]),
        html.Div(className="grid2", children=[
            html.Div([html.Label("chips", className="ctl", htmlFor="ipus"), num(id="ipus", value=DEFAULT.ipus, step=1)]),
            html.Div([html.Label("batch size", className="ctl", htmlFor="batch"), num(id="batch", value=DEFAULT.batch, step=1)]),
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
        html.Div(layout_note(1, "spread"), className="note", id="chip-mode-note"),
        html.H3("compiler"),
        dcc.RadioItems(id="dtype", options=[{"label": " " + d, "value": d} for d in choices("dtype")],
                       value=DEFAULT.dtype, inline=True, labelStyle={"marginRight": "14px"}, style={"fontSize": "14px"}),
        html.Label("recomputation (training)", className="ctl", htmlFor="recompute"),
        dcc.Dropdown(id="recompute", clearable=False, disabled=True,
                     options=[{"label": m, "value": m} for m in RECOMPUTE_MODES], value=DEFAULT.recompute),
        html.Div("training graphs on one graph (docs/memory.md)", className="note", id="recompute-note"),
        html.Label("available memory proportion", className="ctl", htmlFor="amp"),
        dcc.Slider(id="amp", min=0.1, max=1.0, step=0.05, value=DEFAULT.available_memory_proportion,
                   marks={v: f"{v:g}" for v in (0.1, 0.3, 0.6, 1.0)}, tooltip={"placement": "bottom"}),
        html.H3("trade-off chart"),
        dcc.Dropdown(id="axis", options=[{"label": f"vs {v}", "value": k} for k, v in AXES.items()],
                     value="tiles", clearable=False),
        html.Div("7 points around the current setting, computed in the background and cached.",
                 className="note"),
    ])


def make_app(jobs: Jobs | None = None, *, default_model: str | None = None, poll_ms: int = 400):
    """The Dash app. ``app.jobs`` is its :class:`Jobs` (call ``app.jobs.shutdown()`` when done)."""
    jobs = jobs or Jobs(workers=min(2, os.cpu_count() or 1))
    model_names = models.list_models()
    default_model = default_model or ("mnist-mlp" if "mnist-mlp" in model_names else model_names[0])
    upload_dir = tempfile.mkdtemp(prefix="ipusim-upload-")

    app = dash.Dash(__name__, title="ipusim explorer", update_title=None)
    app.jobs = jobs
    app.upload_dir = upload_dir
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")
    graph_cfg = {"displaylogo": False, "responsive": True}

    def graph(gid, height):
        return dcc.Graph(id=gid, figure=empty_figure("waiting for the first compile…", height), config=graph_cfg)

    app.layout = html.Div([
        html.Div(className="topbar", children=[html.H1("ipusim explorer"),
                                               html.Span("how a network compiles and runs on a tile-SRAM chip")]),
        html.Div(className="wrap", children=[
            _control_layout(model_names, list_chips(), default_model),
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
        return field_values(get_chip(preset))

    # -- how several chips are used: only with 2 chips or more --------------------------------
    @app.callback(Output("chip-mode", "options"), Output("replicas", "disabled"), Output("micro-batches", "disabled"),
                  Output("chip-mode-note", "children"), Input("ipus", "value"), Input("chip-mode", "value"),
                  Input("batch", "value"))
    def _chip_mode_enabled(ipus, chip_mode, batch):
        multi = isinstance(ipus, (int, float)) and ipus > 1
        return (chip_mode_options(ipus), not (multi and mode_uses(chip_mode, "replicas")),
                not (multi and mode_uses(chip_mode, "micro_batches")), layout_note(ipus, chip_mode, batch))

    # -- recomputation applies to training graphs only ----------------------------------------
    @app.callback(Output("recompute", "disabled"), Input("mode", "value"), Input("ipus", "value"),
                  Input("chip-mode", "value"))
    def _recompute_enabled(mode, ipus, chip_mode):
        multi = isinstance(ipus, (int, float)) and ipus > 1 and chip_mode not in (None, "spread")
        return not (mode == "train" and not multi)

    # -- upload an ONNX file -------------------------------------------------------------------
    @app.callback(Output("model", "options"), Output("model", "value"), Output("upload-msg", "children"),
                  Input("upload", "contents"), State("upload", "filename"), State("model", "options"),
                  prevent_initial_call=True)
    def _upload(contents, filename, options):
        if not contents:
            return no_update, no_update, no_update
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(filename or "model.onnx")) or "model.onnx"
        if not name.lower().endswith(".onnx"):
            return no_update, no_update, error_box(f"{filename}: not an .onnx file", "upload rejected")
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
            return no_update, no_update, error_box(message(e), f"cannot load {filename}")
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
                                        recompute, amp, chip_mode=chip_mode,
                                        replicas=replicas, micro_batches=micro_batches)
        except Exception as e:  # noqa: BLE001 - ChipError, bad numbers...
            blank = empty_figure("no result for this setting")
            return error_box(message(e), "impossible setting"), "", blank, blank, blank, blank, True, None
        try:
            cached = jobs.lookup(params, True) is not None and ctx.triggered_id != "poll-main"
            state, res = jobs.get(params, True)
            if state == "running":
                label = os.path.basename(str(params["model"]))
                if params.get("mode", "spread") != "spread":
                    label += f" on {params['ipus']} chips ({params['mode']})"
                return (no_update, progress(f"compiling and simulating {label} — {res:.0f} s so far "
                                             "(views below are from the previous setting)"),
                        *keep, False, no_update)
            if "error" in res:
                blank = empty_figure("no result for this setting")
                return error_box(res["error"]), "", blank, blank, blank, blank, True, None
            figs = res["figures"]
            return (card_for(res["report"], res["wall_s"], cached), "", figs.get("memory"),
                    figs.get("liveness"), figs.get("trace"), figs.get("layers") or empty_figure("—"), True, params)
        except Exception as e:  # noqa: BLE001 - never a dead page
            return error_box(message(e), "internal error"), "", *keep, True, None

    # -- the trade-off mini-sweep ------------------------------------------------------------
    @app.callback(Output("fig-tradeoff", "figure"), Output("poll-trade", "disabled"), Output("tradeoff-msg", "children"),
                  Input("current", "data"), Input("axis", "value"), Input("poll-trade", "n_intervals"))
    def _tradeoff(params, axis, _n):
        if not params:
            return empty_figure("no trade-off: the current setting has no result", 400), True, ""
        try:
            values = tradeoff_values(axis, params)
            cfg = point_config(params)
            chip = cfg.get_chip()
            current = {"tiles": chip.tiles, "sram_bytes_per_tile": chip.sram_bytes_per_tile, "batch": cfg.batch}[axis]
            rows, missing, in_flight = [], [], False
            for v in values:
                p = with_value(params, axis, v)
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
            return empty_figure(f"trade-off failed: {message(e)}", 400), True, ""

    return app


def serve(host: str = "127.0.0.1", port: int = 8050, *, debug: bool = False):
    serve_app(make_app(), "ipusim explorer", host, port, debug)
