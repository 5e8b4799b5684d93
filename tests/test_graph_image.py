"""The image of a model's whole compute graph (viz.graph_image, ``ipusim render``)."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("PIL")

from PIL import Image                                        # noqa: E402

from simulator.run import build                          # noqa: E402
from viz.graph_image import draw, graph_of, place, render_model_graph   # noqa: E402

SIZE = 384


@pytest.fixture(scope="module", params=[False, True], ids=["mlp", "mlp-train"])
def compiled(request):
    return build("mnist-mlp", train=request.param, suggest=False)


@pytest.fixture(scope="module")
def laid_out(compiled):
    g = graph_of(compiled, level="vertex")
    return compiled, g, place(g, seed=0)


def _separation(X, group):
    """Per layer: RMS distance of its vertices to their centroid, and the
    distance from that centroid to the nearest other layer's centroid."""
    L = int(group.max()) + 1
    cnt = np.bincount(group, minlength=L)
    C = np.stack([np.bincount(group, X[:, 0], L), np.bincount(group, X[:, 1], L)], 1)
    C /= np.maximum(cnt, 1)[:, None]
    rms = np.sqrt(np.bincount(group, ((X - C[group]) ** 2).sum(1), L) / np.maximum(cnt, 1))
    ok = cnt > 0
    D = np.sqrt(((C[ok][:, None] - C[ok][None]) ** 2).sum(-1))
    np.fill_diagonal(D, np.inf)
    return rms[ok], D.min(1)


def test_every_vertex_is_a_node(laid_out):
    c, g, xy = laid_out
    nv = c.lowered.graph.num_vertices
    assert g.n_vertices == nv
    assert g.n >= nv
    assert xy.shape == (g.n, 2)
    assert np.isfinite(xy).all()
    assert g.drawn[:nv].all() and not g.drawn[nv:].any()
    # vertex <-> chunk lines: every vertex has at least one (all have edges)
    touched = np.zeros(g.n, bool)
    touched[g.src] = True
    touched[g.dst] = True
    assert touched[:nv].all()
    assert (g.weight > 0).all()
    assert g.group.shape == (g.n,) and g.color_index.shape == (g.n,)


def test_edges_follow_bytes(compiled):
    """Summed line weights account for every byte the graph's edges connect."""
    g = graph_of(compiled, level="vertex")
    gr = compiled.lowered.graph
    a = compiled.exe.arrays
    from hardware.dtypes import DTYPE_BYTES
    vb = np.array([DTYPE_BYTES[v.dtype] for v in gr.variables])[gr.variable_of(a.edge_start)]
    want = float((a.edge_len * vb).sum())
    nv = g.n_vertices
    vc = (g.src < nv) & (g.dst >= nv)
    assert abs(float(g.weight[vc].sum()) - want) <= 1e-4 * want


def test_layers_are_spatially_separated(laid_out, request):
    c, g, xy = laid_out
    if "train" in request.node.callspec.id:
        # known limit: a tiny MLP's forward, backward and update clusters
        # share every weight chunk tile by tile and come out concentric
        request.applymarker(pytest.mark.xfail(reason="training clusters of mnist-mlp are concentric "
                                                     "(docs/graph-images.md)", strict=False))
    nv = g.n_vertices
    rms, nearest = _separation(xy[:nv].astype(np.float64), g.group[:nv])
    assert rms.size >= 3
    assert (rms < nearest).mean() >= 0.6, (rms, nearest)


def test_png_not_empty_and_svg_valid(laid_out, tmp_path):
    c, g, xy = laid_out
    png = tmp_path / "g.png"
    draw(g, xy, png, size=SIZE)
    arr = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert arr.shape == (SIZE, SIZE, 3)
    lit = (arr.max(2) > 60).mean()
    assert 0.01 < lit < 0.9
    # more than one layer colour is visible
    assert len({tuple(p) for p in (arr[arr.max(2) > 120] // 64)[::7].tolist()}) >= 3
    svg = tmp_path / "g.svg"
    draw(g, xy, svg, size=SIZE)
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    texts = [t.text for t in root.iter() if t.tag.endswith("text")]
    assert any("fc1" in (t or "") for t in texts)      # the legend names the layers


@pytest.mark.parametrize("level,color", [("tile", "layer"), ("tile", "tile"), ("op", "op")])
def test_other_levels(compiled, tmp_path, level, color):
    p = tmp_path / f"{level}.png"
    timings = {}
    out = render_model_graph(compiled, p, level=level, color=color, size=SIZE, timings=timings)
    assert out == p and p.exists()
    arr = np.asarray(Image.open(p).convert("RGB"))
    assert (arr.max(2) > 60).mean() > 0.002
    if level == "tile":
        assert timings["nodes"] == compiled.lowered.graph.num_tiles


def test_render_model_graph_from_name_svg(tmp_path):
    p = tmp_path / "mlp.svg"
    t = {}
    render_model_graph("mnist-mlp", p, size=SIZE, color="op", timings=t)
    ET.parse(p)
    assert t["vertices"] == t["nodes"] - t["chunks"]
    assert {"compile_s", "graph_s", "layout_s", "render_s"} <= set(t)


def test_bad_options(compiled, tmp_path):
    with pytest.raises(ValueError, match="level"):
        graph_of(compiled, level="edge")
    with pytest.raises(ValueError, match="color"):
        graph_of(compiled, color="rainbow")
    with pytest.raises(ValueError, match="tile.*op"):
        graph_of(compiled, level="op", color="tile")
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        render_model_graph(compiled, tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="size"):
        render_model_graph(compiled, tmp_path / "x.png", size=10)
    with pytest.raises(ValueError, match="compiled model"):
        graph_of(compiled.opgraph, level="vertex")
    with pytest.raises(ValueError, match="subgroup"):
        graph_of(compiled, subgroup="layer")


def test_cli_render(tmp_path, capsys):
    import ipusim_cli
    out = tmp_path / "m.png"
    rc = ipusim_cli.main(["render", "mnist-mlp", "--out", str(out), "--size", str(SIZE), "--quiet"])
    assert rc == 0 and out.exists()
    assert "image" in capsys.readouterr().out
    rc = ipusim_cli.main(["render", "mnist-mlp", "--out", str(tmp_path / "m.gif"), "--quiet"])
    assert rc == 2
    assert ".png or .svg" in capsys.readouterr().err
    rc = ipusim_cli.main(["render", "mnist-mlp", "--level", "layer", "--out", str(out), "--quiet"])
    assert rc == 2
    assert "unknown level" in capsys.readouterr().err


def test_a_one_op_model_renders(tmp_path):
    # issue 15: a one-Relu ONNX model failed on a NaN layout (its coarsest level is one node: no
    # pairs to repel, 0 / 0), then "'list' argument must have no negative elements" in rasterize
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "relu1",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "relu1.onnx")
    p = tmp_path / "relu1.png"
    render_model_graph(str(tmp_path / "relu1.onnx"), p, size=SIZE)
    assert Image.open(p).size == (SIZE, SIZE)
