"""The explorer's LLM mode: LLM inference (:func:`simulator.generate.generate`) live.

    ipusim explore --llm [--port 8050]

Controls (left): a decoder (the built-ins, or a ``config.json`` of ``examples/configs``),
chip preset, precision, batch, prompt length, new tokens, chips and how they are used (one
chip, tensor, pipeline, pipeline + tensor with its tensor-parallel degree; uneven heads; for a
mixture of experts, expert parallelism over all the chips or pipeline + expert with its
expert-parallel degree: experts / X whole experts per chip, batch / X sequences each, the
tokens dispatched and combined by all-to-alls over the links), where the KV cache lives (tile SRAM or streaming memory), and whether the model is compiled
whole or estimated from two layer counts (:func:`simulator.generate.generate_by_layers`:
seconds instead of minutes for a big model).  The controls make a :class:`RunConfig` plus
the prompt / new tokens / cache placement (:func:`llm_params`, validated there).

Views (right): the status card (fits or out of memory and by how much on the worst tile,
time to first token, time per output token, tokens/s in all and per chip, the KV cache,
the decode step's all-reduces or all-to-alls on the links, and, for a whole compile, the prediction as a multiple of its physical bound), and two
charts around the current setting, computed in the background one point at a time and
cached: tokens/s against the batch and against the chips (the same mode; 1 chip alone),
with the links' share of a decode step (all-reduce or all-to-all ms per token) where there
is one, out-of-memory points drawn as crosses.

Every point runs in the explorer's worker pool (:class:`viz.explorer.jobs.Jobs`, with
:func:`llm_point` as its work), so the page stays responsive and a setting seen before
comes back at once.
"""
from __future__ import annotations

import glob
import os
import time

import dash
import plotly.graph_objects as go
from dash import Input, Output, dcc, html, no_update
from plotly.subplots import make_subplots

import models
from hardware.chips import list_chips
from models.transformers import DECODERS
from simulator.config import RunConfig
from simulator.generate import generate, generate_by_layers, key_figures, model_layers
from viz.views import PHASE_COLOURS, RED, fmt_bytes

from .cards import CSS, empty_figure, error_box, progress
from .jobs import Jobs, message, serve_app

__all__ = ["llm_params", "llm_point", "llm_status_card", "llm_chart", "sweep_values", "make_llm_app",
           "serve_llm", "LLM_MODES", "decoder_models"]

BLUE, ORANGE = PHASE_COLOURS["compute"], PHASE_COLOURS["exchange"]
GREY = "#607d8b"

#: how the chips are used: (value, label)
LLM_MODES = (("tensor", "tensor parallel"), ("pipeline", "pipeline"), ("pipeline+tensor", "pipeline + tensor"),
             ("expert", "expert parallel (mixture of experts)"), ("pipeline+expert", "pipeline + expert"))
#: the values of the two charts
BATCHES = (1, 2, 4, 8, 16, 32, 64)
CHIP_COUNTS = (1, 2, 4, 8, 16, 32, 64)
_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "configs")


def decoder_models() -> list:
    """``(label, value)`` of the decoders offered: the built-ins, then the decoder config.json files."""
    out = [(n, n) for n in sorted(DECODERS)]
    for p in sorted(glob.glob(os.path.join(_CONFIGS, "*.json"))):
        name = os.path.basename(p)
        if "bert" not in name:
            out.append((f"{name} (config.json)", os.path.abspath(p)))
    return out


