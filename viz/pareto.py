"""The Pareto front of sweep results: throughput against memory against chip size.

A point is on the front when no other point that fits is at least as good on
every objective and better on one. Objectives (all from the sweep's columns):

* throughput  ``sim.samples_per_second``                       -- higher is better
* memory      ``memory.peak_tile_bytes``                       -- lower is better
* chip size   total SRAM = ``chip.tiles x chip.sram_bytes_per_tile`` (the report's ``chip.tiles``
  counts the tiles of all chips)                                -- lower is better

Points that failed or do not fit are drawn greyed out and are never on the front.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"t": [1, 2, 3, 1], "m": [0, 1, 2, 2]})
    >>> pareto_mask(df, maximize=["t"], minimize=["m"]).tolist()
    [True, True, True, False]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["pareto_mask", "prepare", "pareto_figure", "write_pareto_html", "OBJECTIVES"]

#: (column, label, sense) of the default objectives
OBJECTIVES = (("sim.samples_per_second", "throughput (samples/s)", "max"),
              ("memory.peak_tile_bytes", "peak tile memory (KiB)", "min"),
              ("chip_sram_mib", "chip size: total SRAM (MiB)", "min"))

_META = {"point_id", "error", "wall_s"}


def pareto_mask(df, maximize=(), minimize=(), valid=None) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``df`` (rows where ``valid`` is False never are)."""
    cols = [np.asarray(df[c], dtype=float) for c in maximize] + [-np.asarray(df[c], dtype=float) for c in minimize]
    n = len(df)
    if not cols or n == 0:
        return np.zeros(n, bool)
    X = np.stack(cols, axis=1)                      # every objective "higher is better"
    ok = np.all(np.isfinite(X), axis=1)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    idx = np.flatnonzero(ok)
    Y = X[idx]
    mask = np.zeros(n, bool)
    for k, i in enumerate(idx):
        ge = np.all(Y >= Y[k], axis=1)
        gt = np.any(Y > Y[k], axis=1)
        mask[i] = not np.any(ge & gt)
    return mask


def _col(df, name, default=np.nan):
    import pandas as pd
    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce").astype(float)
    return pd.Series(default, index=df.index, dtype=float)


def prepare(df):
    """A copy of sweep results with derived columns: ``chip_sram_mib``, ``fit_ok``, ``on_front``."""
    df = df.copy().reset_index(drop=True)
    tiles = _col(df, "chip.tiles")
    if "chip.tiles" not in df.columns and "tiles" in df.columns:
        tiles = _col(df, "tiles")
    sram = _col(df, "chip.sram_bytes_per_tile")
    if "chip.sram_bytes_per_tile" not in df.columns and "sram_bytes_per_tile" in df.columns:
        sram = _col(df, "sram_bytes_per_tile")
    # the report's chip.tiles is already the tiles of all chips together
    df["chip_sram_mib"] = tiles * sram / 2**20
    df["chip_tiles_total"] = tiles
    err = df["error"].notna() if "error" in df.columns else np.zeros(len(df), bool)
    fits = (df["memory.fits"].fillna(False).astype(bool) if "memory.fits" in df.columns
            else np.zeros(len(df), bool))
    df["fit_ok"] = np.asarray(fits, bool) & ~np.asarray(err, bool)
    df["peak_tile_kib"] = _col(df, "memory.peak_tile_bytes") / 1024
    if "sim.samples_per_second" not in df.columns:
        df["sim.samples_per_second"] = np.nan
    df["on_front"] = pareto_mask(df, maximize=["sim.samples_per_second"],
                                 minimize=["memory.peak_tile_bytes", "chip_sram_mib"]
                                 if "memory.peak_tile_bytes" in df.columns else ["chip_sram_mib"],
                                 valid=df["fit_ok"])
    return df


def _param_columns(df):
    """The sweep's own parameters: the columns without a dot that are not bookkeeping."""
    derived = {"chip_sram_mib", "chip_tiles_total", "fit_ok", "peak_tile_kib", "on_front"}
    return [c for c in df.columns if "." not in c and c not in _META and c not in derived]


