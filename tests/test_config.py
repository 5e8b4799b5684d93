"""One run configuration: every option declared once, validated once, naming the bad field."""
import argparse
import dataclasses
import re

import pytest

import ipusim_cli
from hardware.chips import Chip, gc200
from ipusim_cli.options import add_run_options, config_from_args
from simulator.config import ConfigError, RunConfig


def test_a_configuration_is_a_frozen_value():
    cfg = RunConfig(model="mnist-mlp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch = 4
    assert cfg == RunConfig(model="mnist-mlp") and cfg.replace(batch=4) != cfg


@pytest.mark.parametrize("changes, field", [
    ({"batch": 0}, "batch"), ({"ipus": -1}, "ipus"), ({"accumulate": 1.5}, "accumulate"),
    ({"dtype": "fp8"}, "dtype"), ({"mode": "warp"}, "mode"), ({"recompute": "most"}, "recompute"),
    ({"offload": "everything"}, "offload"), ({"available_memory_proportion": 0}, "available_memory_proportion"),
    ({"train": "yes"}, "train"), ({"chip": 5}, "chip"), ({"replicas": 0}, "replicas"),
    ({"accumulate": 0}, "accumulate"), ({"micro_batches": 0}, "micro_batches"),
    ({"available_memory_proportion": 1.5}, "available_memory_proportion"),
    ({"available_memory_proportion": "0.2,x"}, "available_memory_proportion"),
    ({"layers_per_chip": "3,0"}, "layers_per_chip"), ({"replicated_tensor_sharding": 1}, "replicated_tensor_sharding"),
])
def test_a_bad_value_is_refused_naming_its_field(changes, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        RunConfig(model="mnist-mlp", **changes)


def test_replace_validates_and_refuses_unknown_options():
    cfg = RunConfig(model="mnist-mlp")
    with pytest.raises(ConfigError, match="^batch: "):
        cfg.replace(batch=0)
    with pytest.raises(ConfigError, match="^bacth: unknown option"):
        cfg.replace(bacth=2)


def test_from_dict_names_the_unknown_key_and_its_source():
    with pytest.raises(ConfigError, match=r"^sweep.toml point 3: no_such: unknown option"):
        RunConfig.from_dict({"model": "mnist-mlp", "no_such": 1}, source="sweep.toml point 3")


def test_from_dict_takes_chip_fields_as_overrides_of_the_chip():
    cfg = RunConfig.from_dict({"model": "mnist-mlp", "chip": "gc200", "tiles": 736})
    assert isinstance(cfg.chip, Chip) and cfg.chip.tiles == 736
    assert cfg.chip.sram_bytes_per_tile == gc200.sram_bytes_per_tile


def test_offload_accepts_a_comma_separated_string_or_a_tuple():
    assert RunConfig(offload="optimizer,weights").offload == ("optimizer", "weights")
    assert RunConfig(offload=["weights"]).offload == ("weights",)
    assert RunConfig(offload="").offload == ()


@pytest.mark.parametrize("mode, kw, layout", [
    ("shard", {}, (4, 1, 1)),
    ("pipeline", {}, (4, 1, 8)),                # default micro-batches: largest divisor of batch <= 2 x stages
    ("replicate", {}, (1, 4, 1)),
    ("pipeline+replicate", {"replicas": 2, "micro_batches": 2}, (2, 2, 2)),
])
def test_layout_gives_stages_replicas_and_micro_batches(mode, kw, layout):
    assert RunConfig(model="mnist-mlp", ipus=4, mode=mode, batch=16, **kw).layout() == layout


def test_an_impossible_layout_is_refused_when_the_configuration_is_made():
    with pytest.raises(ConfigError, match="^replicas: .*divide"):
        RunConfig(ipus=4, mode="replicate", replicas=3, batch=12)
    with pytest.raises(ConfigError, match="^batch: 6 samples per replica cannot be split into 4 micro-batches"):
        RunConfig(ipus=2, mode="pipeline", micro_batches=4, batch=6)


def test_several_chips_run_separate_graphs_unless_spread():
    assert RunConfig(ipus=2, mode="pipeline", batch=2).multichip
    assert not RunConfig(ipus=2, mode="spread").multichip and not RunConfig(ipus=1, mode="pipeline").multichip


def _parser():
    p = argparse.ArgumentParser()
    add_run_options(p)
    return p


def test_every_command_line_field_has_one_flag_and_round_trips():
    p = _parser()
    flags = {a.dest for a in p._actions if a.dest not in ("help", "preset")}
    cli_fields = {f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("cli", True)}
    assert flags == cli_fields
    # defaults on the command line are the configuration's defaults
    assert config_from_args(p.parse_args(["mnist-mlp"])) == RunConfig(model="mnist-mlp")


def test_flags_become_the_configuration():
    args = _parser().parse_args(["resnet50", "--train", "--batch", "8", "--dtype", "fp16", "--no-functions",
                                 "--offload", "optimizer", "--ipus", "2", "--mode", "pipeline",
                                 "--micro-batches", "4", "--available-memory-proportion", "0.3"])
    assert config_from_args(args) == RunConfig(model="resnet50", train=True, batch=8, dtype="fp16", functions=False,
                                               offload=("optimizer",), ipus=2, mode="pipeline", micro_batches=4,
                                               available_memory_proportion=0.3)


def test_a_bad_flag_value_is_reported_with_the_flag_before_any_work(capsys):
    assert ipusim_cli.main(["compile", "mnist-mlp", "--batch", "0"]) == 2
    assert "--batch: must be an integer >= 1, got 0" in capsys.readouterr().err
    assert ipusim_cli.main(["compile", "mnist-mlp", "--ipus", "3", "--mode", "replicate", "--replicas", "2"]) == 2
    assert "--replicas:" in capsys.readouterr().err


def test_an_output_path_that_cannot_be_written_is_refused_before_compiling(tmp_path, capsys):
    assert ipusim_cli.main(["compile", "mnist-mlp", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert ipusim_cli.main(["compile", "mnist-mlp", "--json", str(tmp_path / "missing" / "r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a file system that takes no new files (proc): refused, not a traceback after the compile
    assert ipusim_cli.main(["compile", "mnist-mlp", "--json", "/proc/ipusim-report.json"]) == 2
    assert "cannot write there" in capsys.readouterr().err
    # the check leaves nothing behind when a later error stops the run
    out = tmp_path / "r.json"
    assert ipusim_cli.main(["compile", "mnist-mlp", "--json", str(out), "--batch", "0"]) == 2
    assert not out.exists()


# -- batch semantics ----------------------------------------------------------------------------
def test_batch_is_per_replica_per_update_and_micro_batches_split_it():
    one = RunConfig(model="mnist-mlp", batch=120, micro_batches=6, train=True)
    assert (one.layout(), one.micro_batch) == ((1, 1, 6), 20)
    rep = RunConfig(model="mnist-mlp", batch=120, micro_batches=6, ipus=16, mode="replicate", train=True)
    assert (rep.layout(), rep.micro_batch) == ((1, 16, 6), 20)          # each replica: 6 micro-batches of 20
    pipe = RunConfig(model="mnist-mlp", batch=384, micro_batches=192, ipus=4, mode="pipeline", train=True)
    assert (pipe.layout(), pipe.micro_batch) == ((4, 1, 192), 2)
    assert RunConfig(ipus=2, mode="pipeline", batch=6).layout() == (2, 1, 3)   # a default that divides


def test_the_old_accumulate_spelling_keeps_its_meaning():
    # --batch 2 --accumulate 4 was 4 micro-batches of 2 per update: the same run as --batch 8 --micro-batches 4
    old = RunConfig(model="mnist-mlp", batch=2, accumulate=4, train=True)
    assert old == RunConfig(model="mnist-mlp", batch=8, micro_batches=4, train=True)
    assert old.micro_batch == 2 and old.accumulate == 1
    with pytest.raises(ConfigError, match="^accumulate: the old spelling of --micro-batches"):
        RunConfig(batch=2, accumulate=4, micro_batches=2)


# -- per-stage proportion, stages by layer, recomputation checkpoints ------------------------------
def test_the_proportion_is_one_value_or_one_per_stage():
    cfg = RunConfig(ipus=4, mode="pipeline", batch=8, available_memory_proportion="0.2,0.2,0.25,0.25")
    assert cfg.available_memory_proportion == (0.2, 0.2, 0.25, 0.25) and cfg.proportion_of_stage(3) == 0.25
    assert RunConfig(available_memory_proportion=[0.3]).available_memory_proportion == 0.3
    assert RunConfig(available_memory_proportion="0.3").proportion_of_stage(0) == 0.3


@pytest.mark.parametrize("kw, message", [
    ({"ipus": 4, "mode": "pipeline", "available_memory_proportion": "0.2,0.2,0.25"},
     "available_memory_proportion: 3 values for 4 chips per replica"),
    ({"available_memory_proportion": "0.2,0.25"}, "available_memory_proportion: 2 values for 1 chip"),
    ({"available_memory_proportion": "0.2,1.25"}, "available_memory_proportion: must be a number in (0, 1], "
                                                  "got '1.25' (value 2 of 2)"),
    ({"available_memory_proportion": -0.1}, "available_memory_proportion: must be a number in (0, 1]"),
    ({"ipus": 2, "mode": "pipeline", "layers_per_chip": "3,7,7,7"},
     "layers_per_chip: 4 values make 4 stages, but --ipus 2 in mode pipeline has 2 chips per replica"),
    ({"ipus": 4, "mode": "pipeline", "pipeline_splits": "a,b,c,d"},
     "pipeline_splits: 4 values make 5 stages, but --ipus 4 in mode pipeline has 4 chips per replica"),
    ({"layers_per_chip": "3,7"}, "layers_per_chip: needs several stages"),
    ({"ipus": 4, "mode": "pipeline", "layers_per_chip": "1,1,1,1", "pipeline_splits": "a,b,c"},
     "layers_per_chip: give the stages by block counts or by --pipeline-splits, not both"),
    ({"recompute_checkpoints": "layer1.0.relu3"}, "recompute_checkpoints: recomputation needs a training run"),
    ({"recompute_checkpoints": "layer1.0.relu3", "train": True, "recompute": "blocks"},
     "recompute_checkpoints: the checkpoints are the recomputation; drop --recompute blocks"),
])
def test_bad_stage_options_are_named_with_what_is_valid(kw, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        RunConfig(model="mnist-mlp", batch=8, **kw)


def test_checkpoints_and_splits_take_comma_separated_names():
    cfg = RunConfig(model="resnet50", train=True, batch=4, recompute_checkpoints="layer1.0.relu3, layer2.0")
    assert cfg.recompute_checkpoints == ("layer1.0.relu3", "layer2.0") and cfg.recompute_mode == "checkpoints"
    assert RunConfig(ipus=4, mode="pipeline", batch=8, layers_per_chip="3,7,7,7").layers_per_chip == (3, 7, 7, 7)


@pytest.mark.parametrize("argv, message", [
    (["--train", "--recompute-checkpoints", "b1/0/relu"], "--recompute-checkpoints: 'b1/0/relu' is not a layer or "
                                                          "block of mnist-mlp"),
    (["--ipus", "2", "--mode", "pipeline", "--train", "--pipeline-splits", "fc7"],
     "--pipeline-splits: 'fc7' is not a layer or block of mnist-mlp"),
    (["--ipus", "2", "--mode", "pipeline", "--layers-per-chip", "1,1"],
     "--layers-per-chip: 1,1 adds up to 2, but mnist-mlp has no repeated blocks"),
    (["--ipus", "2", "--mode", "pipeline", "--replicas", "0"], "--replicas: must be an integer >= 1, got 0"),
    (["--micro-batches", "0"], "--micro-batches: must be an integer >= 1, got 0"),
    (["--accumulate", "0"], "--accumulate: must be an integer >= 1, got 0"),
    (["--available-memory-proportion", "0"], "--available-memory-proportion: must be a number in (0, 1]"),
])
def test_bad_run_options_on_the_command_line_are_one_line_errors(argv, message, capsys):
    rc = ipusim_cli.main(["compile", "mnist-mlp"] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert message in err, err


@pytest.mark.parametrize("field, value", [("accumulate", 10**9), ("micro_batches", 10**6), ("ipus", 10**5),
                                          ("replicas", 10**5)])
def test_counts_the_engine_would_simulate_for_hours_are_refused(field, value):
    # --accumulate 1000000000 ran for about 50 hours (every micro-batch is simulated)
    with pytest.raises(ConfigError, match=rf"^{field}: at most"):
        RunConfig(model="mnist-mlp", train=True, **{field: value})


def test_options_several_chips_would_ignore_are_refused_by_name():
    # issue 15: with --ipus N --mode shard, --accumulate / --micro-batches were silently dropped
    # (the whole batch ran through the chips at once), and --no-fuse only failed inside the run
    with pytest.raises(ConfigError, match=r"^accumulate: --mode shard .* \(no accumulation\)"):
        RunConfig(model="mnist-mlp", train=True, ipus=2, accumulate=2)
    with pytest.raises(ConfigError, match="^micro_batches: --mode shard"):
        RunConfig(model="mnist-mlp", train=True, ipus=2, batch=4, micro_batches=2)
    with pytest.raises(ConfigError, match="^fuse: not supported with --mode replicate on --ipus 2"):
        RunConfig(model="mnist-mlp", ipus=2, mode="replicate", fuse=False)
    with pytest.raises(ConfigError, match="^verify_suggestions: not supported"):
        RunConfig(model="mnist-mlp", ipus=2, verify_suggestions=True)
    # the same options on one chip, or over all the chips' tiles, are what they say
    assert RunConfig(model="mnist-mlp", train=True, ipus=1, accumulate=2).layout() == (1, 1, 2)
    assert not RunConfig(model="mnist-mlp", ipus=2, mode="spread", fuse=False).fuse
    assert RunConfig(model="mnist-mlp", train=True, ipus=2, mode="pipeline", accumulate=2).layout()[2] == 2
