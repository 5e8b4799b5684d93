"""The compile / simulate pipeline and the `ipusim` command line."""
import json

import pytest

import ipusim_cli
from hardware.chips import gc200
from models import published_graph
from simulator.config import RunConfig
from simulator.run import build, run


def compile_model(model, simulate=False, **options) -> dict:
    """The report of one run (compiled, and simulated when asked)."""
    return run(model, simulate=simulate, **options).report

REQUIRED = {"model": ["name", "params", "flops"],
            "graph": ["vertices", "vertices_executed", "edges", "compute_sets", "tiles_used"],
            "memory": ["fits", "peak_tile_bytes", "total_bytes", "by_category", "always_live_bytes",
                       "not_always_live_peak_bytes", "no_reuse_bytes", "reuse_factor", "oom_tiles"]}
SIM = ["cycles", "seconds", "supersteps", "compute_cycles", "exchange_cycles", "sync_cycles",
       "samples_per_second"]


@pytest.fixture(scope="module")
def resnet50():
    return build("resnet50", chip="gc200", simulate=True)


def test_compile_report_has_the_documented_nested_keys():
    rep = compile_model("mnist-mlp")
    for section, keys in REQUIRED.items():
        for k in keys:
            assert k in rep[section], f"{section}.{k} missing"
    assert "sim" not in rep


def test_simulate_report_adds_timing():
    rep = compile_model("mnist-mlp", simulate=True)
    for k in SIM:
        assert k in rep["sim"]
    s = rep["sim"]
    assert s["cycles"] >= s["compute_cycles"] + s["sync_cycles"]
    assert s["seconds"] == pytest.approx(s["cycles"] / gc200.clock_hz)


def test_model_params_come_from_the_model():
    assert compile_model("mnist-mlp")["model"]["params"] == 784 * 256 + 256 + 256 * 10 + 10


def test_model_that_does_not_fit_still_compiles_and_simulates():
    tiny = gc200.replace(sram_bytes_per_tile=2048)
    rep = compile_model("mnist-mlp", chip=tiny, simulate=True)
    assert rep["memory"]["fits"] is False
    assert rep["memory"]["oom_tiles"] > 0
    assert "Out of memory on tile" in rep["memory"]["message"]
    assert rep["sim"]["cycles"] > 0


def test_memory_categories_add_up_to_total():
    rep = compile_model("mnist-mlp", train=True)
    assert sum(rep["memory"]["by_category"].values()) == pytest.approx(rep["memory"]["total_bytes"], rel=1e-6)


def test_training_graph_lowers_and_runs_more_work_than_inference():
    inf = compile_model("mnist-mlp", batch=4, simulate=True)
    tr = compile_model("mnist-mlp", batch=4, train=True, simulate=True)
    assert tr["graph"]["vertices"] > inf["graph"]["vertices"]
    assert tr["sim"]["cycles"] > inf["sim"]["cycles"]


def test_fp16_halves_weight_memory():
    a = compile_model("mnist-mlp", dtype="fp32")["memory"]["always_live_bytes"]
    b = compile_model("mnist-mlp", dtype="fp16")["memory"]["always_live_bytes"]
    assert b == pytest.approx(a / 2, rel=0.05)


def test_resnet50_blocks_are_placed_once_and_called_repeatedly(resnet50):
    g = resnet50.report["graph"]
    assert g["functions"] >= 4
    assert g["function_calls"] > g["functions"]
    assert g["vertices_executed"] > g["vertices"]
    assert resnet50.sim.vertices_executed == g["vertices_executed"]


def test_resnet50_graph_is_of_the_published_order(resnet50):
    g = resnet50.report["graph"]
    # published: 3.22 M vertices / 6.21 M edges (Poplar, 2017); same order of magnitude
    assert 3.22e6 / 10 < g["vertices_executed"] < 3.22e6 * 10
    assert 6.21e6 / 10 < g["edges"] < 6.21e6 * 10


def test_resnet50_inference_fits_on_gc200_and_uses_every_tile(resnet50):
    rep = resnet50.report
    assert rep["memory"]["fits"]
    assert rep["graph"]["tiles_used"] == gc200.tiles
    assert rep["sim"]["samples_per_second"] > 0


