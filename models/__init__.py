"""Networks as op-level graphs (:class:`OpGraph`): built-in models, ONNX
import / export, training graphs and FLOP / parameter summaries.

    >>> from models import get_model, list_models
    >>> g = get_model("resnet50", batch=1)
    >>> g.params()
    25557032
    >>> t = get_model("mnist-mlp", train=True, optimizer="adam")
    >>> sorted({t.op(n)["phase"] for n in t.graph})
    ['bwd', 'fwd', 'loss', 'update']
"""
from __future__ import annotations

import inspect
import os

from .errors import ModelError
from .export_onnx import to_onnx
from .hf_config import is_config_path, load_config
from .onnx_import import load_onnx, load_onnx_model
from .opgraph import FAMILIES, OpGraph, TensorInfo
from .published import published_graph
from .summary import format_summary, summary
from .training import make_training_graph
from .zoo import BUILDERS

__all__ = ["get_model", "list_models", "load", "load_config", "published_graph", "load_onnx", "load_onnx_model", "to_onnx",
           "make_training_graph",
           "summary", "format_summary", "ModelError", "OpGraph", "TensorInfo", "FAMILIES"]

DTYPES = ("fp32", "fp16")


def list_models() -> list:
    """Names accepted by :func:`get_model`."""
    return sorted(BUILDERS)


def get_model(name: str, batch: int = 1, dtype: str = "fp32", train: bool = False,
              optimizer: str = "sgd", **kw) -> OpGraph:
    """Build built-in model ``name`` (see :func:`list_models`).

    ``kw`` are the model's own options (e.g. ``layers`` / ``seq_len`` for
    ``bert-base``, ``num_classes`` / ``image_size`` for the CNNs, ``hidden``
    for ``mnist-mlp``; ``momentum`` / ``lr`` go to the optimizer). With
    ``train=True`` the result is :func:`make_training_graph` of the forward
    graph with ``optimizer`` ("sgd" or "adam").  ``name`` may also be a Hugging Face-style
    ``config.json`` path (:func:`load_config`; ``kw``: ``seq_len`` and overrides of its fields).
    """
    if name not in BUILDERS and not is_config_path(name):
        raise ModelError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if dtype not in DTYPES:
        raise ModelError(f"{name}: dtype {dtype!r} not supported; choose from "
                         f"{', '.join(DTYPES)}")
    opt_kw = {k: kw.pop(k) for k in ("momentum", "lr", "beta1", "beta2", "epsilon")
              if k in kw}
    if is_config_path(name):
        g = load_config(name, batch=batch, dtype=dtype, **kw)
        return make_training_graph(g, optimizer, **opt_kw) if train else g
    build = BUILDERS[name]
    allowed = set(inspect.signature(build).parameters) - {"batch", "dtype", "name"}
    bad = sorted(set(kw) - allowed)
    if bad:
        raise ModelError(f"{name}: unknown option(s) {', '.join(bad)}; "
                         f"options: {', '.join(sorted(allowed))}")
    g = build(batch=batch, dtype=dtype, **kw)
    if train:
        return make_training_graph(g, optimizer, **opt_kw)
    if opt_kw:
        raise ModelError(f"{name}: {', '.join(opt_kw)} only apply with train=True")
    return g


def load(model, *, batch=1, train=False, optimizer="sgd", model_kw=None) -> OpGraph:
    """The op graph of ``model``: a built-in name, an ``.onnx`` path, a Hugging Face-style
    ``config.json`` path (``model_kw``: ``seq_len`` and overrides), a builder
    ``batch -> forward OpGraph``, or an :class:`OpGraph` (returned as it is).
    ``train=True`` adds the loss, backward pass and ``optimizer`` update."""
    if is_config_path(model):
        return get_model(os.fspath(model), batch=batch, train=train, optimizer=optimizer, **dict(model_kw or {}))
    if isinstance(model, str) and (model.endswith(".onnx") or "/" in model):
        og = load_onnx(model, batch=batch)
        return make_training_graph(og, optimizer=optimizer) if train else og
    if callable(model) and not hasattr(model, "graph"):      # a builder: batch -> forward OpGraph
        og = model(batch=batch)
        return make_training_graph(og, optimizer=optimizer) if train else og
    if not isinstance(model, str):
        return model
    return get_model(model, batch=batch, train=train, optimizer=optimizer, **dict(model_kw or {}))
