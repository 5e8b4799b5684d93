"""One self-contained HTML page for a run: summary, graph image and the views of viz/views.py.

The run is a :class:`simulator.run.Run` (one chip or several) or the :class:`Compiled` of one
graph.  A run on several chips (shard, pipeline, replicate) shows a tile memory map and a
liveness curve per stage, a trace per chip and the cycles per stage; its per-stage memory
comes from `simulator.run.run(config, stage_detail=True)` (:func:`write_report` re-runs a multichip Run that
lacks it).  plotly.js is inlined once per page (no network is needed to open it).

    >>> from simulator.run import build
    >>> html = report_html(build("mnist-mlp", simulate=True))
    >>> html.count("<script type=\\"text/javascript\\">/**") <= 1 and "fig-trace" in html
    True
"""
from __future__ import annotations

import base64
import html as _html
import os
import tempfile

from plotly.offline import get_plotlyjs

import models
from simulator.run import Run, run

from . import views
from .dot import op_graph_dot
from .graph_image import render_model_graph

__all__ = ["report_html", "write_report", "summary_rows", "stage_rows", "FIGURE_IDS", "graph_image_png"]

# div id of each view on the page (tests and users find the figures by these)
FIGURE_IDS = {
    "memory_map": "fig-memory-map",
    "trace": "fig-trace",
    "liveness": "fig-liveness",
    "layer_cycles": "fig-layer-cycles",
    "layer_memory": "fig-layer-memory",
    "stage_cycles": "fig-stage-cycles",
}

SECTIONS = {
    "memory_map": ("Tile memory", "Bytes used on every tile (always-live + peak not-always-live variables, vertex "
                   "state, code). The colour scale ends at the tile's SRAM; tiles outlined in red "
                   "are out of memory. Hover a tile for its bytes by category."),
    "trace": ("Execution trace", "Each superstep's compute, sync and exchange, copies and host-stream waits over "
              "time (one row per phase kind and chip). Drag to zoom into a range of supersteps, double-click to "
              "reset; hover a bar for its compute set."),
    "liveness": ("Liveness", "Bytes of not-always-live variables (activations, gradients, temporaries) live at "
                 "each step of the program, summed over all tiles. The peak is the step that sets the "
                 "not-always-live memory."),
    "layer_cycles": ("Cycles per layer", "Compute, exchange and sync cycles summed over every superstep of a "
                     "layer (a layer's repeated calls count each time)."),
    "layer_memory": ("Variable memory per layer", "Bytes of the graph variables each layer owns (weights and "
                     "optimizer state by their first user), by kind, before liveness lets them share memory."),
}
#: the same sections for a run on several chips (each stage compiled once; its replicas are copies)
MULTICHIP_SECTIONS = {
    "memory_map": ("Tile memory per stage", "Bytes used on every tile of each stage's chip (the chips of a "
                   "stage's replicas hold the same bytes). One colour scale, 0 to the tile's SRAM; tiles outlined "
                   "in red are out of memory. Hover a tile for its bytes by category."),
    "liveness": ("Liveness per stage", "Bytes of not-always-live variables live at each program step of each "
                 "stage's chip; the worst stage's peak is marked."),
    "trace": ("Execution trace per chip", "One row per chip over the simulated steps: the stage's compute, sync "
              "and exchange, chip-to-chip link sends, host waits and idle time (pipeline fill and drain, "
              "all-reduce). Drag to zoom, double-click to reset."),
    "stage_cycles": ("Cycles per stage", "Forward, backward and update cycles of one micro-batch on each stage "
                     "(hover a bar for the layers it holds)."),
}

