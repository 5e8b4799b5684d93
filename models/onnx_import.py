"""Import ONNX files (opset 9 and newer) as :class:`OpGraph`.

* Weights may come from initializers or from ``Constant`` / ``ConstantOfShape``
  nodes; float constants with more than one element become ``param`` tensors
  (BatchNormalization mean / variance: ``state``), everything else
  ``constant``. Numpy values are kept in ``TensorInfo.data``.
* Shape-computing subgraphs (``Shape -> Gather -> Unsqueeze -> Concat ->
  Reshape`` and the like) are constant-folded with numpy, so they produce no
  ops and every Reshape gets a concrete target. Ops on large float weights
  are not folded (a Gather from an embedding table stays a Gather).
* Shapes come from ``onnx.shape_inference`` where it gives concrete ones and
  from :mod:`models.oprules` where it leaves gaps. A symbolic or unknown
  batch dimension (dim 0 of a graph input) becomes ``batch`` (default 1);
  other symbolic dimensions must be given in ``dim_values``.
* Files written by :func:`models.export_onnx.to_onnx` carry each op's
  ``layer`` / ``block`` / ``block_type`` in the node's ``doc_string``; for other
  files ``layer`` is derived from the node name (``/layer1/layer1.0/conv1/Conv``
  becomes ``layer1.0.conv1``).

Every problem is reported as :class:`ModelError` naming the file (and node).
"""
from __future__ import annotations

import json
import os
import re
from math import prod

import numpy as np

from hardware.dtypes import FLOAT_DTYPES

from . import onnx_expand, oprules
from .errors import ModelError
from .isolated import start_forked
from .opgraph import OpGraph

#: op types that become ops of the graph (or fold away when constant)
SUPPORTED = frozenset({
    "Conv", "Gemm", "MatMul", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "MaxPool",
    "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "LRN",
    "LayerNormalization", "Dropout", "Softmax", "LogSoftmax", "Reshape", "Flatten",
    "Concat", "Sum", "Add", "Sub", "Mul", "Div", "Transpose", "Unsqueeze", "Squeeze",
    "Gather", "Shape", "Constant", "ConstantOfShape", "Identity", "Pad", "ReduceMean",
    "ReduceSum", "Erf", "Gelu", "Pow", "Sqrt", "Cast", "Slice", "Exp", "Log", "Neg",
    "Max", "Min", "Reciprocal", "Abs", "RMSNormalization",
}) | frozenset(oprules.INDEXED) | onnx_expand.EXPANDED | frozenset({"Floor", "Ceil", "Softplus", "Elu", "HardSigmoid"})
#: op types accepted only when their inputs are constants (they fold away)
FOLD_ONLY = frozenset({"Range", "Size"})
_FOLDABLE = frozenset({
    "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Reshape", "Flatten",
    "Transpose", "Identity", "Constant", "ConstantOfShape", "Add", "Sub", "Mul", "Div",
    "Pow", "Sqrt", "Neg", "Slice", "Min", "Max", "Abs", "Reciprocal", "Exp", "Log",
    "Equal", "Where", "Expand", "Less", "Greater", "Not", "ReduceProd", "Floor", "Ceil", "Size",
    "And", "Or", "Xor", "Mod", "LessOrEqual", "GreaterOrEqual", "CastLike", "ReduceMax",
}) | FOLD_ONLY


class _T:
    """A value during import: shape, dtype and (for constants) its data."""
    __slots__ = ("shape", "dtype", "data")

    def __init__(self, shape, dtype, data=None):
        self.shape, self.dtype, self.data = tuple(int(s) for s in shape), dtype, data


#: CHOSEN: the most elements a graph input may have (2^32: a 16 GiB fp32 tensor, thousands of
#: times what a chip holds); bigger ones are refused before any array is allocated
MAX_INPUT_ELEMENTS = 1 << 32


