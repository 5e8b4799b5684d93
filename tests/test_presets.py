"""Shipped run configurations (presets): every MLPerf system as it ran, by name, with its source and
measured figure; `ipusim presets`, `--preset NAME` with flags that override it, and bad names refused."""
import argparse

import pytest

import ipusim_cli
import models
from ipusim_cli.options import add_run_options, config_from_args
from simulator.config import PRESETS_DIR, ConfigError, RunConfig, list_presets, load_preset
from simulator.multichip import stage_cuts

MLPERF = ("mlperf-v1.0-resnet50-pod16", "mlperf-v1.0-resnet50-pod16-mb16", "mlperf-v2.0-resnet50-bow-pod16",
          "mlperf-v1.0-bert-large-pod16")


def _parse(argv):
    p = argparse.ArgumentParser()
    add_run_options(p)
    return config_from_args(p.parse_args(argv))


def test_the_mlperf_systems_are_shipped_presets():
    assert set(MLPERF) <= set(list_presets())
    assert all((PRESETS_DIR / f"{n}.toml").is_file() for n in MLPERF)


@pytest.mark.parametrize("name", MLPERF)
def test_a_preset_records_its_source_and_what_was_measured(name):
    p = load_preset(name)
    text = (PRESETS_DIR / f"{name}.toml").read_text()
    assert "mlcommons/training_results_v" in text and "Graphcore" in text          # where it comes from
    m = p["measured"]
    assert m["throughput"] > 0 and m["per"] in ("chip", "replica") and m["unit"].endswith("/s")
    assert m["source"] and m["tolerance"] == 0.15
    cfg = RunConfig.preset(name)            # a valid configuration: the layout is checked when it is made
    assert cfg.train and cfg.dtype == "fp16" and cfg.partials == "fp16" and cfg.ipus == 16


def test_the_resnet50_preset_is_the_logged_run():
    cfg = RunConfig.preset("mlperf-v1.0-resnet50-pod16")
    assert (cfg.model, cfg.get_chip().name, cfg.micro_batch, cfg.layout()) == ("resnet50", "gc200", 20, (1, 16, 6))
    assert cfg.available_memory_proportion == 0.15 and cfg.recompute_mode == "checkpoints"
    assert cfg.recompute_checkpoints[0] == "layer1.0.relu3"
    assert RunConfig.preset("mlperf-v1.0-resnet50-pod16-mb16").micro_batch == 16
    bow = RunConfig.preset("mlperf-v2.0-resnet50-bow-pod16")
    assert (bow.get_chip().name, bow.micro_batch, bow.layout()[2]) == ("bow", 22, 10)


def test_the_bert_large_preset_is_the_pipeline_that_ran():
    cfg = RunConfig.preset("mlperf-v1.0-bert-large-pod16")
    assert cfg.layout() == (4, 4, 192) and cfg.micro_batch == 2
    assert cfg.layers_per_chip == (3, 7, 7, 7) and cfg.available_memory_proportion == (0.2, 0.2, 0.25, 0.25)
    assert cfg.optimizer == "lamb" and cfg.offload == ("optimizer",) and cfg.replicated_tensor_sharding
    assert [cfg.proportion_of_stage(s) for s in range(4)] == [0.2, 0.2, 0.25, 0.25]


@pytest.mark.skipif("bert-large" not in models.list_models(),
                    reason="the bert-large built-in model is not there yet (issue 12, models/)")
def test_the_bert_large_preset_layers_add_up_to_the_model():
    og = models.load("bert-large", batch=1)
    cuts = stage_cuts(og, 4, layers_per_chip=(3, 7, 7, 7))
    assert len(cuts) == 4 and cuts[0] == 0


def test_preset_and_from_preset_are_one_api_and_options_override():
    assert RunConfig.from_preset("mlperf-v1.0-resnet50-pod16") == RunConfig.preset("mlperf-v1.0-resnet50-pod16")
    cfg = RunConfig.preset("mlperf-v1.0-resnet50-pod16", ipus=1, replicas=None, tiles=736)
    assert cfg.ipus == 1 and cfg.chip.tiles == 736 and cfg.chip.name.startswith("gc200")
    d = RunConfig.from_dict({"preset": "mlperf-v1.0-resnet50-pod16", "batch": 60})   # a sweep point
    assert d.batch == 60 and d.micro_batch == 10 and d.dtype == "fp16"


def test_flags_beside_a_preset_override_it_even_with_their_default_value():
    cfg = _parse(["--preset", "mlperf-v1.0-resnet50-pod16", "--available-memory-proportion", "0.6",
                  "--dtype", "fp32"])
    assert cfg.available_memory_proportion == 0.6 and cfg.dtype == "fp32"
    assert cfg.batch == 120 and cfg.recompute_checkpoints      # the rest from the preset
    assert _parse(["--preset", "mlperf-v1.0-resnet50-pod16"]) == RunConfig.preset("mlperf-v1.0-resnet50-pod16")
    one = _parse(["--preset", "mlperf-v1.0-bert-large-pod16", "--ipus", "4", "--replicas", "1",
                  "--no-replicated-tensor-sharding"])
    assert one.layout() == (4, 1, 192) and not one.replicated_tensor_sharding and one.offload == ("optimizer",)


def test_the_plain_options_give_the_same_run_as_the_preset():
    plain = _parse(["resnet50", "--train", "--batch", "120", "--micro-batches", "6", "--dtype", "fp16",
                    "--partials", "fp16", "--available-memory-proportion", "0.15", "--chip", "gc200",
                    "--ipus", "16", "--mode", "replicate", "--replicas", "16", "--recompute-checkpoints",
                    "layer1.0.relu3,layer1.2.relu3,layer2.0.relu3,layer2.2.relu3,layer3.0.relu3,layer3.3.relu3"])
    assert plain == RunConfig.preset("mlperf-v1.0-resnet50-pod16")


def test_ipusim_presets_lists_each_preset_on_one_line(capsys):
    assert ipusim_cli.main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(list_presets())
    for n, line in zip(list_presets(), lines):
        assert line.startswith(n) and "measured" in line


def test_an_unknown_preset_is_refused_with_the_list(capsys):
    assert ipusim_cli.main(["simulate", "--preset", "mlperf-v9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipusim: error: --preset: 'mlperf-v9' is not one of ") and "Traceback" not in err
    assert all(n in err for n in MLPERF) and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="^preset: 'nope' is not one of mlperf"):
        RunConfig.preset("nope")


def test_a_preset_file_can_be_given_by_path(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('title = "mine"\n[run]\nmodel = "mnist-mlp"\nbatch = 8\nmicro_batches = 2\ntrain = true\n')
    assert RunConfig.preset(str(f)).micro_batch == 4
    bad = tmp_path / "bad.toml"
    bad.write_text('[run]\nmodel = "mnist-mlp"\nbatch = 0\n')
    with pytest.raises(ConfigError, match=r"batch: must be an integer >= 1"):
        RunConfig.preset(str(bad))


def test_a_missing_model_without_a_preset_is_named(capsys):
    assert ipusim_cli.main(["simulate"]) == 2
    assert "MODEL: missing" in capsys.readouterr().err
