"""Run ONNX models on the simulated chip: an ``onnx.backend`` for functional mode.

The usual backend-module shape, so that ONNX's own backend test runner can
drive it::

    import onnx, simulator.onnx_backend as backend
    rep = backend.prepare(onnx.load("resnet50.onnx"), chip="gc200")
    (probs,) = rep.run([image])          # numpy in, numpy out
    rep.report                            # cycles, vertices, memory of the compiled graph
    rep.timings                           # where prepare's and the last run's seconds went

``prepare`` imports the model (models/), lowers it with the same planners as
``ipusim compile`` (compiler/), and ``run`` executes the codelets' numpy
semantics on the tiles' data (simulator/functional.py).  The timing (the
exchange plans and the simulated run behind ``rep.report``) does not change the
values: it is computed when ``rep.report`` is first read.  Host arrays are
converted to and from the storage layouts the planners chose (channel-grouped
images, blocked weights); folded batch-norm parameters are computed on the
host, as a deployment flow would.

Ops whose lowering is exact in values are listed in :data:`EXACT_OPS`; any
other op is refused at ``prepare`` with the node's name, rather than giving
wrong numbers.
"""
from __future__ import annotations

import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

import models
from models.onnx_expand import EXPANDED
from models.onnx_import import check_model as _check_model
from compiler.executable import compile_program
from compiler.lower import lower
from compiler.parallel import threads
from compiler.planners.indexed import OPS as INDEXED_OPS

from hardware.chips import get_chip
from .engine import Engine
from .functional import FunctionalState

EXACT_OPS = {"Conv", "Gemm", "MatMul", "Relu", "MaxPool", "GlobalAveragePool", "BatchNormalization",
             "Add", "Sub", "Mul", "Div", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity",
             "Dropout", "Softmax", "Sigmoid", "Tanh", "Exp", "Sqrt", "AveragePool"} | set(INDEXED_OPS) \
    | set(EXPANDED)    # imported as the exact ops above (models/onnx_expand.py)

#: ONNX element types the chip computes exactly: float32, and integers / booleans held as
#: float32 values (exact below 2^24 in magnitude, which ``run`` checks)
EXACT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
               onnx.TensorProto.UINT16, onnx.TensorProto.INT32, onnx.TensorProto.UINT32, onnx.TensorProto.INT64,
               onnx.TensorProto.UINT64, onnx.TensorProto.BOOL}
#: integers are exact in the chip's float32 words up to this magnitude
INT_EXACT = float(1 << 24)
#: inputs that must be constants (initializers or computed from them): the lowering reads them
CONST_INPUTS = {"Slice": (1, 2, 3, 4), "Pad": (1, 2, 3), "Tile": (1,), "Trilu": (1,), "GatherND": (1,), "Compress": (1,), "ReverseSequence": (1,), "CumSum": (1,), "CumProd": (1,),
                **{r: (1,) for r in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                     "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")}}