def llm_params(model, chip, dtype, batch, prompt_len, new_tokens, chips, mode, tensor_parallel=None,
               kv_cache="sram", uneven_heads=False, estimate=True, expert_parallel=None) -> dict:
    """Control values -> the point's parameters (plain values), validated by building the
    :class:`RunConfig` (raises ValueError naming the control).  ``tensor_parallel`` /
    ``expert_parallel``: the group's chips of pipeline+tensor / pipeline+expert (ignored in the
    other modes; tensor and expert use all the chips)."""
    if not model:
        raise ValueError("model: choose a decoder")
    for name, v in (("batch", batch), ("prompt length", prompt_len), ("new tokens", new_tokens), ("chips", chips)):
        if not isinstance(v, (int, float)) or int(v) != v or v < 1:
            raise ValueError(f"{name}: a whole number >= 1, got {v!r}")
    chips = int(chips)
    multi = chips > 1
    if multi and mode not in dict(LLM_MODES):
        raise ValueError(f"mode: one of {', '.join(dict(LLM_MODES))}, got {mode!r}")
    T = int(tensor_parallel) if multi and mode == "pipeline+tensor" and tensor_parallel else None
    X = int(expert_parallel) if multi and mode == "pipeline+expert" and expert_parallel else None
    p = {"model": model, "chip": chip, "dtype": dtype, "batch": int(batch), "ipus": chips,
         "mode": mode if multi else "shard", "tensor_parallel": T, "expert_parallel": X,
         "uneven_heads": bool(uneven_heads) and multi and mode in ("tensor", "pipeline+tensor"),
         "prompt_len": int(prompt_len), "new_tokens": int(new_tokens), "kv_cache": kv_cache,
         "estimate": bool(estimate)}
    _config(p)          # raises ConfigError (a ValueError) naming the option
    return p


def _config(p) -> RunConfig:
    return RunConfig(model=p["model"], chip=p["chip"], dtype=p["dtype"], batch=p["batch"], ipus=p["ipus"],
                     mode=p["mode"], tensor_parallel=p["tensor_parallel"],
                     expert_parallel=p.get("expert_parallel"), uneven_heads=p["uneven_heads"], suggest=False)


def model_experts(model) -> int:
    """A decoder's experts per MoE layer (0 for a dense one), from its op graph at one token."""
    og = models.load(model, batch=1, model_kw={"seq_len": 1, "layers": 1})
    for n in og.ops():
        if og.op(n)["op"] == "TopKRoute":
            return int(og.tensors[og.op(n)["inputs"][0]].shape[1])
    return 0


def llm_point(params: dict, figures: bool = False) -> dict:
    """Generate for one setting: ``{"report": {...}, "wall_s"}`` or ``{"error", "wall_s"}``; never
    raises.  ``estimate``: from the model's layers at S and 2 S (S pipeline stages), when it has
    that many; else compiled whole.  (``figures`` is the :class:`Jobs` signature; unused.)"""
    t0 = time.perf_counter()
    try:
        cfg = _config(params)
        P, N, kv = params["prompt_len"], params["new_tokens"], params["kv_cache"]
        S = cfg.layout()[0] if cfg.multichip and cfg.mode != "tensor" else 1
        L = model_layers(cfg.model)
        X = cfg.expert_degree
        out = {"chips": cfg.ipus, "mode": cfg.mode, "tensor_parallel": cfg.tensor_degree, "stages": S,
               "expert_parallel": X, "experts": model_experts(cfg.model) if X > 1 else None,
               "batch": cfg.batch, "prompt_len": P, "new_tokens": N, "kv_cache": kv, "layers": L,
               "model": os.path.basename(str(cfg.model)), "chip": cfg.get_chip().name,
               "sram_bytes_per_tile": cfg.get_chip().sram_bytes_per_tile}
        # 2 S and 3 S layers: a stage of one layer is inlined, off the outlined layers' line
        if params.get("estimate") and L >= 3 * S and L > 3:
            r = generate_by_layers(cfg, P, N, layers=(2 * S, 3 * S), samples=2, kv_cache=kv)
            out.update(r["estimate"], estimated_from=r["layers"])
        else:
            rep = generate(cfg, P, N, samples=2, kv_cache=kv)
            f = key_figures(rep)
            out.update(f, fits=rep["fits"], tokens_per_s=rep["tokens_per_s"],
                       tokens_per_s_per_chip=(rep["tokens_per_s"] or 0.0) / cfg.ipus,
                       prefill_x_bound=rep["prefill"]["x_bound"], decode_x_bound=rep["decode"]["x_bound"],
                       decode_bound_by=rep["decode"]["sampled"][-1]["bound_by"] if rep["decode"]["sampled"] else None)
        res = {"report": out}
    except Exception as e:  # noqa: BLE001 - shown in the page
        res = {"error": message(e)}
    res["wall_s"] = time.perf_counter() - t0
    return res


def _t(s):
    return f"{s * 1e6:,.1f} us" if s < 1e-3 else f"{s * 1e3:,.3f} ms"


