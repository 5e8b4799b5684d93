"""Views of a compiled (and simulated) run, as Plotly figures.

Every function takes the :class:`simulator.run.Compiled` that
``simulator.run.build(...)`` returns and gives back a
``plotly.graph_objects.Figure`` (write it with ``fig.write_html(path)`` or put
several on one page with :mod:`viz.report_html`):

* :func:`memory_map`      -- every tile of every chip on a grid, coloured by bytes used;
* :func:`execution_trace` -- compute / sync / exchange / host of each superstep over time;
* :func:`liveness`        -- not-always-live bytes over the program's steps, peak marked;
* :func:`layer_cycles`    -- cycles per layer (compute, exchange, sync), stacked bars;
* :func:`layer_memory`    -- bytes of variables per layer, by kind, stacked bars.

    >>> from simulator.run import build
    >>> c = build("mnist-mlp", simulate=True)
    >>> [t.name for t in execution_trace(c).data]
    ['compute', 'sync', 'exchange', 'host']
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import plotly.graph_objects as go

__all__ = ["memory_map", "execution_trace", "liveness", "layer_cycles", "layer_memory",
           "layer_table", "grid_shape", "step_compute_set_names", "PHASE_COLOURS",
           "CATEGORY_LABELS", "all_figures"]

TEMPLATE = "plotly_white"
FONT = dict(family="Inter, 'Segoe UI', Helvetica, Arial, sans-serif", size=12, color="#263238")

PHASE_COLOURS = OrderedDict([
    ("compute", "#3B76AF"),
    ("sync", "#A0A7B0"),
    ("exchange", "#EF8A2F"),
    ("host", "#4CA35A"),
])

CATEGORY_LABELS = OrderedDict([
    ("always_live_variables", "always-live variables"),
    ("not_always_live_variables", "not-always-live variables (peak)"),
    ("vertex_state", "vertex state"),
    ("vertex_and_exchange_code", "vertex + exchange code"),
    ("exchange_buffers", "exchange buffers"),
    ("control_code", "control code"),
])

KIND_COLOURS = {
    "weight": "#3B76AF", "state": "#7AA6D6", "constant": "#8E6BB5", "input": "#4CA35A",
    "activation": "#EF8A2F", "gradient": "#D6504B", "temporary": "#F2C14E", "variable": "#A0A7B0",
}

UNASSIGNED = "(copies & streams)"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _layout(fig, title, height, **kw):
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.01, xanchor="left", font=dict(size=16)),
                      font=FONT, height=height, margin=dict(l=70, r=30, t=60, b=50),
                      hoverlabel=dict(font=dict(family=FONT["family"], size=12)), **kw)
    return fig


def _kib(b):
    b = float(b)
    if abs(b) >= 2 ** 20:
        return f"{b / 2 ** 20:,.2f} MiB"
    if abs(b) >= 1024:
        return f"{b / 1024:,.1f} KiB"
    return f"{b:,.0f} B"


def _tiles_per_chip(c, total):
    chip = getattr(c, "chip", None)
    t = int(getattr(chip, "tiles", 0) or 0)
    if t <= 0 or total % t:
        sim = getattr(c, "sim", None)
        t = int(getattr(sim, "tiles_per_chip", 0) or 0)
    if t <= 0 or total % t:
        t = total
    return t


def grid_shape(tiles: int) -> tuple[int, int]:
    """(rows, columns) of one chip's tile grid: 32 rows where that divides (GC200 1472 -> 32 x 46)."""
    tiles = max(int(tiles), 1)
    if tiles >= 256 and tiles % 32 == 0:
        return 32, tiles // 32
    rows = max(1, int(round(math.sqrt(tiles / 1.5))))
    return rows, int(math.ceil(tiles / rows))


def _execute_order(c):
    from compiler.memory import execute_order
    return execute_order(c.exe.program)


def step_compute_set_names(c) -> list:
    """Name of the compute set run at each program step (the liveness curve's x axis)."""
    css = c.exe.graph.compute_sets
    return [css[i].name for i in _execute_order(c)]


def _clock_hz(c):
    sim = getattr(c, "sim", None)
    if sim is not None:
        return float(sim.chip.clock_hz)
    return float(getattr(c.chip, "clock_hz", 1.0) or 1.0)


