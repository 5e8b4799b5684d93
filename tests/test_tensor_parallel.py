"""Tensor parallelism (--mode tensor, pipeline+tensor): each chip compiles its slice of a
transformer, the partial sums are all-reduced over the IPU-Links (models/tensor_parallel.py,
simulator/multichip.py)."""
import pytest

from models import ModelError, get_model
from models.tensor_parallel import allreduce_ops
from simulator.config import ConfigError, RunConfig
from simulator.links import Network
from simulator.run import run

SMALL = dict(seq_len=16)


def _tp(rep):
    return rep["multichip"]["tensor_parallel"]


def _replicated(g):
    """Parameters every chip holds whole: the norms (and GPT-2's position embedding, row-split biases)."""
    return sum(t.size for t in g.tensors.values() if t.kind == "param" and
               ("norm" in t.name or ".ln_" in t.name or t.name.startswith("ln_f") or t.name.startswith("wpe")
                or t.name.endswith(("o_proj.bias", "c_proj.bias", "block_sparse_moe.gate.weight"))))


@pytest.mark.parametrize("model,K", [("llama-tiny", 2), ("mixtral-tiny", 2), ("gpt2", 4)])
def test_per_chip_weights_are_a_slice(model, K):
    kw = dict(layers=2) if model == "gpt2" else {}
    full, one = get_model(model, **kw), get_model(model, tensor_parallel=K, **kw)
    rep = _replicated(full)
    vocab = full.tensors["wte.weight" if model == "gpt2" else "embed_tokens.weight"].shape[0]
    pad = (-vocab) % K * full.tensors["wte.weight" if model == "gpt2" else "embed_tokens.weight"].shape[1]
    untied = 0 if model == "gpt2" else pad      # the untied head is padded too
    assert one.params() == (full.params() - rep + pad + untied) // K + rep
    assert one.params() < full.params() / K * 1.1 + rep


def test_allreduce_bytes_per_layer_and_time_in_step():
    cfg = RunConfig(model="llama-tiny", ipus=2, mode="tensor", batch=2, dtype="fp16", **SMALL)
    rep = run(cfg).report
    tp = _tp(rep)
    tokens, hidden = 2 * 16, 128
    assert tp["allreduce_bytes_per_layer_fwd"] == 2 * tokens * hidden * 2
    # embedding + 2 per layer, forward only in inference
    assert tp["allreduces_per_micro_batch"] == {"fwd": 1 + 2 * 2, "bwd": 0}
    assert tp["allreduce_bytes_per_micro_batch"]["fwd"] == 5 * tokens * hidden * 2
    # all the link traffic of tensor mode is the ring all-reduces, timed as replication's
    steps = rep["multichip"]["steps"]
    assert rep["sim"]["link_bytes"] == Network.allreduce_bytes_per_chip(5 * tokens * hidden * 2, 2) * 2 * steps
    per = rep["sim"]["per_ipu"]
    assert [p["ipu"] for p in per] == [0, 1] and all(p["tensor_allreduce_cycles"] > 0 for p in per)
    stage = rep["multichip"]["per_stage"][0]
    assert rep["sim"]["step_cycles"] >= stage["fwd_cycles"] + per[0]["tensor_allreduce_cycles"] / steps
    assert stage["memory"]["holds"]["weights_bytes"] == tp["params_per_chip"][0] * 2


def test_tensor_trains_and_mirrors_allreduces():
    rep = run(RunConfig(model="llama-tiny", ipus=2, mode="tensor", batch=1, train=True, **SMALL)).report
    tp = _tp(rep)
    # forward: embedding, 2 per layer, the vocabulary-parallel loss statistics; backward: 2 per layer + head
    assert tp["allreduces_per_micro_batch"] == {"fwd": 6, "bwd": 5}
    assert rep["multichip"]["per_stage"][0]["bwd_cycles"] > 0 and rep["memory"]["fits"]


@pytest.mark.parametrize("model,kw", [("gpt2", dict(model_kw={"layers": 2}, seq_len=16)),
                                      ("bert-base", dict(model_kw={"layers": 2}, seq_len=16)),
                                      ("mixtral-tiny", SMALL)])
