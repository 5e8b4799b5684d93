"""Write forward :class:`OpGraph` s (the built-in models) as real ONNX files.

Weights come from ``TensorInfo.data`` or ``weights``, otherwise they are drawn
from a seeded generator (He-normal for Conv / Gemm weights, ~1 for norm
scales, positive variances, small values elsewhere), so a file is the same
every time and the ONNX reference evaluator gives finite outputs.
Each node's ``doc_string`` carries ``{"ipusim": {layer, block, block_type}}``
so that :func:`models.load_onnx` restores them.
"""
from __future__ import annotations

import json
import os
from math import prod

import numpy as np

from . import oprules
from .errors import ModelError
from .opgraph import OpGraph

_ONNX_TYPE = {"fp32": 1, "fp16": 10, "bf16": 16, "fp64": 11, "int8": 3, "uint8": 2,
              "int32": 6, "int64": 7, "bool": 9}
_MIN_OPSET = {"LayerNormalization": 17, "Gelu": 20}


def to_onnx(g: OpGraph, path, *, seed: int = 0, weights: dict | None = None,
            opset: int | None = None, dynamic_batch: bool = False) -> str:
    """Save forward graph ``g`` as ONNX file ``path``; returns ``path``.

    ``opset`` defaults to the lowest of 13, 17 (LayerNormalization) and 20
    (Gelu) that covers the graph. ``dynamic_batch`` names dim 0 of inputs and
    outputs ``"batch"``.
    """
    import onnx
    from onnx import helper, numpy_helper

    path = os.fspath(path)
    for n in g.graph:
        if g.op(n)["phase"] != "fwd":
            raise ModelError(f"{g.name}: to_onnx exports forward graphs only; op {n!r} "
                             f"has phase {g.op(n)['phase']!r}")
    ops = g.ops()
    need = max([13] + [_MIN_OPSET.get(g.op(n)["op"], 13) for n in ops])
    opset = opset or need
    if opset < need:
        raise ModelError(f"{g.name}: opset {opset} is too old for this graph (needs {need})")
    roles = {}
    for n in ops:
        d = g.op(n)
        for i, t in enumerate(d["inputs"]):
            roles.setdefault(t, (d["op"], i, d["attrs"]))
    rng = np.random.default_rng(seed)
    weights = dict(weights or {})
    inits, nodes = [], []
    for t in g.tensors.values():
        if t.kind not in ("param", "state", "constant") or t.inplace_of or t.name not in roles:
            continue
        a = weights.get(t.name, t.data)
        if a is None:
            a = _init(rng, t, roles[t.name])
        a = np.asarray(a)
        if tuple(a.shape) != t.shape:
            raise ModelError(f"{g.name}: weight {t.name!r} has shape {a.shape}, "
                             f"expected {t.shape}")
        if t.dtype in ("fp32", "fp16"):
            a = a.astype(oprules.numpy_dtype(t.dtype))
        inits.append(numpy_helper.from_array(a, t.name))
    for n in ops:
        d = g.op(n)
        inputs = list(d["inputs"])
        attrs = dict(d["attrs"])
        try:
            schema = onnx.defs.get_schema(d["op"], opset)
        except Exception:
            raise ModelError(f"{g.name}: op {n!r} has op type {d['op']!r}, which has no "
                             f"ONNX schema at opset {opset}") from None
        if d["op"] == "Dropout" and "ratio" in attrs and "ratio" not in schema.attributes:
            r = f"{n}.ratio"
            inits.append(numpy_helper.from_array(np.array(attrs["ratio"], np.float32), r))
            inputs.append(r)
        attrs = {k: _plain(v) for k, v in attrs.items() if k in schema.attributes}
        meta = {"ipusim": {"layer": d["layer"], "block": d["block"],
                           "block_type": d["block_type"]}}
        nodes.append(helper.make_node(d["op"], inputs, d["outputs"], name=n,
                                      doc_string=json.dumps(meta), **attrs))

    def info(t):
        ti = g.tensors[t]
        shape = list(ti.shape)
        if dynamic_batch and shape:
            shape[0] = "batch"
        return helper.make_tensor_value_info(t, _ONNX_TYPE[ti.dtype], shape)

    io = set(g.inputs) | set(g.outputs)
    value_info = [info(t) for n in ops for t in g.op(n)["outputs"] if t not in io]
    graph = helper.make_graph(nodes, g.name, [info(t) for t in g.inputs],
                              [info(t) for t in g.outputs], inits, value_info=value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="ipusim")
    model.ir_version = 8 if opset <= 18 else 9
    onnx.save(model, path)
    return path


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def _init(rng, t, role):
    op, i, attrs = role
    shape = t.shape
    if op in ("Conv", "Gemm", "MatMul") and i == 1:
        if op == "Gemm":
            fan_in = shape[1] if attrs.get("transB", 0) else shape[0]
        elif op == "MatMul":
            fan_in = shape[0]
        else:
            fan_in = prod(shape[1:])
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
    if op in ("BatchNormalization", "LayerNormalization") and i == 1:
        return 1 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
    if op == "BatchNormalization" and i == 4:
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if op == "BatchNormalization" and i == 3:
        return 0.1 * rng.standard_normal(shape, dtype=np.float32)
    return 0.02 * rng.standard_normal(shape, dtype=np.float32)
