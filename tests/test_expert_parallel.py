"""Expert parallelism (--mode expert, pipeline+expert): each chip of a group of X holds
experts / X whole experts and batch / X of the sequences; a MoE layer's dispatch and combine
are all-to-alls over the IPU-Links (models/expert_parallel.py, simulator/links.py,
simulator/multichip.py)."""
import math

import pytest
import simpy

from hardware.chips import gc200
from hardware.dtypes import DTYPE_BYTES
from models import ModelError, get_model
from models.expert_parallel import all_to_all_ops
from simulator.config import ConfigError, RunConfig
from simulator.generate import GenerateError, generate
from simulator.links import Network
from simulator.run import run

S = 16                      # tokens per sequence
TINY = dict(E=4, k=2, hidden=128, inter=256, layers=2)   # mixtral-tiny's shapes


def _buffer_bytes(seqs_per_chip, tokens_per_seq=S, dtype="fp16", cf=1.25):
    """One all-to-all's buffer on one chip: experts x capacity x hidden elements, the capacity
    from the chip's own tokens (models/transformers.py _moe_mlp)."""
    C = max(1, math.ceil(cf * seqs_per_chip * tokens_per_seq * TINY["k"] / TINY["E"]))
    return TINY["E"] * C * TINY["hidden"] * DTYPE_BYTES[dtype]


