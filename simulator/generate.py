"""LLM generation: a prefill program, then decode steps against a KV cache, on one chip or several.

:func:`generate` compiles and simulates two kinds of program of a decoder (a built-in or a
``config.json``, models/transformers.py):

* **prefill**: the ``prompt_len`` tokens of each of ``batch`` sequences in one forward
  pass; it writes every layer's keys and values into the KV cache and gives each
  sequence's first new token (the head runs on the last position only);
* **decode step**: one new token per sequence at position ``past``: its keys and values are
  written into the cache at that position (``KVCacheWrite``, in place) and its attention
  reads the ``past + 1`` cached positions.

The KV cache is a state tensor of both programs (always live), sized for its maximum
length ``prompt_len + new_tokens`` from the start: the memory report and "fits" are those of
the full cache.  A decode step's time grows with the cache it reads, so the step is
simulated at a few cache lengths (``samples``, spread from the first step to the last) and
the others are interpolated linearly; ``new_tokens - 1`` decode steps follow the prefill
(the prefill gives the first new token).  Time to first token is the prefill; time per
output token the mean decode step; tokens per second ``batch x (new_tokens - 1)`` over the
decode time (and over prefill + decode, end to end).

On several chips (``ipus`` > 1, mode ``tensor``, ``pipeline``, ``pipeline+tensor``, ``expert``
or ``pipeline+expert``) both programs run through :func:`simulator.multichip.run_multichip`:
with tensor parallelism each chip compiles its slice (``heads / T`` of the attention, so
``kv_heads / T`` of the KV cache) and every layer's two all-reduces are timed on the links
inside the step; with expert parallelism (a mixture of experts) each chip holds ``experts / X``
whole experts and ``batch / X`` of the sequences (their KV cache), and every MoE layer's
dispatch and combine all-to-alls are timed on the links inside the step; a program's time is
the multi-chip step (host I/O overlapped, as measured), and the report says per chip what it
holds.

The decoder layers are outlined (``cfg.functions``, the default; ``--no-functions`` inlines
them): each program lowers a layer once as graph functions and calls them for every layer,
the layer's inputs and weights copied in per call (compiler/lower.py).  A layer's KV cache
stays its own persistent tensor: the ops on it (the cache writes, and a decode step's
attention against the cache) stay in the caller, one copy per layer, between a function for
what comes before them and one for what comes after (``Lowering._state_parts``), so only
the new keys and values cross from a function's tensors into the cache
(docs/transformers.md measures this against copying the cache in and back per call).

``kv_cache="streaming"`` keeps the cache in the streaming memory beside each chip
(:mod:`compiler.kvcache`): each program loads the cached positions it reads and stores the
ones it writes, timed at the streaming-memory rate.  Out of memory, the report says by how
much and :func:`suggestions` recompiles the failing programs with one change each (cache in
streaming memory, fewer new tokens, smaller batch, more chips).  :func:`generate_by_layers`
estimates a model too big to compile whole from two layer counts.

Beside every prediction, a physical lower bound: a program cannot be faster than the bytes
it must read from SRAM over the chip's SRAM bandwidth, nor than its FLOPs over the chip's
peak; ``x_bound`` is the prediction as a multiple of ``max`` of the two.  The bytes: every
weight once (of a mixture of experts, only the experts that ``batch x k`` tokens can reach:
``min(E, tokens x k) / E`` of the experts' weights; a chip of an expert-parallel group of ``X``
holds ``E / X`` experts, which the ``X x tokens x k`` choices of the group's tokens reach), plus,
for a decode step, the cache it
attends to.  The SRAM bandwidth per tile per cycle is each preset's published aggregate
(:data:`SRAM_BYTES_PER_S`) over its tiles and clock, times this chip's tiles and clock.  On
several chips each stage's chips read their slices at once (``M`` micro-batches: at least
``max(M x the slowest stage, the sum of the stages)``), and the step also cannot be faster
than its link bytes over all the chips' IPU-Links at once (``links_per_chip x
link_bytes_per_s`` each).
"""
from __future__ import annotations

import numpy as np

import models
from hardware.dtypes import DTYPE_BYTES
from models.expert_parallel import degree as expert_degree
from models.transformers import KV_CACHE_PLACEMENTS

from .config import ConfigError, RunConfig
from .multichip import kv_cache_bytes_per_tile
from .run import run

