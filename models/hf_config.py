"""Hugging Face-style ``config.json`` files as models: the JSON alone, no weights.

``load_config("path/config.json", batch=4, seq_len=512)`` reads the shape fields of the
file and builds the decoder (:func:`models.transformers.decoder`) or the BERT encoder
(:func:`models.zoo.bert`) they describe; timing and memory need no weights.

==============  =====================================================================
model_type      fields read (required in **bold**)
==============  =====================================================================
gpt2            **n_embd, n_layer, n_head, n_positions, vocab_size**, n_inner (null:
                4 x n_embd), tie_word_embeddings (true), layer_norm_epsilon,
                resid_pdrop
llama, mistral  **hidden_size, num_hidden_layers, num_attention_heads,
                intermediate_size, vocab_size, max_position_embeddings**,
                num_key_value_heads (the heads), tie_word_embeddings (false),
                rms_norm_eps, rope_theta
mixtral         the llama fields and **num_local_experts, num_experts_per_tok**
bert            **hidden_size, num_hidden_layers, num_attention_heads,
                intermediate_size, vocab_size, max_position_embeddings**,
                type_vocab_size (2), layer_norm_eps, num_labels (none: the
                encoder and pooler, ``BertModel``)
==============  =====================================================================

The sequence length is a model option, as for the built-ins: ``seq_len`` (default 128,
at most the file's positions).  Other model options (``layers``, ``capacity_factor``...)
override the file's values.  Every bad file is one :class:`ModelError` naming the file,
the field and the value: a missing or non-integer field, heads that do not divide the
hidden size, key-value heads that do not divide the heads, an unknown ``model_type``, a
file that is not JSON.

    >>> import json, tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "config.json")
    >>> _ = open(p, "w").write(json.dumps({"model_type": "llama", "hidden_size": 64,
    ...     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    ...     "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64}))
    >>> load_config(p, seq_len=16).params()
    86848
"""
from __future__ import annotations

import json
import os

from .errors import ModelError
from .transformers import OPTIONS, check_shapes, decoder
from .zoo import bert

MODEL_TYPES = ("gpt2", "llama", "mistral", "mixtral", "bert")

#: model_type -> our name of each required shape field -> the file's key
_REQUIRED = {
    "gpt2": {"hidden": "n_embd", "layers": "n_layer", "heads": "n_head", "max_position": "n_positions",
             "vocab": "vocab_size"},
    "llama": {"hidden": "hidden_size", "layers": "num_hidden_layers", "heads": "num_attention_heads",
              "intermediate": "intermediate_size", "vocab": "vocab_size", "max_position": "max_position_embeddings"},
}
_REQUIRED["mistral"] = _REQUIRED["bert"] = _REQUIRED["llama"]
_REQUIRED["mixtral"] = dict(_REQUIRED["llama"], experts="num_local_experts", experts_per_tok="num_experts_per_tok")


#: the model options a BERT config takes (those of :func:`models.zoo.bert`)
_BERT_OPTIONS = {"layers", "hidden", "heads", "intermediate", "vocab", "max_position", "type_vocab", "num_labels",
                 "tensor_parallel", "uneven_heads", "dropout", "attention_dropout"}


def is_config_path(model) -> bool:
    """Whether ``model`` names a ``config.json``-style file (by its extension)."""
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".json")


