"""Hugging Face-style config.json files as models (models/hf_config.py): the shipped
examples give the published parameter counts, a file runs from the command line and from
Python, and every bad file is one error line naming the file, the field and the value."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import ipusim_cli
from hardware.chips import gc200
from models import ModelError, get_model, load
from simulator.config import ConfigError, RunConfig
from simulator.run import run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "configs"
CHIP = gc200.replace(tiles=64)

SMALL_LLAMA = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100,
               "max_position_embeddings": 64}


def _write(tmp_path, cfg, name="config.json"):
    p = tmp_path / name
    p.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return str(p)


@pytest.mark.parametrize("file, params", [("gpt2.json", 124_439_808), ("llama-7b.json", 6_738_415_616),
                                          ("mixtral-8x7b.json", 46_702_792_704)])
def test_example_configs_give_the_published_parameter_counts(file, params):
    g = get_model(str(EXAMPLES / file), seq_len=8)
    assert g.params() == params and g.name == file[:-5]


def test_a_config_builds_the_same_graph_as_the_built_in():
    a = get_model(str(EXAMPLES / "llama-7b.json"), layers=2, seq_len=16)
    b = get_model("llama-7b", layers=2, seq_len=16)
    assert [a.op(n)["op"] for n in a.ops()] == [b.op(n)["op"] for n in b.ops()]
    assert a.params() == b.params() and a.flops() == b.flops()


@pytest.mark.parametrize("cfg, params", [
    (dict(SMALL_LLAMA, model_type="mistral"), None),
    (dict(SMALL_LLAMA, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2), None),
    ({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 100,
      "n_inner": None}, 100 * 64 + 64 * 64 + 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64),
    ({"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
      "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64},
     (100 + 64 + 2) * 64 + 2 * 64 + 2 * (4 * 64 * 64 + 4 * 64 + 2 * 64 * 128 + 128 + 64 + 4 * 64) + 64 * 64 + 64),
])
def test_every_model_type_loads(tmp_path, cfg, params):
    g = load(_write(tmp_path, cfg), model_kw={"seq_len": 16})
    assert g.params() > 0 and (params is None or g.params() == params)


def test_command_line_simulates_a_config_with_its_sequence_length(tmp_path, capsys):
    p = _write(tmp_path, SMALL_LLAMA)
    assert ipusim_cli.main(["simulate", p, "--seq-len", "16", "--batch", "2", "--json", str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["sim"]["cycles"] > 0 and rep["model"]["params"] == load(p, model_kw={"seq_len": 16}).params()


def test_python_run_takes_a_config_and_seq_len_as_a_run_option(tmp_path):
    p = _write(tmp_path, SMALL_LLAMA)
    r = run(RunConfig(model=p, seq_len=8, chip=CHIP, train=True, batch=2))
    assert r.report["sim"]["cycles"] > 0
    assert r.compiled.opgraph.tensors["input_ids"].shape == (2, 8)
    with pytest.raises(ConfigError, match="seq_len: 8 contradicts the model option seq_len 16"):
        RunConfig(model=p, seq_len=8, model_kw={"seq_len": 16})


@pytest.mark.parametrize("content, want", [
    ({k: v for k, v in SMALL_LLAMA.items() if k != "intermediate_size"}, "missing field intermediate_size"),
    (dict(SMALL_LLAMA, num_attention_heads=5), "field num_attention_heads 5 does not divide hidden_size 64"),
    (dict(SMALL_LLAMA, num_key_value_heads=3), "field num_key_value_heads 3 does not divide num_attention_heads 4"),
    (dict(SMALL_LLAMA, model_type="falcon"), 'field model_type "falcon" is not one of gpt2, llama'),
    ({k: v for k, v in SMALL_LLAMA.items() if k != "model_type"}, "missing field model_type"),
    (dict(SMALL_LLAMA, hidden_size="64"), 'field hidden_size must be an integer >= 1, got "64"'),
    ({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 3, "n_positions": 64, "vocab_size": 100},
     "field n_head 3 does not divide n_embd 64"),
    ('{"model_type": "llama", "hidden_size": 64,', "not a JSON file (line 1 column"),
    ("[1, 2]", "not a config.json file (its JSON is a list"),
])
def test_a_bad_config_is_one_error_line_naming_file_field_and_value(tmp_path, capsys, content, want):
    p = _write(tmp_path, content)
    assert ipusim_cli.main(["simulate", p]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ipusim: error: {p}: ") and want in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(ModelError, match="^" + p):       # the same from Python
        load(p)


def test_a_sequence_longer_than_the_positions_is_refused(tmp_path):
    p = _write(tmp_path, SMALL_LLAMA)
    with pytest.raises(ModelError, match="seq_len 65 exceeds max_position_embeddings 64"):
        get_model(p, seq_len=65)


def test_bert_config_dropouts_are_read_apart(tmp_path):
    # HF's attention_probs_dropout_prob drops the attention probabilities, hidden_dropout_prob
    # the rest; 0 leaves a Dropout out (MLPerf's Graphcore BERT ran without attention dropout)
    base = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64}

    def dropouts(cfg, name):
        g = load(_write(tmp_path, cfg, name), model_kw={"seq_len": 16})
        return sorted(n for n in g.ops() if g.op(n)["op"] == "Dropout")

    both = dropouts(base, "a.json")
    no_attn = dropouts(dict(base, attention_probs_dropout_prob=0.0), "b.json")
    none = dropouts(dict(base, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), "c.json")
    attn = [n for n in both if n.endswith("attention.self.dropout")]
    assert len(attn) == 2 and sorted(set(both) - set(attn)) == no_attn and none == []
    assert get_model("bert-large", layers=1, seq_len=16, attention_dropout=0.0).params() == \
        get_model("bert-large", layers=1, seq_len=16).params()