# --------------------------------------------------------------------------------------
# tile memory map
# --------------------------------------------------------------------------------------
def memory_map(c, *, title=None) -> go.Figure:
    """Every tile on a grid (chips side by side), coloured by bytes used.

    The colour scale runs from 0 to the tile's SRAM; tiles over it are drawn
    at the top colour and circled by a red square ("out of memory" trace).
    Hover: tile id, chip, total and bytes per category.
    """
    mem = c.memory
    per_tile = mem["per_tile"]
    total = np.asarray(per_tile["total"], dtype=np.float64)
    T = total.size
    sram = float(mem.get("sram_bytes_per_tile") or getattr(c.chip, "sram_bytes_per_tile", 0) or total.max() or 1)
    tpc = _tiles_per_chip(c, T)
    ipus = max(T // tpc, 1)
    rows, cols = grid_shape(tpc)
    width = ipus * cols + (ipus - 1)          # one empty column between chips

    tile = np.arange(T)
    chip_of = tile // tpc
    local = tile % tpc
    r = local // cols
    x = chip_of * (cols + 1) + local % cols

    z = np.full((rows, width), np.nan)
    z[r, x] = total / 1024.0
    ids = np.full((rows, width), -1, dtype=np.int64)
    ids[r, x] = tile

    cats = [(k, CATEGORY_LABELS.get(k, k.replace("_", " "))) for k in per_tile if k != "total"]
    arrays = [np.asarray(per_tile[k], dtype=np.float64) for k, _ in cats]
    text = [[""] * width for _ in range(rows)]
    for t in range(T):
        lines = [f"<b>tile {t}</b>" + (f" (IPU {chip_of[t]}, local tile {local[t]})" if ipus > 1 else ""),
                 f"total <b>{_kib(total[t])}</b> of {_kib(sram)} ({total[t] / sram:.1%})"
                 + ("  <b style='color:#d62728'>OUT OF MEMORY</b>" if total[t] > sram else "")]
        for (k, lab), a in zip(cats, arrays):
            if a[t]:
                lines.append(f"{lab}: {_kib(a[t])}")
        text[r[t]][x[t]] = "<br>".join(lines)

    kib_sram = sram / 1024.0
    ticks = [0, kib_sram / 4, kib_sram / 2, 3 * kib_sram / 4, kib_sram]
    tick_text = [f"{v:,.0f}" for v in ticks[:-1]] + [f"{kib_sram:,.0f} (SRAM)"]
    peak_kib = max(float(total.max()) / 1024.0 if T else 0.0, 1e-3)
    peak_ticks = [peak_kib * k / 4 for k in range(5)]
    heat = go.Heatmap(
        z=z, customdata=ids, text=text, name="tiles", zmin=0, zmax=kib_sram,
        colorscale="Viridis", xgap=1, ygap=1, hoverongaps=False,
        hovertemplate="%{text}<extra></extra>",
        colorbar=dict(title=dict(text="KiB used", side="right"), tickvals=ticks,
                      ticktext=tick_text,
                      thickness=14, len=0.9))
    fig = go.Figure(heat)
    oom = np.flatnonzero(total > sram)
    if oom.size:
        fig.add_trace(go.Scatter(
            x=x[oom], y=r[oom], mode="markers", name="out of memory",
            marker=dict(symbol="square-open", color="#E3242B", size=max(4, min(12, int(700 / max(width, rows)))),
                        line=dict(width=2, color="#E3242B")),
            customdata=oom, text=[text[r[t]][x[t]] for t in oom],
            hovertemplate="%{text}<extra></extra>", showlegend=True))
    peak = float(total.max()) if T else 0.0
    sub = (f"peak {_kib(peak)} ({peak / sram:.0%} of {_kib(sram)} SRAM), mean {_kib(total.mean() if T else 0)}"
           + (f", <b style='color:#E3242B'>{oom.size} tiles out of memory</b>" if oom.size else ", all tiles fit"))
    title = title or "Tile memory"
    _layout(fig, f"{title}<br><sup>{sub}</sup>", height=max(320, min(760, 120 + rows * 14 * max(1, 46 * ipus // width))),
            legend=dict(orientation="h", yanchor="top", y=-0.08, xanchor="right", x=1))
    fig.update_layout(margin=dict(t=80))
    fig.update_yaxes(autorange="reversed", showgrid=False, zeroline=False, title=None,
                     tickvals=list(range(0, rows, max(1, rows // 8))), ticks="")
    tickx = []
    tickt = []
    for k in range(ipus):
        for cc in range(0, cols, max(1, cols // 6 if ipus == 1 else cols)):
            tickx.append(k * (cols + 1) + cc)
            tickt.append(f"IPU {k}" if ipus > 1 else str(cc))
    fig.update_xaxes(showgrid=False, zeroline=False, tickvals=tickx, ticktext=tickt,
                     title="tile column" if ipus == 1 else None,
                     scaleanchor="y", scaleratio=1, constrain="domain")
    fig.update_layout(plot_bgcolor="#ffffff", updatemenus=[dict(
        type="buttons", direction="left", x=1.0, xanchor="right", y=1.01, yanchor="bottom", showactive=True,
        pad=dict(t=0, r=4), font=dict(size=11), bgcolor="#f3f5f7", bordercolor="#cfd8dc",
        buttons=[dict(label="colour scale: 0 to SRAM", method="restyle",
                      args=[{"zmax": [kib_sram], "colorbar.tickvals": [ticks],
                             "colorbar.ticktext": [tick_text]}, [0]]),
                 dict(label="0 to busiest tile", method="restyle",
                      args=[{"zmax": [peak_kib], "colorbar.tickvals": [peak_ticks],
                             "colorbar.ticktext": [[f"{v:,.1f}" for v in peak_ticks[:-1]] + [f"{peak_kib:,.1f} (max)"]]},
                            [0]])])])
    return fig


# --------------------------------------------------------------------------------------
# execution trace
# --------------------------------------------------------------------------------------
def _phases_of(step):
    """(kind, offset, duration) of one recorded step, laid out as in SimReport.chrome_trace."""
    out = []
    t = 0.0
    if step.get("host_wait"):
        out.append(("host", t, step["host_wait"]))
        t += step["host_wait"]
    if step.get("cs") is not None:
        for k in ("compute", "sync", "exchange"):
            out.append((k, t, step[k]))
            t += step[k]
    else:
        for k in ("exchange", "sync"):
            if step[k] > 0:
                out.append((k, t, step[k]))
                t += step[k]
    return out


def execution_trace(c, *, title=None) -> go.Figure:
    """Compute / sync / exchange / host wait of every step over time (microseconds).

    One horizontal-bar trace per phase kind (so thousands of supersteps stay
    four traces); one row per phase kind and chip.  Every superstep has one
    bar in the ``compute`` trace per chip (also when its compute is 0 cycles).
    """
    sim = c.sim
    if sim is None:
        raise ValueError("execution_trace needs a simulated run (build(..., simulate=True))")
    us = 1e6 / float(sim.chip.clock_hz)
    ipus = max(int(getattr(sim, "ipus", 1) or 1), 1)
    css = c.exe.graph.compute_sets
    rows = {}
    for k in range(ipus):
        for kind in PHASE_COLOURS:
            rows[(k, kind)] = f"IPU {k} · {kind}" if ipus > 1 else kind
    per = {kind: {"base": [], "dur": [], "y": [], "cd": []} for kind in PHASE_COLOURS}
    for i, s in enumerate(sim.steps):
        cs = s.get("cs")
        layer = css[cs].layer if cs is not None and cs < len(css) and css[cs].layer else ""
        phase = css[cs].phase if cs is not None and cs < len(css) and css[cs].phase else ""
        for kind, off, dur in _phases_of(s):
            d = per[kind]
            for k in range(ipus):
                d["base"].append((s["start"] + off) * us)
                d["dur"].append(dur * us)
                d["y"].append(rows[(k, kind)])
                d["cd"].append([s["name"], f"{dur:,.0f}", i, layer, phase, f"{dur * us:,.3f}",
                                f"{(s['start'] + off) * us:,.3f}"])
    fig = go.Figure()
    for kind, colour in PHASE_COLOURS.items():
        d = per[kind]
        fig.add_trace(go.Bar(
            name=kind, orientation="h", base=d["base"], x=d["dur"], y=d["y"],
            marker=dict(color=colour, line=dict(width=0)), customdata=d["cd"],
            hovertemplate=(f"<b>%{{customdata[0]}}</b><br>{kind}: %{{customdata[1]}} cycles = %{{customdata[5]}} µs"
                           "<br>starts at %{customdata[6]} µs<br>step %{customdata[2]}"
                           "<br>layer %{customdata[3]} %{customdata[4]}<extra></extra>")))
    total_us = sim.cycles * us
    n = sim.supersteps
    sub = (f"{n:,} supersteps, {total_us:,.1f} µs; compute {sim.compute_cycles * us:,.1f} µs, "
           f"exchange {sim.exchange_cycles * us:,.1f} µs, sync {sim.sync_cycles * us:,.1f} µs")
    order = [rows[(k, kind)] for k in range(ipus) for kind in PHASE_COLOURS]
    _layout(fig, f"{title or 'Execution trace'}<br><sup>{sub}</sup>", height=150 + 40 * len(order),
            barmode="overlay", bargap=0.25,
            legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1, traceorder="normal"))
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1], title=None, ticksuffix="  ")
    fig.update_xaxes(title="time (µs) — drag to zoom, double-click to reset",
                     range=[0, total_us * 1.005 if total_us else 1], showgrid=True)
    return fig


# --------------------------------------------------------------------------------------
# liveness
# --------------------------------------------------------------------------------------
def liveness(c, *, title=None) -> go.Figure:
    """Not-always-live bytes (whole chip) at each program step; the peak is marked and named."""
    mem = c.memory
    curve = np.asarray(mem.get("liveness_curve", []), dtype=np.float64)
    names = step_compute_set_names(c)
    names = names + [""] * max(0, curve.size - len(names))
    steps = np.arange(curve.size)
    mib = curve / 2 ** 20
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=steps, y=mib, name="not-always-live", mode="lines", line=dict(color="#3B76AF", width=2, shape="hv"),
        fill="tozeroy", fillcolor="rgba(59,118,175,0.18)", customdata=names[:curve.size],
        hovertemplate="step %{x}: <b>%{y:,.3f} MiB</b><br>%{customdata}<extra></extra>"))
    if curve.size:
        p = int(mem.get("peak_step", int(np.argmax(curve))))
        if not 0 <= p < curve.size or curve[p] != curve.max():
            p = int(np.argmax(curve))
        fig.add_trace(go.Scatter(
            x=[p], y=[mib[p]], name="peak", mode="markers",
            marker=dict(color="#E3242B", size=11, symbol="diamond", line=dict(width=1, color="white")),
            customdata=[names[p]], hovertemplate="peak at step %{x}: <b>%{y:,.3f} MiB</b><br>%{customdata}<extra></extra>"))
        fig.add_annotation(x=p, y=mib[p], text=f"peak {_kib(curve[p])}<br>step {p}: {names[p]}",
                           showarrow=True, arrowhead=2, ax=60 if p < curve.size * 0.7 else -60, ay=-40,
                           bgcolor="rgba(255,255,255,0.9)", bordercolor="#E3242B", font=dict(size=11))
    always = mem.get("always_live_bytes")
    sub = f"peak {_kib(curve.max() if curve.size else 0)} over {curve.size:,} steps"
    if always is not None:
        sub += f"; always-live (not shown) {_kib(always)}"
    _layout(fig, f"{title or 'Liveness: not-always-live memory'}<br><sup>{sub}</sup>", height=380,
            showlegend=False)
    fig.update_xaxes(title="program step (compute set executed)")
    fig.update_yaxes(title="MiB live (all tiles)", rangemode="tozero")
    return fig


# --------------------------------------------------------------------------------------
# per-layer breakdown
# --------------------------------------------------------------------------------------
def _op_layer_map(c):
    """op name -> layer, and tensor name -> layer of its first consumer (for weights, inputs)."""
    og = c.lowered.opgraph if getattr(c, "lowered", None) is not None else c.opgraph
    op_layer, tensor_layer, order = {}, {}, []
    for name in og.ops():
        d = og.op(name)
        layer = d.get("layer") or name
        op_layer[name] = layer
        if layer not in order:
            order.append(layer)
        for t in list(d.get("inputs", [])) + list(d.get("outputs", [])):
            tensor_layer.setdefault(t, layer)
    return op_layer, tensor_layer, order


def _layer_order(c, extra=()):
    _, _, order = _op_layer_map(c)
    out = list(order)
    for l in extra:
        if l not in out:
            out.append(l)
    return out


def layer_table(c) -> dict:
    """Per layer: cycles by phase (from the simulated steps) and variable bytes by kind.

    Returns ``{"layers": [...], "cycles": {phase: [...]}, "bytes": {kind: [...]}}``
    with lists aligned to ``layers`` (op order; steps outside any layer, such as
    copies and host streams, under ``"(copies & streams)"``).
    """
    from hardware.dtypes import DTYPE_BYTES
    css = c.exe.graph.compute_sets
    op_layer, tensor_layer, _ = _op_layer_map(c)
    cyc = {}
    if getattr(c, "sim", None) is not None:
        for s in c.sim.steps:
            cs = s.get("cs")
            layer = (css[cs].layer or css[cs].name) if cs is not None and cs < len(css) else UNASSIGNED
            d = cyc.setdefault(layer, {"compute": 0.0, "exchange": 0.0, "sync": 0.0, "host": 0.0})
            d["compute"] += s["compute"]
            d["exchange"] += s["exchange"]
            d["sync"] += s["sync"]
            d["host"] += s.get("host_wait", 0.0)
    mem = {}
    for v in c.exe.graph.variables:
        layer = None
        if v.op is not None:
            layer = op_layer.get(v.op)
            if layer is None:    # e.g. "fc2.GemmGradA": an op of a training graph named after its layer
                layer = op_layer.get(v.op.split(".")[0] if "." in v.op else v.op)
        if layer is None:
            layer = tensor_layer.get(v.name)
        if layer is None:
            base = v.name.split("/")[0]
            layer = op_layer.get(base) or tensor_layer.get(base) or UNASSIGNED
        d = mem.setdefault(layer, {})
        d[v.kind] = d.get(v.kind, 0) + int(v.size) * DTYPE_BYTES.get(v.dtype, 4)
    layers = _layer_order(c, list(cyc) + list(mem))
    layers = [l for l in layers if l in cyc or l in mem]
    kinds = [k for k in KIND_COLOURS if any(k in d for d in mem.values())]
    kinds += sorted({k for d in mem.values() for k in d} - set(kinds))
    return {
        "layers": layers,
        "cycles": {p: [cyc.get(l, {}).get(p, 0.0) for l in layers] for p in ("compute", "exchange", "sync", "host")},
        "bytes": {k: [mem.get(l, {}).get(k, 0) for l in layers] for k in kinds},
    }


def _bar_layout(fig, n, title, ytitle):
    _layout(fig, title, height=460 if n <= 60 else 520, barmode="stack", bargap=0.15 if n > 40 else 0.3,
            legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1, traceorder="normal"))
    fig.update_xaxes(tickangle=-60 if n > 12 else 0, tickfont=dict(size=9 if n > 60 else 11),
                     automargin=True, type="category")
    fig.update_yaxes(title=ytitle)
    return fig


def layer_cycles(c, *, title=None, table=None) -> go.Figure:
    """Stacked bars per layer: compute, exchange and sync cycles summed over its supersteps."""
    tab = table or layer_table(c)
    us = 1e6 / _clock_hz(c)
    fig = go.Figure()
    layers = tab["layers"]
    keep = [i for i, l in enumerate(layers) if sum(tab["cycles"][p][i] for p in tab["cycles"]) > 0]
    names = [layers[i] for i in keep]
    for p in ("compute", "exchange", "sync"):
        vals = [tab["cycles"][p][i] for i in keep]
        fig.add_trace(go.Bar(name=p, x=names, y=vals, marker_color=PHASE_COLOURS[p],
                             customdata=[v * us for v in vals],
                             hovertemplate="<b>%{x}</b><br>" + p + ": %{y:,.0f} cycles (%{customdata:,.2f} µs)<extra></extra>"))
    tot = sum(sum(tab["cycles"][p]) for p in ("compute", "exchange", "sync"))
    return _bar_layout(fig, len(names), f"{title or 'Cycles per layer'}<br><sup>{len(names)} layers, "
                       f"{tot:,.0f} cycles of compute + exchange + sync</sup>", "cycles")


def layer_memory(c, *, title=None, table=None) -> go.Figure:
    """Stacked bars per layer: bytes of the graph's variables, by variable kind."""
    tab = table or layer_table(c)
    layers = tab["layers"]
    keep = [i for i, l in enumerate(layers) if sum(tab["bytes"][k][i] for k in tab["bytes"]) > 0]
    names = [layers[i] for i in keep]
    fig = go.Figure()
    for k, vals in tab["bytes"].items():
        v = [vals[i] / 2 ** 20 for i in keep]
        if not any(v):
            continue
        fig.add_trace(go.Bar(name=k, x=names, y=v, marker_color=KIND_COLOURS.get(k, "#888"),
                             hovertemplate="<b>%{x}</b><br>" + k + ": %{y:,.3f} MiB<extra></extra>"))
    tot = sum(sum(v) for v in tab["bytes"].values())
    return _bar_layout(fig, len(names), f"{title or 'Variable memory per layer'}<br><sup>{_kib(tot)} of variables "
                       "(before liveness reuse)</sup>", "MiB")


def all_figures(c) -> "OrderedDict[str, go.Figure]":
    """The views that apply to ``c`` (the trace and cycle bars need a simulated run), by key."""
    out = OrderedDict()
    out["memory_map"] = memory_map(c)
    if getattr(c, "sim", None) is not None:
        out["trace"] = execution_trace(c)
    out["liveness"] = liveness(c)
    tab = layer_table(c)
    if getattr(c, "sim", None) is not None:
        out["layer_cycles"] = layer_cycles(c, table=tab)
    out["layer_memory"] = layer_memory(c, table=tab)
    return out
