"""Raster / SVG rendering of laid-out graphs with millions of elements.

Everything is numpy: edges are rasterised by sampling each edge at (about)
one point per pixel of its length and accumulating the samples into a float
buffer per colour channel with ``np.bincount`` (additive blending), vertices
are splatted the same way, then the buffer is tone-mapped (log curve, hue
preserving, dense cores go towards white), given a soft glow and composed on
a dark background.  Title and legend text are drawn with Pillow.

Edge colour: the first half of an edge takes the colour of its ``src``
vertex, the second half the colour of its ``dst`` vertex.

Very large graphs: every edge is drawn.  Only if the total number of samples
(sum over edges of their pixel length) would exceed ``max_samples`` are the
longest edges drawn with fewer, evenly spaced samples (each weighted up so an
edge's total brightness is unchanged) -- the per-edge cap is the largest
value that keeps the total within ``max_samples``.
"""
from __future__ import annotations

import base64
import io
import os
from typing import Optional, Sequence
from xml.sax.saxutils import escape

import numpy as np

__all__ = ["render", "render_png", "render_svg", "rasterize", "default_palette"]

BACKGROUND = (6, 7, 14)
_SAMPLE_CHUNK = 1 << 23
VECTOR_SVG_MAX = 20000      # n + m above which SVG embeds a raster image


# --------------------------------------------------------------------------
# colours, fonts, frame
# --------------------------------------------------------------------------
def default_palette(k: int) -> np.ndarray:
    """``k`` well separated saturated colours (float 0..1, shape (k, 3)):
    golden-angle hues with alternating lightness."""
    i = np.arange(max(k, 1))
    h = (i * 0.618033988749895 + 0.02) % 1.0
    s = np.where(i % 3 == 2, 0.55, 0.85)
    v = np.where(i % 2 == 1, 0.85, 1.0)
    return _hsv2rgb(h, s, v)


def _hsv2rgb(h, s, v):
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], 1).astype(np.float32)


def _palette01(palette) -> np.ndarray:
    p = np.asarray(palette, dtype=np.float32).reshape(-1, 3)
    if p.size and p.max() > 1.0:
        p = p / 255.0
    return np.clip(p, 0, 1)


def _rgb255(c):
    c = np.asarray(c, dtype=np.float64).ravel()[:3]
    if c.max() <= 1.0:
        c = c * 255.0
    return tuple(int(round(x)) for x in np.clip(c, 0, 255))


_FONT_DIRS = ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu",
              "/usr/share/fonts/TTF", "/Library/Fonts", "C:/Windows/Fonts"]


def _font(px: int, bold=False):
    from PIL import ImageFont
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for d in _FONT_DIRS:
        f = os.path.join(d, name)
        if os.path.exists(f):
            return ImageFont.truetype(f, px)
    try:
        return ImageFont.load_default(size=px)
    except TypeError:               # Pillow < 10.1
        return ImageFont.load_default()


