"""Run views (viz/views.py), the HTML report, Graphviz drawings and their CLI commands."""
import json
import os
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from hardware.chips import gc200
from simulator.config import RunConfig
from simulator.run import build, run
from viz import dot, views
from viz.report_html import FIGURE_IDS, report_html, write_report

HAVE_DOT = shutil.which("dot") is not None


@pytest.fixture(scope="module")
def mlp():
    return build("mnist-mlp", chip="gc200", batch=1, train=False, simulate=True)


@pytest.fixture(scope="module")
def mlp_train():
    return build("mnist-mlp", chip="gc200", batch=1, train=True, simulate=True)


@pytest.fixture(scope="module")
def tiny():
    return build("mnist-mlp", chip=gc200.replace(sram_bytes_per_tile=4096), simulate=True)


def _z_cells(fig):
    z = np.asarray(fig.data[0].z, dtype=float)
    return z[np.isfinite(z)]


def _trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert found, f"no trace {name!r} in {[t.name for t in fig.data]}"
    return found[0]


# -- memory map --------------------------------------------------------------------------------
def test_memory_map_has_one_cell_per_tile(mlp):
    fig = views.memory_map(mlp)
    tiles = mlp.memory["per_tile"]["total"].size
    assert fig.data[0].name == "tiles"
    cells = _z_cells(fig)
    assert cells.size == tiles == 1472
    ids = np.asarray(fig.data[0].customdata)
    assert sorted(ids[ids >= 0].tolist()) == list(range(tiles))
    assert np.isclose(cells.sum() * 1024, mlp.memory["per_tile"]["total"].sum())
    assert np.asarray(fig.data[0].z).shape == (32, 46)       # GC200: 46 columns x 32 rows
    assert fig.layout.coloraxis.cmax == pytest.approx(mlp.memory["sram_bytes_per_tile"] / 1024)
    assert "out of memory" not in [t.name for t in fig.data]


def test_memory_map_hover_names_tile_and_categories(mlp):
    fig = views.memory_map(mlp)
    ids = np.asarray(fig.data[0].customdata)
    r, c = np.argwhere(ids == 736)[0]
    text = fig.data[0].text[r][c]
    assert "tile 736" in text and "always-live variables" in text and "vertex state" in text


def test_memory_map_marks_oom_tiles_on_tiny_sram_chip(tiny):
    assert not tiny.memory["fits"]
    fig = views.memory_map(tiny)
    oom = _trace(fig, "out of memory")
    want = np.flatnonzero(tiny.memory["per_tile"]["total"] > 4096)
    assert len(oom.x) == want.size == tiny.memory["oom_tiles"] > 0
    assert sorted(np.asarray(oom.customdata).tolist()) == want.tolist()
    assert oom.marker.color == "#E3242B"
    assert fig.layout.coloraxis.cmax == pytest.approx(4.0)   # capped at the tile's SRAM (KiB)


def test_memory_map_puts_chips_side_by_side():
    c = build("mnist-mlp", chip="gc200", ipus=2, simulate=True)
    fig = views.memory_map(c)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (32, 46 * 2 + 1)
    assert np.isfinite(z).sum() == 2 * 1472
    assert np.isnan(z[:, 46]).all()                          # the gap between the chips


# -- execution trace -------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["mlp", "mlp_train"])
def test_trace_has_one_bar_per_superstep(which, request):
    c = request.getfixturevalue(which)
    fig = views.execution_trace(c)
    assert [t.name for t in fig.data] == ["compute", "sync", "exchange", "host"]
    assert all(t.type == "bar" for t in fig.data)
    comp = _trace(fig, "compute")
    assert len(comp.x) == c.sim.supersteps == c.report["sim"]["supersteps"]
    names = [cd[0] for cd in comp.customdata]
    css = c.exe.graph.compute_sets
    assert names == [css[s["cs"]].name for s in c.sim.steps if s["cs"] is not None]
    us = 1e6 / c.sim.chip.clock_hz
    assert sum(comp.x) == pytest.approx(c.sim.compute_cycles * us)
    assert sum(_trace(fig, "exchange").x) == pytest.approx(c.sim.exchange_cycles * us)
    assert sum(_trace(fig, "sync").x) == pytest.approx(c.sim.sync_cycles * us)
    end = max(b + x for t in fig.data for b, x in zip(t.base, t.x))
    assert end == pytest.approx(c.sim.cycles * us)