CSS = """
:root { --ink:#263238; --muted:#607080; --line:#e3e7ec; --bg:#f6f8fa; --ok:#2e7d32; --bad:#c62828; --accent:#3B76AF; }
* { box-sizing: border-box; }
body { margin:0; font-family: Inter, 'Segoe UI', Helvetica, Arial, sans-serif; color:var(--ink); background:var(--bg); }
header { background:#1f2a36; color:#fff; padding:18px 32px 16px; }
header h1 { margin:0; font-size:22px; font-weight:600; letter-spacing:.2px; }
header .sub { color:#b8c4d0; font-size:13px; margin-top:4px; }
main { max-width: 1320px; margin: 0 auto; padding: 20px 24px 48px; }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap:12px; margin-bottom:18px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .k { font-size:11px; text-transform:uppercase; letter-spacing:.6px; color:var(--muted); }
.card .v { font-size:21px; font-weight:600; margin-top:4px; }
.card .d { font-size:12px; color:var(--muted); margin-top:2px; }
.ok { color:var(--ok); } .bad { color:var(--bad); }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 16px 8px; margin-bottom:18px; }
section h2 { font-size:16px; margin:0 0 2px; }
section p.note { font-size:13px; color:var(--muted); margin:2px 0 8px; }
table.kv { border-collapse:collapse; font-size:13px; width:100%; }
table.kv td { padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
table.kv td:first-child { color:var(--muted); width:220px; white-space:nowrap; }
table.grid { border-collapse:collapse; font-size:13px; width:100%; }
table.grid th { text-align:left; color:var(--muted); font-weight:600; padding:4px 8px; border-bottom:1px solid var(--line); }
table.grid td { padding:4px 8px; border-bottom:1px solid var(--line); }
.two { display:grid; grid-template-columns: minmax(0,1fr) minmax(0,1fr); gap:18px; }
.two > section { margin-bottom:18px; }
@media (max-width: 1000px) { .two { grid-template-columns: 1fr; } }
.msg { background:#fdecea; border:1px solid #f5c2c0; color:var(--bad); padding:8px 12px; border-radius:6px; font-size:13px; margin-bottom:14px; }
.graphimg { text-align:center; } .graphimg img { max-width:100%; height:auto; border-radius:6px; }
details summary { cursor:pointer; font-weight:600; font-size:14px; }
.svgwrap { overflow:auto; max-height:900px; border:1px solid var(--line); border-radius:6px; margin-top:8px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:16px; }
"""


def _fmt(n, unit=""):
    n = float(n)
    for suffix, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= k:
            return f"{n / k:,.2f} {suffix}{unit}"
    return f"{n:,.0f} {unit}".strip()


def _mib(b):
    return f"{float(b) / 2 ** 20:,.1f} MiB"


def _wall_rows(rep: dict) -> list:
    """The host wall time of each stage of the run, when the report has it."""
    t = rep.get("timing", {})
    return [("wall time", ", ".join(f"{k[:-2] if k.endswith('_s') else k} {v:.2f} s" for k, v in t.items()))] if t else []