def read_config(path) -> dict:
    """The JSON object of ``path``; ModelError naming the file when it cannot be one."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, not a config.json file")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except UnicodeDecodeError as e:
        raise ModelError(f"{path}: not a JSON file (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not a JSON file (line {e.lineno} column {e.colno}: {e.msg})") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read: {e.strerror or e}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{path}: not a config.json file (its JSON is a {type(cfg).__name__}, not an object)")
    return cfg


def _int(path, cfg, key, lo=1):
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ModelError(f"{path}: field {key} must be an integer >= {lo}, got {json.dumps(v)}")
    return v


def _num(path, cfg, key, default):
    v = cfg.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ModelError(f"{path}: field {key} must be a number >= 0, got {json.dumps(v)}")
    return float(v)


def _bool(path, cfg, key, default):
    v = cfg.get(key, default)
    if not isinstance(v, bool):
        raise ModelError(f"{path}: field {key} must be true or false, got {json.dumps(v)}")
    return v


def config_options(path, cfg: dict) -> tuple[str, dict]:
    """``(model_type, builder options)`` of a parsed config (every field checked, by name)."""
    mt = cfg.get("model_type")
    if mt is None:
        raise ModelError(f"{path}: missing field model_type (one of {', '.join(MODEL_TYPES)})")
    if mt not in MODEL_TYPES:
        raise ModelError(f"{path}: field model_type {json.dumps(mt)} is not one of {', '.join(MODEL_TYPES)}")
    keys = _REQUIRED[mt]
    missing = [k for k in keys.values() if k not in cfg]
    if missing:
        raise ModelError(f"{path}: missing field {missing[0]} (model_type {mt} needs "
                         f"{', '.join(keys.values())})")
    o = {ours: _int(path, cfg, key) for ours, key in keys.items()}
    if mt == "gpt2":
        if cfg.get("n_inner") is not None:
            o["intermediate"] = _int(path, cfg, "n_inner")
        o["tie_word_embeddings"] = _bool(path, cfg, "tie_word_embeddings", True)
        o["eps"] = _num(path, cfg, "layer_norm_epsilon", 1e-5)
        o["dropout"] = _num(path, cfg, "resid_pdrop", 0.1)
        heads_key = "n_head"
    elif mt == "bert":
        o["type_vocab"] = _int(path, cfg, "type_vocab_size") if "type_vocab_size" in cfg else 2
        o["num_labels"] = _int(path, cfg, "num_labels") if "num_labels" in cfg else 0
        o["dropout"] = _num(path, cfg, "hidden_dropout_prob", 0.1)
        o["attention_dropout"] = _num(path, cfg, "attention_probs_dropout_prob", o["dropout"])
        heads_key = "num_attention_heads"
    else:
        o["kv_heads"] = _int(path, cfg, "num_key_value_heads") if cfg.get("num_key_value_heads") is not None \
            else o["heads"]
        o["tie_word_embeddings"] = _bool(path, cfg, "tie_word_embeddings", False)
        o["eps"] = _num(path, cfg, "rms_norm_eps", 1e-6)
        o["rope_theta"] = _num(path, cfg, "rope_theta", 10000.0)
        heads_key = "num_attention_heads"
        hd = cfg.get("head_dim")
        if hd is not None and o["hidden"] % o["heads"] == 0 and hd != o["hidden"] // o["heads"]:
            raise ModelError(f"{path}: field head_dim {json.dumps(hd)} differs from hidden_size / "
                             f"num_attention_heads = {o['hidden'] // o['heads']} (not supported)")
    hidden_key = keys["hidden"]
    if o["hidden"] % o["heads"]:
        raise ModelError(f"{path}: field {heads_key} {o['heads']} does not divide {hidden_key} {o['hidden']}")
    if o.get("kv_heads") and o["heads"] % o["kv_heads"]:
        raise ModelError(f"{path}: field num_key_value_heads {o['kv_heads']} does not divide "
                         f"{heads_key} {o['heads']}")
    if mt == "mixtral" and o["experts_per_tok"] > o["experts"]:
        raise ModelError(f"{path}: field num_experts_per_tok {o['experts_per_tok']} exceeds num_local_experts "
                         f"{o['experts']}")
    return mt, o


def model_name(path) -> str:
    """The model's name: the file's stem, or its folder's name for a ``config.json``."""
    path = os.path.abspath(os.fspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.basename(os.path.dirname(path)) or stem if stem == "config" else stem


def load_config(path, batch=1, dtype="fp32", seq_len=128, **overrides):
    """The forward op graph of the model a Hugging Face-style ``config.json`` describes (see
    the module doc); ``overrides`` are model options that replace the file's values."""
    path = os.fspath(path)
    mt, o = config_options(path, read_config(path))
    allowed = _BERT_OPTIONS if mt == "bert" else OPTIONS
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise ModelError(f"{path}: unknown model option(s) {', '.join(bad)}; options: {', '.join(sorted(allowed))}")
    o.update(overrides)
    o["seq_len"] = seq_len
    name = model_name(path)
    if mt == "bert":
        check_shapes(path, hidden=o["hidden"], heads=o["heads"], kv_heads=o["heads"], layers=o["layers"],
                     intermediate=o["intermediate"], vocab=o["vocab"], max_position=o["max_position"],
                     seq_len=seq_len)
        return bert(batch=batch, dtype=dtype, name=name, **o)
    check_shapes(path, hidden=o["hidden"], heads=o["heads"], kv_heads=o.get("kv_heads", o["heads"]),
                 layers=o["layers"], intermediate=o.get("intermediate", 4 * o["hidden"]), vocab=o["vocab"],
                 max_position=o["max_position"], seq_len=seq_len, experts=o.get("experts", 0),
                 experts_per_tok=o.get("experts_per_tok", 0))
    style = {"gpt2": "gpt2", "llama": "llama", "mistral": "llama", "mixtral": "mixtral"}[mt]
    return decoder(batch, dtype, style=style, name=name, **o)
