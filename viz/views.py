"""Views of a run, as Plotly figures.

Every view takes a run: a :class:`simulator.run.Run` (what ``simulator.run.run(config)``
returns) or, for one graph, the :class:`simulator.run.Compiled` inside it, and gives back
a ``plotly.graph_objects.Figure`` (write it with ``fig.write_html(path)`` or put several
on one page with :mod:`viz.report_html`).

One graph (one chip, or several used as one graph):

* :func:`memory_map`      -- every tile of every chip on a grid, coloured by bytes used;
* :func:`execution_trace` -- compute / sync / exchange / host of each superstep over time;
* :func:`liveness`        -- not-always-live bytes over the program's steps, peak marked;
* :func:`layer_cycles`    -- cycles per layer (compute, exchange, sync), stacked bars;
* :func:`layer_memory`    -- bytes of variables per layer, by kind, stacked bars.

Several chips running separate graphs (shard, pipeline, replicate: :mod:`simulator.multichip`),
from the run's report, its multichip simulation and its per-stage memory detail
(``Run.stage_memory``, from ``simulator.run.run(config, stage_detail=True)``):

* :func:`multichip_memory_map`    -- one tile grid per stage (its replicas hold the same bytes);
* :func:`multichip_trace`         -- one row per chip: compute, sync, exchange, links, host, idle;
* :func:`multichip_liveness`      -- each stage's not-always-live bytes per program step;
* :func:`multichip_stage_cycles`  -- forward / backward / update cycles per stage.

:func:`all_figures` gives the views that apply to a run.

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
from plotly.subplots import make_subplots

from compiler.memory import step_names
from hardware.dtypes import DTYPE_BYTES
from simulator.run import Run

__all__ = ["memory_map", "execution_trace", "liveness", "layer_cycles", "layer_memory",
           "multichip_memory_map", "multichip_trace", "multichip_liveness", "multichip_stage_cycles",
           "layer_table", "grid_shape", "step_compute_set_names", "PHASE_COLOURS", "EVENT_COLOURS",
           "CATEGORY_LABELS", "all_figures", "fmt_bytes", "chips_label", "merge_events", "multichip_memory_row"]

TEMPLATE = "plotly_white"
FONT = dict(family="Inter, 'Segoe UI', Helvetica, Arial, sans-serif", size=12, color="#263238")
RED, GREEN = "#E3242B", "#2E8B57"

PHASE_COLOURS = OrderedDict([
    ("compute", "#3B76AF"),
    ("sync", "#A0A7B0"),
    ("exchange", "#EF8A2F"),
    ("host", "#4CA35A"),
])
#: the kinds of a multichip trace's events: a superstep's phases, link sends and idle time
EVENT_COLOURS = OrderedDict(list(PHASE_COLOURS.items()) + [("link", "#8E6BB5"), ("idle", "#E4E8EC")])
#: one colour per stage (liveness curves)
STAGE_COLOURS = ["#3B76AF", "#EF8A2F", GREEN, "#8E6BB5", RED, "#17BECF", "#8C564B", "#E377C2"]

CATEGORY_LABELS = OrderedDict([
    ("always_live_variables", "always-live variables"),
    ("not_always_live_variables", "not-always-live variables (peak)"),
    ("vertex_state", "vertex state"),
    ("vertex_and_exchange_code", "vertex + exchange code"),
    ("control_code", "control code"),
])

KIND_COLOURS = {
    "weight": "#3B76AF", "state": "#7AA6D6", "constant": "#8E6BB5", "input": "#4CA35A",
    "activation": "#EF8A2F", "gradient": "#D6504B", "temporary": "#F2C14E", "variable": "#A0A7B0",
    "accumulator": "#9E3A37",
}

UNASSIGNED = "(copies & streams)"
#: bars of the multichip trace, over all chips (more events are merged into blocks)
TRACE_BARS = 12000
#: the smallest height of a row holding a tile memory map and a liveness curve side by side
ROW_MIN_HEIGHT = 380


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _layout(fig, title, height, **kw):
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.01, xanchor="left", font=dict(size=16)),
                      font=FONT, height=height, margin=dict(l=70, r=30, t=60, b=50),
                      hoverlabel=dict(font=dict(family=FONT["family"], size=12)), **kw)
    return fig


def fmt_bytes(b) -> str:
    """``512 B``, ``1.5 KiB``, ``2.00 MiB``."""
    b = float(b)
    if abs(b) >= 2 ** 20:
        return f"{b / 2 ** 20:,.2f} MiB"
    if abs(b) >= 1024:
        return f"{b / 1024:,.1f} KiB"
    return f"{b:,.0f} B"


def _compiled(x):
    """The :class:`Compiled` of a one-graph run (``x`` is a Run or already a Compiled)."""
    if isinstance(x, Run):
        if x.compiled is None:
            raise ValueError("this view is of one graph; a run on several chips has the multichip_* views")
        return x.compiled
    return x


def _multichip_run(r):
    if not isinstance(r, Run) or r.multichip is None or "multichip" not in r.report:
        raise ValueError("this view is of a run on several chips (simulator.run.run with ipus > 1, "
                         "mode shard / pipeline / replicate)")
    return r


def _stage_detail(r):
    detail = r.stage_memory
    if not detail or any(d is None for d in detail):
        raise ValueError("no per-stage memory detail: run it with simulator.run.run(config, stage_detail=True) "
                         "(run_multichip(..., stage_detail=True))")
    return detail


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


def step_compute_set_names(c) -> list:
    """Name of the compute set run at each program step (the liveness curve's x axis)."""
    c = _compiled(c)
    return step_names(c.exe.program, c.exe.graph.compute_sets)


def _clock_hz(c):
    sim = getattr(c, "sim", None)
    if sim is not None:
        return float(sim.chip.clock_hz)
    return float(getattr(c.chip, "clock_hz", 1.0) or 1.0)


def chips_label(ipus: list) -> str:
    return ("IPU " if len(ipus) == 1 else "IPUs ") + ", ".join(str(i) for i in ipus)


def _stage_chips(rep: dict) -> list:
    """Per stage, the chips that run it (one per replica)."""
    return [row["ipus"] for row in rep["multichip"]["per_stage"]]


# --------------------------------------------------------------------------------------
# tile memory map
# --------------------------------------------------------------------------------------
def _tile_cells(per_tile: dict, sram: float, tiles_per_chip: int, header) -> dict:
    """Where every tile sits on the grid (chips side by side, one empty column between them)
    and its hover text: ``header(tile, chip, local tile)``, total and bytes per category."""
    total = np.asarray(per_tile["total"], dtype=np.float64)
    T = total.size
    tpc = max(int(tiles_per_chip), 1)
    ipus = max(-(-T // tpc), 1)
    rows, cols = grid_shape(tpc)
    width = ipus * cols + (ipus - 1)
    tile = np.arange(T)
    chip_of, local = tile // tpc, tile % tpc
    r = local // cols
    x = chip_of * (cols + 1) + local % cols
    z = np.full((rows, width), np.nan)
    z[r, x] = total / 1024.0
    ids = np.full((rows, width), -1, dtype=np.int64)
    ids[r, x] = tile
    cats = [(CATEGORY_LABELS.get(k, k.replace("_", " ")), np.asarray(v)) for k, v in per_tile.items()
            if k not in ("total", "not_always_live_lower_bound")]
    text = [[""] * width for _ in range(rows)]
    for t in range(T):
        lines = [header(t, chip_of[t], local[t]),
                 f"total <b>{fmt_bytes(total[t])}</b> of {fmt_bytes(sram)} ({total[t] / sram:.1%})"
                 + (f"  <b style='color:{RED}'>OUT OF MEMORY</b>" if total[t] > sram else "")]
        lines += [f"{lab}: {fmt_bytes(a[t])}" for lab, a in cats if a[t]]
        text[r[t]][x[t]] = "<br>".join(lines)
    return {"z": z, "ids": ids, "text": text, "r": r, "x": x, "rows": rows, "cols": cols, "width": width,
            "ipus": ipus, "total": total, "oom": np.flatnonzero(total > sram)}


def _oom_markers(cells: dict, size: int, showlegend: bool = True):
    """Red squares around the tiles over their SRAM (trace "out of memory"), or None."""
    oom, r, x, text = cells["oom"], cells["r"], cells["x"], cells["text"]
    if not oom.size:
        return None
    return go.Scatter(x=x[oom], y=r[oom], mode="markers", name="out of memory", legendgroup="oom",
                      showlegend=showlegend,
                      marker=dict(symbol="square-open", color=RED, size=size, line=dict(width=2, color=RED)),
                      customdata=oom, text=[text[r[t]][x[t]] for t in oom], hovertemplate="%{text}<extra></extra>")


def _colour_scale(kib_sram: float, peak_kib: float, name: str = "coloraxis", **colorbar) -> tuple[dict, list]:
    """The shared colour axis ``name`` (0 to the SRAM per tile) and the buttons that rescale it to the
    busiest tile."""
    peak_kib = max(peak_kib, 1e-3)
    ticks = [kib_sram * k / 4 for k in range(5)]
    labels = [f"{v:,.0f}" for v in ticks[:-1]] + [f"{kib_sram:,.0f} (SRAM)"]
    pticks = [peak_kib * k / 4 for k in range(5)]
    plabels = [f"{v:,.1f}" for v in pticks[:-1]] + [f"{peak_kib:,.1f} (max)"]
    axis = dict(colorscale="Viridis", cmin=0, cmax=kib_sram,
                colorbar=dict(title=dict(text="KiB used", side="right"), tickvals=ticks, ticktext=labels,
                              **colorbar))
    buttons = [dict(label="colour scale: 0 to SRAM", method="relayout",
                    args=[{f"{name}.cmax": kib_sram, f"{name}.colorbar.tickvals": ticks,
                           f"{name}.colorbar.ticktext": labels}]),
               dict(label="0 to busiest tile", method="relayout",
                    args=[{f"{name}.cmax": peak_kib, f"{name}.colorbar.tickvals": pticks,
                           f"{name}.colorbar.ticktext": plabels}])]
    return axis, buttons


def _scale_menu(buttons, **kw) -> list:
    return [dict(type="buttons", direction="left", x=1.0, xanchor="right", yanchor="bottom", showactive=True,
                 font=dict(size=11), bgcolor="#f3f5f7", bordercolor="#cfd8dc", buttons=buttons, **kw)]


def memory_map(c, *, title=None) -> go.Figure:
    """Every tile on a grid (chips side by side), coloured by bytes used.

    The colour scale runs from 0 to the tile's SRAM; tiles over it are drawn
    at the top colour and circled by a red square ("out of memory" trace).
    Hover: tile id, chip, total and bytes per category.
    """
    c = _compiled(c)
    mem = c.memory
    per_tile = mem["per_tile"]
    total = np.asarray(per_tile["total"], dtype=np.float64)
    T = total.size
    sram = float(mem.get("sram_bytes_per_tile") or getattr(c.chip, "sram_bytes_per_tile", 0) or total.max() or 1)
    tpc = _tiles_per_chip(c, T)
    several = T > tpc
    cells = _tile_cells(per_tile, sram, tpc, lambda t, k, loc: f"<b>tile {t}</b>"
                        + (f" (IPU {k}, local tile {loc})" if several else ""))
    rows, cols, width, ipus = cells["rows"], cells["cols"], cells["width"], cells["ipus"]
    peak = float(total.max()) if T else 0.0
    axis, buttons = _colour_scale(sram / 1024.0, peak / 1024.0, thickness=14, len=0.9)
    fig = go.Figure(go.Heatmap(z=cells["z"], customdata=cells["ids"], text=cells["text"], name="tiles",
                               coloraxis="coloraxis", xgap=1, ygap=1, hoverongaps=False,
                               hovertemplate="%{text}<extra></extra>"))
    marks = _oom_markers(cells, max(4, min(12, int(700 / max(width, rows)))))
    if marks is not None:
        fig.add_trace(marks)
    oom = cells["oom"]
    sub = (f"peak {fmt_bytes(peak)} ({peak / sram:.0%} of {fmt_bytes(sram)} SRAM), "
           f"mean {fmt_bytes(total.mean() if T else 0)}"
           + (f", <b style='color:{RED}'>{oom.size} tiles out of memory</b>" if oom.size else ", all tiles fit"))
    _layout(fig, f"{title or 'Tile memory'}<br><sup>{sub}</sup>",
            height=max(320, min(760, 120 + rows * 14 * max(1, 46 * ipus // width))),
            legend=dict(orientation="h", yanchor="top", y=-0.08, xanchor="right", x=1), coloraxis=axis)
    fig.update_layout(margin=dict(t=80))
    fig.update_yaxes(autorange="reversed", showgrid=False, zeroline=False, title=None,
                     tickvals=list(range(0, rows, max(1, rows // 8))), ticks="")
    tickx, tickt = [], []
    for k in range(ipus):
        for cc in range(0, cols, max(1, cols // 6 if ipus == 1 else cols)):
            tickx.append(k * (cols + 1) + cc)
            tickt.append(f"IPU {k}" if ipus > 1 else str(cc))
    fig.update_xaxes(showgrid=False, zeroline=False, tickvals=tickx, ticktext=tickt,
                     title="tile column" if ipus == 1 else None, scaleanchor="y", scaleratio=1, constrain="domain")
    fig.update_layout(plot_bgcolor="#ffffff", updatemenus=_scale_menu(buttons, y=1.01, pad=dict(t=0, r=4)))
    return fig


def multichip_memory_map(r, *, min_height: int = 300, title=None) -> go.Figure:
    """One tile grid per stage (the chips of its replicas hold the same bytes), one colour scale
    from 0 to the SRAM per tile (under the grids); out-of-memory tiles circled red.  The figure is
    as tall as its grids need, and at least ``min_height``."""
    rep, detail = _multichip_run(r).report, _stage_detail(r)
    chips = _stage_chips(rep)
    S = len(detail)
    sram = float(detail[0]["sram_bytes_per_tile"])
    ncol = 1 if S == 1 else 2 if S <= 4 else 3 if S <= 9 else 4
    nrow = -(-S // ncol)
    stage_cells = []
    for i, (d, ipus) in enumerate(zip(detail, chips)):
        T = np.asarray(d["per_tile"]["total"]).size
        stage_cells.append(_tile_cells(d["per_tile"], sram, d.get("tiles") or T,
                                       lambda t, k, loc, i=i, ipus=ipus: f"<b>stage {i}, tile {t}</b> "
                                                                         f"({chips_label(ipus)})"))
    titles = []
    for i, (cells, ipus) in enumerate(zip(stage_cells, chips)):
        peak = float(cells["total"].max()) if cells["total"].size else 0.0
        oom = int(cells["oom"].size)
        # side by side, a panel is narrow: its chips on one line, its peak on the next
        titles.append(f"stage {i} · {chips_label(ipus)}" + (": " if ncol == 1 else "<br>")
                      + f"peak {fmt_bytes(peak)} ({peak / sram:.0%})"
                      + (f" <b style='color:{RED}'>{oom} tiles OOM</b>" if oom else ""))
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.05)
    n_oom = 0
    for i, cells in enumerate(stage_cells):
        rr, cc = divmod(i, ncol)
        rows, cols = cells["rows"], cells["cols"]
        fig.add_trace(go.Heatmap(z=cells["z"], customdata=cells["ids"], text=cells["text"], coloraxis="coloraxis2",
                                 xgap=1, ygap=1, hoverongaps=False, hovertemplate="%{text}<extra></extra>",
                                 name=f"stage {i}"), row=rr + 1, col=cc + 1)
        marks = _oom_markers(cells, 6, showlegend=n_oom == 0)
        if marks is not None:
            fig.add_trace(marks, row=rr + 1, col=cc + 1)
            n_oom += int(cells["oom"].size)
        # fixed ranges: the out-of-memory markers do not pad the grid
        fig.update_yaxes(range=[rows - 0.5, -0.5], showticklabels=False, showgrid=False, zeroline=False,
                         constrain="domain", constraintoward="top", row=rr + 1, col=cc + 1)
        fig.update_xaxes(range=[-0.5, cols - 0.5], showticklabels=False, showgrid=False, zeroline=False,
                         scaleanchor="y" if i == 0 else f"y{i + 1}", scaleratio=1, constrain="domain",
                         row=rr + 1, col=cc + 1)
    for a in fig.layout.annotations:
        a.font = dict(size=11.5)
    peak = max(float(cells["total"].max()) for cells in stage_cells)
    sub = (f"{S} stage{'s' if S > 1 else ''} on {rep['chip']['ipus']} chips; worst peak {fmt_bytes(peak)} "
           f"({peak / sram:.0%} of {fmt_bytes(sram)} SRAM); "
           + (f"<b style='color:{RED}'>{n_oom} tiles out of memory</b>" if n_oom else "all tiles fit"))
    # about 490 px of plot width in the card (the colour bar lies under the grids, not beside them):
    # a row of panels is as tall as its grids' aspect makes them, with a title above each row but
    # the first (that one sits in the top margin); the rows get exactly that height, from the top,
    # and the colour bar goes just under them, whatever is left of the figure below
    g_rows, g_cols = stage_cells[0]["rows"], stage_cells[0]["cols"]
    grid_h = 490 * (1 - 0.06 * (ncol - 1)) / ncol * g_rows / g_cols
    gap = 32 if ncol == 1 else 46         # room for the panel titles of the next row
    top_m, bottom_m = (100 if ncol == 1 else 112), 66
    need = nrow * grid_h + (nrow - 1) * gap
    height = int(max(min_height, top_m + bottom_m + need + 4))
    plot_h = height - top_m - bottom_m
    for rr in range(nrow):
        y1 = 1 - rr * (grid_h + gap) / plot_h
        for cc in range(ncol):
            if rr * ncol + cc < S:
                fig.update_yaxes(domain=[max(y1 - grid_h / plot_h, 0.0), y1], row=rr + 1, col=cc + 1)
    for k, a in enumerate(fig.layout.annotations[:S]):        # the panel titles follow their rows
        a.y = 1 - (k // ncol) * (grid_h + gap) / plot_h
    bar_y = max(1 - need / plot_h - 0.02, 0.0)
    # its own colour axis (coloraxis2): a page that swaps this figure for memory_map's (the explorer,
    # Plotly.react) draws a new colour bar instead of turning the vertical one, which leaves its ticks behind
    axis, buttons = _colour_scale(sram / 1024, peak / 1024, "coloraxis2", orientation="h", x=0, xanchor="left",
                                  y=bar_y, yanchor="top", len=0.6, thickness=12)
    _layout(fig, f"{title or 'Tile memory per stage'}<br><sup>{sub}</sup>", height, coloraxis2=axis,
            legend=dict(orientation="h", yanchor="top", y=bar_y, x=1, xanchor="right"))
    # margins fixed: the colour bar lies inside them by construction, and a margin grown for the
    # previous figure of a page (Plotly.react) must not squeeze the grids
    fig.update_layout(margin=dict(l=20, r=20, t=top_m, b=bottom_m, autoexpand=False), plot_bgcolor="#ffffff",
                      updatemenus=_scale_menu(buttons, y=1.0, pad=dict(b=52, r=4)))
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


def _gantt(fig, bars: dict, order: list, total_us: float, title: str, height: int, hovertemplate=None,
           keep_empty=False):
    """One horizontal-bar trace per kind (``bars[kind]``: base, x, y and hover data), rows in ``order``
    from the top, time in microseconds along x."""
    for kind, d in bars.items():
        if not d["x"] and not keep_empty:
            continue
        hover = dict(customdata=d["cd"], hovertemplate=hovertemplate.format(kind=kind)) if hovertemplate else \
            dict(text=d["text"], textposition="none", hovertemplate="%{text}<extra></extra>")
        fig.add_trace(go.Bar(name=kind, orientation="h", base=d["base"], x=d["x"], y=d["y"],
                             marker=dict(color=EVENT_COLOURS.get(kind, "#A0A7B0"), line=dict(width=0)), **hover))
    _layout(fig, title, height=height, barmode="overlay", bargap=0.25,
            legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1, traceorder="normal"))
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1], title=None, ticksuffix="  ")
    fig.update_xaxes(title="time (µs) — drag to zoom, double-click to reset",
                     range=[0, total_us * 1.005 if total_us else 1], showgrid=True)
    return fig


def execution_trace(c, *, title=None) -> go.Figure:
    """Compute / sync / exchange / host wait of every step over time (microseconds).

    One horizontal-bar trace per phase kind (so thousands of supersteps stay
    four traces); one row per phase kind and chip.  Every superstep has one
    bar in the ``compute`` trace per chip (also when its compute is 0 cycles).
    """
    c = _compiled(c)
    sim = c.sim
    if sim is None:
        raise ValueError("execution_trace needs a simulated run (build(..., simulate=True))")
    us = 1e6 / float(sim.chip.clock_hz)
    ipus = max(int(getattr(sim, "ipus", 1) or 1), 1)
    css = c.exe.graph.compute_sets
    rows = {(k, kind): (f"IPU {k} · {kind}" if ipus > 1 else kind) for k in range(ipus) for kind in PHASE_COLOURS}
    per = {kind: {"base": [], "x": [], "y": [], "cd": []} for kind in PHASE_COLOURS}
    for i, s in enumerate(sim.steps):
        cs = s.get("cs")
        layer = css[cs].layer if cs is not None and cs < len(css) and css[cs].layer else ""
        phase = css[cs].phase if cs is not None and cs < len(css) and css[cs].phase else ""
        for kind, off, dur in _phases_of(s):
            d = per[kind]
            for k in range(ipus):
                d["base"].append((s["start"] + off) * us)
                d["x"].append(dur * us)
                d["y"].append(rows[(k, kind)])
                d["cd"].append([s["name"], f"{dur:,.0f}", i, layer, phase, f"{dur * us:,.3f}",
                                f"{(s['start'] + off) * us:,.3f}"])
    total_us = sim.cycles * us
    sub = (f"{sim.supersteps:,} supersteps, {total_us:,.1f} µs; compute {sim.compute_cycles * us:,.1f} µs, "
           f"exchange {sim.exchange_cycles * us:,.1f} µs, sync {sim.sync_cycles * us:,.1f} µs")
    order = [rows[(k, kind)] for k in range(ipus) for kind in PHASE_COLOURS]
    return _gantt(go.Figure(), per, order, total_us, f"{title or 'Execution trace'}<br><sup>{sub}</sup>",
                  150 + 40 * len(order),
                  hovertemplate=("<b>%{{customdata[0]}}</b><br>{kind}: %{{customdata[1]}} cycles = "
                                 "%{{customdata[5]}} µs<br>starts at %{{customdata[6]}} µs<br>step %{{customdata[2]}}"
                                 "<br>layer %{{customdata[3]}} %{{customdata[4]}}<extra></extra>"), keep_empty=True)


def merge_events(events, cap: int) -> list:
    """At most about ``cap`` bars for one chip: consecutive events merged into blocks named by the
    kind that fills most of them. ``events``: (start, dur, name, kind) sorted by start; returns
    (start, dur, name, kind, {kind: duration} or None for an event left as it was)."""
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


def multichip_trace(r, *, title=None) -> go.Figure:
    """One row per chip: compute / sync / exchange (the stage's supersteps), link sends, host waits
    and idle time over the simulated steps (microseconds)."""
    rep, sim = _multichip_run(r).report, r.multichip
    mc = rep["multichip"]
    S, R = mc["stages"], mc["replicas"]
    n = S * R
    us = 1e6 / float(sim.chip.clock_hz)
    cap = max(200, TRACE_BARS // max(n, 1))
    per = {k: {"base": [], "x": [], "y": [], "text": []} for k in EVENT_COLOURS}
    rows = []
    merged = False
    for c in range(n):
        rr, s = divmod(c, S)
        row = f"IPU {c} · stage {s}" + (f" · replica {rr}" if R > 1 else "")
        rows.append(row)
        evs = sorted(sim.chip_events[c], key=lambda e: e[0])
        bars = merge_events(evs, cap)
        merged |= len(bars) < len(evs)
        for start, dur, name, kind, by in bars:
            d = per.setdefault(kind, {"base": [], "x": [], "y": [], "text": []})
            d["base"].append(start * us)
            d["x"].append(dur * us)
            d["y"].append(row)
            extra = "" if by is None else "<br>" + ", ".join(f"{k} {v * us:,.2f} µs" for k, v in by.items())
            d["text"].append(f"<b>{name}</b><br>{kind}: {dur:,.0f} cycles = {dur * us:,.3f} µs"
                             f"<br>starts at {start * us:,.3f} µs{extra}")
    s_ = rep["sim"]
    total_us = s_["cycles"] * us
    sub = (f"{mc['steps']} steps, {mc['micro_batches']} micro-batch{'es' if mc['micro_batches'] > 1 else ''} each, "
           f"{total_us:,.1f} µs; step {s_['step_seconds'] * 1e6:,.1f} µs"
           + (f", bubble {s_['bubble_fraction']:.0%}" if mc["mode"] in ("pipeline", "pipeline+replicate") else "")
           + (" (short events merged into blocks)" if merged else ""))
    return _gantt(go.Figure(), per, rows, total_us,
                  f"{title or 'Execution trace per chip'} ({mc['mode']})<br><sup>{sub}</sup>", 170 + 46 * n)


# --------------------------------------------------------------------------------------
# liveness
# --------------------------------------------------------------------------------------
def _mark_peak(fig, x, y_bytes, label, right: bool):
    """A red diamond on the peak and an annotation naming it."""
    fig.add_trace(go.Scatter(
        x=[x], y=[y_bytes / 2 ** 20], name="peak", mode="markers", showlegend=False,
        marker=dict(color=RED, size=11, symbol="diamond", line=dict(width=1, color="white")),
        customdata=[label], hovertemplate="peak at step %{x}: <b>%{y:,.3f} MiB</b><br>%{customdata}<extra></extra>"))
    fig.add_annotation(x=x, y=y_bytes / 2 ** 20, text=f"peak {fmt_bytes(y_bytes)}<br>{label}", showarrow=True,
                       arrowhead=2, ax=60 if right else -60, ay=-40, bgcolor="rgba(255,255,255,0.9)",
                       bordercolor=RED, font=dict(size=11))


def liveness(c, *, title=None) -> go.Figure:
    """Not-always-live bytes (whole chip) at each program step; the peak is marked and named."""
    c = _compiled(c)
    mem = c.memory
    curve = np.asarray(mem.get("liveness_curve", []), dtype=np.float64)
    names = step_compute_set_names(c)
    names = names + [""] * max(0, curve.size - len(names))
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=np.arange(curve.size), y=curve / 2 ** 20, name="not-always-live", mode="lines",
        line=dict(color=PHASE_COLOURS["compute"], width=2, shape="hv"), fill="tozeroy",
        fillcolor="rgba(59,118,175,0.18)", customdata=names[:curve.size],
        hovertemplate="step %{x}: <b>%{y:,.3f} MiB</b><br>%{customdata}<extra></extra>"))
    if curve.size:
        p = int(mem.get("peak_step", int(np.argmax(curve))))
        if not 0 <= p < curve.size or curve[p] != curve.max():
            p = int(np.argmax(curve))
        _mark_peak(fig, p, curve[p], f"step {p}: {names[p]}", p < curve.size * 0.7)
    always = mem.get("always_live_bytes")
    sub = f"peak {fmt_bytes(curve.max() if curve.size else 0)} over {curve.size:,} steps"
    if always is not None:
        sub += f"; always-live (not shown) {fmt_bytes(always)}"
    _layout(fig, f"{title or 'Liveness: not-always-live memory'}<br><sup>{sub}</sup>", height=380,
            showlegend=False)
    fig.update_xaxes(title="program step (compute set executed)")
    fig.update_yaxes(title="MiB live (all tiles)", rangemode="tozero")
    return fig


def multichip_liveness(r, *, title=None) -> go.Figure:
    """Every stage's not-always-live bytes per program step; the worst stage's peak is marked."""
    rep, detail = _multichip_run(r).report, _stage_detail(r)
    chips = _stage_chips(rep)
    fig = go.Figure()
    worst = max(range(len(detail)), key=lambda i: float(np.max(detail[i]["curve_bytes"], initial=0)))
    for i, (d, ipus) in enumerate(zip(detail, chips)):
        fig.add_trace(go.Scatter(
            x=np.asarray(d["curve_steps"]), y=np.asarray(d["curve_bytes"], dtype=np.float64) / 2 ** 20,
            mode="lines", name=f"stage {i} ({chips_label(ipus)})", customdata=d["curve_names"],
            line=dict(color=STAGE_COLOURS[i % len(STAGE_COLOURS)], width=2.5 if i == worst else 1.5, shape="hv"),
            hovertemplate=f"stage {i}, step %{{x}}: <b>%{{y:,.3f}} MiB</b><br>%{{customdata}}<extra></extra>"))
    d = detail[worst]
    y = np.asarray(d["curve_bytes"], dtype=np.float64)
    if y.size:
        k = int(np.argmax(y))
        _mark_peak(fig, int(d["curve_steps"][k]), y[k], f"stage {worst}: {d['curve_names'][k]}",
                   k < y.size * 0.7)
    sub = (f"program steps of each stage's chip; worst: stage {worst}, "
           f"{fmt_bytes(d['not_always_live_peak_bytes'])}<br>(always-live {fmt_bytes(d['always_live_bytes'])} "
           "not shown)")
    _layout(fig, f"{title or 'Liveness per stage: not-always-live memory'}<br><sup>{sub}</sup>", 480,
            legend=dict(orientation="h", yref="container", yanchor="bottom", y=0, x=0))
    fig.update_layout(margin=dict(t=96, b=84))
    fig.update_xaxes(title="program step of the stage")
    fig.update_yaxes(title="MiB live (one chip)", rangemode="tozero")
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
    c = _compiled(c)
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
    c = _compiled(c)
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
    c = _compiled(c)
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
    return _bar_layout(fig, len(names), f"{title or 'Variable memory per layer'}<br><sup>{fmt_bytes(tot)} of variables "
                       "(before liveness reuse)</sup>", "MiB")


def multichip_stage_cycles(r, *, title=None) -> go.Figure:
    """Forward / backward / update cycles of one micro-batch per stage, with the layers it holds."""
    rep = _multichip_run(r).report
    rows = rep["multichip"]["per_stage"]
    names = [f"stage {row['stage']}<br>{chips_label(row['ipus'])}" for row in rows]
    hover = [f"{row['first_layer']} … {row['last_layer']} ({row['layers']} layers, {row['ops']} ops)<br>"
             f"{row['vertices']:,} vertices, {row['params']:,} params" for row in rows]
    # a bar is at most about a fifth of the plot wide: one stage is not one wall of colour
    width = min(0.7, 0.2 * len(rows))
    fig = go.Figure()
    for key, label, colour in (("fwd_cycles", "forward", PHASE_COLOURS["compute"]),
                               ("bwd_cycles", "backward", PHASE_COLOURS["exchange"]),
                               ("update_cycles", "update", GREEN)):
        ys = [row[key] for row in rows]
        if any(ys):
            fig.add_trace(go.Bar(x=names, y=ys, name=label, marker_color=colour, customdata=hover, width=width,
                                 hovertemplate=f"%{{x}}<br>{label}: <b>%{{y:,.0f}} cycles</b><br>%{{customdata}}"
                                               "<extra></extra>"))
    totals = [sum(row[k] for k in ("fwd_cycles", "bwd_cycles", "update_cycles")) for row in rows]
    fig.add_trace(go.Scatter(x=names, y=totals, mode="text", text=[f"{t:,.0f}" for t in totals],
                             textposition="top center", textfont=dict(size=11.5, color="#455A64"),
                             showlegend=False, hoverinfo="skip", name="total"))
    mc = rep["multichip"]
    sub = f"one micro-batch of {rep['model']['micro_batch']} samples; placement {mc['placement'].get('method', '')}"
    _layout(fig, f"{title or 'Cycles per stage'}<br><sup>{sub}</sup>", 380, barmode="stack",
            legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1, traceorder="normal"))
    fig.update_layout(margin=dict(t=80))
    fig.update_yaxes(title="cycles", rangemode="tozero", range=[0, max(totals + [1]) * 1.12])
    return fig


# --------------------------------------------------------------------------------------
# all of them
# --------------------------------------------------------------------------------------
def multichip_memory_row(r, *, min_height: int = ROW_MIN_HEIGHT) -> tuple[go.Figure, go.Figure]:
    """The per-stage tile grids and liveness curves of a multichip run, to sit side by side in one
    row: the grids as tall as they need (at least ``min_height``), the liveness as tall as the grids,
    so neither card is left with empty space below its figure."""
    grids = multichip_memory_map(r, min_height=min_height)
    curves = multichip_liveness(r)
    curves.update_layout(height=grids.layout.height)
    return grids, curves


def all_figures(x) -> "OrderedDict[str, go.Figure]":
    """The views that apply to a run (a :class:`Run` or a :class:`Compiled`), by key.

    One graph: ``memory_map``, ``trace`` and ``layer_cycles`` (simulated runs), ``liveness``,
    ``layer_memory``.  Several chips: ``memory_map`` and ``liveness`` per stage (when the run
    has its ``stage_memory``), ``trace`` per chip, ``stage_cycles``."""
    out = OrderedDict()
    if isinstance(x, Run) and x.compiled is None:
        if x.stage_memory and all(d is not None for d in x.stage_memory):
            out["memory_map"], out["liveness"] = multichip_memory_row(x)
        out["trace"] = multichip_trace(x)
        out["stage_cycles"] = multichip_stage_cycles(x)
        return out
    c = _compiled(x)
    out["memory_map"] = memory_map(c)
    if getattr(c, "sim", None) is not None:
        out["trace"] = execution_trace(c)
    out["liveness"] = liveness(c)
    tab = layer_table(c)
    if getattr(c, "sim", None) is not None:
        out["layer_cycles"] = layer_cycles(c, table=tab)
    out["layer_memory"] = layer_memory(c, table=tab)
    return out
