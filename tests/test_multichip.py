"""Several chips: partition, links, sharding / pipelining / replication, sparse layers."""
import json
import re

import pytest
import simpy

from compiler.partition import even_vs_auto, partition, place
from models import get_model
from hardware.chips import gc200
from simulator.links import Network
from simulator.config import ConfigError, RunConfig
import simulator.multichip as mcm
from simulator.multichip import run_multichip, stage_cuts
from simulator.run import run


def _mlp(batch, train=True):
    return get_model("mnist-mlp", batch=batch, train=train)


def test_partition_covers_every_op_once_and_cuts_carry_tensors():
    og = _mlp(4)
    p = partition(og, 2, gc200, placement="even")
    ops = [o for s in p.stages for o in s.ops]
    assert sorted(ops) == sorted(og.graph.nodes)
    assert p.transfers and {t["phase"] for t in p.transfers} == {"fwd", "bwd"}
    for t in p.transfers:
        assert p.stages[t["dst"]].graph.tensors[t["tensor"]].kind == "input"
        assert t["tensor"] in p.stages[t["src"]].graph.outputs


def test_training_stage_keeps_its_layers_backward_and_update():
    p = partition(_mlp(4), 2, gc200, placement="even")
    for s in p.stages:
        layers = {s.graph.op(n)["layer"] for n in s.graph.graph if s.graph.op(n)["phase"] in ("bwd", "update")}
        fwd = {s.graph.op(n)["layer"] for n in s.graph.graph if s.graph.op(n)["phase"] == "fwd"}
        assert layers - {"loss"} <= fwd


def test_auto_placement_balances_better_than_even():
    # one heavy unit then many light ones: even by count puts the heavy one with others
    cyc = [100.0] + [10.0] * 9
    even = place(cyc, [0] * 10, [0] * 10, 2, 1e18, method="even")
    auto = place(cyc, [0] * 10, [0] * 10, 2, 1e18, method="auto")
    cost = lambda cuts: max(sum(cyc[a:b]) for a, b in zip(cuts, cuts[1:] + [10]))
    assert cost(auto) < cost(even)
    assert auto == [0, 1]


def test_auto_placement_avoids_cutting_where_much_data_crosses():
    # four equal layers; the boundary after the second carries far more bytes than the others
    cyc, act, par = [1.0] * 4, [0.0] * 4, [0.0] * 4
    assert place(cyc, act, par, 2, 1e9, method="auto") == [0, 2]          # balanced without link costs
    cut = [0.0, 0.5, 100.0, 0.5, 0.0]
    assert place(cyc, act, par, 2, 1e9, method="auto", cut=cut) in ([0, 1], [0, 3])
    # the crossing bytes come from the tensors a cut separates: an MLP's hidden activation
    from compiler.partition import _units, cut_cycles, legalise
    og = legalise(get_model("mnist-mlp", batch=8, train=True))
    units, of = _units(og)
    cc = cut_cycles(og, gc200, "fp32", units, of)
    assert cc[0] == 0 and cc[-1] == 0 and all(c > 0 for c in cc[1:-1])
    p = partition(og, 2, gc200, placement="auto")
    k = p.cuts[1]
    assert p.stages[0].est_cycles == pytest.approx(sum(p.unit_cycles[:k]) + cc[k])   # it pays its outgoing cut


def test_auto_placement_respects_memory_limit():
    cyc = [10.0] * 6
    mem = [5.0, 5.0, 5.0, 5.0, 1.0, 1.0]
    cuts = place(cyc, [0] * 6, mem, 2, 12.0, method="auto")
    b = cuts + [6]
    assert all(sum(mem[b[i]:b[i + 1]]) <= 12.0 for i in range(2))


def test_even_vs_auto_report_on_resnet():
    r = even_vs_auto(get_model("resnet50", batch=1, train=True), 4, gc200, micro_batches=4)
    assert r["auto"]["est_max_stage_cycles"] <= r["even"]["est_max_stage_cycles"]


def test_link_contention_serialises_transfers():
    env = simpy.Environment()
    net = Network(env, gc200, [(0, 1)])
    l = net.link(0, 1)
    for _ in range(2):
        env.process(l.transfer(1e6))
    env.run()
    one = gc200.cycles(1e6 / l.bytes_per_s)
    assert env.now == pytest.approx(2 * one + l.latency)
    assert l.wait_cycles == pytest.approx(one)