def summary_rows(rep: dict) -> list:
    """(key, value) rows of the summary table from the report dict (one graph or several chips)."""
    if "multichip" in rep:
        return _multichip_rows(rep)
    m, chip, g, mem = rep["model"], rep["chip"], rep["graph"], rep["memory"]
    rows = [
        ("model", f"{m['name']}: {_fmt(m['params'])} params, {_fmt(m['flops'], 'FLOP')} per step, {m['ops']} ops"),
        ("run", f"{'training' if m['train'] else 'inference'}, batch {m['batch']}, {m['dtype']} "
                f"(partials {m.get('partials')})"),
        ("chip", f"{chip['name']} × {chip['ipus']}: {chip['tiles']:,} tiles, "
                 f"{chip['sram_bytes_per_tile'] / 1024:,.0f} KiB SRAM per tile, {chip['clock_hz'] / 1e9:.3g} GHz"),
        ("graph", f"{g['vertices']:,} vertices placed ({g['vertices_executed']:,} executed), {g['edges']:,} edges, "
                  f"{g['compute_sets']:,} compute sets, {g['variables']:,} variables, {g['functions']} functions "
                  f"({g['function_calls']} calls), {g['tiles_used']:,} tiles used"),
        ("memory", f"{'fits' if mem['fits'] else 'DOES NOT FIT'}: peak tile {mem['peak_tile_bytes']:,} B "
                   f"(tile {mem['peak_tile']}), total {_mib(mem['total_bytes'])}, "
                   f"{mem.get('oom_tiles', 0)} tiles out of memory"),
    ]
    if "always_live_bytes" in mem:
        rows.append(("liveness", f"always-live {_mib(mem['always_live_bytes'])}, not-always-live peak "
                                 f"{_mib(mem.get('not_always_live_peak_bytes', 0))} at step {mem.get('peak_step')}, "
                                 f"reuse factor {mem.get('reuse_factor', 0):.2f}"))
    if mem.get("by_category"):
        rows.append(("by category", ", ".join(f"{k.replace('_', ' ')} {_mib(v)}" for k, v in mem["by_category"].items())))
    s = rep.get("sim")
    if s:
        rows.append(("time", f"{s['cycles']:,.0f} cycles = {s['seconds'] * 1e3:.3f} ms; compute "
                             f"{s['compute_cycles']:,.0f}, exchange {s['exchange_cycles']:,.0f}, sync "
                             f"{s['sync_cycles']:,.0f} cycles over {s['supersteps']:,} supersteps"))
        rows.append(("throughput", f"{s['samples_per_second']:,.1f} samples/s, "
                                   f"{s['achieved_flops_per_second'] / 1e12:.2f} TFLOP/s achieved, mean tile "
                                   f"utilisation {s['mean_tile_utilisation']:.1%}"))
        rows.append(("traffic", f"exchange {_mib(s['exchange_bytes'])}, chip links {_mib(s['link_bytes'])}, "
                                f"host {_mib(s['host_bytes'])} (hidden {s['hidden_transfer_fraction']:.0%})"))
    return rows + _wall_rows(rep)


def _multichip_rows(rep: dict) -> list:
    m, chip, mem, mc, s = rep["model"], rep["chip"], rep["memory"], rep["multichip"], rep["sim"]
    pipelined = mc["mode"] in ("pipeline", "pipeline+replicate")
    rows = [
        ("model", f"{m['name']}: {_fmt(m['params'])} params, {_fmt(m['flops_per_micro_batch'], 'FLOP')} per "
                  "micro-batch"),
        ("run", f"{'training' if m['train'] else 'inference'}, batch {m['batch']} as {mc['replicas']} replica"
                f"{'s' if mc['replicas'] > 1 else ''} x {mc['micro_batches']} micro-batch"
                f"{'es' if mc['micro_batches'] > 1 else ''} of {m['micro_batch']}, {m['dtype']}"),
        ("chips", f"{chip['name']} × {chip['ipus']}: {chip['tiles_per_ipu']:,} tiles each, "
                  f"{mem['sram_bytes_per_tile'] / 1024:,.0f} KiB SRAM per tile, {chip['clock_hz'] / 1e9:.3g} GHz"),
        ("mode", f"{mc['mode']}: {mc['stages']} stage{'s' if mc['stages'] > 1 else ''} x {mc['replicas']} "
                 f"replica{'s' if mc['replicas'] > 1 else ''}" + (f", schedule {mc['schedule']}" if pipelined else "")
                 + f", placement {mc['placement'].get('method', '')}"),
        ("memory", f"{'fits' if mem['fits'] else 'DOES NOT FIT'}: worst peak tile {mem['peak_tile_bytes']:,} B, "
                   f"{mem.get('oom_tiles', 0)} tiles out of memory over all chips"),
        ("time", f"{s['cycles']:,.0f} cycles = {s['seconds'] * 1e3:.3f} ms for {mc['steps']} steps; one step "
                 f"{s['step_seconds'] * 1e3:.3f} ms" + (f", pipeline bubble {s['bubble_fraction']:.0%}"
                                                        if pipelined else "")),
        ("throughput", f"{s['samples_per_second']:,.1f} samples/s, {s['achieved_flops_per_second'] / 1e12:.2f} "
                       f"TFLOP/s achieved, mean chip utilisation {s['mean_utilisation']:.1%}"),
        ("traffic", f"chip links {views.fmt_bytes(s['link_bytes'])} (all-reduce "
                    f"{views.fmt_bytes(s['allreduce_bytes'])}), host {views.fmt_bytes(s['host_bytes'])} "
                    f"(hidden {s['hidden_transfer_fraction']:.0%})"),
    ]
    if mc.get("stages_requested", mc["stages"]) > mc["stages"]:
        rows.append(("note", f"{m['name']} has too few layers for {mc['stages_requested']} stages: "
                             f"{mc['stages']} used"))
    return rows + _wall_rows(rep)