def test_trace_has_rows_per_chip():
    c = build("mnist-mlp", chip="gc200", ipus=2, simulate=True)
    comp = _trace(views.execution_trace(c), "compute")
    assert len(comp.x) == 2 * c.sim.supersteps
    assert set(comp.y) == {"IPU 0 · compute", "IPU 1 · compute"}


def test_trace_needs_a_simulation():
    c = build("mnist-mlp")
    with pytest.raises(ValueError, match="simulate"):
        views.execution_trace(c)


# -- liveness ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["mlp", "mlp_train"])
def test_liveness_peak_is_the_max(which, request):
    c = request.getfixturevalue(which)
    fig = views.liveness(c)
    curve = np.asarray(c.memory["liveness_curve"], dtype=float)
    line, peak = _trace(fig, "not-always-live"), _trace(fig, "peak")
    assert np.allclose(np.asarray(line.y) * 2 ** 20, curve)
    assert peak.y[0] * 2 ** 20 == pytest.approx(curve.max())
    assert peak.x[0] == int(np.argmax(curve))
    name = views.step_compute_set_names(c)[peak.x[0]]
    assert name in fig.layout.annotations[0].text


# -- per layer ---------------------------------------------------------------------------------------
def test_layer_cycles_add_up_to_the_run(mlp_train):
    c = mlp_train
    fig = views.layer_cycles(c)
    assert [t.name for t in fig.data] == ["compute", "exchange", "sync"]
    assert list(fig.data[0].x[:3]) == ["fc1", "relu1", "fc2"]
    assert sum(fig.data[0].y) == pytest.approx(c.sim.compute_cycles)
    assert sum(fig.data[1].y) == pytest.approx(c.sim.exchange_cycles)
    assert sum(fig.data[2].y) == pytest.approx(c.sim.sync_cycles)


def test_layer_memory_counts_every_variable(mlp_train):
    from hardware.dtypes import DTYPE_BYTES
    c = mlp_train
    tab = views.layer_table(c)
    total = sum(v.size * DTYPE_BYTES[v.dtype] for v in c.exe.graph.variables)
    assert sum(sum(v) for v in tab["bytes"].values()) == total
    fc1 = tab["layers"].index("fc1")
    assert tab["bytes"]["weight"][fc1] == (256 * 784 + 256) * 4     # fc1.weight + fc1.bias
    assert tab["bytes"]["state"][fc1] == (256 * 784 + 256) * 4      # their momentum
    fig = views.layer_memory(c)
    assert {"weight", "state", "activation", "gradient"} <= {t.name for t in fig.data}


# -- HTML page -----------------------------------------------------------------------------------------
def test_report_html_is_self_contained(mlp, tmp_path):
    from plotly.offline import get_plotlyjs
    html = report_html(mlp)
    assert html.count(get_plotlyjs()[:300]) == 1             # plotly.js inlined, once
    assert "<script src=" not in html and 'src="http' not in html
    for key in ("memory_map", "trace", "liveness", "layer_cycles", "layer_memory"):
        assert f'id="{FIGURE_IDS[key]}"' in html
    assert 'id="fig-stage-cycles"' not in html
    assert "samples/s" in html and "mnist-mlp" in html
    info = write_report(mlp, str(tmp_path / "r.html"), model="mnist-mlp")
    assert os.path.getsize(tmp_path / "r.html") == info["bytes"]
    text = (tmp_path / "r.html").read_text()
    if not info["graph_image"]:
        assert "graph-image-note" in text