def _hover(df):
    params = _param_columns(df)
    out = []
    for _, r in df.iterrows():
        lines = [f"<b>{k}</b>: {r[k]}" for k in params]
        if isinstance(r.get("error"), str):
            lines.append(f"<b>error</b>: {r['error'][:120]}")
        else:
            lines.append(f"throughput: {r['sim.samples_per_second']:,.1f} samples/s")
            if "sim.seconds" in r and r["sim.seconds"] == r["sim.seconds"]:
                lines.append(f"latency: {r['sim.seconds'] * 1e3:.3f} ms")
            lines.append(f"peak tile: {r['peak_tile_kib']:,.1f} KiB"
                         + ("" if r["fit_ok"] else "  (does not fit)"))
            lines.append(f"chip SRAM: {r['chip_sram_mib']:,.0f} MiB")
        if r["on_front"]:
            lines.append("<i>on the Pareto front</i>")
        out.append("<br>".join(lines))
    return out


def pareto_figure(df, title=None):
    """Two linked panels (throughput vs chip SRAM, throughput vs peak tile memory)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    d = prepare(df)
    hover = np.array(_hover(d), dtype=object)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("throughput vs chip size (total SRAM)",
                                        "throughput vs peak tile memory"))
    groups = [("does not fit / failed", ~d["fit_ok"], dict(color="rgba(150,150,150,0.55)", symbol="x", size=7)),
              ("fits", d["fit_ok"] & ~d["on_front"], dict(color="rgba(31,119,180,0.6)", size=8)),
              ("Pareto front", d["on_front"], dict(color="#d62728", size=12, symbol="diamond",
                                                   line=dict(color="black", width=1)))]
    y = d["sim.samples_per_second"].fillna(0.0)
    for col, xname in ((1, "chip_sram_mib"), (2, "peak_tile_kib")):
        for name, m, marker in groups:
            m = np.asarray(m, bool)
            fig.add_trace(go.Scatter(x=d.loc[m, xname], y=y[m], mode="markers", name=name, marker=marker,
                                     legendgroup=name, showlegend=col == 1, hovertext=hover[m],
                                     hoverinfo="text", customdata=d.loc[m, "point_id"] if "point_id" in d else None),
                          row=1, col=col)
        # the staircase of this projection: fitting points not beaten on (throughput, x) alone
        m2 = pareto_mask(d, maximize=["sim.samples_per_second"], minimize=[xname], valid=d["fit_ok"])
        front = d[m2].sort_values(xname)
        if len(front) > 1:
            fig.add_trace(go.Scatter(x=front[xname], y=front["sim.samples_per_second"], mode="lines",
                                     line=dict(color="#d62728", width=1, dash="dot", shape="hv"),
                                     hoverinfo="skip", showlegend=False), row=1, col=col)
    fig.update_xaxes(title_text="chip total SRAM (MiB)", row=1, col=1)
    fig.update_xaxes(title_text="peak tile memory (KiB)", row=1, col=2)
    fig.update_yaxes(title_text="throughput (samples/s)", row=1, col=1)
    n, nf, nfront = len(d), int(d["fit_ok"].sum()), int(d["on_front"].sum())
    fig.update_layout(title=title or f"Pareto front: {nfront} of {nf} fitting points ({n} in all)",
                      template="plotly_white", height=560, hovermode="closest",
                      legend=dict(orientation="h", y=-0.15))
    return fig


def _front_table(d) -> str:
    params = _param_columns(d)
    cols = params + ["sim.samples_per_second", "sim.seconds", "peak_tile_kib", "chip_sram_mib"]
    cols = [c for c in cols if c in d.columns]
    front = d[d["on_front"]].sort_values("sim.samples_per_second", ascending=False)
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = []
    for _, r in front.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append(f"<td>{v:,.0f}</td>" if abs(v) >= 1000 else f"<td>{v:.4g}</td>")
            else:
                cells.append(f"<td>{v}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<h3>Pareto front ({len(front)} points)</h3><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def write_pareto_html(df, path, title=None) -> dict:
    """Write the interactive figure (plotly.js inlined: works offline) and the front as a table."""
    d = prepare(df)
    fig = pareto_figure(df, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    style = ("body{font-family:system-ui,sans-serif;margin:24px;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;"
             "text-align:right}th{background:#f3f3f3}")
    html = ("<!doctype html><html><head><meta charset='utf-8'><title>ipusim Pareto front</title>"
            f"<style>{style}</style></head><body>"
            + fig.to_html(full_html=False, include_plotlyjs=True)
            + _front_table(d) + "</body></html>")
    path.write_text(html)
    return {"points": len(d), "fit": int(d["fit_ok"].sum()), "front": int(d["on_front"].sum()),
            "front_ids": d.loc[d["on_front"], "point_id"].tolist() if "point_id" in d else []}
