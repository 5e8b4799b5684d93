"""The explorer's cards: the status card of a result (fits or out of memory, KPIs, worst tiles;
per stage for several chips), error boxes, the progress line, the placeholder figure, and the
page's CSS."""
from __future__ import annotations

import plotly.graph_objects as go
from dash import html

from viz.views import GREEN, RED, chips_label, fmt_bytes

__all__ = ["CSS", "status_card", "multichip_status_card", "error_box", "progress", "empty_figure", "card_for"]


def empty_figure(text: str, height: int = 320) -> go.Figure:
    """A blank figure that says ``text`` (no result yet, or none for this setting)."""
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#607D8B"))
    fig.update_layout(template="plotly_white", height=height, xaxis=dict(visible=False),
                      yaxis=dict(visible=False), margin=dict(l=20, r=20, t=30, b=20))
    return fig


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


def _rate(x):
    for unit, k in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= k:
            return f"{x / k:,.2f} {unit}"
    return f"{x:,.1f}"


def status_card(rep: dict, wall_s: float, cached: bool):
    mem, sim, g, m, chip = rep["memory"], rep.get("sim", {}), rep["graph"], rep["model"], rep["chip"]
    fits = mem["fits"]
    sram = mem["sram_bytes_per_tile"]
    head = html.Div(className="status-head", children=[
        html.Span("FITS" if fits else "OUT OF MEMORY", className="badge " + ("fit" if fits else "oom"),
                  id="fit-badge"),
        html.Span(f"{m['name']} · {'training' if m['train'] else 'inference'} · batch {m['batch']} · {m['dtype']} · "
                  f"{chip['name']} × {chip['ipus']}: {chip['tiles']:,} tiles × {fmt_bytes(sram)}",
                  className="status-line", id="status-summary"),
    ])
    kpis = html.Div(className="kpis", children=[
        html.Div(className="kpi", children=[html.Small("throughput"),
                                             html.B(f"{_rate(sim.get('samples_per_second', 0.0))} /s",
                                                    id="kpi-throughput")]),
        html.Div(className="kpi", children=[html.Small("latency (one step)"),
                                             html.B(f"{sim.get('seconds', 0.0) * 1e3:,.3f} ms", id="kpi-latency")]),
        html.Div(className="kpi", children=[html.Small("peak tile memory"),
                                             html.B(f"{fmt_bytes(mem['peak_tile_bytes'])}"),
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
        lines.append(f"Stage {r['stage']} ({chips_label(r['ipus'])}): out of memory on tile {w['tile']}: "
                     f"{w['bytes']} bytes used but tiles only have {sram} ({m.get('oom_tiles', 0)} tiles over; "
                     f"dominated by {w['dominant']})")
    return "\n".join(lines) or None


def multichip_status_card(rep: dict, wall_s: float, cached: bool):
    """Fits / OOM per stage (worst tiles of each), throughput, step time, bubble, link and host traffic."""
    mem, sim, m, chip, mc = rep["memory"], rep["sim"], rep["model"], rep["chip"], rep["multichip"]
    fits = mem["fits"]
    sram = mem["sram_bytes_per_tile"]
    mode = mc["mode"]
    pipelined = mode in ("pipeline", "pipeline+replicate")
    head = html.Div(className="status-head", children=[
        html.Span("FITS" if fits else "OUT OF MEMORY", className="badge " + ("fit" if fits else "oom"),
                  id="fit-badge"),
        html.Span(f"{m['name']} · {'training' if m['train'] else 'inference'} · batch {m['batch']} · {m['dtype']} · "
                  f"{chip['name']} × {chip['ipus']}: {chip['tiles_per_ipu']:,} tiles × {fmt_bytes(sram)} · {mode}: "
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
    kpis += [kpi("peak tile memory", fmt_bytes(mem["peak_tile_bytes"]), f"{mem['peak_tile_bytes'] / sram:.0%} of SRAM "
                 "(worst stage)"),
             kpi("chip-to-chip links", fmt_bytes(sim.get("link_bytes", 0)),
                 (f"all-reduce {fmt_bytes(sim.get('allreduce_bytes', 0))}" if sim.get("allreduce_bytes") else
                  "activations / gradients"), kid="kpi-links"),
             kpi("host traffic", fmt_bytes(sim.get("host_bytes", 0)), f"{hidden:.0%} of its time hidden"),
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
            html.Td(fmt_bytes(sm.get("peak_tile_bytes", 0)), style=None if ok else {"color": RED}),
            html.Td("fits" if ok else f"OOM ({sm.get('oom_tiles', 0)})", style={"color": GREEN if ok else RED}),
            html.Td(", ".join(f"tile {w['tile']} {fmt_bytes(w['bytes'])} ({w['bytes'] / sram:.0%}, "
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


def error_box(msg: str, what: str = "cannot compile this setting"):
    return html.Div(className="msg-error", id="error-message", children=[html.B(what + ": "), msg])


def progress(text: str):
    return html.Div(className="progress", id="progress", children=[html.Div(className="spinner"), text])


def card_for(rep: dict, wall_s: float, cached: bool):
    """The status card of a report: per stage for several chips, else for one graph."""
    return (multichip_status_card if "multichip" in rep else status_card)(rep, wall_s, cached)