def test_report_embeds_a_given_graph_png(mlp, tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    p = tmp_path / "g.png"
    p.write_bytes(png)
    info = write_report(mlp, str(tmp_path / "r.html"), graph_image_path=str(p))
    assert info["graph_image"]
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()


def test_cli_report_and_dot(tmp_path, capsys):
    from ipusim_cli import main
    out = tmp_path / "report.html"
    assert main(["report", "mnist-mlp", "--html", str(out), "--no-graph-image"]) == 0
    assert out.exists() and 'id="fig-memory-map"' in out.read_text()
    d = tmp_path / "p.dot"
    assert main(["dot", "mnist-mlp", "--what", "program", "--out", str(d)]) == 0
    assert d.read_text().startswith("digraph")
    if HAVE_DOT:
        s = tmp_path / "ops.svg"
        assert main(["dot", "mnist-mlp", "--train", "--what", "ops", "--out", str(s)]) == 0
        ET.parse(s)


# -- several chips ----------------------------------------------------------------------------------------
SMALL_SRAM = 7 * 1024       # stage 0 of mnist-mlp's pipeline does not fit, stage 1 does


@pytest.fixture(scope="module")
def pipeline():
    """mnist-mlp training on 2 chips as a pipeline, with the per-stage memory the views need."""
    cfg = RunConfig.from_dict({"model": "mnist-mlp", "ipus": 2, "mode": "pipeline", "batch": 8, "train": True,
                               "sram_bytes_per_tile": SMALL_SRAM})
    return run(cfg, stage_detail=True, workers=1)


def test_views_of_a_run_take_the_run_or_its_compiled(mlp):
    r = run(RunConfig(model="mnist-mlp"))
    assert list(views.all_figures(r)) == list(views.all_figures(mlp)) == \
        ["memory_map", "trace", "liveness", "layer_cycles", "layer_memory"]
    assert views.memory_map(r).data[0].z is not None
    with pytest.raises(ValueError, match="several chips"):
        views.multichip_trace(r)


def test_multichip_views_one_grid_and_one_curve_per_stage(pipeline):
    r = pipeline
    S = r.report["multichip"]["stages"]
    assert S == 2 and len(r.stage_memory) == S
    grids, curves = views.multichip_memory_row(r)
    heat = [t for t in grids.data if t.type == "heatmap"]
    assert len(heat) == S
    for t, d in zip(heat, r.stage_memory):               # every tile of the stage, its bytes in KiB
        z = np.asarray(t.z, dtype=float)
        assert np.isclose(np.nansum(z) * 1024, float(np.sum(d["per_tile"]["total"])), rtol=1e-5)
    oom = [t for t in grids.data if t.name == "out of memory"]
    want = sum(int((np.asarray(d["per_tile"]["total"]) > SMALL_SRAM).sum()) for d in r.stage_memory)
    assert want > 0 and sum(len(t.x) for t in oom) == want
    assert grids.layout.height == curves.layout.height >= views.ROW_MIN_HEIGHT
    lines = [t for t in curves.data if t.mode == "lines"]
    assert len(lines) == S
    worst = max(float(np.max(d["curve_bytes"])) for d in r.stage_memory)
    assert max(float(np.max(t.y)) for t in lines) * 2 ** 20 == pytest.approx(worst, rel=1e-6)


def test_multichip_trace_has_a_row_per_chip_and_stage_cycles_add_up(pipeline):
    r = pipeline
    fig = views.multichip_trace(r)
    assert {y for t in fig.data for y in t.y} == {"IPU 0 · stage 0", "IPU 1 · stage 1"}
    assert {"compute", "sync", "exchange", "link"} <= {t.name for t in fig.data}
    bars = views.multichip_stage_cycles(r)
    rows = r.report["multichip"]["per_stage"]
    by = {t.name: list(t.y) for t in bars.data if t.type == "bar"}
    assert by["forward"] == [row["fwd_cycles"] for row in rows]
    assert by["backward"] == [row["bwd_cycles"] for row in rows]


def test_multichip_views_need_the_stage_detail():
    r = run(RunConfig(model="mnist-mlp", ipus=2, mode="shard", batch=2))
    assert r.stage_memory is None
    assert list(views.all_figures(r)) == ["trace", "stage_cycles"]
    with pytest.raises(ValueError, match="stage detail|per-stage memory"):
        views.multichip_memory_map(r)


def test_report_of_a_multichip_run_shows_every_stage(pipeline, tmp_path):
    html = report_html(pipeline)
    for key in ("memory_map", "liveness", "trace", "stage_cycles"):
        assert f'id="{FIGURE_IDS[key]}"' in html
    assert "Tile memory per stage" in html and "Execution trace per chip" in html and "stage-table" in html
    assert "pipeline bubble" in html and "DOES NOT FIT" in html

    def figure(key):        # the figure JSON plotly.newPlot gets for a div
        start = html.index(f'id="{FIGURE_IDS[key]}"')
        call = html.index("Plotly.newPlot(", start)
        data = html[html.index("[", call):]
        return json.JSONDecoder().raw_decode(data)[0]
    assert sum(t["type"] == "heatmap" for t in figure("memory_map")) == 2      # one tile grid per stage
    assert sum(t.get("mode") == "lines" for t in figure("liveness")) == 2     # one curve per stage
    # a Run made by simulator.run.run has no stage detail: write_report runs it again with it
    r = run(pipeline.config)
    info = write_report(r, str(tmp_path / "mc.html"))
    text = (tmp_path / "mc.html").read_text()
    assert f'id="{FIGURE_IDS["memory_map"]}"' in text and "graph-image-note" in text
    assert not info["graph_image"] and "one graph per stage" in info["note"]


def test_cli_report_of_several_chips(tmp_path):
    from ipusim_cli import main
    out = tmp_path / "mc.html"
    assert main(["report", "mnist-mlp", "--ipus", "2", "--mode", "pipeline", "--batch", "8", "--train",
                 "--html", str(out)]) == 0
    text = out.read_text()
    assert 'id="fig-memory-map"' in text and 'id="fig-stage-cycles"' in text


# -- Graphviz --------------------------------------------------------------------------------------------
def _parses(d):
    if not HAVE_DOT:
        pytest.skip("Graphviz's dot binary is not installed")
    svg = d.pipe(format="svg")                   # dot exits non-zero on a syntax error
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    return svg.decode()


def test_op_graph_dot(mlp_train):
    og = mlp_train.opgraph
    d = dot.op_graph_dot(og)
    for name in og.ops():
        assert f'"{name}\\n' in d.source or f"{name}\\n" in d.source
    svg = _parses(d)
    assert "Gemm" in svg and "GemmGrad" in d.source


def test_op_graph_clusters_blocks():
    import models
    og = models.load("resnet50")
    d = dot.op_graph_dot(og)
    blocks = {og.op(n)["block"] for n in og.ops()} - {None}
    assert d.source.count("subgraph cluster_") == len(blocks) == 16
    _parses(d)


def test_program_dot_collapses_runs_and_draws_functions_once():
    from compiler.program import Call, walk
    c = build("resnet50")
    d = dot.program_dot(c.lowered.program, calls=c.lowered.calls)
    calls = sum(isinstance(p, Call) for p in walk(c.lowered.program))
    assert d.source.count("subgraph cluster_f") == len(c.lowered.functions) == 4   # block types that repeat
    assert d.source.count("style=dashed") == calls == 12
    assert "× Execute" in d.source
    n_exec = sum(type(p).__name__ == "Execute" for p in walk(c.lowered.program))
    assert d.source.count('label="Execute\\n') < n_exec
    _parses(d)
    full = dot.program_dot(c.lowered.program, collapse=0)
    assert full.source.count('label="Execute\\n') == n_exec


def test_program_dot_small(mlp):
    from compiler.program import Execute
    d = dot.program_dot(mlp.lowered.program)
    kids = mlp.lowered.program.children
    n = sum(isinstance(k, Execute) for k in kids)
    assert n >= 4 and all(isinstance(k, Execute) for k in kids[1:1 + n])   # one run of Execute
    assert f"{n} × Execute" in d.source
    assert "host:input" in d.source
    _parses(d)
