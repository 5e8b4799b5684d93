"""Run ONNX models on the simulated chip: an ``onnx.backend`` for functional mode.

The usual backend-module shape, so that ONNX's own backend test runner can
drive it::

    import onnx, simulator.onnx_backend as backend
    rep = backend.prepare(onnx.load("resnet50.onnx"), chip="gc200")
    (probs,) = rep.run([image])          # numpy in, numpy out
    rep.report                            # cycles, vertices, memory of the compiled graph

``prepare`` imports the model (models/), lowers it with the same planners as
``ipusim compile`` (compiler/), and ``run`` executes the codelets' numpy
semantics on the tiles' data (simulator/functional.py).  Host arrays are
converted to and from the storage layouts the planners chose (channel-grouped
images, blocked weights); folded batch-norm parameters are computed on the
host, as a deployment flow would.

Ops whose lowering is exact in values are listed in :data:`EXACT_OPS`; any
other op is refused at ``prepare`` with the node's name, rather than giving
wrong numbers.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

import models
from compiler.executable import compile_program
from compiler.lower import lower

from hardware.chips import get_chip
from .engine import Engine
from .functional import FunctionalState

EXACT_OPS = {"Conv", "Gemm", "MatMul", "Relu", "MaxPool", "GlobalAveragePool", "BatchNormalization",
             "Add", "Sub", "Mul", "Div", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity",
             "Dropout", "Softmax", "Sigmoid", "Tanh", "Exp", "Sqrt", "AveragePool"}


class BackendError(ValueError):
    pass


def _to_storage(data, kind, info, act):
    """Host array (ONNX layout) -> flat array in the graph's storage order."""
    x = np.asarray(data)
    if x.dtype.kind != "f":      # float data keeps its precision (a float32 copy is exact and half the bytes)
        x = x.astype(np.float64)
    if kind == "conv":
        P, Cog, go, ncig, cig, kh, kw = (info[k] for k in ("P", "Cog", "go", "ncig", "cig", "kh", "kw"))
        return x.reshape(Cog, go, P, ncig, cig, kh, kw).transpose(2, 0, 3, 5, 6, 4, 1).ravel()
    if kind == "matmul":
        B = x.T if info["trans"] else x.reshape(info["K"], info["N"])
        P, nb, K, N = info["P"], info["nb"], info["K"], info["N"]
        blocks = []
        for p in range(P):
            k0, k1 = p * K // P, (p + 1) * K // P
            for n0 in range(0, N, nb):
                blocks.append(B[k0:k1, n0:n0 + nb].ravel())
        return np.concatenate(blocks)
    return _grouped(x, act)