#: published SRAM ("In-Processor Memory") bandwidth per chip: preset -> (bytes/s, source)
SRAM_BYTES_PER_S = {
    "gc2": (45e12, "Graphcore C2 / Colossus MK1 IPU: 45 TB/s memory bandwidth per IPU"),
    "gc200": (47.5e12, "IPU-M2000 datasheet: 47.5 TB/s In-Processor-Memory bandwidth per GC200"),
    "bow": (65e12, "Bow-2000 datasheet: 65 TB/s In-Processor-Memory bandwidth per Bow IPU"),
}
_TILES_CLOCK = {"gc2": (1216, 1.6e9), "gc200": (1472, 1.325e9), "bow": (1472, 1.85e9)}

#: CHOSEN: decode cache lengths simulated (the rest interpolated); 3 catches a linear growth
DEFAULT_SAMPLES = 3


class GenerateError(ValueError):
    """A generate option or model is unusable; the message names the option."""


def sram_bandwidth(chip) -> tuple[float, str]:
    """Bytes/s the chip's tiles can read from their SRAM, and where the figure comes from: the
    preset's published bandwidth per tile per cycle (GC200's for another name) x this chip's
    tiles x clock."""
    base = chip.name if chip.name in SRAM_BYTES_PER_S else "gc200"
    bw, src = SRAM_BYTES_PER_S[base]
    t, clk = _TILES_CLOCK[base]
    per = bw / (t * clk)
    return chip.tiles * chip.clock_hz * per, f"{src}; {per:.1f} B per tile per cycle x {chip.tiles} tiles x " \
                                             f"{chip.clock_hz / 1e9:.3f} GHz"


