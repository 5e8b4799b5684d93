"""One run configuration: every option declared once, validated once, naming the bad field."""
import argparse
import dataclasses

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
    ("pipeline", {}, (4, 1, 8)),                        # default micro-batches: min(batch, 2 x stages)
    ("replicate", {}, (1, 4, 1)),
    ("pipeline+replicate", {"replicas": 2, "micro_batches": 2}, (2, 2, 2)),
])
def test_layout_gives_stages_replicas_and_micro_batches(mode, kw, layout):
    assert RunConfig(model="mnist-mlp", ipus=4, mode=mode, batch=16, **kw).layout() == layout


def test_an_impossible_layout_is_refused_when_the_configuration_is_made():
    with pytest.raises(ConfigError, match="^replicas: .*divide"):
        RunConfig(ipus=4, mode="replicate", replicas=3, batch=12)
    with pytest.raises(ConfigError, match="^batch: 6 is not divisible"):
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
    flags = {a.dest for a in p._actions if a.dest != "help"}
    cli_fields = {f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("cli", True)}
    assert flags == cli_fields
    # defaults on the command line are the configuration's defaults
    assert config_from_args(p.parse_args(["mnist-mlp"])) == RunConfig(model="mnist-mlp")


def test_flags_become_the_configuration():
    args = _parser().parse_args(["resnet50", "--train", "--batch", "8", "--dtype", "fp16", "--no-fuse",
                                 "--offload", "optimizer", "--ipus", "2", "--mode", "pipeline",
                                 "--micro-batches", "4", "--available-memory-proportion", "0.3"])
    assert config_from_args(args) == RunConfig(model="resnet50", train=True, batch=8, dtype="fp16", fuse=False,
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