def stage_rows(rep: dict) -> list:
    """One row per stage of a multichip report: (stage, chips, layers, vertices, edges, cycles, peak tile, fit)."""
    sram = rep["memory"]["sram_bytes_per_tile"]
    out = []
    for r in rep["multichip"]["per_stage"]:
        sm = r.get("memory", {})
        peak = sm.get("peak_tile_bytes", 0)
        out.append((str(r["stage"]), ", ".join(str(i) for i in r["ipus"]),
                    f"{r['layers']}: {r['first_layer']} … {r['last_layer']}", f"{r['vertices']:,}",
                    f"{r['edges']:,}", f"{r['fwd_cycles'] + r['bwd_cycles'] + r['update_cycles']:,.0f}",
                    f"{views.fmt_bytes(peak)} ({peak / sram:.0%})",
                    "fits" if sm.get("fits", True) else f"OUT OF MEMORY ({sm.get('oom_tiles', 0)} tiles)"))
    return out


def _multichip_cards(rep: dict) -> list:
    m, mem, mc, s = rep["model"], rep["memory"], rep["multichip"], rep["sim"]
    sram = mem["sram_bytes_per_tile"]
    cards = [
        ("memory", f"<span class='{'ok' if mem['fits'] else 'bad'}'>{'fits' if mem['fits'] else 'does not fit'}</span>",
         f"worst peak tile {mem['peak_tile_bytes'] / 1024:,.0f} of {sram / 1024:,.0f} KiB"),
        ("chips", f"{rep['chip']['ipus']} × {_html.escape(rep['chip']['name'])}",
         f"{mc['mode']}: {mc['stages']} stages × {mc['replicas']} replicas"),
        ("throughput", f"{s['samples_per_second']:,.0f} samples/s",
         f"batch {m['batch']}, {s['step_seconds'] * 1e3:.3f} ms per step"),
    ]
    if mc["mode"] in ("pipeline", "pipeline+replicate"):
        cards.append(("pipeline bubble", f"{s['bubble_fraction']:.0%}",
                      f"{mc['micro_batches']} micro-batches of {m['micro_batch']}"))
    cards += [("chip links", views.fmt_bytes(s["link_bytes"]), f"all-reduce {views.fmt_bytes(s['allreduce_bytes'])}"),
              ("model", _html.escape(m["name"]), f"{_fmt(m['params'])} params, "
                                                 f"{'training' if m['train'] else 'inference'}")]
    return cards


def _cards(rep):
    if "multichip" in rep:
        return _html_cards(_multichip_cards(rep))
    m, mem, g = rep["model"], rep["memory"], rep["graph"]
    s = rep.get("sim")
    sram = rep["chip"]["sram_bytes_per_tile"]
    cards = [
        ("memory", f"<span class='{'ok' if mem['fits'] else 'bad'}'>{'fits' if mem['fits'] else 'does not fit'}</span>",
         f"peak tile {mem['peak_tile_bytes'] / 1024:,.0f} of {sram / 1024:,.0f} KiB"),
        ("graph", f"{_fmt(g['vertices'])} vertices", f"{_fmt(g['edges'])} edges, {g['compute_sets']:,} compute sets"),
    ]
    if s:
        cards += [
            ("throughput", f"{s['samples_per_second']:,.0f} samples/s", f"batch {m['batch']}, "
                                                                        f"{s['seconds'] * 1e3:.3f} ms per step"),
            ("time", f"{s['cycles'] / 1e6:,.3f} M cycles", f"{s['supersteps']:,} supersteps, "
                                                           f"{s['achieved_flops_per_second'] / 1e12:.2f} TFLOP/s"),
        ]
    cards.append(("model", _html.escape(m["name"]), f"{_fmt(m['params'])} params, "
                                                   f"{'training' if m['train'] else 'inference'}"))
    return _html_cards(cards)