def _grouped(x, act):
    """(N, C, H, W) -> [N][C/g][H][W][g]; other ranks are row-major already."""
    if len(act.logical) == 4:
        N, C, H, W = act.logical
        return x.reshape(N, C // act.g, act.g, H, W).transpose(0, 1, 3, 4, 2).ravel()
    return x.ravel()


def _ungrouped(flat, act):
    if len(act.logical) == 4:
        N, C, H, W = act.logical
        return flat.reshape(N, C // act.g, H, W, act.g).transpose(0, 1, 4, 2, 3).reshape(act.logical)
    return flat.reshape(act.logical)


class SimBackendRep(BackendRep):
    def __init__(self, model, chip="gc200", batch=None, **options):
        try:
            self.opgraph = models.load_onnx_model(model, batch=batch,
                                                  source=options.pop("source", "<onnx model>"))
        except models.ModelError as e:
            raise BackendError(str(e)) from None
        for name in self.opgraph.ops():
            d = self.opgraph.op(name)
            if d["op"] not in EXACT_OPS or (d["op"] == "Conv" and int(d["attrs"].get("group", 1)) != 1):
                raise BackendError(f"node {name!r}: op type {d['op']!r} is not supported by the functional "
                                   f"backend (exact ops: {', '.join(sorted(EXACT_OPS))})")
            self._check_exact(name, d)
        self.chip = get_chip(chip)
        self.lowered = lower(self.opgraph, self.chip, dtype=options.pop("dtype", "fp32"),
                             use_functions=options.pop("use_functions", True))
        self.exe = compile_program(self.lowered.graph, self.lowered.program)
        # the functional gather plans depend on the graph only: built once, here, and kept
        # with the executable for every run
        FunctionalState(self.exe).prepare()
        self._weights = self._host_weights()
        self.report = None

    def _check_exact(self, name, d):
        """Refuse, naming the node, what the lowering would not compute exactly."""
        og, a = self.opgraph, d["attrs"]

        def fail(why):
            raise BackendError(f"node {name!r} ({d['op']}): {why} is not supported by the functional backend")

        if d["op"] == "AveragePool" and any(a.get("pads") or []):
            fail("padding")
        if d["op"] in ("MaxPool", "AveragePool") and a.get("ceil_mode"):
            fail("ceil_mode")
        if d["op"] == "Gemm" and (a.get("transA") or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0):
            fail("transA / alpha / beta")
        if d["op"] == "BatchNormalization" and any(og.tensors[t].kind not in ("param", "constant", "state")
                                                   for t in d["inputs"][1:5]):
            fail("scale / bias / mean / var given at run time (not initializers)")
        if d["op"] == "Softmax":
            rank = len(og.tensors[d["inputs"][0]].shape)
            axis = int(a.get("axis", -1))
            if rank > 2 and axis % rank != rank - 1:
                fail(f"softmax over axis {axis} of a rank-{rank} tensor")
        if d["op"] in ("Add", "Sub", "Mul", "Div"):
            shapes = [og.tensors[t].shape for t in d["inputs"]]
            out = og.tensors[d["outputs"][0]].shape
            for sh in shapes:
                n = int(np.prod(sh)) if sh else 1
                ok = tuple(sh) == tuple(out) or (len(out) == 4 and n == out[1]) or (len(out) <= 2 and n == out[-1])
                if not ok:
                    fail(f"broadcasting {tuple(sh)} to {tuple(out)}")

    def _host_weights(self):
        """Every parameter and derived weight in storage order, computed once."""
        og, low = self.opgraph, self.lowered
        out = {}
        for name, t in og.tensors.items():
            if t.kind in ("param", "constant", "state") and name in low.acts and t.data is not None:
                kind, info = low.host_layout.get(name, ("plain", None))
                out[name] = _to_storage(t.data, kind, info, low.acts[name])
        for name, (kind, recipe) in low.host_layout.items():
            if kind != "derived":
                continue
            what, (scale, bias, mean, var), eps = recipe
            sc, b, mu, v = (np.asarray(og.tensors[n].data, np.float64) for n in (scale, bias, mean, var))
            s = sc / np.sqrt(v + eps)
            out[name] = s if what == "bn_scale" else b - mu * s
        for name, flat in out.items():   # fp32 tensors: converted once here, not at every run
            if low.acts[name].tensor.dtype == "fp32":
                out[name] = np.asarray(flat, np.float32)
        return out

    def run(self, inputs, **kwargs):
        og, low = self.opgraph, self.lowered
        names = [n for n in og.inputs if og.tensors[n].kind == "input"]
        if isinstance(inputs, dict):
            inputs = [inputs[n] for n in names]
        inputs = list(inputs)
        if len(inputs) != len(names):
            raise BackendError(f"model has {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
        feeds = {}
        for n, x in zip(names, inputs):
            want = og.tensors[n].shape
            x = np.asarray(x)
            if tuple(x.shape) != tuple(want):
                raise BackendError(f"input {n!r}: expected shape {tuple(want)}, got {tuple(x.shape)}")
            feeds[n] = [_grouped(x, low.acts[n])]
        eng = Engine(self.exe, self.chip, functional=True, inputs=feeds)
        for n, flat in self._weights.items():
            eng.write(low.acts[n].tensor, flat)
        self.report = eng.run()
        outs = []
        for n in og.outputs:
            flat = np.asarray(eng.outputs[n][0], np.float64)
            dt = np.float16 if low.dtype == "fp16" else np.float32
            outs.append(_ungrouped(flat, low.acts[n]).astype(dt))
        return namedtuple("Outputs", [f"o{i}" for i in range(len(outs))])(*outs)


FULL_CHECK_BYTES = 16 << 20


def _check_model(model):
    """``onnx.checker.check_model``, as ``Backend.prepare`` does.  Above FULL_CHECK_BYTES of
    weights the checker runs on a light copy (large initializers as typed graph inputs):
    the same nodes, attributes, opsets and graph structure are checked without
    serializing the weights (the importer reads and checks those itself)."""
    src = model.graph
    if sum(len(t.raw_data) for t in src.initializer) <= FULL_CHECK_BYTES:
        onnx.checker.check_model(model)
        return
    from onnx import helper
    light = onnx.ModelProto()
    for f in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        if model.HasField(f):
            setattr(light, f, getattr(model, f))
    light.opset_import.extend(model.opset_import)
    light.metadata_props.extend(model.metadata_props)
    light.functions.extend(model.functions)
    g = light.graph
    for f in ("name", "doc_string"):
        if src.HasField(f):
            setattr(g, f, getattr(src, f))
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    inputs = {i.name for i in src.input}
    for t in src.initializer:
        if t.ByteSize() <= 4096:
            g.initializer.append(t)
        elif t.name not in inputs:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    onnx.checker.check_model(light)


class SimBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        try:
            SimBackendRep(model, **kwargs)
            return True
        except Exception:
            return False

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        if not cls.supports_device(device):
            raise BackendError(f"device {device!r} is not supported (the simulated chip runs as 'CPU')")
        _check_model(model)
        return SimBackendRep(model, **kwargs)

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        """Run one node by wrapping it in a one-node model."""
        from onnx import helper
        ins = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, np.shape(x))
               for n, x in zip(node.input, inputs)]
        opset = [helper.make_opsetid("", kwargs.pop("opset", 13))]
        # output shapes from ONNX's shape inference (a model's outputs must carry one)
        probe = helper.make_model(helper.make_graph([node], "node", ins, [
            helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in node.output]),
            opset_imports=opset)
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(probe).graph.output}
        outs = [inferred[n] for n in node.output]
        m = helper.make_model(helper.make_graph([node], "node", ins, outs), opset_imports=opset)
        return cls.run_model(m, list(inputs), device, **kwargs)

    @classmethod
    def supports_device(cls, device):
        return str(device).upper().startswith("CPU")


prepare = SimBackend.prepare
run_model = SimBackend.run_model
run_node = SimBackend.run_node
supports_device = SimBackend.supports_device
is_compatible = SimBackend.is_compatible