def test_ring_allreduce_sends_2_r_minus_1_over_r():
    env = simpy.Environment()
    R = 4
    net = Network(env, gc200, [(i, (i + 1) % R) for i in range(R)])
    env.process(net.allreduce(list(range(R)), 4e6))
    env.run()
    sent = sum(l.bytes for l in net.links.values())
    assert sent == pytest.approx(R * Network.allreduce_bytes_per_chip(4e6, R), rel=1e-6)


@pytest.fixture(scope="module")
def runs():
    # --batch is per replica: 16 samples per step over all the chips in every mode
    out = {}
    for mode, kw in [("shard", {"batch": 16}), ("pipeline", {"batch": 16, "micro_batches": 4}),
                     ("replicate", {"batch": 4}), ("pipeline+replicate", {"batch": 8, "replicas": 2, "micro_batches": 2})]:
        out[mode] = run_multichip(RunConfig(model="mnist-mlp", ipus=4, mode=mode, train=True, **kw))
    return out


def test_report_keys(runs, tmp_path):
    for mode, r in runs.items():
        s = r["sim"]
        for k in ("cycles", "samples_per_second", "per_ipu", "link_bytes", "host_bytes", "hidden_transfer_fraction"):
            assert k in s, (mode, k)
        assert len(s["per_ipu"]) == 4
        assert all(0 <= p["utilisation"] <= 1 for p in s["per_ipu"])
        assert 0 <= s["hidden_transfer_fraction"] <= 1
        assert s["host_bytes"] > 0 and s["samples_per_second"] > 0
    json.dumps({k: v for k, v in runs["pipeline"].items() if not k.startswith("_")}, default=str)


def test_throughput_is_samples_of_every_step_over_the_simulated_time(runs):
    for mode, r in runs.items():
        s, steps = r["sim"], r["multichip"]["steps"]
        assert s["seconds"] == pytest.approx(s["cycles"] / gc200.clock_hz)
        assert s["samples_per_second"] == pytest.approx(steps * 16 / s["seconds"]), mode
        assert s["step_cycles"] == pytest.approx(s["cycles"] / steps)


def test_every_replica_sees_its_share_of_the_batch(runs):
    for mode, r in runs.items():
        mc = r["multichip"]
        assert r["model"]["micro_batch"] * mc["replicas"] * mc["micro_batches"] == 16, mode


def test_host_bytes_are_every_samples_input_and_label_plus_one_loss_per_micro_batch(runs):
    # each step streams every sample's image (784 fp32) and label (int32) in, and the loss (one fp32)
    # of each micro-batch of each replica out: the modes change where the bytes go, not their sum
    for mode, r in runs.items():
        mc = r["multichip"]
        per_step = 16 * (784 * 4 + 4) + mc["replicas"] * mc["micro_batches"] * 4
        assert r["sim"]["host_bytes"] == mc["steps"] * per_step, mode


def test_allreduce_moves_the_ring_volume_of_the_gradients(runs):
    r = runs["replicate"]
    R = r["multichip"]["replicas"]
    grad = sum(st["grad_bytes"] for st in r["multichip"]["per_stage"])
    steps = r["multichip"]["steps"]
    assert r["sim"]["allreduce_bytes"] == pytest.approx(steps * R * Network.allreduce_bytes_per_chip(grad, R),
                                                        rel=1e-6)


def test_modes_shape(runs):
    assert runs["shard"]["multichip"]["stages"] == 4 and runs["shard"]["multichip"]["micro_batches"] == 1
    assert runs["replicate"]["multichip"]["replicas"] == 4 and runs["replicate"]["sim"]["allreduce_bytes"] > 0
    pr = runs["pipeline+replicate"]["multichip"]
    assert (pr["stages"], pr["replicas"], pr["micro_batches"]) == (2, 2, 2)
    assert runs["pipeline+replicate"]["sim"]["allreduce_bytes"] > 0
    assert runs["pipeline"]["sim"]["link_bytes"] > 0