#: ops that sum (or otherwise reduce) many elements: refused on float16 tensors
ACCUMULATING = {"MatMul", "Gemm", "Conv", "Softmax", "LogSoftmax", "AveragePool", "GlobalAveragePool", "LpPool",
                "GlobalLpPool", "LRN", "CumSum", "CumProd", "LayerNormalization", "RMSNormalization",
                "InstanceNormalization", "LpNormalization", "MeanVarianceNormalization", "BatchNormalization",
                "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", "Mean", "Sum", "ReduceSum", "ReduceMean",
                "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
#: ops whose second and later outputs are computed (others: only the first may be used)
MULTI_OUTPUT = {"Split", "Dropout", "LayerNormalization", "SoftmaxCrossEntropyLoss"}


class BackendError(ValueError):
    pass


def _to_storage(data, kind, info, act):
    """Host array (ONNX layout) -> flat array in the graph's storage order."""
    x = np.asarray(data)
    if x.dtype.kind != "f":      # float data keeps its precision (a float32 copy is exact and half the bytes)
        x = x.astype(np.float64)
    pieces = _storage_pieces(x, kind, info, act)
    return pieces[0].ravel() if len(pieces) == 1 else np.concatenate([p.ravel() for p in pieces])


def _storage_pieces(x, kind, info, act):
    """Host array ``x`` (ONNX layout) in the graph's storage order: views of ``x`` whose
    values, each flattened, follow each other (no copy made)."""
    if kind == "conv":
        P, Cog, go, ncig, cig, kh, kw = (info[k] for k in ("P", "Cog", "go", "ncig", "cig", "kh", "kw"))
        return [x.reshape(Cog, go, P, ncig, cig, kh, kw).transpose(2, 0, 3, 5, 6, 4, 1)]
    if kind == "matmul":
        B = x.T if info["trans"] else x.reshape(info["K"], info["N"])
        P, nb, K, N = info["P"], info["nb"], info["K"], info["N"]
        blocks = []
        for p in range(P):
            k0, k1 = p * K // P, (p + 1) * K // P
            for n0 in range(0, N, nb):
                blocks.append(B[k0:k1, n0:n0 + nb])
        return blocks
    return [_grouped_view(x, act)]


def _write_storage(data, kind, info, act, dest):
    """:func:`_to_storage` written straight into ``dest`` (the tensor's elements in the tiles'
    memory, float32), one strided copy per piece: no flat copy between."""
    pos = 0
    for p in _storage_pieces(np.asarray(data), kind, info, act):
        dest[pos: pos + p.size].reshape(p.shape)[...] = p
        pos += p.size
    if pos != dest.size:
        raise BackendError(f"tensor {act.tensor.name!r}: {pos} values for {dest.size} elements")


def _grouped_view(x, act):
    """(N, C, H, W) -> a view [N][C/g][H][W][g]; other ranks are row-major already (flattened)."""
    if len(act.logical) == 4:
        N, C, H, W = act.logical
        return x.reshape(N, C // act.g, act.g, H, W).transpose(0, 1, 3, 4, 2)
    return x.reshape(-1)


def _grouped(x, act):
    """:func:`_grouped_view`, flat."""
    return _grouped_view(x, act).ravel()


def _ungrouped(flat, act):
    if len(act.logical) == 4:
        N, C, H, W = act.logical
        return flat.reshape(N, C // act.g, H, W, act.g).transpose(0, 1, 4, 2, 3).reshape(act.logical)
    return flat.reshape(act.logical)


def _type_name(code):
    return onnx.TensorProto.DataType.Name(code)


def _check_types(model):
    """Refuse tensors of element types the chip does not compute exactly (double, half,
    bfloat16, 8-bit floats, 4-bit integers, strings), naming the first."""
    g = model.graph
    vals = [(v.name, v.type.tensor_type.elem_type) for v in list(g.input) + list(g.output) + list(g.value_info)
            if v.type.HasField("tensor_type")]
    vals += [(t.name, t.data_type) for t in g.initializer]
    for n in g.node:
        for a in n.attribute:
            if a.name == "to" and a.type == onnx.AttributeProto.INT:
                vals.append((f"{n.name or n.op_type}'s cast target", a.i))
    for name, code in vals:
        if code not in EXACT_TYPES:
            raise BackendError(f"tensor {name!r}: element type {_type_name(code)} is not supported by the "
                               "functional backend (it computes float32 and float16, and integers / booleans held in float32)")
    for v in list(g.input) + list(g.output):
        if not v.type.HasField("tensor_type"):
            raise BackendError(f"graph input / output {v.name!r} is not a tensor (sequences, maps and optionals "
                               "are not supported by the functional backend)")


def _import_checked(model, batch=None, source="<onnx model>"):
    """Import ``model`` and refuse, naming the node, what the lowering would not compute exactly."""
    _check_types(model)
    try:
        og = models.load_onnx_model(model, batch=batch, source=source)
    except models.ModelError as e:
        raise BackendError(str(e)) from None
    for name in og.ops():
        d = og.op(name)
        if d["op"] not in EXACT_OPS:
            raise BackendError(f"node {name!r}: op type {d['op']!r} is not supported by the functional "
                               f"backend (exact ops: {', '.join(sorted(EXACT_OPS))})")
        _check_exact(og, name, d)
    for name, t in og.tensors.items():
        if t.size == 0 and t.data is None:
            raise BackendError(f"tensor {name!r} has no elements (shape {t.shape}): empty tensors are not "
                               "supported by the functional backend")
    return og


def _check_exact(og, name, d):
    a = d["attrs"]

    def fail(why):
        raise BackendError(f"node {name!r} ({d['op']}): {why} is not supported by the functional backend")

    for t in d["inputs"] + d["outputs"]:
        if og.tensors[t].dtype not in ("fp32", "fp16", "int8", "uint8", "int32", "int64", "bool"):
            fail(f"tensor {t!r} of dtype {og.tensors[t].dtype}")
    if d["op"] in ACCUMULATING and any(og.tensors[t].dtype == "fp16" for t in d["inputs"] + d["outputs"]):
        # a half-precision sum depends on its order and accumulator width (onnx's reference and
        # the chip's vertices differ in the last bit): only element-wise float16 ops are computed
        fail("a float16 reduction / contraction")
    if d["op"] == "BatchNormalization" and a.get("training_mode"):
        fail("training_mode")
    if d["op"] == "GatherND" and int(a.get("batch_dims", 0)):
        fail("batch_dims")
    slots = d.get("slots") or d["inputs"]
    if d["op"] == "Dropout" and len(slots) > 2 and slots[2]:
        tm = og.tensors[slots[2]].data
        if tm is None or bool(np.asarray(tm).reshape(-1)[0]):
            fail("training_mode (random masks)")
    if len([o for o in d["outputs"] if o]) > 1 and d["op"] not in MULTI_OUTPUT:
        fail("a second output")
    for i in CONST_INPUTS.get(d["op"], ()):
        if i < len(slots) and slots[i] and og.tensors[slots[i]].data is None:
            fail(f"input {slots[i]!r} given at run time (it must be a constant)")


class SimBackendRep(BackendRep):
    #: seconds of each phase, host wall clock (``timings``): import (read and check the model's
    #: nodes and weights), lower (vertices and edges), compile (the main thread's gather plans,
    #: checks and copies' plans), first_memory (the first run's memory, made on another thread
    #: beside ``compile`` where a second core is free; None otherwise), first_memory_waited (how
    #: long ``compile`` then waited for it), run (the last ``run``)
    PHASES = ("import", "lower", "compile", "first_memory", "first_memory_waited", "run")

    def __init__(self, model, chip="gc200", batch=None, **options):
        t0 = time.perf_counter()
        self.timings = dict.fromkeys(self.PHASES)
        self.opgraph = _import_checked(model, batch, options.pop("source", "<onnx model>"))
        t1 = time.perf_counter()
        self.model_outputs = {v.name: v.type.tensor_type.elem_type for v in model.graph.output}
        self.model_inputs = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
        self.chip = get_chip(chip)
        self.lowered = lower(self.opgraph, self.chip, dtype=options.pop("dtype", "fp32"),
                             use_functions=options.pop("use_functions", True), functional=True)
        t2 = time.perf_counter()
        self._weights_made = None
        self.exe, self._image = self._compile()
        self.timings.update({"import": t1 - t0, "lower": t2 - t1, "compile": time.perf_counter() - t2})
        self._report, self._ran = None, False

    def _compile(self):
        """(the executable, the first run's memory or None).  The compute costs and exchange
        plans (which tile sends which bytes) are the timing's: computed when ``report`` is first
        read, not for the values.  The functional gather plans depend on the graph only: built
        once, here, and kept with the executable for every run.  Where a second core is free,
        another thread makes the first run's memory (:meth:`_first_memory`: large numpy passes,
        which release the GIL) while this one builds the gather plans and compiles.  (The
        checks on a third thread beside the plans, both many small numpy steps that hold the
        GIL, made the two slower together than one after the other: 0.27-0.74 s against
        0.24-0.33 s for ResNet-50 on an idle machine.)  A graph the checks refuse raises their
        error, not the plans'."""
        graph, program = self.lowered.graph, self.lowered.program
        if threads() < 2:
            exe = compile_program(graph, program, timing="lazy")
            FunctionalState(exe).prepare()
            self._weights_made = self._host_weights()
            return exe, None
        arrays = graph.finalize(check=False)
        shell = SimpleNamespace(graph=graph, arrays=arrays, functional_cache={})
        with ThreadPoolExecutor(max_workers=1) as pool:
            image = pool.submit(self._first_memory)
            try:
                FunctionalState(shell, memory=False).prepare()
            except Exception:
                compile_program(graph, program, timing="lazy")    # the checks' error, if any
                raise
            exe = compile_program(graph, program, timing="lazy")
            exe.functional_cache = shell.functional_cache
            t = time.perf_counter()
            mem = image.result()
            self.timings["first_memory_waited"] = time.perf_counter() - t
            return exe, mem

    def _first_memory(self):
        """The first run's memory: the constants and weights written, every page touched.  A
        run starts by allocating the tiles' memory (ResNet-50: 86 M elements, 345 MB) and
        writing the weights; the system gives each page at its first write, which on this
        machine took 0.09-0.84 s (docs/functional-speed.md).  Made beside the compile, that is
        off the run's path (the rep holds it until then), though the compile waits for it where
        it takes longer (``timings``).  The weights go straight from the model's arrays into
        it (no storage-order copy of them all: :attr:`_weights` makes that for later runs)."""
        t = time.perf_counter()
        graph = self.lowered.graph
        state = FunctionalState(SimpleNamespace(graph=graph, functional_cache={}),
                                memory=FunctionalState.new_memory(graph, touch=True))
        self._host_weights(into=state)
        self.timings["first_memory"] = time.perf_counter() - t
        return state.mem

    @property
    def _weights(self):
        """Every parameter and derived weight in storage order (:meth:`_host_weights`), made
        at the first run that needs them."""
        if self._weights_made is None:
            self._weights_made = self._host_weights()
        return self._weights_made

    @property
    def report(self):
        """The compiled program's simulated run (cycles, vertices, memory): None before the
        first ``run``; the timing simulation runs when this is first read (``run`` computes
        the values alone; the timing does not depend on them)."""
        if self._report is None and self._ran:
            self._report = Engine(self.exe, self.chip).run()
        return self._report

    _check_exact = staticmethod(lambda og, name, d: _check_exact(og, name, d))

    def _host_weights(self, into=None):
        """Every parameter and derived weight in storage order: name -> flat array; or, with
        ``into`` (a :class:`FunctionalState`), written into its memory (float32 parameters
        held in one range of it straight from the model's arrays), returning None."""
        og, low = self.opgraph, self.lowered
        out = {}
        for name, t in og.tensors.items():
            if t.kind in ("param", "constant", "state") and name in low.acts and t.data is not None:
                kind, info = low.host_layout.get(name, ("plain", None))
                if into is not None and low.acts[name].tensor.dtype == "fp32" and np.asarray(t.data).dtype.kind == "f":
                    dest = into.view(low.acts[name].tensor)
                    if dest is not None:
                        _write_storage(t.data, kind, info, low.acts[name], dest)
                        continue
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
        if into is None:
            return out
        for name, flat in out.items():
            into.write(low.acts[name].tensor, flat)
        return None

    def run(self, inputs, **kwargs):
        t0 = time.perf_counter()
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
            code = self.model_inputs.get(n)
            if code is not None:
                wdt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code))
                if x.dtype != wdt:
                    raise BackendError(f"input {n!r}: expected dtype {wdt}, got {x.dtype}")
                if x.dtype.kind in "iu" and x.size and np.abs(x.astype(np.float64)).max() >= INT_EXACT:
                    raise BackendError(f"input {n!r}: integer values of magnitude 2^24 or more are not exact in the "
                                       "chip's float32 words (the functional backend computes integers in float32)")
            feeds[n] = [_grouped(x, low.acts[n])]
        image, self._image = self._image, None      # the first run's memory, made by prepare
        state = FunctionalState(self.exe, inputs=feeds, memory=True if image is None else image)
        if image is None:
            for n, flat in self._weights.items():
                state.write(low.acts[n].tensor, flat)
        state.run_program()
        self._ran = True
        self._check_integers(state)
        outs = []
        for n in og.outputs:
            flat = np.asarray(state.outputs[n][0], np.float64)
            code = self.model_outputs.get(n)
            if code is not None:
                dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code))
            else:
                dt = np.dtype(np.float16 if low.dtype == "fp16" else np.float32)
            y = _ungrouped(flat, low.acts[n])
            if dt.kind in "iu":
                info = np.iinfo(dt)
                if y.size and (y.min() < info.min or y.max() > info.max):
                    raise BackendError(f"output {n!r}: a value outside {dt}'s range (an integer overflow, which "
                                       "the functional backend does not wrap)")
            outs.append(y.astype(dt))
        self.timings["run"] = time.perf_counter() - t0
        return namedtuple("Outputs", [f"o{i}" for i in range(len(outs))])(*outs)

    def _check_integers(self, eng):
        """Integer tensors the program computed must hold integers below 2^24 in magnitude (exact
        in float32); a larger result is refused, naming the tensor, rather than returned rounded."""
        og, low = self.opgraph, self.lowered
        for name, t in og.tensors.items():
            if t.producer is None or t.dtype in ("fp32", "fp16", "bool") or name not in low.acts:
                continue
            v = eng.read(low.acts[name].tensor)
            if v.size and not np.all(np.isfinite(v)):
                raise BackendError(f"tensor {name!r} (an integer tensor): a non-finite result (an integer "
                                   "division by zero?)")
            if v.size and np.abs(v).max() >= INT_EXACT:
                raise BackendError(f"tensor {name!r}: an integer result of magnitude 2^24 or more is not exact in "
                                   "the chip's float32 words")