def test_tensor_inference_other_families(model, kw):
    rep = run(RunConfig(model=model, ipus=2, mode="tensor", batch=1, **kw)).report
    assert _tp(rep)["allreduces_per_micro_batch"]["fwd"] == 5
    assert rep["sim"]["seconds"] > 0 and rep["chip"]["ipus"] == 2


def test_pipeline_plus_tensor():
    cfg = RunConfig(model="llama-tiny", ipus=4, mode="pipeline+tensor", tensor_parallel=2, batch=2, **SMALL)
    assert cfg.layout() == (2, 1, 2) and cfg.tensor_degree == 2
    rep = run(cfg).report
    assert rep["multichip"]["stages"] == 2 and rep["chip"]["ipus"] == 4
    assert [s["ipus"] for s in rep["multichip"]["per_stage"]] == [[0, 1], [2, 3]]
    assert len(rep["sim"]["per_ipu"]) == 4
    assert _tp(rep)["allreduces_per_micro_batch"]["fwd"] == 5
    # stage 0 -> stage 1: each chip sends its copy of the activations to its peer
    assert {l["link"] for l in rep["multichip"]["links"]} >= {"link 0->2", "link 1->3", "link 0->1", "link 1->0"}


def test_refused_by_name():
    with pytest.raises(ModelError, match="more tensor-parallel chips than num_attention_heads 4"):
        get_model("llama-tiny", tensor_parallel=8)
    with pytest.raises(ModelError, match="tensor_parallel 3 does not divide num_attention_heads 4"):
        get_model("llama-tiny", tensor_parallel=3)
    with pytest.raises(ModelError, match="does not divide num_key_value_heads 2"):
        get_model("llama-tiny", tensor_parallel=4)
    with pytest.raises(ModelError, match="does not divide intermediate_size 3078"):
        get_model("gpt2", tensor_parallel=12, intermediate=3072 + 6)
    with pytest.raises(ValueError, match="more tensor-parallel chips than num_attention_heads 4"):
        run(RunConfig(model="llama-tiny", ipus=8, mode="tensor"))
    with pytest.raises(ValueError, match="mnist-mlp is not a transformer"):
        run(RunConfig(model="mnist-mlp", ipus=2, mode="tensor"))
    with pytest.raises(ConfigError, match="^tensor_parallel: needs --ipus N with --mode tensor"):
        RunConfig(model="gpt2", ipus=2, mode="pipeline", tensor_parallel=2)
    with pytest.raises(ConfigError, match="^tensor_parallel: --mode tensor splits every layer over all --ipus 4"):
        RunConfig(model="gpt2", ipus=4, mode="tensor", tensor_parallel=2)
    with pytest.raises(ConfigError, match="^tensor_parallel: 4 chips per group do not divide --ipus 6"):
        RunConfig(model="gpt2", ipus=6, mode="pipeline+tensor", tensor_parallel=4)


def test_allreduce_points_per_family():
    assert allreduce_ops(get_model("gpt2", layers=1, tensor_parallel=2)) == ["wte", "h.0.attn.o_proj", "h.0.mlp.c_proj"]
    assert allreduce_ops(get_model("bert-base", layers=1, tensor_parallel=2)) == [
        "embeddings.word_embeddings", "encoder.layer.0.attention.output.dense", "encoder.layer.0.output.dense"]


# -- generate on several chips ----------------------------------------------------------------
def _gen(ipus, mode, **kw):
    from simulator.generate import generate
    cfg = RunConfig(model="llama-tiny", batch=2, dtype="fp16", ipus=ipus, mode=mode, **kw)
    return generate(cfg, 16, 4, samples=2)


