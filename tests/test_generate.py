"""LLM generation (simulator/generate.py): a prefill program and decode-step programs with a
KV cache that is a state tensor of the graph, written in place; time to first token, time
per token, tokens/s, the cache per tile, and the physical lower bound, which no prediction
beats."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ipusim_cli
from compiler.executable import compile_program
from compiler.lower import lower
from hardware.chips import gc2, gc200
from models import get_model
from models.opgraph import OpGraph
from simulator.config import RunConfig
from simulator.engine import Engine
from simulator.generate import GenerateError, format_generate, generate, sram_bandwidth

CHIP = gc200.replace(tiles=64)
GPT2_SMALL = dict(layers=2, hidden=64, heads=4, vocab=100, max_position=64)


def _gen(model, batch=2, P=16, N=6, model_kw=None, **kw):
    return generate(RunConfig(model=model, batch=batch, chip=CHIP, dtype="fp16", model_kw=model_kw), P, N, **kw)


def test_generate_reports_first_token_time_per_token_and_the_cache():
    rep = _gen("llama-tiny", batch=2, P=16, N=6)
    assert rep["fits"] and rep["time_to_first_token_s"] == rep["prefill"]["seconds"] > 0
    d = rep["decode"]
    assert d["steps"] == 5 and [s["past"] for s in d["sampled"]] == [16, 18, 20]
    assert rep["time_per_output_token_s"] == pytest.approx(d["total_seconds"] / 5)
    assert rep["tokens_per_s"] == pytest.approx(2 * 5 / d["total_seconds"])
    assert rep["tokens_per_s_end_to_end"] == pytest.approx(2 * 6 / (rep["prefill"]["seconds"] + d["total_seconds"]))
    # llama-tiny: 2 layers, 2 key-value heads of 32, fp16; keys and values of 22 tokens x 2 sequences
    kv = rep["kv_cache"]
    assert kv["bytes"] == 2 * 2 * 2 * 2 * 32 * 22 * 2 and kv["bytes_per_tile_max"] >= kv["bytes_per_tile_mean"] > 0
    # a longer cache is more to read
    reads = [s["bytes_read"] for s in d["sampled"]]
    assert reads == sorted(reads) and reads[0] < reads[-1]


@pytest.mark.parametrize("model, kw, batch", [("gpt2", GPT2_SMALL, 1), ("gpt2", GPT2_SMALL, 4),
                                              ("llama-tiny", None, 1), ("llama-tiny", None, 8),
                                              ("mixtral-tiny", None, 1), ("mixtral-tiny", None, 4)])
def test_no_prediction_beats_the_physical_bound(model, kw, batch):
    rep = _gen(model, batch=batch, P=8, N=4, model_kw=kw, samples=2)
    progs = [rep["prefill"]] + rep["decode"]["sampled"]
    for p in progs:
        assert p["bound_seconds"] > 0 and p["seconds"] >= p["bound_seconds"] and p["x_bound"] >= 1.0
    assert rep["decode"]["total_seconds"] >= rep["decode"]["bound_total_seconds"] > 0


def test_the_bound_counts_weights_cache_and_flops():
    rep = _gen("llama-tiny", batch=1, P=8, N=3, samples=1)
    step = rep["decode"]["sampled"][0]
    w = get_model("llama-tiny").params() * 2
    cache = 2 * 2 * 2 * 32 * (8 + 1) * 2          # layers x (k, v) x kv heads x hd x cached positions x fp16
    assert step["bytes_read"] == w + cache
    bw, _ = sram_bandwidth(CHIP)
    assert bw == pytest.approx(47.5e12 * 64 / 1472)
    assert step["bound_seconds"] == pytest.approx(max((w + cache) / bw, step["flops"] / CHIP.peak_flops("fp16")))


def test_a_prompt_beyond_the_positions_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(GenerateError, match=r"--prompt-len 250 \+ --new-tokens 10: .*exceeds max_position_embeddings 256"):
        _gen("llama-tiny", P=250, N=10)
    with pytest.raises(GenerateError, match="not a decoder"):
        _gen("bert-base", P=8, N=2, model_kw=dict(layers=1))
    assert ipusim_cli.main(["generate", "gpt2", "--prompt-len", "1000", "--new-tokens", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ipusim: error: --prompt-len 1000 + --new-tokens 100") and len(err.splitlines()) == 1


def test_command_line_generate_writes_its_report(tmp_path, capsys):
    chip = tmp_path / "small.toml"
    chip.write_text('base = "gc200"\ntiles = 64\n')
    out = tmp_path / "gen.json"
    assert ipusim_cli.main(["generate", "llama-tiny", "--prompt-len", "8", "--new-tokens", "3", "--batch", "2",
                            "--chip", str(chip), "--dtype", "fp16", "--samples", "2", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["prompt_len"] == 8 and rep["decode"]["steps"] == 2 and rep["tokens_per_s"] > 0
    text = capsys.readouterr().out
    assert "time to first token" in text and "per output token" in text and "KV cache" in text


@pytest.mark.parametrize("layout", ["k", "v"])
def test_cache_write_puts_each_token_at_its_position(layout):
    """Keys are stored (B kv, hd, L), values (B kv, L, hd); tokens 2..6 of two sequences, 3 heads."""
    B, KV, hd, S, L, pos = 2, 3, 20, 5, 9, 2
    shape = (B * KV, hd, L) if layout == "k" else (B * KV, L, hd)
    g = OpGraph("kv")
    g.add_tensor("x", (B * S, KV * hd), kind="input")
    g.add_tensor("c", shape, kind="state")
    g.add_tensor("c.new", shape, kind="state", inplace_of="c")
    g.add_op("w", "KVCacheWrite", ["x", "c"], ["c.new"], family="gather",
             attrs=dict(layout=layout, position=pos, tokens=S, kv_heads=KV, head_dim=hd))
    low = lower(g, gc2.replace(tiles=4))
    rng = np.random.default_rng(0)
    x, c0 = rng.standard_normal((B * S, KV * hd)), rng.standard_normal(shape)
    eng = Engine(compile_program(low.graph, low.program), functional=True, inputs={"x": [x.ravel()]})
    eng.write(low.acts["c"].tensor, c0.ravel())
    eng.run()
    want = c0.copy()
    xs = x.reshape(B, S, KV, hd).transpose(0, 2, 1, 3).reshape(B * KV, S, hd)
    if layout == "k":
        want[:, :, pos:pos + S] = xs.transpose(0, 2, 1)
    else:
        want[:, pos:pos + S, :] = xs
    assert np.allclose(eng.read(low.acts["c"].tensor).reshape(shape), want)


def test_out_of_memory_says_by_how_much_and_what_would_fit():
    chip = gc200.replace(tiles=8)
    cfg = RunConfig(model="llama-tiny", batch=48, dtype="fp16", chip=chip)
    rep = generate(cfg, 8, 120, samples=1)
    sram = chip.sram_bytes_per_tile
    mem = rep["memory"]
    assert not rep["fits"] and mem["failing"] == ["prefill"]
    assert mem["over_by_bytes"] == {"prefill": rep["prefill"]["peak_tile_bytes"] - sram} and mem["over_by_bytes"]["prefill"] > 0
    by = {s["option"]: s for s in mem["suggestions"]}
    assert set(by) == {"--kv-cache streaming", "--new-tokens 60", "--batch 24", "--ipus 2 --mode tensor"}
    for s in mem["suggestions"]:        # each recompiled: fits exactly when its programs fit a tile
        assert s["method"] == "recompiled" and s["fits"] == all(v <= sram for v in s["peak_tile_bytes"].values())
    assert all(s["fits"] for s in mem["suggestions"])
    # the suggestion is what a run with that option reports
    again = generate(cfg.replace(batch=24, suggest=False), 8, 120, samples=1)
    assert again["fits"] and again["prefill"]["peak_tile_bytes"] == by["--batch 24"]["peak_tile_bytes"]["prefill"]
    text = format_generate(rep)
    assert "over a tile's 638,976 B on the worst tile: prefill by" in text and "suggest   --kv-cache streaming: fits" in text
    assert generate(cfg.replace(suggest=False), 8, 120, samples=1)["memory"]["suggestions"] == []


def test_generate_by_layers_extends_two_layer_counts_to_all():
    from simulator.generate import generate_by_layers
    kw = dict(GPT2_SMALL, layers=4)
    cfg = RunConfig(model="gpt2", batch=2, chip=CHIP, dtype="fp16", model_kw=kw)
    # layers outlined (the default): from 2 and 3 layers, both called as functions (a single
    # layer's worst tile is another tile, where the function's argument copies of its weights lie)
    est = generate_by_layers(cfg, 8, 4, layers=(2, 3), samples=2)
    assert est["layers_total"] == 4 and sorted(est["at"]) == [2, 3]
    whole = generate(cfg, 8, 4, samples=2)
    e = est["estimate"]
    assert e["time_to_first_token_s"] == pytest.approx(whole["time_to_first_token_s"], rel=0.03)
    assert e["time_per_output_token_s"] == pytest.approx(whole["time_per_output_token_s"], rel=0.03)
    assert e["kv_cache_bytes"] == whole["kv_cache"]["bytes"]
    assert e["decode_peak_tile_bytes"] == pytest.approx(max(s["peak_tile_bytes"] for s in whole["decode"]["sampled"]),
                                                        rel=0.1)
    with pytest.raises(GenerateError, match="gpt2 has 4 layers, fewer than 6"):
        generate_by_layers(cfg, 8, 4, layers=(2, 6))
    # the cache in streaming memory counts its layers the same way (it once refused: a streamed
    # cache needs a cache length, which counting the layers does not give)
    from simulator.generate import model_layers
    assert model_layers("gpt2", dict(kw, kv_cache="streaming")) == 4


def test_command_line_estimate_layers(tmp_path, capsys):
    chip = tmp_path / "small.toml"
    chip.write_text('base = "gc200"\ntiles = 64\n')
    out = tmp_path / "est.json"
    args = ["generate", "gpt2", "--prompt-len", "8", "--new-tokens", "3", "--chip", str(chip), "--dtype", "fp16",
            "--samples", "2", "--json", str(out)]
    assert ipusim_cli.main(args + ["--estimate-layers", "1,2"]) == 0
    rep = json.loads(out.read_text())
    assert rep["layers_total"] == 12 and rep["layers"] == [1, 2] and sorted(rep["at"]) == ["1", "2"]
    text = capsys.readouterr().out
    assert "all 12 layers, extended linearly from 1 and 2 compiled (an estimate)" in text
    assert "warning   1 layer(s) on 1 stage(s) leave a stage one layer, which is inlined" in text   # outlined
    assert "warning" in rep
    assert ipusim_cli.main(args + ["--estimate-layers", "2,40"]) == 2
    assert capsys.readouterr().err.strip() == "ipusim: error: --estimate-layers: gpt2 has 12 layers, fewer than 40"
    assert ipusim_cli.main(args + ["--estimate-layers", "one"]) == 2
    assert "--estimate-layers: two layer counts A,B (e.g. 1,2), got 'one'" in capsys.readouterr().err


@pytest.mark.parametrize("mode,kw", [("pipeline", {}), ("pipeline+tensor", dict(tensor_parallel=2))])
def test_a_pipeline_holds_every_micro_batchs_kv_cache(mode, kw):
    """Each micro-batch's sequences have their own KV cache, held on the stage all along: the
    cache in all is the one chip's (it was 1 / M of it), and each stage's memory counts it M
    times (the stage graph holds one micro-batch's)."""
    from simulator.run import run
    B, P, N = 8, 16, 4
    one = generate(RunConfig(model="llama-tiny", batch=B, dtype="fp16"), P, N, samples=1)
    ipus = 4 if kw else 2
    cfg = RunConfig(model="llama-tiny", batch=B, dtype="fp16", ipus=ipus, mode=mode, **kw)
    pipe = generate(cfg, P, N, samples=1)
    M = pipe["chips"]["micro_batches"]
    assert M == 4 and pipe["kv_cache"]["bytes"] == one["kv_cache"]["bytes"]
    r = run(cfg.replace(model_kw=dict(seq_len=P, cache_len=P + N, last_logits=True)), simulate=False)
    for st, stage in zip(r.report["multichip"]["per_stage"], r.multichip.part.stages):
        own = sum(t.size for t in stage.graph.tensors.values() if t.kind == "state" and t.name.endswith("_cache")) * 2
        assert st["memory"]["holds"]["kv_cache_bytes"] == M * own
        assert "other_micro_batches_kv_cache" in st["memory"]["worst_tiles"][0]     # in the tiles' bytes
    streaming = generate(cfg, P, N, samples=1, kv_cache="streaming")
    assert streaming["kv_cache"]["bytes"] == one["kv_cache"]["bytes"]


# -- outlined decoder layers (graph functions) and their KV caches -------------------------------
def _decoder(model, L, past):
    """A small decoder's prefill (past 0: 8 prompt tokens) or decode step (one token after ``past``)."""
    kw = dict(GPT2_SMALL, layers=L, dropout=0.0) if model == "gpt2" else dict(layers=L)
    step = dict(seq_len=1, past=past) if past else dict(seq_len=8)
    import models
    return models.load(model, batch=2, model_kw=dict(kw, cache_len=12, last_logits=True, **step))


def _caches(g):
    return [t for t, v in g.tensors.items() if v.kind == "state" and t.endswith(("k_cache", "v_cache"))]


@pytest.mark.parametrize("model", ["gpt2", "llama-tiny"])
@pytest.mark.parametrize("past", [0, 5])
def test_outlined_layers_write_each_layers_own_cache_exactly(model, past):
    """Layers outlined as graph functions compute what the inline layers compute, bit for bit: the
    logits and every layer's cache, each its own tensor, written at this step's positions (the
    template layer's cache used to take every layer's keys and values)."""
    g = _decoder(model, 3, past)
    rng = np.random.default_rng(0)
    inputs, values = {}, {}
    for t in g.tensors.values():
        if t.producer is not None or t.inplace_of:
            continue
        if t.kind == "input":
            inputs[t.name] = [rng.integers(0, 50, t.size)]
        elif t.kind in ("param", "state"):
            values[t.name] = rng.standard_normal(t.size) * 0.1
        elif t.kind == "constant" and t.data is not None:
            values[t.name] = np.asarray(t.data, float).ravel()
    caches = _caches(g)
    assert len(caches) == 6
    got = []
    for fn in (False, True):
        low = lower(g, CHIP, functional=True, use_functions=fn)
        assert bool(low.calls) == fn and len({low.acts[c].var for c in caches}) == 6
        eng = Engine(compile_program(low.graph, low.program), functional=True, inputs=inputs)
        for n, v in values.items():
            eng.write(low.acts[n].tensor, v)
        eng.run()
        got.append({n: eng.read(low.acts[n].tensor).ravel()[: g.tensors[n].size].copy()
                    for n in list(g.outputs) + caches})
    inline, outlined = got
    for n in inline:
        assert np.array_equal(inline[n], outlined[n]), n
    for c in caches:        # written: this step's positions changed, the cached ones kept
        assert not np.allclose(outlined[c], values[c], atol=1e-6)
        assert np.isclose(outlined[c], values[c], atol=1e-6).sum() >= (g.tensors[c].size * past) // (past + 1)


@pytest.mark.parametrize("model", ["gpt2", "llama-tiny"])
@pytest.mark.parametrize("past", [0, 5])
def test_outlined_layers_time_as_inline_plus_their_copies_and_never_copy_a_cache(model, past):
    """The outlined program runs the inline program's supersteps (the same cycles, within 0.1 %:
    0.00 to 0.06 % measured), plus the copies of each call's inputs and the calls' control; no copy reads or writes a KV
    cache: the caller writes each layer's cache from the function's keys and values."""
    from compiler.program import Copy, walk
    g = _decoder(model, 4, past)
    reps = {}
    for fn in (False, True):
        low = lower(g, CHIP, dtype="fp16", use_functions=fn)
        exe = compile_program(low.graph, low.program)
        reps[fn] = rep = Engine(exe, CHIP).run()
        rep.copy_cycles = sum(s["sync"] + s["exchange"] for s in rep.steps if s["name"] == "copy")
        rep.vertices = low.graph.num_vertices
        cache_vars = {low.acts[c].var for c in _caches(g)}
        copied = {low.graph.variable(t).id for p in walk(low.program) if isinstance(p, Copy)
                  for t in (p.src, p.dst) if hasattr(t, "elements")}
        assert not copied & {low.graph.variables[v].id for v in cache_vars}
    inline, outlined = reps[False], reps[True]
    assert inline.copy_cycles == 0 and outlined.copy_cycles > 0 and outlined.control_cycles > 0
    # the same work (the decode attention of a layer, in the caller, reads the function's queries,
    # placed as the template layer's: llama-tiny's plan differs by a few vertices)
    assert outlined.vertices_executed == pytest.approx(inline.vertices_executed, rel=0.05)
    assert outlined.vertices < inline.vertices / 2
    assert outlined.cycles - outlined.copy_cycles - outlined.control_cycles == pytest.approx(inline.cycles, rel=1e-3)


def test_generate_outlines_the_layers_unless_no_functions(tmp_path, capsys):
    chip = tmp_path / "small.toml"
    chip.write_text('base = "gc200"\ntiles = 64\n')
    args = ["generate", "llama-tiny", "--prompt-len", "8", "--new-tokens", "3", "--chip", str(chip), "--dtype",
            "fp16", "--samples", "2"]
    reps = {}
    for flag in ([], ["--no-functions"]):
        out = tmp_path / f"r{len(flag)}.json"
        assert ipusim_cli.main(args + flag + ["--json", str(out)]) == 0
        reps[bool(flag)] = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "layers outlined (graph functions; --no-functions inlines them)" in text and "layers inlined" in text
    outlined, inline = reps[False], reps[True]
    assert outlined["layers_outlined"] and not inline["layers_outlined"]
    assert outlined["prefill"]["vertices"] < inline["prefill"]["vertices"]
    # the copies into the functions cost time (under 30 % on layers this tiny)
    for k in ("time_to_first_token_s", "time_per_output_token_s"):
        assert inline[k] < outlined[k] < 1.3 * inline[k]
    assert outlined["kv_cache"]["bytes"] == inline["kv_cache"]["bytes"]


def test_a_streamed_cache_works_with_outlined_layers():
    """The cache's loads and stores go around the caller's steps on it (no function touches it):
    the same bytes move as with inline layers."""
    cfg = RunConfig(model="llama-tiny", batch=2, chip=CHIP, dtype="fp16")
    outlined = generate(cfg, 8, 3, samples=2, kv_cache="streaming")
    inline = generate(cfg.replace(functions=False), 8, 3, samples=2, kv_cache="streaming")
    assert outlined["layers_outlined"] and not inline["layers_outlined"]
    for a, b in zip(outlined["decode"]["sampled"], inline["decode"]["sampled"]):
        assert a["streamed_bytes"] == b["streamed_bytes"] > 0
    assert outlined["kv_cache"]["streamed_bytes_per_step_max"] == inline["kv_cache"]["streamed_bytes_per_step_max"]
    assert outlined["time_to_first_token_s"] > inline["time_to_first_token_s"]