def llm_status_card(rep: dict, wall_s: float, cached: bool):
    """Fits / out of memory (by how much), time to first token, per token, tokens/s, the cache."""
    sram = rep["sram_bytes_per_tile"]
    fits = rep["fits"]
    peaks = {"prefill": rep["prefill_peak_tile_bytes"], "decode": rep["decode_peak_tile_bytes"]}
    X = rep.get("expert_parallel", 1)
    how = (f"{rep['mode']}" + (f", {rep['stages']} stages" if rep["stages"] > 1 else "")
           + (f", tensor-parallel {rep['tensor_parallel']}" if rep["tensor_parallel"] > 1 else "")
           + (f", expert-parallel {X}: {rep['experts'] // X} of {rep['experts']} experts and batch / {X} "
              f"sequences per chip" if X > 1 else "")) \
        if rep["chips"] > 1 else "one chip"
    est = rep.get("estimated_from")
    head = html.Div(className="status-head", children=[
        html.Span("FITS" if fits else "OUT OF MEMORY", className="badge " + ("fit" if fits else "oom"), id="fit-badge"),
        html.Span(f"{rep['model']} · batch {rep['batch']} · prompt {rep['prompt_len']} + {rep['new_tokens']} new "
                  f"tokens · {rep['chip']} × {rep['chips']} ({how}) · KV cache in "
                  f"{'tile SRAM' if rep['kv_cache'] == 'sram' else 'streaming memory'}",
                  className="status-line", id="status-summary")])

    def kpi(label, value, note=None, kid=None):
        kids = [html.Small(label), html.B(value, id=kid) if kid else html.B(value)]
        if note:
            kids.append(html.Span(note, className="note"))
        return html.Div(className="kpi", children=kids)
    tps = rep.get("tokens_per_s") or 0.0
    kpis = [kpi("time to first token", _t(rep["time_to_first_token_s"]), "the prefill", kid="kpi-ttft"),
            kpi("time per output token", _t(rep["time_per_output_token_s"]), "a decode step, mean", kid="kpi-tpot"),
            kpi("tokens/s", f"{tps:,.0f}", f"{rep.get('tokens_per_s_per_chip') or 0.0:,.1f} per chip",
                kid="kpi-tokens"),
            kpi("peak tile", fmt_bytes(max(peaks.values())),
                f"prefill {peaks['prefill'] / sram:.0%}, decode {peaks['decode'] / sram:.0%} of SRAM"),
            kpi("KV cache", fmt_bytes(rep["kv_cache_bytes"]),
                "in all" + (" (streaming memory)" if rep["kv_cache"] == "streaming" else ""))]
    tpot = rep["time_per_output_token_s"]
    for key, what, note, kid in (("decode_allreduce_s", "all-reduces per token", "the group's ring on the links",
                                  "kpi-allreduce"),
                                 ("decode_all_to_all_s", "all-to-alls per token", "dispatch + combine per MoE layer",
                                  "kpi-all-to-all")):
        if rep.get(key):
            kpis.append(kpi(what, _t(rep[key]), f"{rep[key] / tpot:.0%} of a decode step; {note}" if tpot else note,
                            kid=kid))
    if rep.get("decode_x_bound"):
        kpis.append(kpi("x physical bound", f"{rep['decode_x_bound']:,.1f}x",
                        f"decode ({rep.get('decode_bound_by')}); prefill {rep['prefill_x_bound']:,.1f}x"))
    kpis.append(kpi("compile + simulate", f"{wall_s:.2f} s", "from the cache" if cached else "just computed"))
    out = [head, html.Div(kpis, className="kpis")]
    if est:
        out.append(html.Div(f"estimated: compiled with {est[0]} and {est[1]} of the {rep['layers']} layers, every "
                            f"figure extended linearly to all (uncheck 'estimate' to compile it whole)",
                            className="note", id="estimate-note"))
    if not fits:
        over = ", ".join(f"{n} by {fmt_bytes(b - sram)}" for n, b in peaks.items() if b > sram)
        out.append(html.Div(f"over a tile's {fmt_bytes(sram)} on the worst tile: {over}. Try the KV cache in "
                            f"streaming memory, fewer new tokens, a smaller batch or more chips "
                            f"(`ipusim generate` recompiles each and says which fit).",
                            className="msg-error", id="oom-message", style={"marginTop": "10px", "fontSize": "12.5px"}))
    return html.Div(out)


