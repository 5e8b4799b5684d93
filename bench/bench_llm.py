"""LLM inference with tensor parallelism (issue 14's target): GPT-2 XL on 4 GC200, prompt 512,
128 new tokens, batch 8, fp16 -- compile and simulate the prefill and the decode steps, and
print what was measured beside the wall time it took.

    .venv/bin/python bench/bench_llm.py                          # the target (the whole model)
    .venv/bin/python bench/bench_llm.py --layers 1               # 1 of its 48 layers per chip
    .venv/bin/python bench/bench_llm.py --decode-only            # the decode steps only
    .venv/bin/python bench/bench_llm.py --no-functions --layers 1   # the layers inlined (as before 2026-12-05)
    .venv/bin/python bench/bench_llm.py --copy-breakdown         # what outlining's copies cost a decode step
    .venv/bin/python bench/bench_llm.py --model llama-7b --ipus 32 --batch 4 --prompt-len 128 --extrapolate 1,2

GPT-2 XL has 25 heads, which 4 chips do not divide: the run uses the model option
``uneven_heads`` (the busiest chip, the one compiled, takes 7 heads and 1,600 of the MLP's
6,400 features; the others wait for it at every all-reduce).  The layers are outlined as
graph functions (generate's default; ``--no-functions`` inlines them, ``--state-arguments``
passes each layer's KV cache as a function argument instead of writing it in the caller:
docs/transformers.md compares the three).  ``--decode-only`` compiles the decode step at its
last cache length alone (the step generate interpolates from).

``--extrapolate A,B`` runs generate with A and with B of the model's layers and extends
each figure linearly to all its layers (``f(L) = f(A) + (L - A) (f(B) - f(A)) / (B - A)``):
the layers are identical, so each adds the same time and the same bytes per tile (weights,
KV cache) -- an estimate, printed as one, for models whose whole prefill is too big to
compile here; ``--decode-only`` with ``--layers`` measures how close it comes on a decode
step that can be compiled whole.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.config import RunConfig  # noqa: E402
from simulator.generate import format_generate, generate, generate_by_layers, key_figures  # noqa: E402
from simulator.run import run  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gpt2-xl")
    p.add_argument("--ipus", type=int, default=4)
    p.add_argument("--mode", default="tensor")
    p.add_argument("--tensor-parallel", type=int, default=None)
    p.add_argument("--chip", default="gc200")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--samples", type=int, default=2, help="decode cache lengths simulated (default 2)")
    p.add_argument("--layers", type=int, default=None, help="build only this many of the model's layers")
    p.add_argument("--decode-only", action="store_true", help="compile and simulate one decode step only")
    p.add_argument("--kv-cache", default="sram", choices=("sram", "streaming"))
    p.add_argument("--extrapolate", metavar="A,B", help="generate with A and B layers, extend linearly to all")
    p.add_argument("--no-functions", action="store_true", help="inline the layers (default: outlined as graph "
                                                                     "functions, the KV cache written by the caller)")
    p.add_argument("--state-arguments", action="store_true",
                   help="outlined layers take their KV cache as a function argument, copied in whole and the "
                        "written positions back per call (the alternative docs/transformers.md measures)")
    p.add_argument("--copy-breakdown", action="store_true",
                   help="the decode step at its last cache length, one chip's slice, lowered with the layers inline "
                        "and outlined and simulated on one chip: what the calls' copies cost (exchange, syncs)")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args(argv)
    if a.state_arguments:
        from compiler.lower import Lowering
        Lowering.STATE_ARGUMENTS = True       # the stage workers are forked: they see it too
    kw = {"kv_cache": a.kv_cache}
    if a.model.startswith("gpt2"):
        kw["uneven_heads"] = True
    if a.layers:
        kw["layers"] = a.layers
    multi = a.ipus > 1
    cfg = RunConfig(model=a.model, chip=a.chip, ipus=a.ipus, mode=a.mode if multi else "shard",
                    tensor_parallel=a.tensor_parallel if multi else None, batch=a.batch, dtype="fp16", model_kw=kw,
                    suggest=False, functions=not a.no_functions)
    out = {"model": a.model, "ipus": a.ipus, "mode": cfg.mode, "batch": a.batch, "prompt_len": a.prompt_len,
           "new_tokens": a.new_tokens, "kv_cache": a.kv_cache,
           "layers_outlined": "cache arguments" if a.state_arguments else not a.no_functions}
    t0 = time.perf_counter()
    if a.copy_breakdown:
        out.update(copy_breakdown(cfg, a, kw))
    elif a.decode_only:
        C = a.prompt_len + a.new_tokens
        step = cfg.replace(model_kw=kw | dict(seq_len=1, cache_len=C, past=C - 2, last_logits=True,
                                                                 dropout=0.0))
        r = run(step).report
        st = r["multichip"]["per_stage"]
        tp = r["multichip"].get("tensor_parallel", {})
        secs = r["sim"]["step_seconds"]
        out.update(step_seconds=secs, peak_tile_bytes=r["memory"]["peak_tile_bytes"], fits=r["memory"]["fits"],
                   vertices=[s["vertices"] for s in st], layers=a.layers)
        print(f"decode    {a.model} ({a.layers or 'all'} layers), {a.ipus} x {a.chip} {a.mode}, batch {a.batch}, "
              f"the step at {C - 1} cached tokens: {secs * 1e3:.3f} ms ({a.batch / secs:,.0f} tokens/s), "
              f"{tp.get('allreduce_seconds_per_step', 0) * 1e3:.3f} ms of it all-reduces")
        for s in st:
            h = s["memory"].get("holds", {})
            print(f"chip      IPUs {s['ipus']}: {s['vertices']:,} vertices, peak tile {s['memory'].get('peak_tile_bytes'):,} B"
                  f" ({'fits' if s['memory'].get('fits') else 'does not fit'}), weights "
                  f"{h.get('weights_bytes', 0) / 2**20:,.1f} MiB, KV cache {h.get('kv_cache_bytes', 0) / 2**20:,.1f} MiB")
    elif a.extrapolate:
        out.update(extrapolate(cfg, a, kw))
    else:
        rep = generate(cfg, a.prompt_len, a.new_tokens, samples=a.samples, kv_cache=a.kv_cache)
        print(format_generate(rep))
        out.update(_figures(rep))
    wall = time.perf_counter() - t0
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 2**20   # stage workers too
    print(f"wall      {wall:.1f} s (compile + simulate), peak memory {rss:.1f} GB")
    out.update(wall_s=wall, peak_rss_gb=rss)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


def copy_breakdown(cfg, a, kw) -> dict:
    """The decode step at its last cache length (one chip's slice of a tensor-parallel group, no
    all-reduces), lowered inline and outlined, simulated on one chip: the outlined step's cycles
    less its copies (exchange and one sync each) and its calls' control are the inline step's."""
    import models
    from compiler.executable import compile_program
    from compiler.lower import lower
    from simulator.engine import Engine
    C = a.prompt_len + a.new_tokens
    T = cfg.tensor_degree
    og = models.load(a.model, batch=a.batch, model_kw=kw | dict(seq_len=1, cache_len=C, past=C - 2, last_logits=True,
                                                                  dropout=0.0) | ({"tensor_parallel": T} if T > 1 else {}))
    chip = cfg.get_chip()
    res = {}
    for fn in (False, True):
        low = lower(og, chip, dtype="fp16", use_functions=fn)
        rep = Engine(compile_program(low.graph, low.program), chip).run()
        cp = [s for s in rep.steps if s["name"] == "copy"]
        r = {"cycles": rep.cycles, "ms": rep.cycles / chip.clock_hz * 1e3, "vertices": low.graph.num_vertices,
             "copies": sum(1 for s in cp if s["exchange"] == 0 and s["sync"] > 0),
             "copy_exchange_cycles": sum(s["exchange"] for s in cp), "copy_sync_cycles": sum(s["sync"] for s in cp),
             "control_cycles": rep.control_cycles}
        r["rest_cycles"] = r["cycles"] - r["copy_exchange_cycles"] - r["copy_sync_cycles"] - r["control_cycles"]
        res["outlined" if fn else "inline"] = r
        print(f"{'outlined' if fn else 'inline':9s} {r['ms']:.3f} ms ({r['cycles']:,.0f} cycles), {r['vertices']:,} vertices; "
              f"{r['copies']:,} copies: {r['copy_exchange_cycles']:,.0f} cycles of exchange, {r['copy_sync_cycles']:,.0f} "
              f"of syncs; calls' control {r['control_cycles']:,.0f}; the rest {r['rest_cycles']:,.0f} cycles")
    return {"copy_breakdown": res}


def _figures(rep) -> dict:
    f = key_figures(rep)
    f.update(prefill_x_bound=rep["prefill"]["x_bound"], decode_x_bound=rep["decode"]["x_bound"])
    return f


def extrapolate(cfg, a, kw) -> dict:
    """generate() at A and B layers, each figure extended linearly to the model's layers
    (:func:`simulator.generate.generate_by_layers`)."""
    A, B = (int(x) for x in a.extrapolate.split(","))
    r = generate_by_layers(cfg, a.prompt_len, a.new_tokens, layers=(A, B), samples=a.samples, kv_cache=a.kv_cache)
    for n, f in r["at"].items():
        print(f"layers    {n}: " + ", ".join(f"{k} {v:,.6g}" for k, v in f.items()))
    e = r["estimate"]
    print(f"estimate  all {r['layers_total']} layers (linear from {A} and {B}): time to first token "
          f"{e['time_to_first_token_s'] * 1e3:,.3f} ms, {e['time_per_output_token_s'] * 1e3:,.3f} ms per token, "
          f"{e['tokens_per_s']:,.0f} tokens/s ({e['tokens_per_s_per_chip']:,.1f} per chip), peak tile prefill "
          f"{e['prefill_peak_tile_bytes']:,.0f} B, decode {e['decode_peak_tile_bytes']:,.0f} B: "
          f"{'fits' if e['fits'] else 'does not fit'}")
    return r


if __name__ == "__main__":
    main()