def test_cli_compile_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert ipusim_cli.main(["compile", "mnist-mlp", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["graph"]["vertices"] > 0
    assert "vertices placed" in capsys.readouterr().out


def test_cli_simulate_writes_trace(tmp_path):
    tr = tmp_path / "t.json"
    assert ipusim_cli.main(["simulate", "mnist-mlp", "--trace", str(tr)]) == 0
    assert any(e.get("ph") == "X" for e in json.loads(tr.read_text())["traceEvents"])


def test_cli_unknown_model_is_a_clear_error(capsys):
    assert ipusim_cli.main(["compile", "no-such-net"]) == 2
    err = capsys.readouterr().err
    assert "no-such-net" in err and "Traceback" not in err


def test_cli_broken_onnx_file_names_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    assert ipusim_cli.main(["compile", str(bad)]) == 2
    assert "broken.onnx" in capsys.readouterr().err


def test_cli_bad_chip_file_names_the_key(tmp_path, capsys):
    chip = tmp_path / "c.toml"
    chip.write_text('base = "gc200"\ntiles = 0\n')
    assert ipusim_cli.main(["compile", "mnist-mlp", "--chip", str(chip)]) == 2
    assert "tiles" in capsys.readouterr().err


def test_report_puts_poplars_published_graph_size_beside_ours(resnet50):
    g = resnet50.report["graph"]
    ref = published_graph("resnet50", train=False)
    assert {k: g["published"][k] for k in ref} == ref
    assert g["published"]["ratio_vertices"] * ref["vertices"] == pytest.approx(g["vertices_executed"])
    assert g["published"]["ratio_edges"] * ref["edges"] == pytest.approx(g["edges"])


def test_a_model_without_published_figures_reports_none():
    assert "published" not in compile_model("mnist-mlp")["graph"]


def _add_relu_graph():
    from models.opgraph import OpGraph
    g = OpGraph("add-relu")
    for n in ("x", "y"):
        g.add_tensor(n, (4, 256), kind="input")
    g.add_tensor("s", (4, 256))
    g.add_tensor("r", (4, 256))
    g.add_op("add", "Add", ["x", "y"], ["s"], family="elementwise", flops=1024)
    g.add_op("relu", "Relu", ["s"], ["r"], family="elementwise", flops=1024)
    g.outputs.append("r")
    return g


def test_fusion_saves_supersteps():
    fused = compile_model(_add_relu_graph(), simulate=True)
    plain = compile_model(_add_relu_graph(), simulate=True, fuse=False)
    assert fused["graph"]["fused_ops"] >= 1
    assert fused["sim"]["supersteps"] < plain["sim"]["supersteps"]
    saved = plain["sim"]["supersteps"] - fused["sim"]["supersteps"]
    assert fused["graph"]["fusion"]["supersteps_saved"] == saved
    assert plain["sim"]["cycles"] - fused["sim"]["cycles"] >= fused["graph"]["fusion"]["cycles_saved_estimate"]


def test_cli_pipeline_mode_runs_stages_on_chips(capsys):
    assert ipusim_cli.main(["simulate", "mnist-mlp", "--train", "--batch", "8", "--ipus", "2",
                            "--mode", "pipeline", "--micro-batches", "4"]) == 0
    out = capsys.readouterr().out
    assert "stage 0" in out and "stage 1" in out and "samples/s" in out


# -- matrix unit vs plain vector MACs -----------------------------------------------------------
def test_amp_pads_small_channel_groups_and_planners_weigh_vector_macs():
    from compiler.codelets import CODELETS
    from compiler.planners import ConvPlanner, contraction_cycles
    import numpy as np
    # a 3-channel input group costs the AMP a whole 8-wide pass (fp32)
    conv = CODELETS["ConvPartial"]
    p = {"groups": 1, "kh": 3, "kw": 3, "stride": 1, "cig": 3, "cog": 8}
    c3 = conv.cycles({"out": np.array([64])}, "fp32", p, gc200)
    c8 = conv.cycles({"out": np.array([64])}, "fp32", dict(p, cig=8), gc200)
    assert float(c3[0]) == float(c8[0])
    mac = CODELETS["ConvPartialMAC"].cycles({"out": np.array([64])}, "fp32", p, gc200)
    assert float(mac[0]) > float(c3[0])        # the AMP is still faster on a GC200
    # on the presets the AMP is chosen for a wide contraction; a 10-column one (fc2) leaves
    # 6 of the AMP's 16 output channels idle in every pass and pays each pass's loop and
    # weight loads (amp_entry_cycles, amp_pass_cycles), so vector MACs win there
    c = build("mnist-mlp", chip="gc200", batch=64)
    assert {k: p.get("method") for k, p in c.lowered.plans.items() if "method" in p} == {"fc1": "amp", "fc2": "mac"}
    # a chip whose matrix unit is no faster than its vector unit gets vector-MAC vertices
    weak = gc200.replace(flops_per_cycle_per_tile={"fp32": 2.0, "fp16": 4.0})
    c = build("mnist-mlp", chip=weak, batch=4)
    methods = {p.get("method") for p in c.lowered.plans.values() if "method" in p}
    assert methods == {"mac"}
    codelets = {b.codelet for b in c.lowered.graph.batches}
    assert "MatMulPartialMAC" in codelets and "MatMulPartial" not in codelets
    assert contraction_cycles({"method": "mac"}, 10, 3, "fp32", weak) < contraction_cycles({"method": "amp"}, 10, 3, "fp32", weak)
    assert ConvPlanner.family == "conv"


def test_a_report_json_cannot_hold_is_refused_naming_the_value(tmp_path):
    # issue 15: a chip with a host link of 1e-300 B/s wrote "cycles": Infinity, which is not JSON
    from simulator.report import ReportError
    r = run(RunConfig(model="mnist-mlp", chip=gc200.replace(name="slow", host_link_bytes_per_s=1e-300), suggest=False))
    with pytest.raises(ReportError, match=r"^report: sim\.cycles is inf, which JSON cannot hold \(a value of chip "
                                          r"'slow'"):
        r.to_json(tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()
    json.loads(run(RunConfig(model="mnist-mlp", suggest=False)).to_json())
