"""LLM inference design sweep: batch x chips x prompt length for a Llama-style model, and
its Pareto front of tokens/s per chip against latency (issue 14).

    .venv/bin/python examples/sweep_llm.py                       # the full sweep (24 points)
    .venv/bin/python examples/sweep_llm.py --batch 1,4 --chips 1,3 --prompt 128 --out out/llm_small

The model is SmolLM-135M (``examples/configs/smollm-135m.json``: Llama-style, 30 layers of
576, 9 heads, 3 key-value heads, 134.5 M parameters), fp16 on GC200s, 128 new tokens per
sequence.  The chips of a point are used as: 1 chip; 2: a pipeline of 2; 3: tensor
parallelism over 3 (its 3 key-value heads); 6: a pipeline of 2 stages of 3.  Each point is
:func:`simulator.generate.generate_by_layers`: generate with 2 S and 3 S of the layers (S the
stages; a stage of one layer would be inlined, off the outlined layers' line) and extended linearly to all 30 (an estimate; docs/transformers.md says how close it
comes), so a point takes seconds, not the minutes of compiling 30 layers.

Objectives: tokens/s per chip (decode, higher is better) and latency (time per output token,
lower is better); a point that does not fit is drawn but never on the front
(:func:`viz.pareto.pareto_mask`).  Writes ``OUT.csv`` (one row per point) and ``OUT.html``
(the plot: hover a point for its configuration).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.config import RunConfig  # noqa: E402
from simulator.generate import generate_by_layers  # noqa: E402

MODEL = str(Path(__file__).resolve().parent / "configs" / "smollm-135m.json")

#: chips -> (mode, tensor-parallel degree, pipeline stages)
LAYOUTS = {1: ("shard", None, 1), 2: ("pipeline", None, 2), 3: ("tensor", None, 1), 6: ("pipeline+tensor", 3, 2)}


def point(batch, chips, prompt, new_tokens=128, chip="gc200", kv_cache="sram") -> dict:
    """One point of the sweep: the estimate's figures beside the configuration."""
    mode, T, S = LAYOUTS[chips]
    cfg = RunConfig(model=MODEL, batch=batch, dtype="fp16", chip=chip, ipus=chips, mode=mode, tensor_parallel=T,
                    suggest=False)
    t0 = time.perf_counter()
    r = generate_by_layers(cfg, prompt, new_tokens, layers=(2 * S, 3 * S), samples=2, kv_cache=kv_cache)
    e = r["estimate"]
    return {"batch": batch, "chips": chips, "mode": mode + (f" T={T}" if T else ""), "prompt_len": prompt,
            "new_tokens": new_tokens, "kv_cache": kv_cache, "fits": e["fits"],
            "tokens_per_s": e["tokens_per_s"], "tokens_per_s_per_chip": e["tokens_per_s_per_chip"],
            "time_per_output_token_ms": e["time_per_output_token_s"] * 1e3,
            "time_to_first_token_ms": e["time_to_first_token_s"] * 1e3,
            "prefill_peak_tile_bytes": int(e["prefill_peak_tile_bytes"]),
            "decode_peak_tile_bytes": int(e["decode_peak_tile_bytes"]),
            "wall_s": time.perf_counter() - t0}


def pareto_plot(df, path, title):
    """tokens/s per chip against time per output token; the front joined by a line."""
    import plotly.graph_objects as go

    from viz.pareto import pareto_mask
    df = df.copy()
    df["front"] = pareto_mask(df, maximize=["tokens_per_s_per_chip"], minimize=["time_per_output_token_ms"],
                              valid=df["fits"])
    fig = go.Figure()
    for fits, name, colour in ((True, "fits", "#3B76AF"), (False, "does not fit", "#B0B0B0")):
        d = df[df["fits"] == fits]
        fig.add_trace(go.Scatter(
            x=d["time_per_output_token_ms"], y=d["tokens_per_s_per_chip"], mode="markers", name=name,
            marker=dict(size=6 + 2 * d["chips"], color=colour, symbol=[("circle", "square")[p == max(df["prompt_len"])]
                                                                        for p in d["prompt_len"]]),
            text=[f"batch {b}, {c} chip(s) ({m}), prompt {p}<br>first token {t:.2f} ms"
                  for b, c, m, p, t in zip(d["batch"], d["chips"], d["mode"], d["prompt_len"],
                                           d["time_to_first_token_ms"])],
            hovertemplate="%{text}<br>%{x:.3f} ms per token, %{y:,.0f} tokens/s per chip<extra></extra>"))
    f = df[df["front"]].sort_values("time_per_output_token_ms")
    fig.add_trace(go.Scatter(x=f["time_per_output_token_ms"], y=f["tokens_per_s_per_chip"], mode="lines",
                             name="Pareto front", line=dict(color="#D6504B", width=2)))
    fig.update_layout(title=title, xaxis_title="latency: time per output token (ms)",
                      yaxis_title="decode tokens/s per chip", template="plotly_white",
                      legend=dict(orientation="h", y=-0.15))
    fig.write_html(path, include_plotlyjs=True)
    return df


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", default="1,4,16")
    p.add_argument("--chips", default="1,2,3,6", help=f"of {', '.join(map(str, LAYOUTS))}")
    p.add_argument("--prompt", default="32,128")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--out", default="out/sweep_llm", help="writes OUT.csv and OUT.html")
    a = p.parse_args(argv)
    import pandas as pd
    ints = lambda s: [int(x) for x in s.split(",")]       # noqa: E731
    bad = [c for c in ints(a.chips) if c not in LAYOUTS]
    if bad:
        p.error(f"--chips: {bad[0]} is not one of {', '.join(map(str, LAYOUTS))}")
    rows = []
    for b, c, P in itertools.product(ints(a.batch), ints(a.chips), ints(a.prompt)):
        r = point(b, c, P, a.new_tokens)
        rows.append(r)
        print(f"batch {b:3d}  chips {c}  prompt {P:4d}: {r['time_per_output_token_ms']:8.3f} ms/token "
              f"{r['tokens_per_s_per_chip']:10,.0f} tok/s/chip  first token {r['time_to_first_token_ms']:8.3f} ms  "
              f"{'fits' if r['fits'] else 'does not fit'}  ({r['wall_s']:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df = pareto_plot(df, str(out) + ".html", "SmolLM-135M fp16 on GC200s, 128 new tokens: tokens/s per chip vs latency")
    df.to_csv(str(out) + ".csv", index=False)
    print("front:")
    print(df[df["front"]].sort_values("time_per_output_token_ms")[
        ["batch", "chips", "mode", "prompt_len", "time_per_output_token_ms", "tokens_per_s_per_chip"]].to_string(index=False))
    print(f"wrote {out}.csv, {out}.html")


if __name__ == "__main__":
    main()