#: inputs whose values the lowering reads (shapes, axes, pads, indices): a graph input in one of
#: these places makes ``prepare`` compile at the first ``run``, with its value as a constant
STATIC_SLOTS = dict(CONST_INPUTS, Reshape=(1,), Expand=(1,), Unsqueeze=(1,), Squeeze=(1,), Split=(1,),
                    ConstantOfShape=(0,), Range=(0, 1, 2), Tile=(1,), OneHot=(1,), TopK=(1,))


def _static_inputs(model):
    """Graph inputs that feed a :data:`STATIC_SLOTS` place directly."""
    inits = {t.name for t in model.graph.initializer}
    ins = {v.name for v in model.graph.input} - inits
    found = []
    for n in model.graph.node:
        for i in STATIC_SLOTS.get(n.op_type, ()):
            if i < len(n.input) and n.input[i] in ins and n.input[i] not in found:
                found.append(n.input[i])
    return found


class SpecializingRep(BackendRep):
    """A model some of whose inputs are read by the lowering itself (a Reshape's target, a
    reduction's axes, a Slice's starts given as graph inputs): compiled at each ``run`` with new
    values of those inputs, which become constants of the compiled graph (one compile per
    distinct value, kept)."""

    def __init__(self, model, static, **options):
        _check_types(model)
        for n in model.graph.node:
            if n.op_type not in EXACT_OPS and n.op_type not in ("Constant", "Shape", "Size", "ConstantOfShape", "Range"):
                raise BackendError(f"node {n.name!r}: op type {n.op_type!r} is not supported by the functional "
                                   f"backend (exact ops: {', '.join(sorted(EXACT_OPS))})")
        self.model, self.static, self.options = model, list(static), options
        inits = {t.name for t in model.graph.initializer}
        self.names = [v.name for v in model.graph.input if v.name not in inits]
        self.compiled = {}
        self._last = None

    def run(self, inputs, **kwargs):
        from onnx import numpy_helper
        if isinstance(inputs, dict):
            inputs = [inputs[n] for n in self.names]
        inputs = list(inputs)
        if len(inputs) != len(self.names):
            raise BackendError(f"model has {len(self.names)} inputs ({', '.join(self.names)}), got {len(inputs)}")
        given = dict(zip(self.names, inputs))
        key = tuple((n, np.asarray(given[n]).dtype.str, np.shape(given[n]), np.asarray(given[n]).tobytes())
                    for n in self.static)
        rep = self.compiled.get(key)
        if rep is None:
            m = onnx.ModelProto()
            m.CopyFrom(self.model)
            keep = [v for v in m.graph.input if v.name not in self.static]
            del m.graph.input[:]
            m.graph.input.extend(keep)
            for n in self.static:
                m.graph.initializer.append(numpy_helper.from_array(np.asarray(given[n]), n))
            rep = self.compiled[key] = SimBackendRep(m, **dict(self.options))
        out = rep.run([given[n] for n in self.names if n not in self.static])
        self._last = rep
        return out

    @property
    def report(self):
        """The last run's compiled program's simulated run (see :attr:`SimBackendRep.report`)."""
        return self._last.report if self._last is not None else None

    @property
    def timings(self):
        """The last run's compiled program's phases (see :attr:`SimBackendRep.timings`); None before
        the first run."""
        return self._last.timings if self._last is not None else None


class SimBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        """Whether every node is one the backend computes exactly (import and checks only: the
        compile is ``prepare``'s)."""
        try:
            _import_checked(model, kwargs.get("batch"))
            return True
        except BackendError:
            return False

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        if not cls.supports_device(device):
            raise BackendError(f"device {device!r} is not supported (the simulated chip runs as 'CPU')")
        _check_model(model)
        static = _static_inputs(model)
        if static:
            return SpecializingRep(model, static, **kwargs)
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