class _Frame:
    """Image geometry: plot rectangle, title and legend placement."""

    def __init__(self, size, legend, title):
        self.W = self.H = int(size)
        legend = list(legend or [])
        self.legend = legend
        self.title = title
        self.pad = max(4, int(0.025 * size))
        self.title_px = max(10, int(size / 45)) if title else 0
        top = self.pad + (int(self.title_px * 1.6) if title else 0)
        right = self.W - self.pad
        self.cols, self.rows, self.font_px, self.col_w = 0, 0, 0, 0
        if legend:
            fpx = max(8, int(size / 70))
            avail = self.H - top - 2 * self.pad
            while True:
                line = int(fpx * 1.45)
                rows = max(1, avail // line)
                cols = -(-len(legend) // rows)
                maxlen = max(len(str(lab)) for lab, _ in legend)
                col_w = int(fpx * (2.0 + 0.6 * min(maxlen, 28)))
                if cols * col_w <= 0.3 * self.W or fpx <= 8:
                    break
                fpx -= 1
            self.cols, self.rows, self.font_px, self.col_w = cols, rows, fpx, col_w
            self.line_h = int(fpx * 1.45)
            self.legend_x = self.W - self.pad - cols * col_w
            self.legend_y = top
            right = self.legend_x - self.pad
        self.plot = (self.pad, top, right, self.H - self.pad)   # x0, y0, x1, y1

    def legend_items(self):
        """(x, y, label, rgb255) with y the top of the row."""
        for i, (lab, rgb) in enumerate(self.legend):
            c, r = divmod(i, self.rows)
            yield (self.legend_x + c * self.col_w, self.legend_y + r * self.line_h,
                   str(lab), _rgb255(rgb))


def _to_pixels(xy, plot, robust=True):
    """Map layout coordinates into the plot rectangle (aspect preserved)."""
    xy = np.asarray(xy, dtype=np.float64)
    x0, y0, x1, y1 = plot
    if xy.shape[0] == 0:
        return np.zeros((0, 2), np.float32)
    if robust and xy.shape[0] > 10000:
        # a handful of far outliers (e.g. isolated vertices) must not shrink
        # the picture: frame the central 99.98 % and drop what falls outside
        lo = np.quantile(xy, 0.0001, axis=0)
        hi = np.quantile(xy, 0.9999, axis=0)
    else:
        lo, hi = xy.min(0), xy.max(0)
    span = np.maximum(hi - lo, 1e-12)
    sc = min((x1 - x0 - 1) / span[0], (y1 - y0 - 1) / span[1])
    off = np.array([x0 + (x1 - x0 - 1 - sc * span[0]) / 2, y0 + (y1 - y0 - 1 - sc * span[1]) / 2])
    p = (xy - lo) * sc + off
    return p.astype(np.float32)


# --------------------------------------------------------------------------
# rasterisation
# --------------------------------------------------------------------------
def _edge_caps(length, max_samples):
    """Samples per edge: ceil(L)+1, capped so the total <= max_samples."""
    k = np.maximum(np.ceil(length).astype(np.int64) + 1, 2)
    total = int(k.sum())
    if total <= max_samples:
        return k.astype(np.int32)
    # largest cap c with sum(min(k, c)) <= max_samples (histogram search)
    kmax = int(k.max())
    hist = np.bincount(np.minimum(k, kmax))
    ks = np.arange(hist.size)
    # S(c) = sum_{k<c} k*h[k] + c * #(k >= c)
    below = np.concatenate([[0], np.cumsum(ks * hist)])[:-1]
    ge = hist[::-1].cumsum()[::-1]
    S = below + ks * ge
    ok = np.flatnonzero(S <= max_samples)
    c = max(2, int(ok[-1]) if ok.size else 2)
    return np.minimum(k, c).astype(np.int32)


def rasterize(xy, src, dst, color_index, palette, size=2048, frame=None,
              max_samples=600_000_000, node_size=None, node_mask=None):
    """Accumulate edges and vertices; returns (edges, nodes) float32 buffers
    of shape (3, H, W) holding summed colour (one unit per pixel crossed).
    ``node_mask`` (bool (n,)): only these nodes are drawn as points (all
    nodes still anchor edges)."""
    frame = frame or _Frame(size, None, None)
    W, H = frame.W, frame.H
    pal = _palette01(palette)
    n = xy.shape[0]
    ci = np.asarray(color_index, dtype=np.int64).ravel() if n else np.zeros(0, np.int64)
    if ci.size != n:
        raise ValueError("color_index must have length n")
    ci = np.clip(ci, 0, len(pal) - 1).astype(np.int32)
    P = _to_pixels(xy, frame.plot)
    px, py = P[:, 0], P[:, 1]
    npix = W * H
    acc_e = np.zeros((3, npix))
    src = np.asarray(src, dtype=np.int64).ravel()
    dst = np.asarray(dst, dtype=np.int64).ravel()
    m = src.size
    # per-chunk of edges to bound memory of edge-level temporaries
    ECH = 1 << 24
    for e0 in range(0, m, ECH):
        s_ = src[e0:e0 + ECH]
        d_ = dst[e0:e0 + ECH]
        ax, ay = px[s_], py[s_]
        dx, dy = px[d_] - ax, py[d_] - ay
        L = np.maximum(np.abs(dx), np.abs(dy))
        k = _edge_caps(L, max(2 * s_.size, int(max_samples * s_.size / max(m, 1))))
        wgt = ((L + 1.0) / k).astype(np.float32)
        cs, cd = ci[s_], ci[d_]
        del L
        csum = np.cumsum(k, dtype=np.int64)
        # split the edge list so that each piece has <= _SAMPLE_CHUNK samples
        bounds = np.searchsorted(csum, np.arange(_SAMPLE_CHUNK, int(csum[-1]) if csum.size else 0,
                                                 _SAMPLE_CHUNK))
        bounds = np.unique(np.concatenate([[0], bounds, [s_.size]]))
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b <= a:
                continue
            kk = k[a:b]
            S = int(kk.sum())
            e = np.repeat(np.arange(a, b, dtype=np.int32), kk)
            first = np.cumsum(kk, dtype=np.int64) - kk
            j = (np.arange(S, dtype=np.int64) - np.repeat(first, kk)).astype(np.float32)
            t = j / (kk[e - a] - 1).astype(np.float32)
            del j
            x = ax[e] + t * dx[e]
            y = ay[e] + t * dy[e]
            ix = np.clip(x + 0.5, 0, W - 1).astype(np.int32)
            iy = np.clip(y + 0.5, 0, H - 1).astype(np.int32)
            del x, y
            pix = iy * W + ix
            del ix, iy
            col = np.where(t < 0.5, cs[e], cd[e])
            del t
            we = wgt[e]
            del e
            for ch in range(3):
                acc_e[ch] += np.bincount(pix, we * pal[col, ch], minlength=npix)
    # vertices
    acc_n = np.zeros((3, npix))
    if n:
        if node_size is None:
            pw = frame.plot[2] - frame.plot[0]
            node_size = float(np.clip(0.25 * pw / np.sqrt(n), 0.0, 5.0))
        r = int(np.floor(node_size))
        offs = [(ox, oy) for ox in range(-r, r + 1) for oy in range(-r, r + 1)
                if ox * ox + oy * oy <= max(node_size, 0.5) ** 2 + 1e-9] or [(0, 0)]
        inside = (px >= 0) & (px <= W - 1) & (py >= 0) & (py <= H - 1)
        if node_mask is not None:
            inside &= np.asarray(node_mask, dtype=bool).ravel()
        bx = np.round(px).astype(np.int32)
        by = np.round(py).astype(np.int32)
        for ox, oy in offs:
            ix = np.clip(bx + ox, 0, W - 1)
            iy = np.clip(by + oy, 0, H - 1)
            pix = iy * W + ix
            for ch in range(3):
                acc_n[ch] += np.bincount(pix, pal[ci, ch] * inside, minlength=npix)
    return (acc_e.reshape(3, H, W).astype(np.float32),
            acc_n.reshape(3, H, W).astype(np.float32))


def _blur(img, sigma):
    from scipy.ndimage import gaussian_filter
    if sigma <= 0.3:
        return img
    # blur a downsampled copy for wide kernels (cheap, looks the same)
    f = int(max(1, sigma // 3))
    if f > 1:
        C, H, W = img.shape
        Hs, Ws = H // f, W // f
        small = img[:, :Hs * f, :Ws * f].reshape(C, Hs, f, Ws, f).mean((2, 4))
        small = gaussian_filter(small, (0, sigma / f, sigma / f), mode="constant")
        up = np.repeat(np.repeat(small, f, 1), f, 2)
        out = np.zeros_like(img)
        out[:, :Hs * f, :Ws * f] = up
        return out
    return gaussian_filter(img, (0, sigma, sigma), mode="constant")


def tonemap(acc_e, acc_n, edge_gain=None, node_gain=None, glow=0.6, background=BACKGROUND):
    """Log tone mapping of the accumulation buffers -> uint8 (H, W, 3)."""
    def lum(a):
        return a.max(0)

    le, ln = lum(acc_e), lum(acc_n)
    # normalise each layer by a high percentile of its lit pixels so that the
    # picture looks alike whatever the graph size
    def ref(l):
        nz = l[l > 0]
        if not nz.size:
            return 1.0
        # a few very dense hubs (weights read by thousands of vertices) must not set the
        # exposure of the whole picture: cap the reference at 8x the 90th percentile
        q995, q90 = np.quantile(nz, [0.995, 0.90])
        return float(min(q995, 3.0 * q90))

    re, rn = ref(le), ref(ln)
    eg = 0.7 / re if edge_gain is None else edge_gain
    ng = 0.6 / rn if node_gain is None else node_gain
    acc = acc_e * eg + acc_n * ng
    L = acc.max(0)
    s = 0.06                                    # log knee: faint things visible
    mapped = np.log1p(L / s) / np.log1p(1.0 / s)
    mapped = np.clip(mapped, 0, 1.25)
    rgb = acc * (mapped / np.maximum(L, 1e-12))[None]
    if glow:
        H = rgb.shape[1]
        rgb = rgb + glow * (0.55 * _blur(rgb, H / 700) + 0.45 * _blur(rgb, H / 180))
    # dense cores bleed to white
    Lm = rgb.max(0)
    white = np.clip(Lm - 0.9, 0, None)[None] * 0.6
    rgb = rgb + white
    rgb = np.clip(rgb, 0, 1) ** (1 / 1.1)
    bg = np.asarray(background, dtype=np.float32)[:, None, None] / 255.0
    out = 1.0 - (1.0 - bg) * (1.0 - rgb)        # screen over background
    return (np.clip(out, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


def _draw_text(img, frame):
    from PIL import ImageDraw
    d = ImageDraw.Draw(img)
    if frame.title:
        # shrink a long title until it fits the picture's width
        px = frame.title_px
        width = img.size[0] - 2 * frame.pad
        while px > 8 and d.textlength(str(frame.title), font=_font(px, bold=True)) > width:
            px -= 2
        d.text((frame.pad, frame.pad), str(frame.title), fill=(235, 238, 245), font=_font(px, bold=True))
    if frame.legend:
        f = _font(frame.font_px)
        sw = int(frame.font_px * 0.8)
        for x, y, lab, rgb in frame.legend_items():
            cy = y + frame.line_h // 2
            d.ellipse([x, cy - sw // 2, x + sw, cy + sw // 2], fill=rgb)
            d.text((x + int(sw * 1.6), cy), lab, fill=(215, 220, 230), font=f, anchor="lm")


def _image(xy, src, dst, color_index, palette, size, legend, title, text=True, **kw):
    from PIL import Image
    frame = _Frame(size, legend, title)
    tm_kw = {k: kw.pop(k) for k in ("edge_gain", "node_gain", "glow", "background") if k in kw}
    acc_e, acc_n = rasterize(np.asarray(xy), src, dst, color_index, palette, size, frame, **kw)
    arr = tonemap(acc_e, acc_n, **tm_kw)
    del acc_e, acc_n
    img = Image.fromarray(arr, "RGB")
    if text:
        _draw_text(img, frame)
    return img, frame


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
def render_png(xy, src, dst, color_index, palette, path, size: int = 2048,
               legend: Optional[Sequence] = None, title: Optional[str] = None, **kw):
    """Render a PNG.  ``xy`` (n, 2) positions, ``src``/``dst`` (m,) edges,
    ``color_index`` (n,) index into ``palette`` ((k, 3) RGB, 0..1 or 0..255),
    ``legend`` list of (label, rgb).  Extra keywords: ``max_samples``,
    ``node_size`` (px radius), ``node_mask``, ``edge_gain``, ``node_gain``, ``glow``,
    ``background``.  Returns the PIL image."""
    img, _ = _image(xy, src, dst, color_index, palette, size, legend, title, **kw)
    img.save(path, format="PNG", compress_level=3)
    return img


def _svg_text_elems(frame):
    out = []
    if frame.title:
        out.append(f'<text x="{frame.pad}" y="{frame.pad + frame.title_px}" '
                   f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-weight="bold" '
                   f'font-size="{frame.title_px}" fill="rgb(235,238,245)">{escape(str(frame.title))}</text>')
    if frame.legend:
        sw = frame.font_px * 0.8
        out.append(f'<g font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
                   f'font-size="{frame.font_px}" fill="rgb(215,220,230)">')
        for x, y, lab, rgb in frame.legend_items():
            cy = y + frame.line_h / 2
            out.append(f'<circle cx="{x + sw / 2:.1f}" cy="{cy:.1f}" r="{sw / 2:.1f}" '
                       f'fill="rgb{rgb}"/>')
            out.append(f'<text x="{x + sw * 1.6:.1f}" y="{cy + frame.font_px * 0.35:.1f}">'
                       f'{escape(lab)}</text>')
        out.append('</g>')
    return out


def render_svg(xy, src, dst, color_index, palette, path, size: int = 2048,
               legend: Optional[Sequence] = None, title: Optional[str] = None,
               vector_max: int = VECTOR_SVG_MAX, **kw):
    """Render an SVG.  Graphs with more than ``vector_max`` elements (n + m)
    embed the raster picture as a base64 PNG ``<image>`` under vector text;
    smaller graphs are drawn as ``<line>``/``<circle>`` elements with
    additive ('screen') blending.  Returns the SVG text."""
    xy = np.asarray(xy)
    src = np.asarray(src).ravel()
    dst = np.asarray(dst).ravel()
    n, m = xy.shape[0], src.size
    frame = _Frame(size, legend, title)
    W, H = frame.W, frame.H
    head = ['<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{W}" height="{H}" viewBox="0 0 {W} {H}">',
            f'<rect width="{W}" height="{H}" fill="rgb{tuple(BACKGROUND)}"/>']
    body = []
    if n + m > vector_max:
        img, _ = _image(xy, src, dst, color_index, palette, size, legend, title, text=False, **kw)
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=3)
        b64 = base64.b64encode(buf.getvalue()).decode("ascii")
        body.append(f'<image x="0" y="0" width="{W}" height="{H}" '
                    f'xlink:href="data:image/png;base64,{b64}" href="data:image/png;base64,{b64}"/>')
    else:
        pal = _palette01(palette)
        ci = np.clip(np.asarray(color_index, dtype=np.int64).ravel(), 0, len(pal) - 1) \
            if n else np.zeros(0, np.int64)
        P = _to_pixels(xy, frame.plot, robust=False)
        hexes = ['#%02x%02x%02x' % _rgb255(c) for c in pal]
        pw = frame.plot[2] - frame.plot[0]
        r = float(np.clip(0.25 * pw / np.sqrt(max(n, 1)), 1.0, 5.0))
        op = float(np.clip(30.0 / np.sqrt(max(m, 1)), 0.08, 0.6))
        body.append(f'<g style="mix-blend-mode:screen;isolation:isolate" stroke-width="1" '
                    f'stroke-opacity="{op:.3f}" stroke-linecap="round">')
        for s, d in zip(src.tolist(), dst.tolist()):
            x0, y0 = P[s]
            x1, y1 = P[d]
            body.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" '
                        f'stroke="{hexes[ci[s]]}"/>')
        body.append('</g>')
        body.append('<g style="mix-blend-mode:screen" fill-opacity="0.9">')
        mask = kw.get("node_mask")
        for i in (range(n) if mask is None else np.flatnonzero(np.asarray(mask, bool)).tolist()):
            body.append(f'<circle cx="{P[i, 0]:.1f}" cy="{P[i, 1]:.1f}" r="{r:.1f}" '
                        f'fill="{hexes[ci[i]]}"/>')
        body.append('</g>')
    text = "\n".join(head + body + _svg_text_elems(frame) + ["</svg>"]) + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def render(path, xy, src, dst, color_index, palette, **kw):
    """Render to ``path``; the format follows its suffix (.png or .svg)."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext == ".png":
        return render_png(xy, src, dst, color_index, palette, path, **kw)
    if ext == ".svg":
        return render_svg(xy, src, dst, color_index, palette, path, **kw)
    raise ValueError(f"unsupported image format {ext!r} (use .png or .svg)")