def test_generate_tensor_parallel_splits_the_cache_and_times_the_allreduces():
    rep = _gen(2, "tensor")
    ch = rep["chips"]
    assert ch["tensor_parallel"] == 2 and ch["per_chip"][0]["ipus"] == [0, 1]
    # llama-tiny: 2 layers, 2 key-value heads of 32; each chip caches 1 of them for 20 tokens x 2 sequences
    full = 2 * 2 * 2 * 2 * 32 * 20 * 2
    assert rep["kv_cache"]["bytes"] == full and ch["per_chip"][0]["kv_cache_bytes"] == full // 2
    assert rep["params"] == get_model("llama-tiny").params()
    for p in [rep["prefill"]] + rep["decode"]["sampled"]:
        assert p["allreduce_seconds"] > 0 and p["seconds"] > p["allreduce_seconds"]
        assert p["link_bytes"] > 0 and p["seconds"] >= p["bound_seconds"] > 0 and p["x_bound"] >= 1.0
    step = rep["decode"]["sampled"][0]
    # the decode step's all-reduces: embedding + 2 per layer of (batch x hidden) fp16, ring of 2
    assert step["link_bytes"] == Network.allreduce_bytes_per_chip(5 * 2 * 128 * 2, 2) * 2


def test_generate_pipeline_plus_tensor_and_refusals():
    from simulator.generate import GenerateError
    rep = _gen(4, "pipeline+tensor", tensor_parallel=2)
    assert rep["chips"]["stages"] == 2 and [h["ipus"] for h in rep["chips"]["per_chip"]] == [[0, 1], [2, 3]]
    assert all(p["x_bound"] >= 1.0 for p in [rep["prefill"]] + rep["decode"]["sampled"])
    with pytest.raises(GenerateError, match="^--ipus 8: llama-tiny: tensor_parallel 8: more tensor-parallel chips"):
        _gen(8, "tensor")
    with pytest.raises(GenerateError, match="^--mode: generate runs one copy"):
        _gen(2, "replicate")


def test_uneven_heads_compiles_the_busiest_chip():
    # GPT-2 XL's split in miniature: 25 heads (of 8 features) on 4 chips, refused unless uneven_heads
    kw = dict(layers=1, hidden=200, heads=25, intermediate=802, vocab=1000, max_position=64, seq_len=16)
    with pytest.raises(ModelError, match=r"tensor_parallel 4 does not divide num_attention_heads 25 "
                                         r"\(the model option uneven_heads=True, --uneven-heads, .* ceil\(25 / 4\) = 7\)"):
        get_model("gpt2", tensor_parallel=4, **kw)
    one = get_model("gpt2", tensor_parallel=4, uneven_heads=True, **kw)
    # the busiest chip: 7 heads x 8 = 56 q / k / v features, ceil(802 / 4) = 201 MLP features, 250 vocabulary rows
    assert one.tensors["h.0.attn.q_proj.weight"].shape == (56, 200)
    assert one.tensors["h.0.attn.o_proj.weight"].shape == (200, 56)
    assert one.tensors["h.0.mlp.c_fc.weight"].shape == (201, 200)
    assert one.tensors["wte.weight"].shape == (250, 200)
    # the busiest chip holds more than a K-th of what is split
    full = get_model("gpt2", **kw)
    rep_params = _replicated(full)
    assert one.params() > (full.params() - rep_params) / 4 + rep_params
    # grouped-query attention cannot be split unevenly: refused, and the message says why
    with pytest.raises(ModelError, match=r"tensor_parallel 3 does not divide num_attention_heads 4 \(uneven_heads "
                                         r"splits multi-head attention only; num_key_value_heads 2"):
        get_model("llama-tiny", tensor_parallel=3, uneven_heads=True)
    # through the multi-chip run: the all-reduces carry whole tokens x hidden partial sums
    # (--uneven-heads is the run option that sets the model option)
    rep = run(RunConfig(model="gpt2", ipus=4, mode="tensor", batch=1, model_kw=kw, uneven_heads=True)).report
    tp = _tp(rep)
    assert tp["params_per_chip"] == [one.params()] and tp["params_full_model"] == full.params()
    assert tp["allreduce_bytes_per_layer_fwd"] == 2 * 16 * 200 * 4
    assert tp["allreduces_per_micro_batch"]["fwd"] == 3
    with pytest.raises(ConfigError, match="^uneven_heads: splits heads over tensor-parallel chips; needs --ipus N"):
        RunConfig(model="gpt2", ipus=4, mode="pipeline", uneven_heads=True)
    with pytest.raises(ConfigError, match="^uneven_heads: must be true or false"):
        RunConfig(model="gpt2", ipus=4, mode="tensor", uneven_heads="yes")