def test_shard_runs_one_chip_at_a_time(runs):
    r = runs["shard"]["sim"]
    busy = sum(p["busy_cycles"] for p in r["per_ipu"])
    assert busy <= r["cycles"] * 1.001     # no two chips work at once


def test_pipeline_overlaps_stages():
    cfg = RunConfig(model="mnist-mlp", ipus=2, batch=64, model_kw={"hidden": 2048})
    pipe = run_multichip(cfg.replace(mode="pipeline", micro_batches=8), steps=2)
    shard = run_multichip(cfg.replace(mode="shard"), steps=2)
    busy = sum(p["busy_cycles"] for p in pipe["sim"]["per_ipu"])
    assert busy > 0
    assert 0 <= pipe["sim"]["hidden_transfer_fraction"] <= 1
    # micro-batches let the host stream the next one while the chips compute
    assert pipe["sim"]["hidden_transfer_fraction"] > shard["sim"]["hidden_transfer_fraction"]


def test_more_micro_batches_smaller_bubble():
    cfg = RunConfig(model="mnist-mlp", ipus=2, mode="pipeline", batch=32, train=True)
    r2 = run_multichip(cfg.replace(micro_batches=2))
    r8 = run_multichip(cfg.replace(micro_batches=8))
    assert r8["sim"]["bubble_fraction"] < r2["sim"]["bubble_fraction"]


def test_cross_chip_sync_costs_more():
    r = run_multichip(RunConfig(model="mnist-mlp", ipus=2, mode="shard", batch=8, train=True), steps=1)
    assert gc200.sync_cycles_multi_chip > gc200.sync_cycles
    ev = r["_sim"].chip_events[0]
    assert any(e[2] == "cross-chip sync" and e[1] == gc200.sync_cycles_multi_chip for e in ev)


