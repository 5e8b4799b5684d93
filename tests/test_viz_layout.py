"""Tests of the large-graph layout (viz.layout) and renderer (viz.render)."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("PIL")

from viz.layout import layout                                   # noqa: E402
from viz.render import default_palette, render, render_png, render_svg   # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"


def chained_layers(L=8, k=200, intra=6, inter=20, seed=1):
    """L layers of k vertices, dense random intra-layer edges, a few edges
    from each layer to the next; every vertex has an intra-layer edge."""
    rng = np.random.default_rng(seed)
    src, dst = [], []
    for layer in range(L):
        base = layer * k
        ring = np.arange(k) + base                      # connectivity
        src += [ring, rng.integers(0, k, k * intra // 2) + base]
        dst += [np.roll(ring, 1), rng.integers(0, k, k * intra // 2) + base]
        if layer + 1 < L:
            src.append(rng.integers(0, k, inter) + base)
            dst.append(rng.integers(0, k, inter) + base + k)
    group = np.repeat(np.arange(L), k)
    return L * k, np.concatenate(src), np.concatenate(dst), group


def separation(X, group):
    """Per group: RMS distance to its centroid, distance to nearest other centroid."""
    L = group.max() + 1
    C = np.array([X[group == g].mean(0) for g in range(L)])
    rms = np.array([np.sqrt(((X[group == g] - C[g]) ** 2).sum(1).mean()) for g in range(L)])
    D = np.sqrt(((C[:, None] - C[None]) ** 2).sum(-1))
    np.fill_diagonal(D, np.inf)
    return rms, D.min(1)


@pytest.fixture(scope="module")
def graph():
    return chained_layers()


@pytest.fixture(scope="module")
def laid_out(graph):
    n, s, d, g = graph
    return layout(n, s, d, seed=0)


def test_shape_dtype_finite(graph, laid_out):
    n = graph[0]
    assert laid_out.shape == (n, 2)
    assert laid_out.dtype == np.float32
    assert np.isfinite(laid_out).all()
    assert laid_out.std(0).min() > 0


@pytest.mark.parametrize("use_group", [False, True])
def test_layers_are_separated(graph, laid_out, use_group):
    n, s, d, g = graph
    X = layout(n, s, d, group=g, seed=0) if use_group else laid_out
    rms, nearest = separation(X, g)
    assert (rms < nearest).sum() >= 7, (rms, nearest)
    assert np.median(rms / nearest) < 0.5


def test_deterministic(graph, laid_out):
    n, s, d, g = graph
    again = layout(n, s, d, seed=0)
    assert np.array_equal(again, laid_out)
    other = layout(n, s, d, seed=1)
    assert not np.array_equal(other, laid_out)


def test_hierarchy_weights_duplicates_and_isolated():
    n, s, d, g = chained_layers(L=4, k=100)
    # duplicate edges, self loops, weights, a subgroup and isolated vertices
    s2 = np.concatenate([s, s[:50], np.arange(10)])
    d2 = np.concatenate([d, d[:50], np.arange(10)])
    w = np.linspace(1, 3, s2.size).astype(np.float32)
    n2 = n + 5                                  # 5 isolated vertices
    g2 = np.concatenate([g, np.full(5, 3)])
    sg = np.arange(n2) % 7
    X = layout(n2, s2, d2, weight=w, group=g2, subgroup=sg, seed=3)
    assert X.shape == (n2, 2) and np.isfinite(X).all()
    rms, nearest = separation(X[:n], g)
    assert (rms < nearest).sum() >= 3
    # isolated vertices stay near the picture
    R = np.sqrt((X[:n] ** 2).sum(1)).max()
    assert np.sqrt((X[n:] ** 2).sum(1)).max() < 2 * R


def test_tiny_inputs():
    assert layout(0, [], []).shape == (0, 2)
    assert layout(1, [], []).shape == (1, 2)
    X = layout(3, np.array([0]), np.array([1]))
    assert X.shape == (3, 2) and np.isfinite(X).all()
    with pytest.raises(ValueError):
        layout(3, np.array([0]), np.array([5]))


def test_render_png(tmp_path, graph, laid_out):
    from PIL import Image
    n, s, d, g = graph
    pal = default_palette(8)
    out = tmp_path / "g.png"
    legend = [(f"layer {i}", pal[i]) for i in range(8)]
    render_png(laid_out, s, d, g, pal, out, size=512, legend=legend, title="test")
    im = np.asarray(Image.open(out).convert("RGB"))
    assert im.shape == (512, 512, 3)
    lit = (im.max(2) > 60).mean()
    assert lit > 0.01, lit
    # several distinct hues are visible
    bright = im[im.max(2) > 120].astype(int)
    hues = {tuple(c // 64) for c in bright[:: max(1, len(bright) // 2000)]}
    assert len(hues) >= 4


def test_render_svg_vector_and_raster(tmp_path, graph, laid_out):
    n, s, d, g = graph
    pal = default_palette(8)
    legend = [(f"layer <{i}> & co", pal[i]) for i in range(8)]
    small = tmp_path / "small.svg"
    render(small, laid_out, s, d, g, pal, size=600, legend=legend, title="a & b")
    root = ET.parse(small).getroot()
    assert root.tag == SVG + "svg"
    assert root.findall(f".//{SVG}image") == []
    assert len(root.findall(f".//{SVG}line")) == s.size
    assert len(root.findall(f".//{SVG}circle")) >= n
    # large graph: embedded PNG plus vector text
    rng = np.random.default_rng(0)
    N, M = 15000, 30000
    xy = rng.normal(size=(N, 2)).astype(np.float32)
    big = tmp_path / "big.svg"
    render_svg(xy, rng.integers(0, N, M), rng.integers(0, N, M), rng.integers(0, 4, N),
               default_palette(4), big, size=400, legend=legend[:4], title="big")
    root = ET.parse(big).getroot()
    imgs = root.findall(f".//{SVG}image")
    assert len(imgs) == 1
    assert imgs[0].get("href").startswith("data:image/png;base64,")
    assert root.findall(f".//{SVG}line") == []
    assert any(t.text == "big" for t in root.iter(SVG + "text"))


def test_render_bad_suffix(tmp_path, graph, laid_out):
    n, s, d, g = graph
    with pytest.raises(ValueError):
        render(tmp_path / "x.jpg", laid_out, s, d, g, default_palette(8))