def _html_cards(cards):
    return "".join(f"<div class='card'><div class='k'>{k}</div><div class='v'>{v}</div><div class='d'>{d}</div></div>"
                   for k, v, d in cards)


def graph_image_png(model, **opts):
    """PNG bytes of the model's graph image from viz.graph_image, or (None, reason)."""
    fd, path = tempfile.mkstemp(suffix=".png")
    os.close(fd)
    try:
        render_model_graph(model, path, **opts)
        with open(path, "rb") as f:
            data = f.read()
        if not data.startswith(b"\x89PNG"):
            return None, "viz.graph_image.render_model_graph did not write a PNG"
        return data, None
    except Exception as e:
        return None, f"the graph image could not be made ({type(e).__name__}: {e})"
    finally:
        try:
            os.remove(path)
        except OSError:
            pass


def _figure_div(fig, div_id):
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True,
                               "toImageButtonOptions": {"format": "png", "scale": 2}})


def _unwrap(x):
    """``(run for the views, report dict)``: a one-graph Run becomes its Compiled."""
    if isinstance(x, Run) and x.compiled is not None:
        x = x.compiled
    return x, x.report


def report_html(c, *, graph_png: bytes | None = None, graph_note: str | None = None,
                op_graph_svg: str | None = None, title: str | None = None) -> str:
    """The whole page as a string (plotly.js inlined once); ``c``: a Run or a Compiled."""
    c, rep = _unwrap(c)
    multichip = "multichip" in rep
    figs = views.all_figures(c)
    m = rep["model"]
    title = title or f"ipusim report: {m['name']}"
    sub = (f"{rep['chip']['name']} × {rep['chip']['ipus']}"
           + (f" ({rep['multichip']['mode']})" if multichip else "")
           + f", {'training' if m['train'] else 'inference'}, batch {m['batch']}, {m['dtype']}")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_html.escape(title)}</title>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<style>{CSS}</style>",
             f"<script type=\"text/javascript\">{get_plotlyjs()}</script>",
             "</head><body>",
             f"<header><h1>{_html.escape(title)}</h1><div class='sub'>{_html.escape(sub)}</div></header><main>"]
    if rep["memory"].get("message"):
        parts.append(f"<div class='msg'>{_html.escape(rep['memory']['message'])}</div>")
    parts.append(f"<div class='cards'>{_cards(rep)}</div>")
    rows = "".join(f"<tr><td>{_html.escape(k)}</td><td>{_html.escape(v)}</td></tr>" for k, v in summary_rows(rep))
    parts.append(f"<section id='summary'><h2>Summary</h2><table class='kv'>{rows}</table>")
    if multichip:
        head = ("stage", "chips", "layers", "vertices", "edges", "cycles (1 micro-batch)", "peak tile", "")
        body = "".join("<tr>" + "".join(f"<td class='{'bad' if v.startswith('OUT') else ''}'>{_html.escape(v)}</td>"
                                        for v in row) + "</tr>" for row in stage_rows(rep))
        parts.append("<h2 style='margin-top:14px'>Stages</h2><table class='grid' id='stage-table'><tr>"
                     + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{body}</table>")
    parts.append("</section>")
    sections = MULTICHIP_SECTIONS if multichip else SECTIONS

    def sec(key):
        head, note = sections[key]
        return (f"<section id='sec-{key}'><h2>{head}</h2><p class='note'>{note}</p>"
                f"{_figure_div(figs[key], FIGURE_IDS[key])}</section>")

    if multichip:
        if "memory_map" in figs:      # the stages' grids and their liveness side by side, one height
            parts.append(f"<div class='two'>{sec('memory_map')}{sec('liveness')}</div>")
        else:
            parts.append("<div class='msg'>No per-stage memory: this run was made without its stage detail "
                         "(simulator.run.run(config, stage_detail=True), or write_report, makes it).</div>")
        order = ("trace", "stage_cycles")
    else:
        order = ("memory_map", "trace", "liveness", "layer_cycles", "layer_memory")
    for key in order:
        if key in figs:
            parts.append(sec(key))
    # graph image
    parts.append("<section id='sec-graph'><h2>Graph image</h2>")
    if graph_png:
        b64 = base64.b64encode(graph_png).decode("ascii")
        parts.append("<p class='note'>The compiled graph: vertices and edges laid out by viz/.</p>"
                     f"<div class='graphimg'><img id='graph-image' alt='graph image' src='data:image/png;base64,{b64}'></div>")
    else:
        parts.append(f"<p class='note' id='graph-image-note'>No graph image: {_html.escape(graph_note or 'none was made')}."
                     "</p>")
    if op_graph_svg:
        parts.append("<details><summary>Op graph (Graphviz)</summary>"
                     f"<div class='svgwrap'>{op_graph_svg}</div></details>")
    parts.append("</section>")
    parts.append("<footer>made by ipusim (viz/report_html.py); self-contained: opens without network</footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _op_graph(x):
    """The op graph drawn beside the report: the lowered one of a graph, or the model's for several chips."""
    if isinstance(x, Run) and x.compiled is None:
        cfg = x.config
        return models.load(cfg.model, batch=x.report["model"]["micro_batch"], train=cfg.train,
                           optimizer=cfg.optimizer, model_kw=cfg.model_kw)
    c, _ = _unwrap(x)
    return c.lowered.opgraph if getattr(c, "lowered", None) is not None else c.opgraph


def write_report(c, path, *, model=None, graph_image=True, graph_image_path=None, op_graph=True,
                 max_op_graph_ops=400, **kw) -> dict:
    """Write the page of ``c`` (a :class:`simulator.run.Run` or a Compiled) to ``path``; returns what went
    in (``graph_image``: True/False and ``note``).

    A Run on several chips made without its per-stage memory (``simulator.run.run``) is run again
    with it (`simulator.run.run(config, stage_detail=True)`): the page shows every stage's tiles and liveness.
    The graph image is of one graph: a run on several chips has none unless ``graph_image_path``."""
    if isinstance(c, Run) and c.compiled is None and not c.stage_memory:
        c = run(c.config, stage_detail=True)
    several = isinstance(c, Run) and c.compiled is None
    png, note = None, None
    if graph_image_path:
        with open(graph_image_path, "rb") as f:
            png = f.read()
    elif several:
        note = (f"a run on {c.report['chip']['ipus']} chips compiles one graph per stage; draw the model's "
                "with `ipusim render`")
    elif graph_image:
        png, note = graph_image_png(model if model is not None else _unwrap(c)[0].opgraph)
    else:
        note = "switched off (--no-graph-image)"
    svg = None
    if op_graph:
        og = _op_graph(c)
        if len(og) <= max_op_graph_ops:
            try:
                svg = op_graph_dot(og).pipe(format="svg").decode("utf-8")
                svg = svg[svg.find("<svg"):]
            except Exception:   # no Graphviz binaries: the page goes without the op graph
                svg = None
    text = report_html(c, graph_png=png, graph_note=note, op_graph_svg=svg, **kw)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return {"path": path, "graph_image": png is not None, "note": note, "op_graph": svg is not None,
            "bytes": len(text.encode("utf-8"))}