def load_onnx(path, batch=None, dim_values=None, *, use_onnx_shapes=True) -> OpGraph:
    """Load the ONNX file ``path`` as a forward :class:`OpGraph`.

    ``batch`` replaces a symbolic / unknown dim 0 of the graph inputs (default
    1); ``dim_values`` maps other symbolic dim names (``{"seq": 128}``).
    ``use_onnx_shapes=False`` skips ``onnx.shape_inference`` and uses only our
    own rules (for testing them).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, not an ONNX file")
    model = _read(path)
    try:
        return _Importer(path, model, batch, dict(dim_values or {}), use_onnx_shapes).run()
    except ModelError:
        raise
    except Exception as e:  # never leak a raw traceback from onnx / numpy
        raise ModelError(f"{path}: cannot import: {type(e).__name__}: {e}") from e


def load_onnx_model(model, batch=None, dim_values=None, *, source="<in-memory model>",
                    use_onnx_shapes=True) -> OpGraph:
    """Like :func:`load_onnx` for an ``onnx.ModelProto`` already in memory."""
    try:
        return _Importer(source, model, batch, dict(dim_values or {}), use_onnx_shapes).run()
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{source}: cannot import: {type(e).__name__}: {e}") from e


FULL_CHECK_BYTES = 16 << 20


def _tensor_bytes(t):
    """An initializer's size in bytes from its dims and element type (reading ``raw_data``
    copies the bytes, ``ByteSize`` walks the message: 10-20 ms each over ResNet-50's
    weights); ``ByteSize`` for strings and unknown types."""
    from onnx import helper
    try:
        item = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:       # noqa: BLE001 - undefined / string types: the message's own size
        return t.ByteSize()
    if item == 0 or t.data_type == 8:     # STRING
        return t.ByteSize()
    return prod(t.dims) * item


def check_model(model):
    """``onnx.checker.check_model``, as ``Backend.prepare`` does.  Above FULL_CHECK_BYTES of
    weights the checker runs on a light copy (large initializers as typed graph inputs):
    the same nodes, attributes, opsets and graph structure are checked without
    serializing the weights (the importer reads and checks those itself: a file's 100 MB of
    weights took the full check 0.2 s)."""
    import onnx
    src = model.graph
    nbytes = [_tensor_bytes(t) for t in src.initializer]
    if sum(nbytes) <= FULL_CHECK_BYTES:
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
    for t, nb in zip(src.initializer, nbytes):
        if nb <= 4096:
            g.initializer.append(t)
        elif t.name not in inputs:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    onnx.checker.check_model(light)


def _read(path):
    import onnx
    try:
        model = onnx.load(path)
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{path}: not a valid ONNX file (truncated or corrupt): "
                         f"{reason}") from None
    problem = None
    if model.ir_version <= 0:
        problem = "no IR version"
    elif not model.HasField("graph") or not model.graph.node:
        problem = "the graph has no nodes"
    elif not model.graph.output:
        problem = "the graph has no outputs"
    if problem:
        raise ModelError(f"{path}: not a valid ONNX file (truncated or corrupt): {problem}")
    return model


def _attrs(node, path):
    import onnx
    from onnx import helper, numpy_helper
    out = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise ModelError(f"{path}: node {node.name!r} ({node.op_type}) has a subgraph "
                             "attribute, which is not supported")
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode() for x in v]
        elif isinstance(v, list):
            v = list(v)
        out[a.name] = v
    return out


def _layer_from_name(name):
    """``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``; other names as is."""
    if not name.startswith("/"):
        return name
    parts = [p for p in name.strip("/").split("/") if p][:-1]
    layer = ""
    for p in parts:
        layer = p if (not layer or p.startswith(layer + ".")) else f"{layer}.{p}"
    return layer or name.strip("/")


class _Importer:
    def __init__(self, path, model, batch, dim_values, use_onnx_shapes):
        self.path, self.model = path, model
        self.batch, self.dim_values = batch, dim_values
        self.use_onnx_shapes = use_onnx_shapes
        self.env = {}          # tensor name -> _T
        self.inferred = {}     # tensor name -> (shape, dtype) from onnx shape inference
        self.op_names = set()
        self.derived = set()   # float constants an expansion computed from its own constants (a mask)
        self.expanding = False

    def err(self, msg, node=None):
        where = f"node {node.name!r} ({node.op_type}): " if node is not None else ""
        return ModelError(f"{self.path}: {where}{msg}")

    # -- driver ---------------------------------------------------------------------
    def run(self):
        from onnx import numpy_helper
        m = self.model
        opset = {i.domain: i.version for i in m.opset_import}
        self.opset = opset.get("", opset.get("ai.onnx", 0))
        if self.opset and self.opset < 7:
            raise self.err(f"opset {self.opset} is older than the oldest supported (7)")
        self._check()
        self._check_names()
        for node in m.graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED | FOLD_ONLY:
                op = node.op_type if node.domain in ("", "ai.onnx") else \
                    f"{node.domain}.{node.op_type}"
                raise self.err(f"node {node.name!r} has op type {op!r}, which is not "
                               f"supported; supported: {', '.join(sorted(SUPPORTED))}")
        name = m.graph.name or os.path.splitext(os.path.basename(self.path))[0]
        self.g = OpGraph(name)
        self.g.onnx_opset = self.opset    # ops whose meaning changed with the opset read it (Softmax's axis)
        # onnx's shape inference (in a forked child: _onnx_shapes_start) reads the inputs' shapes and
        # the initializers' dims, not their data: it runs while the data are read.  Errors come
        # in the order they did one step after the other: a corrupt initializer's, then the
        # inputs'.
        init_dims = {init.name: tuple(init.dims) for init in m.graph.initializer}
        try:
            self._inputs(init_dims)
            late = None
        except ModelError as e:
            late = e
        pending = self._onnx_shapes_start() if self.use_onnx_shapes and late is None else None
        try:
            for init in m.graph.initializer:
                try:
                    a = numpy_helper.to_array(init)
                except Exception as e:
                    raise self.err(f"initializer {init.name!r} cannot be read (truncated or "
                                   f"corrupt file?): {e}") from None
                self.env[init.name] = _T(a.shape, oprules.dtype_of_array(a), a)
        except BaseException:
            if pending is not None:
                pending.close()
            raise
        if late is not None:
            raise late
        if pending is not None:
            self._onnx_shapes_finish(pending)
        for i, node in enumerate(self._sorted_nodes()):
            self._node(i, node)
        outs = []
        for o in m.graph.output:
            if o.name not in self.g.tensors:
                if o.name not in self.env:
                    raise self.err(f"graph output {o.name!r} is not computed by any node")
                self._add_const(o.name, role=None)
            self.g.tensors[o.name].kind = "output" if self.g.tensors[o.name].producer \
                else self.g.tensors[o.name].kind
            self._check_declared(o, self.g.tensors[o.name].shape)
            outs.append(o.name)
        verdict = getattr(self, "onnx_verdict", None)
        if verdict and {n.op_type for n in m.graph.node} >= set(re.findall(r"op_type:(\w+)", verdict)):
            # (an error inside an op's function body, an op the file does not contain, is onnx's own:
            # its strict inference fails on the MeanVarianceNormalization node test)
            raise self.err(f"onnx's strict shape / type inference rejects this file (as onnx.checker's full "
                           f"check does): {self.onnx_verdict}")
        self.g.outputs = outs
        return self.g

    def _check_names(self):
        """Every name is text: protobuf hands a string field that is not valid UTF-8 over as bytes
        (a corrupt file), which would reach the report and break its JSON."""
        g = self.model.graph
        named = [("graph name", g.name)] + [("node name", n.name) for n in g.node] + \
            [("tensor name", t) for n in g.node for t in list(n.input) + list(n.output)] + \
            [("tensor name", v.name) for v in list(g.input) + list(g.output) + list(g.initializer)]
        for what, v in named:
            if not isinstance(v, str):
                raise self.err(f"not a valid ONNX file (truncated or corrupt): a {what} is not UTF-8 text ({v[:40]!r})")

    def _check_declared(self, vi, shape):
        """A graph output's declared shape against the one computed: the rank and every fixed
        dim but the batch dim (a file may declare batch 1 where another batch is applied)."""
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            return
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        bad = len(dims) != len(shape) or any(d is not None and (d < 0 or (d != s and k > 0))
                                             for k, (d, s) in enumerate(zip(dims, shape)))
        if bad:
            raise self.err(f"graph output {vi.name!r} is declared of shape "
                           f"{[d if d is not None else '?' for d in dims]}, but its node computes {list(shape)}")

    def _inputs(self, init_dims):
        """The graph inputs (``init_dims``: each initializer's dims)."""
        batches = set()
        for vi in self.model.graph.input:
            if vi.name in init_dims:    # old files list initializers among the inputs
                tt = vi.type.tensor_type
                if tt.HasField("shape"):
                    declared = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
                    have = init_dims[vi.name]
                    if len(declared) != len(have) or any(d is not None and d != h for d, h in zip(declared, have)):
                        raise self.err(f"graph input {vi.name!r} is declared of shape "
                                       f"{[d if d is not None else '?' for d in declared]}, but its initializer "
                                       f"has shape {list(have)}")
                continue
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise self.err(f"graph input {vi.name!r} is not a tensor")
            shape = []
            for k, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value <= 0:    # (0 is not "unknown": that is no value)
                    raise self.err(f"graph input {vi.name!r} has dim {k} of size {d.dim_value}; empty or "
                                   f"negative tensors are not simulated")
                if d.HasField("dim_value") and d.dim_value > 0:
                    if k == 0 and self.batch and d.dim_value != self.batch:
                        raise self.err(f"graph input {vi.name!r} has a fixed batch of "
                                       f"{d.dim_value}; batch={self.batch} cannot be applied")
                    shape.append(d.dim_value)
                elif d.HasField("dim_param") and d.dim_param in self.dim_values:
                    shape.append(int(self.dim_values[d.dim_param]))
                elif k == 0:
                    shape.append(int(self.batch or 1))
                else:
                    raise self.err(f"graph input {vi.name!r} has symbolic dim {k} "
                                   f"({d.dim_param or '?'}); give its size in dim_values")
            n = 1
            for x in shape:
                n *= x
            if n > MAX_INPUT_ELEMENTS:
                raise self.err(f"graph input {vi.name!r} of shape {shape} has {n:,} elements, more than "
                               f"this simulator handles ({MAX_INPUT_ELEMENTS:,})")
            dt = oprules.onnx_dtype_name(tt.elem_type)
            self.env[vi.name] = _T(shape, dt)
            self.g.add_tensor(vi.name, shape, dt, kind="input")
            if shape:
                batches.add(shape[0])
        self.g.batch = int(self.batch or (batches.pop() if len(batches) == 1 else 1))

    def _onnx_shapes_start(self):
        """Start onnx shape inference on a light copy (weights as typed inputs) in a forked
        child (after :meth:`_inputs`); :meth:`_onnx_shapes_finish` reads its shapes."""
        import onnx
        from onnx import helper
        m = onnx.ModelProto()
        m.ir_version = max(self.model.ir_version, 4)     # below 4 onnx reads no initializer's shape
        m.opset_import.extend(self.model.opset_import)
        g = m.graph
        src = self.model.graph
        g.node.extend(src.node)
        g.output.extend(src.output)
        g.value_info.extend(src.value_info)     # declared shapes: strict inference checks them too
        for vi in src.input:
            if vi.name in self.g.inputs:
                t = self.env[vi.name]
                g.input.append(helper.make_tensor_value_info(
                    vi.name, vi.type.tensor_type.elem_type, list(t.shape)))
        for init in src.initializer:
            if prod(init.dims) <= 64:
                g.initializer.append(init)
            else:
                g.input.append(helper.make_tensor_value_info(init.name, init.data_type,
                                                             list(init.dims)))
        return self._infer_isolated_start(m)

    def _onnx_shapes_finish(self, pending):
        """The shapes onnx inferred, from the child :meth:`_onnx_shapes_start` started."""
        m = self._infer_isolated_finish(pending)
        if m is None:
            return   # our own rules fill everything in
        for vi in list(m.graph.value_info) + list(m.graph.output):
            tt = vi.type.tensor_type
            if not tt.HasField("shape"):
                continue
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            if all(d >= 0 for d in dims):
                try:
                    self.inferred[vi.name] = (tuple(dims), oprules.onnx_dtype_name(tt.elem_type))
                except ModelError:
                    pass

    def _check(self):
        """onnx's own checker (node input / output counts, types, attributes, the declared
        opset): a file it rejects is refused with its message instead of being simulated."""
        import onnx
        try:
            check_model(self.model)
        except onnx.checker.ValidationError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise self.err(f"not a valid ONNX model (onnx.checker): {first}") from None

    def _infer_isolated_start(self, m):
        """onnx's shape inference on ``m`` in a forked child: its C++ code can abort the
        whole interpreter on a bad file (an assertion in a window computation), which
        must become an error naming the file, not a dead process.  :meth:`_infer_isolated_finish`
        reads the inferred model, None when inference raises (our own rules then fill the
        shapes in)."""
        import onnx

        def infer(model):
            # first a second opinion (onnx.checker's full check): a type or shape onnx's strict
            # inference rejects (a declared shape that contradicts the op's, a type the op does
            # not take) is refused; then the lenient inference with data propagation for shapes
            verdict = None
            try:
                onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
            except Exception as e:      # noqa: BLE001 - its verdict, reported
                text = str(e).strip()
                verdict = (text.splitlines() or [type(e).__name__])[-1].strip()
            try:
                return verdict, onnx.shape_inference.infer_shapes(model, strict_mode=False,
                                                                  data_prop=True).SerializeToString()
            except Exception:       # noqa: BLE001 - our own rules fill the shapes in
                return verdict, b""

        return start_forked(infer, m)

    def _infer_isolated_finish(self, pending):
        import onnx
        res, code = pending.result()
        if res is None:
            raise self.err(f"onnx shape inference crashed on this file (exit code {code}): a node "
                           "has attributes onnx cannot check (e.g. a pooling window larger than its input); "
                           "run onnx.checker.check_model(path, full_check=True) to find it")
        self.onnx_verdict, data = res    # raised after our own rules (which name the node) had their say
        if not data:
            return None
        out = onnx.ModelProto()
        out.ParseFromString(data)
        return out

    def _sorted_nodes(self):
        """Nodes in a topological order (files are supposed to be sorted; some aren't)."""
        nodes = list(self.model.graph.node)
        avail = set(self.env)
        done, out = [False] * len(nodes), []
        progress = True
        while progress and len(out) < len(nodes):
            progress = False
            for i, n in enumerate(nodes):
                if not done[i] and all(not t or t in avail for t in n.input):
                    done[i] = progress = True
                    out.append(n)
                    avail.update(n.output)
        if len(out) < len(nodes):
            n = next(n for i, n in enumerate(nodes) if not done[i])
            missing = [t for t in n.input if t and t not in avail]
            raise self.err(f"reads tensor {missing[0]!r}, which is neither a graph input, "
                           "an initializer nor computed by a node (truncated or corrupt "
                           "file, or a cycle)", n)
        return out

    # -- one node ---------------------------------------------------------------------
    def _node(self, idx, node):
        try:
            self._node_inner(idx, node)
        except ModelError as e:
            msg = str(e)
            if msg.startswith(self.path):
                raise
            raise self.err(msg, node) from None
        except Exception as e:
            raise self.err(f"{type(e).__name__}: {e}", node) from None

    def _node_inner(self, idx, node):
        op = node.op_type
        attrs = _attrs(node, self.path)
        ins = [self.env[t] if t else None for t in node.input]
        if op == "Constant":
            self._set_const(node.output[0], self._constant_value(attrs, node))
            if self.expanding:
                self.derived.add(node.output[0])
            return
        if op in onnx_expand.EXPANDED:
            return self._expand(idx, node, ins)
        if op == "Concat" and any(x is not None and prod(x.shape) == 0 for x in ins) and \
                any(x is not None and prod(x.shape) > 0 for x in ins):
            # an empty piece (a Split's empty part, as in RotaryEmbedding's ONNX body) adds nothing
            import onnx
            keep = [(t, x) for t, x in zip(node.input, ins) if x is None or prod(x.shape) > 0]
            node2 = onnx.NodeProto()
            node2.CopyFrom(node)
            del node2.input[:]
            node2.input.extend(t for t, _ in keep)
            node, ins = node2, [x for _, x in keep]
        if op in _FOLDABLE and self._can_fold(op, ins, node):
            vals = self._fold(op, ins, attrs)
            for t, v in zip(node.output, vals):
                if t:
                    self._set_const(t, v)
                    if self.expanding:
                        self.derived.add(t)
            return
        if op == "RMSNormalization" and int(attrs.get("stash_type", 1)) != 1:
            raise ModelError(f"attribute stash_type={attrs['stash_type']} is not supported (only 1: the "
                             "statistics in float32)")
        if op not in SUPPORTED or op in ("Shape", "Size", "ConstantOfShape"):
            raise ModelError(f"op type {op!r} is supported only on constant inputs "
                             "(shape computations)")
        attrs = self._normalise(op, ins, attrs, node)
        outs = [t for t in node.output if t]
        n_out = len(node.output)
        present = [(t, x) for t, x in zip(node.input, ins) if x is not None]
        while ins and ins[-1] is None:
            ins.pop()
        # our own shape rules check the node's inputs and attributes (channel counts, windows,
        # axes, bias lengths) even where onnx's lenient inference gave shapes: a node they
        # reject is refused, not simulated as if it were valid
        mine = oprules.infer(op, ins, attrs, n_out)
        shapes = []
        for k, t in enumerate(node.output):
            if not t:
                continue
            if t in self.inferred:
                if mine is not None and k < len(mine) and tuple(mine[k][0]) != tuple(self.inferred[t][0]):
                    # onnx's lenient inference keeps a declared shape that contradicts the op's
                    raise ModelError(f"output {t!r} is declared of shape {list(self.inferred[t][0])}, but the "
                                     f"op computes {list(mine[k][0])}")
                shapes.append(self.inferred[t])
            elif mine is not None and k < len(mine):
                shapes.append(mine[k])
            else:
                oprules.infer(op, ins, attrs, n_out)  # raises the reason
                raise ModelError(f"cannot infer the shape of output {t!r}")
        empty = [t for t, (shape, _) in zip(outs, shapes) if prod(shape) == 0] if op == "Split" else []
        if empty and len(empty) < len(outs):
            # an empty piece of a Split is no tensor of the graph: an empty constant (a Concat drops it)
            for t, (shape, dt) in zip(outs, shapes):
                if t in empty:
                    self.env[t] = _T(shape, dt, np.zeros(shape, oprules.numpy_dtype(dt)))
            shapes = [sd for t, sd in zip(outs, shapes) if t not in empty]
            outs = [t for t in outs if t not in empty]
        for t, x in present:
            if t not in self.g.tensors:
                self._add_const(t, role=(op, list(node.input).index(t)))
        for t, (shape, dt) in zip(outs, shapes):
            if t in self.g.tensors:
                raise ModelError(f"tensor {t!r} is written twice")
            self.g.add_tensor(t, shape, dt)
            self.env[t] = _T(shape, dt)
        meta = self._meta(node)
        name = node.name or f"{op}_{idx}"
        base, k = name, 1
        while name in self.op_names:
            k += 1
            name = f"{base}_{k}"
        self.op_names.add(name)
        fl = oprules.flops(op, [x.shape for _, x in present], [s for s, _ in shapes], attrs)
        self.g.add_op(name, op, [t for t, _ in present], outs, family=oprules.family(op),
                      attrs=attrs, layer=meta.get("layer") or _layer_from_name(name),
                      block=meta.get("block"), block_type=meta.get("block_type"), flops=fl)
        if len(present) != len(node.input) or len(outs) != len(node.output):
            # an optional input / output left out: the op's inputs by ONNX position ("" where omitted)
            self.g.graph.nodes[name]["slots"] = list(node.input)
            self.g.graph.nodes[name]["out_slots"] = [t for t in node.output if t not in empty]

    def _meta(self, node):
        """``layer`` / ``block`` / ``block_type`` from the node's doc_string (JSON): each a
        name (a string; a number is taken as its text), anything else refused by name."""
        if node.doc_string.startswith("{"):
            try:
                d = json.loads(node.doc_string)
            except ValueError:
                return {}
            meta = d.get("ipusim", {}) if isinstance(d, dict) else {}
            if not isinstance(meta, dict):
                raise self.err(f"doc_string key 'ipusim' must be an object, got {type(meta).__name__}", node)
            out = {}
            for k in ("layer", "block", "block_type"):
                v = meta.get(k)
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                    raise self.err(f"doc_string 'ipusim.{k}' must be a name (a string), got {json.dumps(v)}",
                                      node)
                out[k] = str(v)
            return out
        return {}

    def _expand(self, idx, node, ins):
        """Import ``node`` (Attention, RotaryEmbedding: :mod:`models.onnx_expand`) as the nodes
        that compute it, named ``<node>/<k>_<op>``, in the node's layer; the ones that do nothing
        at these shapes are dropped (their output read from their input)."""
        base = node.name or f"{node.op_type}_{idx}"
        sub = onnx_expand.expand(node, ins, self.opset, prefix=f"{base}/")
        outs = {t for t in node.output if t}
        made = {y for n in sub for y in n.output}
        # an Identity writing one of the node's outputs from a tensor a sub-node computes: that
        # sub-node writes the output itself
        for n in list(sub):
            if n.op_type == "Identity" and n.output[0] in outs and n.input[0] in made and n.input[0] not in outs:
                a, y = n.input[0], n.output[0]
                sub.remove(n)
                for m in sub:
                    m.input[:] = [y if x == a else x for x in m.input]
                    m.output[:] = [y if x == a else x for x in m.output]
        meta = self._meta(node)
        layer = meta.get("layer") or _layer_from_name(base)
        doc = json.dumps({"ipusim": {**meta, "layer": layer}})
        ren = {}
        self.expanding = True
        try:
            for k, n in enumerate(sub):
                n.input[:] = [ren.get(x, x) for x in n.input]
                n.name = f"{base}/{k}_{n.op_type}"
                n.doc_string = doc
                try:
                    same = self._no_op(n)
                    if same is not None and n.output[0] not in outs:
                        ren[n.output[0]] = same
                        continue
                    self._node_inner(idx, n)
                except ModelError as e:
                    raise ModelError(f"in its expansion, node {n.name!r} ({n.op_type}): {e}") from None
        finally:
            self.expanding = False
        missing = [t for t in outs if t not in self.env]
        if missing:
            raise ModelError(f"output {missing[0]!r} is not computed by its expansion")

    def _no_op(self, n):
        """The input whose value ``n`` (a node of an expansion) passes on unchanged at these
        shapes and types, or None: Identity, Cast / CastLike to the same type, Expand or
        Reshape to the same shape, a Where whose constant condition picks one side everywhere,
        an Add of constant zeros."""
        op = n.op_type
        if not n.input or any(x and x not in self.env for x in n.input) or len(n.output) != 1:
            return None
        ins = [self.env[x] if x else None for x in n.input]
        a = _attrs(n, self.path)
        x = ins[0]
        if op == "Identity":
            return n.input[0]
        if op == "Cast" and "to" in a and oprules.onnx_dtype_name(a["to"]) == x.dtype:
            return n.input[0]
        if op == "CastLike" and len(ins) == 2 and ins[1] is not None and ins[1].dtype == x.dtype:
            return n.input[0]
        if op in ("Expand", "Reshape") and len(ins) == 2 and ins[1] is not None and ins[1].data is not None:
            if tuple(oprules.infer(op, ins, a)[0][0]) == x.shape:
                return n.input[0]
            return None
        if op == "Where" and len(ins) == 3 and x.data is not None and x.dtype == "bool":
            cond = np.asarray(x.data)
            out = oprules.broadcast(oprules.broadcast(x.shape, ins[1].shape), ins[2].shape)
            pick = 1 if cond.all() else 2 if not cond.any() else None
            if pick and ins[pick].shape == out and ins[3 - pick].dtype == ins[pick].dtype:
                return n.input[pick]
            return None
        if op == "Add" and len(ins) == 2:
            for i in (0, 1):
                z, other = ins[i], ins[1 - i]
                if z.data is not None and z.dtype == other.dtype and not np.any(np.asarray(z.data)) \
                        and oprules.broadcast(z.shape, other.shape) == other.shape:
                    return n.input[1 - i]
        return None

    def _normalise(self, op, ins, attrs, node):
        """Complete attrs with ONNX defaults; constant optional inputs -> attrs."""
        if op == "Conv":
            attrs = oprules.window_attrs(attrs, ins[0].shape[2:], kernel=ins[1].shape[2:])
            attrs.setdefault("group", 1)
        elif op in ("MaxPool", "AveragePool"):
            attrs = oprules.window_attrs(attrs, ins[0].shape[2:])
        elif op == "Gemm":
            for k, v in (("alpha", 1.0), ("beta", 1.0), ("transA", 0), ("transB", 0)):
                attrs.setdefault(k, v)
        elif op == "Dropout" and len(ins) > 1 and ins[1] is not None and ins[1].data is not None:
            attrs["ratio"] = float(ins[1].data)
        elif op == "Clip":
            for i, k in ((1, "min"), (2, "max")):
                if len(ins) > i and ins[i] is not None and ins[i].data is not None:
                    attrs[k] = float(ins[i].data)
        elif op in ("Softmax", "LogSoftmax", "Hardmax"):
            attrs.setdefault("axis", 1 if self.opset < 13 else -1)
        elif op == "Flatten":
            attrs.setdefault("axis", 1)
        elif op == "Gather":
            attrs.setdefault("axis", 0)
        elif op == "Transpose":
            attrs.setdefault("perm", list(range(len(ins[0].shape)))[::-1])
        return attrs

    # -- constants ------------------------------------------------------------------
    def _constant_value(self, attrs, node):
        if "value" in attrs:
            return np.asarray(attrs["value"])
        for k, dt in (("value_float", np.float32), ("value_floats", np.float32),
                      ("value_int", np.int64), ("value_ints", np.int64)):
            if k in attrs:
                return np.asarray(attrs[k], dtype=dt)
        raise ModelError(f"Constant with attributes {sorted(attrs)} is not supported")

    def _set_const(self, name, value):
        value = np.asarray(value)
        self.env[name] = _T(value.shape, oprules.dtype_of_array(value), value)

    def _add_const(self, name, role):
        t = self.env[name]
        if t.data is None:
            raise ModelError(f"tensor {name!r} has no producer")
        if role in (("BatchNormalization", 3), ("BatchNormalization", 4)):
            kind = "state"
        elif t.dtype in FLOAT_DTYPES and t.data.size > 1:
            kind = "param"
        else:
            kind = "constant"
        self.g.add_tensor(name, t.shape, t.dtype, kind=kind, data=t.data)

    def _can_fold(self, op, ins, node=None):
        if op in ("Shape", "Size"):
            return True      # static shapes: known at import
        if op == "CastLike" and len(ins) == 2 and ins[1] is not None:
            ins = ins[:1]    # only the type of its second input matters (a mask's, known at import)
        present = [x for x in ins if x is not None]
        if not present or any(x.data is None for x in present):
            return False
        # float tensors with more than one element are weights: ops on them stay ops (but not
        # the ones an expansion computed from its own constants: Attention's causal bias)
        names = list(node.input) if node is not None else [""] * len(ins)
        return all(x is None or x.dtype not in FLOAT_DTYPES or x.data.size <= 1 or (self.expanding and t in self.derived)
                   for t, x in zip(names, ins))

    def _fold(self, op, ins, attrs):
        d = [None if x is None else x.data for x in ins]
        x = d[0] if d else None
        if op == "Shape":
            s = np.array(ins[0].shape, dtype=np.int64)
            return [s[attrs.get("start", 0):attrs.get("end")]]
        if op == "Size":
            return [np.array(prod(ins[0].shape), dtype=np.int64)]
        if op in ("Identity",):
            return [x]
        if op == "CastLike":
            return [x.astype(oprules.numpy_dtype(ins[1].dtype))]
        if op == "ReduceMax":
            axes = attrs.get("axes")
            if axes is None and len(d) > 1 and d[1] is not None:
                axes = list(d[1].reshape(-1))
            if not axes and attrs.get("noop_with_empty_axes"):
                return [x]
            return [np.max(x, axis=tuple(int(a) for a in axes) if axes else None,
                           keepdims=bool(attrs.get("keepdims", 1))).astype(x.dtype)]
        if op == "Cast":
            return [x.astype(oprules.numpy_dtype(oprules.onnx_dtype_name(attrs["to"])))]
        if op == "ConstantOfShape":
            v = attrs.get("value", np.zeros(1, dtype=np.float32))
            v = np.asarray(v).reshape(-1)
            return [np.full(tuple(int(s) for s in x.reshape(-1)), v[0], dtype=v.dtype)]
        if op == "Gather":
            return [np.take(x, d[1], axis=attrs.get("axis", 0))]
        if op in ("Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose", "Concat",
                  "Slice"):
            shape, _ = oprules.infer(op, ins, attrs)[0]
            if op == "Transpose":
                return [np.transpose(x, attrs.get("perm"))]
            if op == "Concat":
                return [np.concatenate([v for v in d if v is not None], axis=attrs["axis"])]
            if op == "Slice":
                return [self._slice(x, d, attrs)]
            return [x.reshape(shape)]
        if op in ("And", "Or", "Xor"):
            f = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}[op]
            return [f(d[0], d[1])]
        if op == "Mod":
            return [(np.fmod if attrs.get("fmod") else np.mod)(d[0], d[1]).astype(d[0].dtype)]
        if op in ("LessOrEqual", "GreaterOrEqual"):
            return [(np.less_equal if op == "LessOrEqual" else np.greater_equal)(d[0], d[1])]
        if op in ("Add", "Sub", "Mul", "Div", "Pow", "Min", "Max", "Equal", "Less",
                  "Greater"):
            a, b = d[0], d[1]
            if op == "Div" and a.dtype.kind in "iu" and b.dtype.kind in "iu":
                return [np.trunc(a / b).astype(np.result_type(a, b))]
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
                 "Pow": np.power, "Min": np.minimum, "Max": np.maximum, "Equal": np.equal,
                 "Less": np.less, "Greater": np.greater}[op]
            r = f(a, b)
            if op not in ("Equal", "Less", "Greater"):
                r = r.astype(a.dtype)
            for more in d[2:] if op in ("Min", "Max") else []:
                r = f(r, more)
            return [r]
        if op in ("Sqrt", "Neg", "Abs", "Reciprocal", "Exp", "Log", "Floor", "Ceil", "Not"):
            f = {"Sqrt": np.sqrt, "Neg": np.negative, "Abs": np.abs, "Exp": np.exp,
                 "Reciprocal": np.reciprocal, "Log": np.log, "Floor": np.floor,
                 "Ceil": np.ceil, "Not": np.logical_not}[op]
            return [f(x).astype(x.dtype)]
        if op == "Where":
            return [np.where(d[0], d[1], d[2])]
        if op == "Expand":
            shape = oprules.broadcast(x.shape, tuple(int(s) for s in d[1].reshape(-1)))
            return [np.broadcast_to(x, shape).copy()]
        if op == "Range":
            return [np.arange(d[0].item(), d[1].item(), d[2].item()).astype(d[0].dtype)]
        if op == "ReduceProd":
            axes = attrs.get("axes")
            if axes is None and len(d) > 1 and d[1] is not None:
                axes = list(d[1].reshape(-1))
            r = np.prod(x, axis=None if axes is None else tuple(axes),
                        keepdims=bool(attrs.get("keepdims", 1)))
            return [np.asarray(r, dtype=x.dtype)]
        raise ModelError(f"cannot fold op type {op!r}")

    @staticmethod
    def _slice(x, d, attrs):
        if "starts" in attrs:
            st, en = attrs["starts"], attrs["ends"]
            axes = attrs.get("axes", list(range(len(st))))
            steps = [1] * len(st)
        else:
            st, en = d[1].reshape(-1), d[2].reshape(-1)
            axes = d[3].reshape(-1) if len(d) > 3 and d[3] is not None else range(len(st))
            steps = d[4].reshape(-1) if len(d) > 4 and d[4] is not None else [1] * len(st)
        sl = [slice(None)] * x.ndim
        for s, e, a, p in zip(st, en, axes, steps):
            sl[int(a)] = slice(int(s), int(e), int(p))
        return x[tuple(sl)]