def sweep_values(axis: str, params: dict) -> list:
    """The values of a chart's axis (``batch`` or ``chips``) that make valid settings."""
    out = []
    for v in (BATCHES if axis == "batch" else CHIP_COUNTS):
        try:
            out.append((v, with_llm_value(params, axis, v)))
        except ValueError:
            continue
    return out


def with_llm_value(params: dict, axis: str, v: int) -> dict:
    p = dict(params)
    if axis == "batch":
        p["batch"] = v
    else:
        p["ipus"] = v
        if v == 1:
            p.update(mode="shard", tensor_parallel=None, expert_parallel=None, uneven_heads=False)
        elif p["mode"] == "shard":
            p["mode"] = "tensor"
    mode = p["mode"] if p["ipus"] > 1 else None
    return llm_params(p["model"], p["chip"], p["dtype"], p["batch"], p["prompt_len"], p["new_tokens"], p["ipus"],
                      mode, p["tensor_parallel"], p["kv_cache"], p["uneven_heads"] or params["uneven_heads"],
                      p["estimate"], p.get("expert_parallel"))


def llm_chart(axis: str, current, rows: list, total: int):
    """tokens/s (in all, and per chip) against ``axis``; out-of-memory points are crosses."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    ok = sorted(((v, r["report"]) for v, r in rows if "report" in r), key=lambda t: t[0])
    bad = [(v, r["error"]) for v, r in rows if "report" not in r]
    xs = [v for v, _ in ok]
    tps = [r.get("tokens_per_s") or 0.0 for _, r in ok]
    per = [r.get("tokens_per_s_per_chip") or 0.0 for _, r in ok]
    lat = [r["time_per_output_token_s"] * 1e3 for _, r in ok]
    fits = [bool(r["fits"]) for _, r in ok]
    # the links' part of a decode step: the group's all-reduces (tensor) or all-to-alls (expert)
    link = [(r.get("decode_allreduce_s") or 0.0) * 1e3 + (r.get("decode_all_to_all_s") or 0.0) * 1e3 for _, r in ok]
    kind = "all-to-all" if any(r.get("decode_all_to_all_s") for _, r in ok) else "all-reduce"
    hover = [f"{axis} {x}<br>{t:,.0f} tokens/s ({p:,.1f} per chip)<br>{l:.3f} ms per token"
             + (f" ({k:.3f} ms {kind})" if k else "") + f"<br><b>{'fits' if f else 'OUT OF MEMORY'}</b>"
             for x, t, p, l, k, f in zip(xs, tps, per, lat, link, fits)]
    fig.add_trace(go.Scatter(x=xs, y=tps, name="tokens/s", mode="lines+markers", hovertext=hover, hoverinfo="text",
                             line=dict(color=BLUE, width=2),
                             marker=dict(size=10, color=[BLUE if f else RED for f in fits],
                                         symbol=["circle" if f else "x" for f in fits])), secondary_y=False)
    fig.add_trace(go.Scatter(x=xs, y=lat, name="time per output token (ms)", mode="lines+markers",
                             hovertext=hover, hoverinfo="text", line=dict(color=ORANGE, width=2, dash="dot"),
                             marker=dict(size=7, symbol="square")), secondary_y=True)
    if any(link):
        fig.add_trace(go.Scatter(x=xs, y=link, name=f"{kind}s per token (ms)", mode="lines+markers",
                                 hovertext=hover, hoverinfo="text", line=dict(color=GREY, width=1.5, dash="dash"),
                                 marker=dict(size=6, symbol="diamond")), secondary_y=True)
    if current is not None:
        fig.add_vline(x=current, line=dict(color="#263238", width=1, dash="dot"))
    sub = f"{len(rows)} of {total} points" + ("" if len(rows) >= total else " (computing the rest…)")
    if bad:
        why = bad[0][1].split(": ", 1)[-1]           # without the error's type
        sub += f"; {len(bad)} refused: {why[:55] + ('…' if len(why) > 55 else '')}"
    fig.update_layout(template="plotly_white", height=390, hovermode="closest",
                      title=dict(text=f"tokens/s vs {'batch' if axis == 'batch' else 'chips'}<br><sup>{sub}</sup>",
                                 x=0.01, xanchor="left", font=dict(size=15)),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0), margin=dict(l=60, r=60, t=60, b=80))
    fig.update_xaxes(title_text="batch (sequences)" if axis == "batch" else "chips", type="log", dtick=0.30103)
    fig.update_yaxes(title_text="tokens/s", secondary_y=False, rangemode="tozero", color=BLUE)
    fig.update_yaxes(title_text="ms per token", secondary_y=True, rangemode="tozero", color=ORANGE, showgrid=False)
    return fig


#: the controls' starting values (``make_llm_app(defaults=...)`` overrides any of them)
DEFAULTS = {"batch": 1, "prompt_len": 64, "new_tokens": 32, "chips": 1, "mode": "tensor", "tensor_parallel": 2,
            "expert_parallel": 2, "kv_cache": "sram"}


def _controls(default_model, d):
    num = lambda i, v: dcc.Input(id=i, type="number", value=v, debounce=True, step=1, min=1)   # noqa: E731
    return html.Div(className="side", children=[
        html.H3("model"),
        dcc.Dropdown(id="llm-model", options=[{"label": lab, "value": v} for lab, v in decoder_models()],
                     value=default_model, clearable=False),
        html.H3("chip"),
        dcc.Dropdown(id="llm-chip", options=[{"label": p, "value": p} for p in list_chips()], value="gc200",
                     clearable=False),
        dcc.RadioItems(id="llm-dtype", options=[{"label": " " + d, "value": d} for d in ("fp16", "fp32")],
                       value="fp16", inline=True, labelStyle={"marginRight": "14px"},
                       style={"fontSize": "14px", "marginTop": "6px"}),
        html.H3("workload"),
        html.Div(className="grid2", children=[
            html.Div([html.Label("batch", className="ctl", htmlFor="llm-batch"), num("llm-batch", d["batch"])]),
            html.Div([html.Label("prompt length", className="ctl", htmlFor="llm-prompt"), num("llm-prompt", d["prompt_len"])]),
            html.Div([html.Label("new tokens", className="ctl", htmlFor="llm-new"), num("llm-new", d["new_tokens"])]),
            html.Div([html.Label("chips", className="ctl", htmlFor="llm-chips"), num("llm-chips", d["chips"])]),
        ]),
        html.Label("how the chips are used", className="ctl", htmlFor="llm-mode"),
        dcc.RadioItems(id="llm-mode", options=[{"label": " " + lab, "value": v} for v, lab in LLM_MODES],
                       value=d["mode"], className="chip-mode", labelStyle={"display": "block"}),
        html.Div(className="grid2", children=[
            html.Div([html.Label("tensor-parallel degree (pipeline + tensor)", className="ctl", htmlFor="llm-tp"),
                      num("llm-tp", d["tensor_parallel"])]),
            html.Div([html.Label("expert-parallel degree (pipeline + expert)", className="ctl", htmlFor="llm-ep"),
                      num("llm-ep", d["expert_parallel"])])]),
        dcc.Checklist(id="llm-uneven", options=[{"label": " uneven heads (a degree not dividing them)",
                                                 "value": "uneven"}], value=[], style={"fontSize": "13px"}),
        html.H3("KV cache"),
        dcc.RadioItems(id="llm-kv", options=[{"label": " tile SRAM", "value": "sram"},
                                             {"label": " streaming memory", "value": "streaming"}],
                       value=d["kv_cache"], inline=True, labelStyle={"marginRight": "14px"}, style={"fontSize": "14px"}),
        html.H3("compile"),
        dcc.Checklist(id="llm-estimate", options=[{"label": " estimate from 2 layer counts (fast)",
                                                   "value": "estimate"}], value=["estimate"],
                      style={"fontSize": "13px"}),
        html.Div("Whole compiles of big models take minutes; the estimate compiles S and 2 S layers "
                 "(S pipeline stages) and extends each figure linearly.", className="note"),
    ])


def make_llm_app(jobs: Jobs | None = None, *, default_model: str = "gpt2", defaults: dict | None = None,
                 poll_ms: int = 400):
    """The LLM-mode Dash app; ``app.jobs`` is its worker pool (call ``app.jobs.shutdown()``);
    ``defaults``: starting values of the controls (keys of :data:`DEFAULTS`)."""
    bad = sorted(set(defaults or {}) - set(DEFAULTS))
    if bad:
        raise ValueError(f"defaults: unknown control {bad[0]!r} (known: {', '.join(DEFAULTS)})")
    d = DEFAULTS | dict(defaults or {})
    jobs = jobs or Jobs(workers=min(2, os.cpu_count() or 1), fn=llm_point)
    app = dash.Dash(__name__, title="ipusim explorer: LLM inference", update_title=None)
    app.jobs = jobs
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")
    cfg = {"displaylogo": False, "responsive": True}
    app.layout = html.Div([
        html.Div(className="topbar", children=[html.H1("ipusim explorer · LLM inference"),
                                               html.Span("prefill, decode and the KV cache on tile-SRAM chips")]),
        html.Div(className="wrap", children=[
            _controls(default_model, d),
            html.Div(className="main", children=[
                html.Div(className="card", children=[html.Div(id="llm-progress"), html.Div(id="llm-status")]),
                html.Div(className="row2", children=[
                    html.Div(className="card", children=[dcc.Graph(id="llm-fig-batch", config=cfg,
                                                                   figure=empty_figure("waiting…", 390))]),
                    html.Div(className="card", children=[dcc.Graph(id="llm-fig-chips", config=cfg,
                                                                   figure=empty_figure("waiting…", 390))])]),
            ])]),
        dcc.Store(id="llm-current"),
        dcc.Interval(id="llm-poll", interval=poll_ms, disabled=True),
        dcc.Interval(id="llm-poll-charts", interval=poll_ms + 300, disabled=True),
    ])

    @app.callback(Output("llm-status", "children"), Output("llm-progress", "children"), Output("llm-poll", "disabled"),
                  Output("llm-current", "data"),
                  Input("llm-model", "value"), Input("llm-chip", "value"), Input("llm-dtype", "value"),
                  Input("llm-batch", "value"), Input("llm-prompt", "value"), Input("llm-new", "value"),
                  Input("llm-chips", "value"), Input("llm-mode", "value"), Input("llm-tp", "value"),
                  Input("llm-uneven", "value"), Input("llm-kv", "value"), Input("llm-estimate", "value"),
                  Input("llm-ep", "value"), Input("llm-poll", "n_intervals"))
    def _run(model, chip, dtype, batch, prompt, new, chips, mode, tp, uneven, kv, estimate, ep, _n):
        try:
            params = llm_params(model, chip, dtype, batch, prompt, new, chips, mode, tp, kv, bool(uneven),
                                bool(estimate), ep)
        except Exception as e:  # noqa: BLE001
            return error_box(message(e), "impossible setting"), "", True, None
        try:
            cached = jobs.lookup(params, False) is not None and dash.ctx.triggered_id != "llm-poll"
            state, res = jobs.get(params, False)
            if state == "running":
                return no_update, progress(f"compiling and simulating the prefill and decode steps — {res:.0f} s "
                                           "so far"), False, no_update
            if "error" in res:
                return error_box(res["error"]), "", True, None
            return llm_status_card(res["report"], res["wall_s"], cached), "", True, params
        except Exception as e:  # noqa: BLE001 - never a dead page
            return error_box(message(e), "internal error"), "", True, None

    @app.callback(Output("llm-fig-batch", "figure"), Output("llm-fig-chips", "figure"),
                  Output("llm-poll-charts", "disabled"), Input("llm-current", "data"),
                  Input("llm-poll-charts", "n_intervals"))
    def _charts(params, _n):
        if not params:
            blank = empty_figure("no chart: the current setting has no result", 390)
            return blank, blank, True
        figs, missing_any = [], False
        for axis, current in (("batch", params["batch"]), ("chips", params["ipus"])):
            values = sweep_values(axis, params)
            rows, missing, in_flight = [], [], False
            for v, p in values:
                r = jobs.lookup(p, False)
                if r is not None:
                    rows.append((v, r))
                else:
                    missing.append(p)
                    in_flight |= jobs.running(p, False)
            if missing and not in_flight and jobs.busy() == 0:
                jobs.get(missing[0], False)       # one point at a time: the page stays quick
            missing_any |= bool(missing)
            figs.append(llm_chart(axis, current, rows, len(values)))
        return figs[0], figs[1], not missing_any

    return app


def serve_llm(host: str = "127.0.0.1", port: int = 8050, *, debug: bool = False):
    serve_app(make_llm_app(), "ipusim explorer (LLM inference)", host, port, debug)