def test_chrome_trace_tracks(runs, tmp_path):
    tr = runs["pipeline+replicate"]["_sim"].chrome_trace(tmp_path / "t.json")
    names = {e["args"]["name"] for e in tr["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert {"IPU 0 (stage 0, replica 0)", "IPU-Links", "host links"} <= names
    cats = {e["cat"] for e in tr["traceEvents"] if e["ph"] == "X"}
    assert {"compute", "sync", "exchange", "link", "host"} <= cats
    link_tracks = {e["tid"] for e in tr["traceEvents"] if e["ph"] == "X" and e["cat"] == "link"
                   and e["pid"] == 4}
    assert len(link_tracks) >= 2


def test_bad_mode_and_batch_name_the_option():
    with pytest.raises(ConfigError, match="^mode: 'bogus' is not one of"):
        RunConfig(model="mnist-mlp", ipus=2, mode="bogus", batch=4)
    with pytest.raises(ConfigError, match="^batch: 4 samples per replica cannot be split into 3 micro-batches"):
        RunConfig(model="mnist-mlp", ipus=2, mode="pipeline", micro_batches=3, batch=4)


def test_stage_detail_is_bounded_and_private():
    from simulator.multichip import DETAIL_CURVE_POINTS
    r = run_multichip(RunConfig(model="mnist-mlp", ipus=2, mode="pipeline", batch=4, train=True), steps=1,
                      stage_detail=True, workers=1)
    detail = r["_stage_memory"]
    assert len(detail) == r["multichip"]["stages"] == 2
    for d, row in zip(detail, r["multichip"]["per_stage"]):
        total = d["per_tile"]["total"]
        assert total.size == gc200.tiles and total.dtype.itemsize == 4
        assert int(total.max()) == pytest.approx(row["memory"]["peak_tile_bytes"], abs=1)
        assert 0 < d["curve_steps"].size <= DETAIL_CURVE_POINTS and len(d["curve_names"]) == d["curve_steps"].size
        assert row["memory"]["worst_tiles"][0]["bytes"] == row["memory"]["peak_tile_bytes"]
    whole = run(RunConfig(model="mnist-mlp", ipus=2, mode="pipeline", batch=4, train=True))
    assert "_stage_memory" not in json.loads(whole.to_json()) and "_sim" not in json.loads(whole.to_json())
    assert "_stage_memory" not in run_multichip(RunConfig(model="mnist-mlp", ipus=2, mode="shard", batch=2),
                                                steps=1)


def test_layout_and_strict_stages():
    cfg = RunConfig(model="mnist-mlp", ipus=4, mode="pipeline+replicate", replicas=2, micro_batches=2, batch=8)
    assert cfg.layout() == (2, 2, 2)
    with pytest.raises(ConfigError, match="divide"):
        RunConfig(model="mnist-mlp", ipus=3, mode="replicate", replicas=2, batch=4)
    shard8 = RunConfig(model="mnist-mlp", ipus=8, mode="shard", batch=2)
    r = run_multichip(shard8, steps=1, memory=False)
    assert r["multichip"]["stages_requested"] == 8 > r["multichip"]["stages"]
    with pytest.raises(ValueError, match="stages"):
        run_multichip(shard8, strict=True)


def test_an_option_the_multichip_model_does_not_apply_is_refused_by_name():
    with pytest.raises(ValueError, match="^fuse: not supported with --mode pipeline"):
        run_multichip(RunConfig(model="mnist-mlp", ipus=2, mode="pipeline", batch=4, train=True, fuse=False))


# -- gradient accumulation with replication, replicated tensor sharding -----------------------------
def _collectives(r, chip=0):
    return [e[2] for e in r["_sim"].chip_events[chip] if e[3] == "link" and not e[2].startswith("send")]


@pytest.fixture(scope="module")
def accumulated():
    cfg = RunConfig(model="mnist-mlp", ipus=2, mode="replicate", batch=8, micro_batches=4, train=True)
    return {"plain": run_multichip(cfg, steps=2, workers=1),
            "rts": run_multichip(cfg.replace(replicated_tensor_sharding=True), steps=2, workers=1),
            "rts_offload": run_multichip(cfg.replace(replicated_tensor_sharding=True, offload="optimizer"), steps=2,
                                         workers=1)}


def test_replicas_all_reduce_once_per_weight_update_not_per_micro_batch(accumulated):
    r = accumulated["plain"]
    mc = r["multichip"]
    assert (mc["replicas"], mc["micro_batches"], r["model"]["micro_batch"]) == (2, 4, 2)
    assert _collectives(r) == ["allreduce", "allreduce"]          # two steps, one each
    grad = r["multichip"]["per_stage"][0]["grad_bytes"]
    assert r["sim"]["allreduce_bytes"] == pytest.approx(2 * 2 * Network.allreduce_bytes_per_chip(grad, 2))
    # every replica computes 4 forwards and 4 backwards per step
    names = [e[2] for e in r["_sim"].chip_events[1]]
    assert sum(n.startswith("F0.") for n in {n.split(" ")[0] for n in names}) == 4
    assert r["sim"]["samples_per_second"] == pytest.approx(2 * 8 * 2 / r["sim"]["seconds"])


def test_replicated_tensor_sharding_reduce_scatters_gradients_and_all_gathers_weights(accumulated):
    plain, rts = accumulated["plain"], accumulated["rts"]
    assert _collectives(rts) == ["reduce-scatter", "all-gather"] * 2
    assert rts["multichip"]["replicated_tensor_sharding"] and not plain["multichip"]["replicated_tensor_sharding"]
    # the same ring volume over the links: half the all-reduce's rounds each way
    assert rts["sim"]["allreduce_bytes"] == pytest.approx(plain["sim"]["allreduce_bytes"])
    assert rts["sim"]["link_bytes"] == pytest.approx(plain["sim"]["link_bytes"])
    # each replica updates half of the weights
    assert rts["multichip"]["per_stage"][0]["update_cycles"] == pytest.approx(
        plain["multichip"]["per_stage"][0]["update_cycles"] / 2)


def test_replicated_tensor_sharding_keeps_one_share_of_the_optimizer_state_per_chip(accumulated):
    plain = accumulated["plain"]["multichip"]["per_stage"][0]["memory"]
    rts = accumulated["rts"]["multichip"]["per_stage"][0]["memory"]
    off = accumulated["rts_offload"]["multichip"]["per_stage"][0]["memory"]
    assert plain["optimizer_state_bytes"] > 0 and "replicated_tensor_sharding" not in plain
    assert rts["replicated_tensor_sharding"]["optimizer_state_bytes_per_replica"] == plain["optimizer_state_bytes"] // 2
    assert rts["unsharded_peak_tile_bytes"] == plain["peak_tile_bytes"]
    assert rts["peak_tile_bytes"] < plain["peak_tile_bytes"]
    # offloaded: the shard lives in streaming memory
    assert off["optimizer_state_offloaded"]
    assert off["replicated_tensor_sharding"]["streaming_memory_bytes"] == plain["optimizer_state_bytes"] // 2


def test_replicated_tensor_sharding_needs_replicas_and_training():
    with pytest.raises(ConfigError, match="^replicated_tensor_sharding: needs replicas"):
        RunConfig(model="mnist-mlp", ipus=2, mode="pipeline", batch=4, train=True, replicated_tensor_sharding=True)
    with pytest.raises(ConfigError, match="^replicated_tensor_sharding: .*--train"):
        RunConfig(model="mnist-mlp", ipus=2, mode="replicate", batch=4, replicated_tensor_sharding=True)


# -- stages by layer, per-stage proportion, recomputation on several chips --------------------------
def test_layers_per_chip_and_pipeline_splits_place_the_cuts():
    og = get_model("resnet50", batch=1)
    # ResNet-50's 16 bottlenecks 3 / 4 / 6 / 3: the stem goes with stage 0, the head with the last
    cuts = stage_cuts(og, 4, layers_per_chip=(3, 4, 6, 3))
    p = partition(og, 4, gc200, cuts=cuts)
    assert [s.units[0] for s in p.stages] == ["conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"]
    assert p.stages[-1].units[-1] == "fc"
    # the same by naming the layers (or blocks) after which a stage ends
    assert stage_cuts(og, 4, pipeline_splits=("layer1.2.relu3", "layer2.3", "layer3.5.relu3")) == cuts


@pytest.mark.parametrize("kw, message", [
    ({"layers_per_chip": (3, 4, 6, 4)}, "layers_per_chip: 3,4,6,4 adds up to 17, but resnet50 has 16 repeated "
                                        "blocks"),
    ({"pipeline_splits": ("layer1.2.relu3", "layer9.0", "layer3.5")}, "pipeline_splits: 'layer9.0' is not a layer "
                                                                      "or block of resnet50"),
    ({"pipeline_splits": ("layer3.0", "layer2.0", "layer4.0")}, "pipeline_splits: 'layer2.0' does not start"),
])
def test_a_stage_split_the_model_does_not_have_is_named(kw, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        stage_cuts(get_model("resnet50", batch=1), 4, **kw)


def test_each_stage_is_compiled_with_its_own_memory_proportion(monkeypatch):
    seen = []
    real = mcm.lower

    def spy(g, chip, **kw):
        seen.append((g.name, kw["available_memory_proportion"]))
        return real(g, chip, **kw)

    monkeypatch.setattr(mcm, "lower", spy)
    run_multichip(RunConfig(model="mnist-mlp", ipus=2, mode="pipeline", batch=4, train=True,
                            available_memory_proportion="0.2,0.45"), steps=1, workers=1, memory=False)
    assert sorted(seen) == [("mnist-mlp.train.stage0", 0.2), ("mnist-mlp.train.stage1", 0.45)]


def test_recomputation_and_offload_run_on_several_chips():
    cfg = RunConfig(model="mnist-mlp", ipus=2, mode="pipeline", batch=8, train=True)
    base = run_multichip(cfg, steps=1, workers=1)
    rc = run_multichip(cfg.replace(recompute="all", offload="optimizer"), steps=1, workers=1)
    assert rc["model"]["recompute"] == "all" and rc["model"]["offload"] == ["optimizer"]
    bwd = lambda r: sum(st["bwd_cycles"] for st in r["multichip"]["per_stage"])   # noqa: E731
    assert bwd(rc) > bwd(base)            # the recomputed forward ops run in the backward phase


def test_pipeline_stages_hold_accumulators_and_the_micro_batches_in_flight():
    cfg = RunConfig(model="mnist-mlp", ipus=2, mode="pipeline", batch=8, micro_batches=4, train=True)
    one = [s["memory"] for s in run_multichip(cfg.replace(batch=2, micro_batches=1), steps=1, workers=1)
           ["multichip"]["per_stage"]]
    four = [s["memory"] for s in run_multichip(cfg, steps=1, workers=1)["multichip"]["per_stage"]]
    # 1F1B on 2 stages: stage 0 holds 2 micro-batches between forward and backward, stage 1 one
    w0 = four[0]["worst_tiles"][0]
    assert w0["pipeline_stash"] > 0 and w0["bytes"] == sum(w0[k] for k in w0 if k not in (
        "tile", "bytes", "dominant", "pipeline_stash"))
    assert "pipeline_stash" not in four[1]["worst_tiles"][0]
    # each stage's weight gradients get accumulators: always-live bytes it did not hold at M = 1
    for a, b in zip(one, four):
        assert b["peak_tile_bytes"] > a["peak_tile_bytes"]
        assert b["total_bytes"] > a["total_bytes"]


@pytest.mark.parametrize("model,mode,ipus,kw", [("llama-tiny", "tensor", 2, {}),
                                                ("llama-tiny", "pipeline+tensor", 4, dict(tensor_parallel=2)),
                                                ("mixtral-tiny", "expert", 4, {}),
                                                ("mixtral-tiny", "pipeline+expert", 4, dict(expert_parallel=2))])
def test_flops_executed_counts_every_chip_of_a_group(model, mode, ipus, kw):
    """Each chip of a tensor- or expert-parallel group runs its own slice of the work: the group
    executes the one-chip run's FLOPs per step, plus only what the split repeats (the replicated
    norms, the padded vocabulary, the experts' capacity rounded up per chip): not 1 / group."""
    base = dict(model=model, batch=4, dtype="fp16", seq_len=16)
    one = run(RunConfig(**base)).report["sim"]["flops_executed"]
    rep = run(RunConfig(ipus=ipus, mode=mode, **base, **kw)).report
    per_step = rep["sim"]["flops_executed"] / rep["multichip"]["steps"]
    assert one <= per_step <= 1.04 * one
    assert rep["sim"]["achieved_flops_per_second"] == pytest.approx(rep["sim"]["flops_executed"] /
                                                                     rep["sim"]["seconds"])


def test_a_decoder_pipelined_deep_runs_every_stage_and_a_split_layer_is_refused():
    """More stages than blocks cut inside a layer: each residual add is its own unit, so every
    transfer runs with the pipeline and every chip runs its micro-batches (a unit that spanned
    the MoE once sent the combine's output back a stage and the pipeline stopped short)."""
    for model, n in (("mixtral-tiny", 4), ("llama-tiny", 8), ("mixtral-tiny", 8)):
        r = run(RunConfig(model=model, ipus=n, mode="pipeline", batch=8, dtype="fp16", seq_len=16))
        assert all(t["src"] < t["dst"] for t in r.report["multichip"]["transfers"])
        assert len(r.report["sim"]["per_ipu"]) == n and all(p["compute_cycles"] > 0
                                                               for p in r.report["sim"]["per_ipu"])
    # a layer name whose ops are apart (as both residual adds once were): a clear error, not a stall
    og = get_model("mixtral-tiny", seq_len=16)
    og.op("layers.1.mlp_residual")["layer"] = "layers.1.attn_residual"
    with pytest.raises(ValueError, match=r"the op 'layers.1.mlp_residual' \(layer 'layers.1.attn_residual', stage "
                                         r"2\) reads 'layers.1.block_sparse_moe.combine.out', made on stage 3"):
        partition(og, 4, gc200)


def test_stage_workers_fit_the_host_memory(monkeypatch):
    import os
    from types import SimpleNamespace
    import models
    from compiler import hostmem
    from simulator.multichip import stage_workers
    og = models.load("mnist-mlp", batch=4, train=True)
    stages = [SimpleNamespace(graph=og)] * 3
    est = hostmem.estimate_bytes(og)
    assert stage_workers(stages, {}, 2) == 2 and stage_workers(stages, {}, 9) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv(hostmem.ENV, str(2 * est + 1))
    assert stage_workers(stages, {}) == 2            # two CPUs, two stages' estimates fit
    monkeypatch.setenv(hostmem.ENV, str(2 * est - 1))
    assert stage_workers(stages, {}) == 1            # they do not: one at a time
    monkeypatch.setenv(hostmem.ENV, "off")
    assert stage_workers(stages, {}) == 2