def _a2a_cycles(chip, nbytes, X, degree):
    """links.Network.all_to_all by hand: nbytes / X on each link of the group at once (lanes =
    links_per_chip // the chip's neighbours), then the link latency and a cross-chip sync."""
    lanes = max(1, chip.links_per_chip // degree)
    return chip.cycles(nbytes / X / (lanes * chip.link_bytes_per_s)) + chip.cycles(chip.link_latency_s) + \
        chip.sync_cycles_multi_chip


def test_builder_holds_experts_over_x_and_marks_the_all_to_alls():
    full = get_model("mixtral-tiny")
    expert = 3 * TINY["hidden"] * TINY["inter"]            # w1, w3, w2 of one expert
    for X in (2, 4):
        g = get_model("mixtral-tiny", expert_parallel=X)
        assert g.tensors["layers.0.block_sparse_moe.experts.w2"].shape == (TINY["E"] // X, TINY["inter"],
                                                                          TINY["hidden"])
        assert g.params() == full.params() - TINY["layers"] * expert * TINY["E"] * (X - 1) // X
        assert len(all_to_all_ops(g)) == 2 * TINY["layers"]
    assert all_to_all_ops(full) == []


def test_bad_input_names_the_option_and_values():
    with pytest.raises(ModelError, match="expert_parallel 3 does not divide num_local_experts 4"):
        get_model("mixtral-tiny", expert_parallel=3)
    with pytest.raises(ModelError, match="llama-tiny: expert_parallel 2: the model has no experts"):
        get_model("llama-tiny", expert_parallel=2)
    with pytest.raises(ModelError, match="expert_parallel 2 with tensor_parallel 2"):
        get_model("mixtral-tiny", expert_parallel=2, tensor_parallel=2)
    with pytest.raises(ConfigError, match="batch: --mode expert .* micro-batch of 3 .* --expert-parallel 2"):
        RunConfig(model="mixtral-tiny", ipus=2, mode="expert", batch=3)
    with pytest.raises(ConfigError, match="expert_parallel: needs --ipus N with --mode expert"):
        RunConfig(model="mixtral-tiny", ipus=2, mode="tensor", expert_parallel=2, batch=2)
    with pytest.raises(ConfigError, match="expert_parallel: --mode expert spreads the experts over all --ipus 4"):
        RunConfig(model="mixtral-tiny", ipus=4, mode="expert", expert_parallel=2, batch=4)
    with pytest.raises(ConfigError, match="expert_parallel: 3 chips per group do not divide --ipus 4"):
        RunConfig(model="mixtral-tiny", ipus=4, mode="pipeline+expert", expert_parallel=3, batch=6)
    with pytest.raises(ValueError, match="expert_parallel: .*expert_parallel 3 does not divide num_local_experts 4"):
        run(RunConfig(model="mixtral-tiny", ipus=3, mode="expert", batch=3, seq_len=S))
    with pytest.raises(ValueError, match="bert-base is not a decoder with experts"):
        run(RunConfig(model="bert-base", ipus=2, mode="expert", batch=2, seq_len=S))
    with pytest.raises(ValueError, match="links_per_chip 1 .at most 2 chips per expert-parallel group"):
        run(RunConfig(model="mixtral-tiny", ipus=4, mode="expert", batch=4, seq_len=S,
                      chip=gc200.replace(links_per_chip=1)))
    with pytest.raises(GenerateError, match="--mode expert --ipus 2: llama-tiny: expert_parallel 2: the model has "
                                            "no experts"):
        generate(RunConfig(model="llama-tiny", ipus=2, mode="expert", batch=2), 4, 2)


def test_network_all_to_all_time_and_bytes():
    env = simpy.Environment()
    group = [0, 1, 2, 3]
    net = Network(env, gc200, [(a, b) for a in group for b in group if a != b])
    nbytes = 1_000_000
    p = env.process(net.all_to_all(group, nbytes))
    env.run()
    link_c, sync_c = p.value
    assert link_c + sync_c == pytest.approx(env.now)
    assert env.now == pytest.approx(_a2a_cycles(gc200, nbytes, 4, 3))
    assert all(l.bytes == nbytes // 4 for l in net.links.values())          # block j of chip i -> chip j
    assert sum(l.bytes for l in net.links.values()) == Network.all_to_all_bytes_per_chip(nbytes, 4) * 4


@pytest.mark.parametrize("mode", ["expert", "pipeline+expert"])
def test_memory_drops_link_bytes_match_and_step_includes_all_to_all(mode):
    batch, steps = 8, 2
    weights, peak = [], []
    one = run(RunConfig(model="mixtral-tiny", batch=batch, dtype="fp16", seq_len=S,
                        **({} if mode == "expert" else dict(ipus=2, mode="pipeline")))).report
    if mode == "expert":
        weights.append(one["model"]["params"] * 2)
        peak.append(one["memory"]["total_bytes"])
    else:
        st = one["multichip"]["per_stage"]
        weights.append(max(s["memory"]["holds"]["weights_bytes"] for s in st))
        peak.append(max(s["memory"]["total_bytes"] for s in st))
    for X in (2, 4):
        stages = 1 if mode == "expert" else 2
        cfg = RunConfig(model="mixtral-tiny", ipus=X * stages, mode=mode, batch=batch, dtype="fp16", seq_len=S,
                        **({} if mode == "expert" else dict(expert_parallel=X)))
        r = run(cfg)
        rep = r.report
        ep = rep["multichip"]["expert_parallel"]
        M = rep["multichip"]["micro_batches"]
        per_stage = rep["multichip"]["per_stage"]
        assert (ep["degree"], ep["experts_per_chip"], len(per_stage)) == (X, TINY["E"] // X, stages)
        weights.append(max(s["memory"]["holds"]["weights_bytes"] for s in per_stage))
        peak.append(max(s["memory"]["total_bytes"] for s in per_stage))
        # the link bytes: two all-to-alls per MoE layer, each chip sends (X - 1) / X of its buffer
        buf = _buffer_bytes(batch // M // X)
        assert ep["all_to_all_bytes_per_chip"] == [buf]
        assert ep["all_to_alls_per_micro_batch"]["fwd"] == 2 * TINY["layers"]
        per_mb = 2 * TINY["layers"] * (X - 1) / X * buf
        assert ep["link_bytes_sent_per_chip_per_micro_batch"] == pytest.approx(per_mb)
        assert ep["link_bytes_per_step"] == pytest.approx(per_mb * X * M)
        pipe = sum(t["bytes"] for t in rep["multichip"]["transfers"]) * X * M * steps   # stage to stage
        assert rep["sim"]["link_bytes"] == pytest.approx(per_mb * X * M * steps + pipe)
        # the step includes them: each all-to-all as the links model times it, inside the forward
        degree = X - 1 + (1 if stages > 1 else 0)          # the group's peers (+ the next stage's peer)
        a2a = 2 * TINY["layers"] * M * _a2a_cycles(cfg.get_chip(), buf, X, degree)
        if stages > 1:
            # the transfers to the next stage share the links
            assert ep["all_to_all_cycles_per_step"] >= a2a * (1 - 1e-9)
        else:
            assert ep["all_to_all_cycles_per_step"] == pytest.approx(a2a)
            assert rep["sim"]["step_cycles"] >= per_stage[0]["fwd_cycles"] + a2a
        slow = run(cfg.replace(chip=cfg.get_chip().replace(link_bytes_per_s=cfg.get_chip().link_bytes_per_s / 100)))
        ep2 = slow.report["multichip"]["expert_parallel"]
        grew = slow.report["sim"]["step_cycles"] - rep["sim"]["step_cycles"]
        # (a pipeline's stages run their all-to-alls at the same time: the step grows by one stage's)
        assert grew > 0.9 * (ep2["all_to_all_cycles_per_step"] - ep["all_to_all_cycles_per_step"]) / stages > 0
    assert weights[0] > weights[1] > weights[2]
    assert peak[0] > peak[1] > peak[2]


def test_generate_expert_parallel_caches_its_own_sequences():
    P, N, B = 8, 3, 4
    one = generate(RunConfig(model="mixtral-tiny", batch=B, dtype="fp16"), P, N, samples=1)
    two = generate(RunConfig(model="mixtral-tiny", batch=B, dtype="fp16", ipus=2, mode="expert"), P, N, samples=1)
    assert two["chips"]["expert_parallel"] == 2 and two["params"] == one["params"]
    held = two["chips"]["per_chip"][0]
    assert held["kv_cache_bytes"] * 2 == one["kv_cache"]["bytes"]       # B / 2 sequences each
    assert held["weights_bytes"] < one["params"] * 2
    step = two["decode"]["sampled"][0]
    assert step["all_to_alls_per_layer"] == 2 and step["all_to_all_seconds"] > 0
    buf = _buffer_bytes(B // 2, tokens_per_seq=1)
    assert step["link_bytes"] == pytest.approx(2 * TINY["layers"] * buf / 2 * 2)
    assert step["seconds"] >= step["bound_seconds"] and two["prefill"]["seconds"] >= two["prefill"]["bound_seconds"]


def test_training_mirrors_the_all_to_alls_and_all_reduces_the_replicated_gradients():
    X, batch = 2, 4
    rep = run(RunConfig(model="mixtral-tiny", ipus=X, mode="expert", batch=batch, seq_len=S, train=True,
                        optimizer="adam")).report
    ep = rep["multichip"]["expert_parallel"]
    steps = rep["multichip"]["steps"]
    assert ep["all_to_alls_per_micro_batch"] == {"fwd": 2 * TINY["layers"], "bwd": 2 * TINY["layers"]}
    buf = _buffer_bytes(batch // X, dtype="fp32")
    a2a = 4 * TINY["layers"] * (X - 1) / X * buf * X
    assert ep["link_bytes_per_step"] == pytest.approx(a2a)
    # everything but the chip's experts is data-parallel over the group: its gradients are all-reduced
    g = get_model("mixtral-tiny", expert_parallel=X, seq_len=S)
    local_experts = sum(t.size for t in g.tensors.values() if t.kind == "param" and ".experts." in t.name)
    assert ep["replicated_gradient_bytes"] == [(g.params() - local_experts) * 4]
    grads = Network.allreduce_bytes_per_chip((g.params() - local_experts) * 4, X) * X
    assert ep["gradient_allreduce_bytes_per_step"] == pytest.approx(grads)
    assert ep["gradient_allreduce_seconds_per_step"] > 0
    assert rep["sim"]["link_bytes"] == pytest.approx(steps * (a2a + grads))
    st = rep["multichip"]["per_stage"][0]
    assert rep["sim"]["step_cycles"] >= st["fwd_cycles"] + st["bwd_cycles"] + st["update_cycles"] + \
        ep["all_to_all_cycles_per_step"]


def test_pipeline_of_expert_groups_trains():
    X = 2
    rep = run(RunConfig(model="mixtral-tiny", ipus=2 * X, mode="pipeline+expert", expert_parallel=X, batch=8,
                        seq_len=S, train=True)).report
    ep = rep["multichip"]["expert_parallel"]
    assert ep["groups"] == 2 and ep["all_to_alls_per_micro_batch"] == {"fwd": 4, "bwd": 4}
    # one MoE layer per stage: its E / X experts are the chip's own, the rest is all-reduced over the group
    local = TINY["E"] // X * 3 * TINY["hidden"] * TINY["inter"]
    assert ep["replicated_gradient_bytes"] == [(p - local) * 4 for p in ep["params_per_chip"]]
    assert ep["gradient_allreduce_bytes_per_step"] == pytest.approx(
        sum(Network.allreduce_bytes_per_chip(b, X) * X for b in ep["replicated_gradient_bytes"]))
    assert rep["memory"]["fits"]