def _positive(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise GenerateError(f"--{name.replace('_', '-')}: must be an integer >= 1, got {v!r}")
    return int(v)


def bytes_read(og, dtype) -> dict:
    """The bytes a forward program must read at least once: its weights (of a mixture of
    experts only the reachable experts) and the KV cache its attention reads."""
    b = DTYPE_BYTES[dtype]
    routes = [og.op(n) for n in og.ops() if og.op(n)["op"] == "TopKRoute"]
    reach = 1.0
    if routes:
        T, E = og.tensors[routes[0]["inputs"][0]].shape
        X = expert_degree(og)          # expert parallelism: E / X experts here, the group's tokens
        reach = min(E // X, X * T * int(routes[0]["attrs"]["k"])) / (E // X)
    weights = cache = 0.0
    for t in og.tensors.values():
        if t.kind == "param" and not t.inplace_of:
            weights += t.size * b * (reach if ".experts." in t.name else 1.0)
        elif t.kind == "state" and t.name.endswith(("k_cache", "v_cache")) and not t.inplace_of:
            cache += t.size * b
    return {"weights": weights, "cache": cache}


def streamed_bytes(og, dtype) -> float:
    """Bytes a program moves between the chip and the streaming memory for a KV cache kept
    there (compiler/kvcache.py): the cached positions its attention reads, the ones it writes."""
    b = DTYPE_BYTES[dtype]
    out = 0.0
    for n in og.ops():
        d = og.op(n)
        if d["op"] != "KVCacheWrite" or d["attrs"].get("placement") != "streaming":
            continue
        a = d["attrs"]
        t = og.tensors[d["inputs"][1]]
        axis = 2 if a["layout"] == "k" else 1
        out += t.size // t.shape[axis] * (int(a["position"]) + int(a["tokens"])) * b
    return float(out)


def streaming_bandwidth(chip) -> float:
    """Bytes/s between one chip and its streaming memory (its host link's where it has none)."""
    return chip.streaming_memory_bytes_per_s or chip.host_link_bytes_per_s


def _bound(og, report, chip, dtype, bw, cache_read: bool) -> dict:
    br = bytes_read(og, dtype)
    nbytes = br["weights"] + (br["cache"] if cache_read else 0.0)
    flops = float(og.flops())
    mem_s = nbytes / bw
    flop_s = flops / chip.peak_flops(_peak_dtype(dtype))
    sb = streamed_bytes(og, dtype)
    stream_s = sb / streaming_bandwidth(chip)
    bound = max(mem_s, flop_s, stream_s)
    s = report["sim"]["seconds"]
    return {"seconds": s, "cycles": report["sim"]["cycles"], "flops": flops, "bytes_read": nbytes,
            "streamed_bytes": sb, "bound_seconds": bound,
            "bound_by": max((("sram", mem_s), ("flops", flop_s), ("streaming", stream_s)), key=lambda x: x[1])[0],
            "x_bound": s / bound if bound > 0 else None,
            "fits": bool(report["memory"]["fits"]), "peak_tile_bytes": int(report["memory"]["peak_tile_bytes"]),
            "vertices": int(report["graph"]["vertices"])}


def _peak_dtype(dtype):
    return dtype if dtype in ("fp32", "fp16", "int8") else "fp16"


def link_bandwidth(chip) -> float:
    """Bytes/s one chip can send over all its IPU-Links at once."""
    return chip.links_per_chip * chip.link_bytes_per_s


def _bound_multichip(r, chip, dtype, bw, cache_read: bool) -> dict:
    """The bound of a program run on several chips (:func:`simulator.multichip.run_multichip`): a
    stage's chips read their own slices at once, ``M`` micro-batches each pass every stage, so
    the step takes at least ``max(M x max_s, sum_s)`` of a stage's SRAM (or FLOP) time; and at
    least the step's link bytes over all the chips' links at once."""
    rep, sim = r.report, r.multichip
    M = rep["multichip"]["micro_batches"]
    steps = rep["multichip"]["steps"]
    per = []
    for st in sim.part.stages:
        br = bytes_read(st.graph, dtype)
        per.append((br["weights"] + (br["cache"] if cache_read else 0.0), float(st.graph.flops()),
                    streamed_bytes(st.graph, dtype)))
    by = lambda i: max(M * max(p[i] for p in per), sum(p[i] for p in per))   # noqa: E731
    nbytes, flops = by(0), by(1)
    mem_s = nbytes / bw
    flop_s = flops / chip.peak_flops(_peak_dtype(dtype))
    stream_s = by(2) / streaming_bandwidth(chip)     # each chip streams its own slice
    chips = rep["chip"]["ipus"]
    link_b = rep["sim"]["link_bytes"] / steps
    link_s = link_b / (chips * link_bandwidth(chip)) if chips > 1 and link_bandwidth(chip) > 0 else 0.0
    bound = max(mem_s, flop_s, link_s, stream_s)
    s = rep["sim"]["step_seconds"]
    stages = rep["multichip"]["per_stage"]
    tp = rep["multichip"].get("tensor_parallel", {})
    ep = rep["multichip"].get("expert_parallel", {})
    return {"seconds": s, "cycles": rep["sim"]["step_cycles"], "flops": flops, "bytes_read": nbytes,
            "link_bytes": link_b, "streamed_bytes": M * sum(p[2] for p in per) * rep["chip"]["ipus"] / max(len(per), 1),
            "bound_seconds": bound,
            "bound_by": max((("sram", mem_s), ("flops", flop_s), ("links", link_s), ("streaming", stream_s)),
                            key=lambda x: x[1])[0],
            "x_bound": s / bound if bound > 0 else None,
            "allreduce_seconds": tp.get("allreduce_seconds_per_step", 0.0),
            "allreduces_per_layer": 2 if tp else 0,
            "all_to_all_seconds": ep.get("all_to_all_seconds_per_step", 0.0),
            "all_to_alls_per_layer": 2 if ep else 0,
            "fits": bool(rep["memory"]["fits"]), "peak_tile_bytes": int(rep["memory"]["peak_tile_bytes"]),
            "vertices": int(sum(st["vertices"] for st in stages)),
            "per_chip": [dict(st["memory"].get("holds", {}), stage=st["stage"], ipus=st["ipus"]) for st in stages]}


def cache_bytes(og, dtype) -> float:
    """Bytes of a program's KV cache (its ``*_cache`` state tensors, the unread rest included)."""
    return float(sum(t.size for t in og.tensors.values()
                     if t.kind == "state" and t.name.endswith(("_cache", "_cache.free")))) * DTYPE_BYTES[dtype]


def cache_bytes_per_tile(compiled) -> np.ndarray:
    """Bytes of the KV cache (every ``*_cache`` variable, the unread rest included) on each tile."""
    return kv_cache_bytes_per_tile(compiled.lowered.graph)


#: the modes generate runs on several chips
GENERATE_MODES = ("tensor", "pipeline", "pipeline+tensor", "expert", "pipeline+expert")


def generate(cfg: RunConfig, prompt_len: int, new_tokens: int, samples: int = DEFAULT_SAMPLES,
             kv_cache: str = "sram") -> dict:
    """Prefill + ``new_tokens - 1`` decode steps of ``cfg.model`` on one chip or several (see the
    module doc).  ``cfg.batch`` sequences of ``prompt_len`` tokens; ``kv_cache``: ``"sram"`` or
    ``"streaming"`` (compiler/kvcache.py); returns the report (plain values)."""
    P, N = _positive("prompt_len", prompt_len), _positive("new_tokens", new_tokens)
    samples = _positive("samples", samples)
    if kv_cache not in KV_CACHE_PLACEMENTS:
        raise GenerateError(f"--kv-cache: {kv_cache!r} is not one of {', '.join(KV_CACHE_PLACEMENTS)}")
    multi = cfg.multichip
    if multi and cfg.mode not in GENERATE_MODES:
        raise GenerateError(f"--mode: generate runs one copy of the model: on one chip, or with --ipus N in mode "
                            f"{', '.join(GENERATE_MODES)}; got --mode {cfg.mode}")
    if cfg.train:
        raise GenerateError("--train: generate is inference")
    kw = dict(cfg.model_kw or {})
    if "seq_len" in kw:
        raise GenerateError("--seq-len: the prompt is the sequence; give --prompt-len")
    for k in ("cache_len", "past", "last_logits"):
        kw.pop(k, None)
    kw["kv_cache"] = kv_cache
    chip = cfg.get_chip()
    dtype = cfg.dtype
    bw, bw_src = sram_bandwidth(chip)
    C = P + N
    T = cfg.tensor_degree
    X = cfg.expert_degree
    try:       # what the model allows: a decoder, prompt and new tokens within its positions
        probe = models.load(cfg.model, batch=1, model_kw=kw | dict(seq_len=1, cache_len=C, past=C - 1)
                            | ({"tensor_parallel": T} if T > 1 else {}) | ({"expert_parallel": X} if X > 1 else {}))
    except models.ModelError as e:
        msg = str(e)
        if "unknown option" in msg:
            raise GenerateError(f"{cfg.model}: not a decoder (generate needs GPT-2, Llama, Mixtral or a "
                                f"decoder config.json)") from None
        if "exceeds max_position_embeddings" in msg:
            raise GenerateError(f"--prompt-len {P} + --new-tokens {N}: {msg}") from None
        if "tensor_parallel" in msg:
            raise GenerateError(f"--ipus {cfg.ipus}: {msg}") from None
        if "expert_parallel" in msg:
            raise GenerateError(f"--mode {cfg.mode} --ipus {cfg.ipus}: {msg}") from None
        raise
    if "wpe.weight" in probe.tensors or any(t.endswith("attn_dropout.out") for t in probe.tensors):
        kw["dropout"] = 0.0        # eval mode: no dropout in generation
    base = cfg.replace(model_kw=None, seq_len=None)

    pre_cfg = base.replace(model_kw=kw | dict(seq_len=P, cache_len=C, last_logits=True))
    pre = run(pre_cfg)
    if multi:
        prefill = _bound_multichip(pre, chip, dtype, bw, cache_read=False)
        per_chip = prefill["per_chip"]
        cache_total = float(sum(h.get("kv_cache_bytes", 0) * len(h["ipus"]) for h in per_chip))
        cache_max = float(max(h.get("kv_cache_bytes_per_tile_max", 0) for h in per_chip))
        tiles = chip.tiles * pre.report["chip"]["ipus"]
        holding = None
        if kv_cache == "streaming":      # none of it in SRAM: its size from the stages' graphs (one
            T_of = pre.report["chip"]["ipus"] // max(len(pre.multichip.part.stages), 1)   # micro-batch's)
            cache_total = T_of * pre.report["multichip"]["micro_batches"] * \
                sum(cache_bytes(st.graph, dtype) for st in pre.multichip.part.stages)
    else:
        prefill = _bound(pre.compiled.opgraph, pre.report, chip, dtype, bw, cache_read=False)
        per_tile = cache_bytes_per_tile(pre.compiled)
        cache_total = float(per_tile.sum())
        cache_max = float(per_tile.max()) if per_tile.size else 0.0
        tiles = max(len(per_tile), 1)
        holding = int((per_tile > 0).sum())
        if kv_cache == "streaming":
            cache_total = cache_bytes(pre.compiled.opgraph, dtype)

    pasts = np.arange(P, P + N - 1)          # the decode steps' cache contents before each
    sampled = []
    if pasts.size:
        ls = np.unique(np.round(np.linspace(pasts[0], pasts[-1], min(samples, pasts.size))).astype(int))
        for L in ls:
            r = run(base.replace(model_kw=kw | dict(seq_len=1, cache_len=C, past=int(L), last_logits=True)))
            d = _bound_multichip(r, chip, dtype, bw, cache_read=True) if multi else \
                _bound(r.compiled.opgraph, r.report, chip, dtype, bw, cache_read=True)
            d["past"] = int(L)
            sampled.append(d)
        xs = [d["past"] for d in sampled]
        step_s = np.interp(pasts, xs, [d["seconds"] for d in sampled])
        bound_s = np.interp(pasts, xs, [d["bound_seconds"] for d in sampled])
        decode_s, decode_bound = float(step_s.sum()), float(bound_s.sum())
    else:
        decode_s = decode_bound = 0.0
    B = cfg.batch
    steps = int(pasts.size)
    fits = prefill["fits"] and all(d["fits"] for d in sampled)
    total = prefill["seconds"] + decode_s
    rep = {
        "model": str(pre.report["model"].get("name", cfg.model)), "chip": chip.name, "dtype": dtype,
        "batch": B, "prompt_len": P, "new_tokens": N, "params": _params_full(pre.report),
        "fits": bool(fits), "layers_outlined": bool(cfg.functions),
        "time_to_first_token_s": prefill["seconds"],
        "time_per_output_token_s": decode_s / steps if steps else None,
        "tokens_per_s": B * steps / decode_s if decode_s > 0 else None,
        "tokens_per_s_end_to_end": B * N / total if total > 0 else None,
        "total_s": total,
        "prefill": prefill,
        "decode": {"steps": steps, "sampled": sampled, "total_seconds": decode_s,
                   "bound_total_seconds": decode_bound,
                   "x_bound": decode_s / decode_bound if decode_bound > 0 else None},
        "kv_cache": {"placement": kv_cache, "max_tokens": C, "bytes": cache_total, "bytes_per_tile_max": cache_max,
                     "bytes_per_tile_mean": cache_total / tiles if kv_cache == "sram" else 0.0,
                     "tiles_holding": holding,
                     "streamed_bytes_per_step_max": max((d["streamed_bytes"] for d in sampled), default=0.0),
                     "streaming_bytes_per_s_per_chip": streaming_bandwidth(chip)},
        "limits": {"sram_bytes_per_s": bw, "sram_source": bw_src, "peak_flops": chip.peak_flops(_peak_dtype(dtype))},
    }
    if multi:
        rep["chips"] = {"ipus": cfg.ipus, "mode": cfg.mode, "tensor_parallel": T, "expert_parallel": X,
                        "stages": pre.report["multichip"]["stages"],
                        "micro_batches": pre.report["multichip"]["micro_batches"],
                        "per_chip": prefill.pop("per_chip"),
                        "link_bytes_per_s_per_chip": link_bandwidth(chip)}
        rep["tokens_per_s_per_chip"] = rep["tokens_per_s"] / cfg.ipus if rep["tokens_per_s"] else None
        for d in sampled:
            d.pop("per_chip", None)
    sram = chip.sram_bytes_per_tile
    if not fits:
        failing = [n for n, ok in (("prefill", prefill["fits"]), ("decode", all(d["fits"] for d in sampled))) if not ok]
        peaks = {"prefill": prefill["peak_tile_bytes"],
                 "decode": max((d["peak_tile_bytes"] for d in sampled), default=0)}
        rep["memory"] = {"sram_bytes_per_tile": sram, "failing": failing,
                         "over_by_bytes": {n: int(peaks[n] - sram) for n in failing},
                         "suggestions": suggestions(cfg, base, kw, P, N, kv_cache, failing) if cfg.suggest else []}
    return rep


def _params_full(report) -> int:
    """The whole model's parameters (a chip of a tensor- or expert-parallel group holds a slice)."""
    mc = report.get("multichip", {})
    for key in ("tensor_parallel", "expert_parallel"):
        if key in mc:
            return int(mc[key]["params_full_model"])
    return int(report["model"]["params"])


def model_layers(model, model_kw=None) -> int:
    """A decoder's layers (its repeated blocks), from its op graph at one token."""
    kw = {k: v for k, v in dict(model_kw or {}).items() if k not in ("seq_len", "cache_len", "past", "last_logits", "kv_cache")}
    og = models.load(model, batch=1, model_kw=kw | {"seq_len": 1})
    return len({og.op(n)["block"] for n in og.ops()} - {None})


def key_figures(rep) -> dict:
    """The figures of a generate report that :func:`generate_by_layers` extends (the decode
    step's all-reduce and all-to-all seconds: the mean of its sampled steps; 0 on one chip)."""
    d = rep["decode"]["sampled"]
    mean = lambda k: float(np.mean([s.get(k, 0.0) for s in d])) if d else 0.0   # noqa: E731
    return {"time_to_first_token_s": rep["time_to_first_token_s"],
            "time_per_output_token_s": rep["time_per_output_token_s"] or 0.0,
            "prefill_peak_tile_bytes": rep["prefill"]["peak_tile_bytes"],
            "decode_peak_tile_bytes": max((s["peak_tile_bytes"] for s in d), default=0),
            "kv_cache_bytes": rep["kv_cache"]["bytes"],
            "decode_allreduce_s": mean("allreduce_seconds"), "decode_all_to_all_s": mean("all_to_all_seconds")}


def generate_by_layers(cfg: RunConfig, prompt_len: int, new_tokens: int, layers=(1, 2),
                       samples: int = DEFAULT_SAMPLES, kv_cache: str = "sram") -> dict:
    """An ESTIMATE of :func:`generate` for a decoder too big to compile whole here: generate
    with ``A`` and with ``B`` of its layers (``layers=(A, B)``; pipelines: multiples of the
    stages) and extend each figure linearly to all its layers,
    ``f(L) = f(A) + (L - A) (f(B) - f(A)) / (B - A)``.  Its layers are identical, so each adds
    the same time (its compute, its all-reduces) and the same bytes per tile (weights, KV cache,
    its code and vertex state): llama-7b on 32 chips (tensor), batch 4, prompt 128, from 1 and
    2 layers to 8 measured whole, layers inlined: time to first token and per token within 0.1 %,
    decode peak tile -0.2 %, prefill peak tile -5 %; outlined (the default), from 2 and 3 layers
    to 32 whole: within 0.02 %, +1.0 %, -6.1 % (docs/transformers.md).  With outlined layers
    take A of at least 2 layers per stage: a lone layer is inlined (``warning`` says so).
    Returns ``{"layers_total", "layers": [A, B], "at": {A: figures, B: figures}, "estimate":
    figures | fits, tokens/s[, "warning"]}``."""
    A, B = (int(x) for x in layers)
    if not 1 <= A < B:
        raise GenerateError(f"layers: two layer counts 1 <= A < B, got {A}, {B}")
    L = model_layers(cfg.model, cfg.model_kw)
    if B > L:
        raise GenerateError(f"layers: {cfg.model} has {L} layers, fewer than {B}")
    at, stages = {}, 1
    for n in (A, B):
        rep = generate(cfg.replace(model_kw=dict(cfg.model_kw or {}) | {"layers": n}, suggest=False),
                       prompt_len, new_tokens, samples=samples, kv_cache=kv_cache)
        at[n] = key_figures(rep)
        stages = int((rep.get("chips") or {}).get("stages") or 1)
    est = {k: at[A][k] + (L - A) * (at[B][k] - at[A][k]) / (B - A) for k in at[A]}
    sram = cfg.get_chip().sram_bytes_per_tile
    est["fits"] = bool(max(est["prefill_peak_tile_bytes"], est["decode_peak_tile_bytes"]) <= sram)
    tpot = est["time_per_output_token_s"]
    est["tokens_per_s"] = cfg.batch / tpot if tpot > 0 else None
    est["tokens_per_s_per_chip"] = est["tokens_per_s"] / cfg.ipus if tpot > 0 else None
    out = {"model": str(cfg.model), "layers_total": L, "layers": [A, B], "at": at, "estimate": est,
           "method": "linear in the layers, from two compiled layer counts"}
    if cfg.functions and A < 2 * stages:
        out["warning"] = (f"{A} layer(s) on {stages} stage(s) leave a stage one layer, which is inlined (a block "
                          "that occurs once is not outlined), and the line from it to the outlined layers is off "
                          "(gpt2: +10 % per token from 1 and 2 layers, exact from 2 and 3): take at least 2 layers "
                          "per stage, or --no-functions")
    return out


def format_estimate(r: dict) -> str:
    """A :func:`generate_by_layers` result as the command line prints it."""
    A, B = r["layers"]
    e = r["estimate"]
    lines = [f"estimate  {r['model']}: all {r['layers_total']} layers, extended linearly from {A} and {B} "
             f"compiled (an estimate)"]
    if r.get("warning"):
        lines.append(f"warning   {r['warning']}")
    for n, f in r["at"].items():
        lines.append(f"layers    {n}: first token {_t(f['time_to_first_token_s'])}, "
                     f"{_t(f['time_per_output_token_s'])} per token, peak tile prefill "
                     f"{f['prefill_peak_tile_bytes']:,} B, decode {f['decode_peak_tile_bytes']:,} B")
    tps = e.get("tokens_per_s")
    lines += [f"fits      {'yes' if e['fits'] else 'NO'} (peak tile: prefill {e['prefill_peak_tile_bytes']:,.0f} B, "
              f"decode {e['decode_peak_tile_bytes']:,.0f} B)",
              f"KV cache  {_b(e['kv_cache_bytes'])}",
              f"prefill   {_t(e['time_to_first_token_s'])} = time to first token",
              f"tokens    {_t(e['time_per_output_token_s'])} per output token"
              + (f", {tps:,.1f} tokens/s decoding ({e['tokens_per_s_per_chip']:,.1f} per chip)" if tps else "")]
    return "\n".join(lines)


#: halvings of --new-tokens / --batch tried at most by :func:`suggestions`
MAX_HALVINGS = 3


def _peaks(cfg, kw, P, N, which) -> dict:
    """Peak tile bytes of the programs in ``which`` (``prefill``; ``decode``: its last step, the
    longest cache) of one variant, compiled (several chips: also simulated)."""
    C = P + N
    out = {}
    if "prefill" in which:
        r = run(cfg.replace(model_kw=kw | dict(seq_len=P, cache_len=C, last_logits=True)), simulate=False)
        out["prefill"] = int(r.report["memory"]["peak_tile_bytes"])
    if "decode" in which and N > 1:
        r = run(cfg.replace(model_kw=kw | dict(seq_len=1, cache_len=C, past=C - 2, last_logits=True)),
                simulate=False)
        out["decode"] = int(r.report["memory"]["peak_tile_bytes"])
    return out


def _more_chips(cfg) -> list:
    """``(label, config)`` of twice and four times the chips, in the mode that splits the model
    further (one chip: tensor)."""
    out = []
    for k in (2, 4):
        n = cfg.ipus * k
        try:
            if not cfg.multichip:
                o = cfg.replace(ipus=n, mode="tensor")
            elif cfg.mode == "tensor":
                o = cfg.replace(ipus=n, tensor_parallel=None)
            elif cfg.mode == "expert":
                o = cfg.replace(ipus=n, expert_parallel=None)
            else:
                o = cfg.replace(ipus=n)
            label = f"--ipus {n} --mode {o.mode}" + (f" --tensor-parallel {o.tensor_parallel}"
                                                      if o.tensor_parallel else "") + \
                (f" --expert-parallel {o.expert_parallel}" if o.expert_parallel else "")
        except ConfigError:
            continue
        out.append((label, o))
    return out


def suggestions(cfg, base, kw, P, N, kv_cache, failing) -> list:
    """What would fit, each recompiled: the programs that do not fit (``failing``) compiled again
    with one change: the KV cache in streaming memory, fewer new tokens (halved, the most that
    fit), a smaller batch (halved, the largest that fits), more chips.  Returns
    ``[{"option", "peak_tile_bytes": {program: bytes}, "fits"}]`` in that order."""
    sram = cfg.get_chip().sram_bytes_per_tile
    out = []

    def attempt(label, o, kw2, n_tokens=N):
        try:
            pk = _peaks(o, kw2, P, n_tokens, failing)
        except (ValueError, models.ModelError) as e:       # a variant the model refuses: say so
            out.append({"option": label, "fits": False, "error": str(e).splitlines()[0]})
            return False
        ok = bool(pk) and all(v <= sram for v in pk.values())
        out.append({"option": label, "peak_tile_bytes": pk, "fits": ok, "method": "recompiled"})
        return ok

    if kv_cache == "sram":
        attempt("--kv-cache streaming", base, kw | {"kv_cache": "streaming"})
    n = N
    for _ in range(MAX_HALVINGS):
        n //= 2
        if n < 1 or attempt(f"--new-tokens {n}", base, kw, n):
            break
    b = cfg.batch
    for _ in range(MAX_HALVINGS):
        b //= 2
        if b < 1:
            break
        try:
            o = base.replace(batch=b)
        except ConfigError:
            continue
        if attempt(f"--batch {b}", o, kw):
            break
    for label, o in _more_chips(base):
        if attempt(label, o, kw):
            break
    return out


def _t(s):
    return f"{s * 1e6:,.1f} us" if s < 1e-3 else f"{s * 1e3:,.3f} ms"


def _b(n):
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def format_generate(rep: dict) -> str:
    """The report as the command line prints it."""
    p, d, kv = rep["prefill"], rep["decode"], rep["kv_cache"]
    lines = [
        f"model     {rep['model']}: {rep['params'] / 1e6:,.2f} M params, {rep['dtype']}, batch {rep['batch']}, "
        f"prompt {rep['prompt_len']}, {rep['new_tokens']} new tokens, chip {rep['chip']}, layers "
        + ("outlined (graph functions; --no-functions inlines them)" if rep.get("layers_outlined") else "inlined"),
        f"fits      {'yes' if rep['fits'] else 'NO'} (peak tile: prefill {p['peak_tile_bytes']:,} B"
        + (f", decode {max(s['peak_tile_bytes'] for s in d['sampled']):,} B" if d["sampled"] else "") + ")",
        f"KV cache  {_b(kv['bytes'])} for {kv['max_tokens']} tokens x {rep['batch']} sequences: "
        + (f"{kv['bytes_per_tile_max']:,.0f} B per tile at most, {kv['bytes_per_tile_mean']:,.0f} mean"
           if kv.get("placement", "sram") == "sram" else
           f"in streaming memory, at most {_b(kv['streamed_bytes_per_step_max'])} streamed per decode step "
           f"({kv['streaming_bytes_per_s_per_chip'] / 1e9:,.1f} GB/s per chip)"),
        f"prefill   {_t(p['seconds'])} = time to first token ({p['x_bound']:.1f}x its bound "
        f"{_t(p['bound_seconds'])}, {p['bound_by']})",
    ]
    ch = rep.get("chips")
    if ch:
        X = ch.get("expert_parallel", 1)
        lines.insert(1, f"chips     {ch['ipus']} x {rep['chip']}, mode {ch['mode']}: {ch['stages']} stage(s) of "
                        f"{ch['tensor_parallel'] * X} chip(s), {ch['micro_batches']} micro-batch(es)"
                        + (f"; {X} expert-parallel chips, each with experts / {X} whole experts and "
                           f"{rep['batch'] // X} of the {rep['batch']} sequences" if X > 1 else ""))
        for i, h in enumerate(ch["per_chip"]):
            lines.insert(2 + i, f"chip      IPUs {h['ipus']} each hold weights {_b(h.get('weights_bytes', 0))}, KV cache "
                            f"{_b(h.get('kv_cache_bytes', 0))}, activations {_b(h.get('activations_bytes', 0))}, "
                            f"code {_b(h.get('code_bytes', 0))}")
    for s in d["sampled"]:
        extra = (f", all-reduces {_t(s['allreduce_seconds'])}" if s.get("allreduces_per_layer") else "") + \
            (f", all-to-alls {_t(s['all_to_all_seconds'])}" if s.get("all_to_alls_per_layer") else "") + \
            (f", links {_b(s['link_bytes'])}" if "link_bytes" in s else "")
        lines.append(f"decode    step at {s['past'] + 1} cached tokens: {_t(s['seconds'])} "
                     f"({s['x_bound']:.1f}x its bound {_t(s['bound_seconds'])}, {s['bound_by']}{extra})")
    mem = rep.get("memory")
    if mem:
        over = ", ".join(f"{n} by {b:,} B" for n, b in mem["over_by_bytes"].items())
        lines.append(f"memory    does not fit: over a tile's {mem['sram_bytes_per_tile']:,} B on the worst tile: {over}")
        for sg in mem["suggestions"]:
            if "error" in sg:
                lines.append(f"suggest   {sg['option']}: {sg['error']}")
                continue
            pk = ", ".join(f"{n} {b:,} B" for n, b in sg["peak_tile_bytes"].items())
            lines.append(f"suggest   {sg['option']}: {'fits' if sg['fits'] else 'does not fit'} (peak tile {pk}, "
                         f"recompiled)")
    if d["steps"]:
        lines.append(f"tokens    {_t(rep['time_per_output_token_s'])} per output token, "
                     f"{rep['tokens_per_s']:,.1f} tokens/s decoding, {rep['tokens_per_s_end_to_end']:,.1f} "
                     f"end to end ({d['steps']} decode steps, {d['x_bound']:.1f}x the bound)")
    return "\n".join(lines)


__all__ = ["generate", "format_generate", "GenerateError", "sram_bandwidth", "bytes_read", "SRAM_BYTES_PER_S",
           "ConfigError", "suggestions", "generate_by_layers", "model_layers", "format_estimate"]
