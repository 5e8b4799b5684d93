"""Index-mapped lowering: ops of any rank, layout, broadcast, window or permutation.

Every element an op reads is found on the host at compile time from the tensors'
layouts (:func:`addresses`: the memory address of each logical element), with
numpy's own indexing on those address arrays: a Transpose is ``A.transpose(perm)``,
a broadcast operand ``np.broadcast_to(A, out_shape)``, a Slice ``A[slices]``, a
padded window ``np.pad(A, ..., constant_values=<address of a constant>)``.  The
vertices' fields are then the runs of consecutive addresses of those arrays, so
one vertex reads exactly the elements it computes with, wherever they live, and
the codelets (``Map1`` / ``Map2`` / ``Map3``, ``ReduceRows``, ``SoftmaxRows``,
``PoolRows``, ``NormRows``, ``MatMulPartial``...) see dense rows.

It lowers the ops the family planners do not compute exactly (``takes``): ONNX
ops of any rank with numpy broadcasting, integer and boolean tensors,
comparisons, reductions over any axes, softmax over any axis, pooling with
padding, ceil mode and dilations, grouped convolutions, LRN, data movement.
"""
from __future__ import annotations

from math import prod

import numpy as np

from hardware.dtypes import FLOAT_DTYPES

from ..layout import Act, channel_group
from .base import LoweringError, Planner, spread
from .cost import codelet_cycles


def addresses(act):
    """The memory address of every logical element of ``act``: an int64 array of its
    logical shape (channel-grouped images included)."""
    shape = tuple(act.logical)
    if len(shape) == 4 and act.g > 1 and act.H * act.W > 1:
        N, C, H, W, g = act.N, act.C, act.H, act.W, act.g
        n = np.arange(N, dtype=np.int64)[:, None, None, None]
        c = np.arange(C, dtype=np.int64)[None, :, None, None]
        h = np.arange(H, dtype=np.int64)[None, None, :, None]
        w = np.arange(W, dtype=np.int64)[None, None, None, :]
        return act.start + ((((n * (C // g) + c // g) * H + h) * W + w) * g + c % g)
    return act.start + np.arange(act.numel, dtype=np.int64).reshape(shape)


UNARY = {"Abs": "abs", "Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal",
         "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign", "Sin": "sin", "Cos": "cos",
         "Tan": "tan", "Asin": "asin", "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh",
         "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh", "Erf": "erf", "Relu": "relu",
         "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign", "Elu": "elu",
         "Selu": "selu", "Celu": "celu", "LeakyRelu": "leakyrelu", "HardSigmoid": "hardsigmoid",
         "HardSwish": "hardswish", "ThresholdedRelu": "thresholdedrelu", "Mish": "mish", "Gelu": "gelu",
         "Swish": "swish", "Shrink": "shrink", "IsNaN": "isnan", "IsInf": "isinf", "Not": "not",
         "Identity": "copy", "Dropout": "copy", "Cast": "cast", "CastLike": "cast"}
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Mod": "mod", "Equal": "equal",
          "Less": "less", "Greater": "greater", "LessOrEqual": "less_equal", "GreaterOrEqual": "greater_equal",
          "And": "and", "Or": "or", "Xor": "xor", "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or",
          "BitwiseXor": "bitwise_xor", "BitShift": "bitshift", "PRelu": "prelu"}
VARIADIC = {"Sum": "add", "Max": "max", "Min": "min", "Mean": "add"}
REDUCE = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod",
          "ReduceL1": "l1", "ReduceL2": "l2", "ReduceLogSum": "logsum", "ReduceLogSumExp": "logsumexp",
          "ReduceSumSquare": "sumsquare", "ArgMax": "argmax", "ArgMin": "argmin"}
SELECT = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Tile", "Slice", "Concat",
          "Split", "Pad", "DepthToSpace", "SpaceToDepth", "Trilu", "GatherElements", "GatherND", "Compress",
          "ReverseSequence")
ROWS = {"Softmax": "softmax", "LogSoftmax": "logsoftmax", "Hardmax": "hardmax", "CumSum": "cumsum",
        "CumProd": "cumprod"}
POOLS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
NORMS = ("LayerNormalization", "RMSNormalization", "InstanceNormalization", "LpNormalization",
         "MeanVarianceNormalization")
#: every op type this planner lowers
OPS = frozenset(UNARY) | frozenset(BINARY) | frozenset(VARIADIC) | frozenset(REDUCE) | frozenset(SELECT) \
    | frozenset(ROWS) | frozenset(POOLS) | frozenset(NORMS) | {"Where", "Clip", "Gather", "Conv", "MatMul",
                                                              "Gemm", "LRN", "BatchNormalization",
                                                              "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"}
#: gradient map of a unary op: op type -> (Map2 function of (dy, y or x), reads the op's output)
UNARY_GRADS = {"ReluGrad": "relu_grad", "SigmoidGrad": "sigmoid_grad", "TanhGrad": "tanh_grad", "ExpGrad": "mul",
               "SqrtGrad": "sqrt_grad", "LeakyReluGrad": "leakyrelu_grad", "GeluGrad": "gelu_grad",
               "SwishGrad": "swish_grad", "ErfGrad": "erf_grad", "LogGrad": "log_grad", "NegGrad": "neg_grad",
               "AbsGrad": "abs_grad", "ReciprocalGrad": "reciprocal_grad", "SoftplusGrad": "softplus_grad",
               "EluGrad": "elu_grad"}
#: the backward-pass and update op types of training graphs (models/training.py), and the forward
#: ones outside ONNX (RotaryEmbedding), lowered exactly here in functional mode
#: (``Lowering(exact=True)``); any other is refused by name
GRAD_OPS = frozenset(UNARY_GRADS) | {"GemmGradA", "GemmGradB", "MatMulGradA", "MatMulGradB",
                                     "SoftmaxCrossEntropyLossGrad", "SGDMomentumUpdate", "AdamUpdate",
                                     "LambUpdate", "BatchNormalizationGrad", "LayerNormalizationGrad",
                                     "RMSNormalizationGrad", "ConvGradInput", "ConvGradWeight", "MaxPoolGrad",
                                     "AveragePoolGrad", "GlobalAveragePoolGrad", "SoftmaxGrad", "LogSoftmaxGrad",
                                     "GatherGrad", "RotaryEmbedding", "RotaryEmbeddingGrad", "TopKRoute",
                                     "TopKRouteGrad", "MoEDispatch", "MoECombine", "MoEGateGrad"}
#: ops whose family planner (compiler/planners/*) computes them exactly in the cases :func:`takes`
#: leaves to it
_LEGACY_ELEMENTWISE = {"Relu", "Add", "Sub", "Mul", "Div", "Exp", "Sqrt", "Tanh", "Sigmoid", "Dropout",
                       "Identity"}


def channel_group_of(c, ctx):
    return channel_group(int(c), ctx.dtype)


def _rank4_channel(shape, out):
    """``shape`` broadcasts to the 4-D ``out`` as one value per channel."""
    s = tuple(shape)
    while s and s[0] == 1:
        s = s[1:]
    return len(out) == 4 and s in ((out[1], 1, 1),) and out[1] > 1


def takes(op, ctx) -> bool:
    """Whether ``op`` is lowered here rather than by its family's planner: an op no family
    planner has, or a case its planner would not compute exactly (broadcasting beyond a
    per-channel / per-row operand, integer or boolean tensors, other ranks, padding with
    averages, ceil mode, dilations, groups, softmax off the last axis...)."""
    t, a = op["op"], op.get("attrs", {})
    if op.get("family") == "indexed":
        return True
    if getattr(ctx, "exact", False):      # functional mode: every op it has, forward or backward
        return t in OPS or t in GRAD_OPS
    if op.get("phase", "fwd") != "fwd" or t not in OPS or op.get("family") == "loss" or getattr(ctx, "training", False):
        # training graphs keep their planners (batch statistics, random dropout masks, the
        # backward ops' views of the forward ones); so does a built-in's per-sample loss
        return False
    opg = ctx.opg
    ins = [x for x in op["inputs"] if x]
    shapes = [tuple(opg.tensors[x].shape) for x in ins]
    out = tuple(opg.tensors[op["outputs"][0]].shape)
    if t == "Gather" and opg.tensors[ins[1]].data is None and opg.tensors[ins[0]].kind in ("param", "constant"):
        # an embedding table, indices known at run time: timed by the gather planner (DynamicSlice
        # vertices read the part of the table on their tile, not the values); a program run for its
        # values takes the exact SelectRows lowering
        return bool(getattr(ctx, "functional", False))
    rm = getattr(ctx, "row_major", ())
    if t in ("Reshape", "Flatten", "Squeeze", "Unsqueeze") and (ins[0] in rm or op["outputs"][0] in rm):
        # a reshape into or out of a row-major 4-D tensor (not an image, compiler/layout.py): the same
        # storage order, so a view (no vertices), as a Poplar reshape is; its shape input is an integer
        # constant, which is no reason to copy
        dx, dy = opg.tensors[ins[0]].dtype, opg.tensors[op["outputs"][0]].dtype
        return not (dx == dy and dx in FLOAT_DTYPES and (ctx.dtype != "fp32" or dx != "fp16"))
    dts = [opg.tensors[x].dtype for x in ins] + [opg.tensors[op["outputs"][0]].dtype]
    if any(d not in FLOAT_DTYPES for d in dts) or (ctx.dtype == "fp32" and any(d == "fp16" for d in dts)):
        return True      # integers, booleans, half-precision tensors of an fp32 graph
    if len(op["outputs"]) > 1 and t not in ("Split",):
        return True

    if t == "Swish":
        return False     # the elementwise planner computes it
    if t == "RMSNormalization":
        # the norm planner times it (a reduction, then a per-channel map: the built-in Llama
        # figures of docs/transformers.md) but does not compute its values (it scales by the
        # weight alone, without the RMS); a program run for its values takes the exact NormRows lowering
        return bool(getattr(ctx, "functional", False))
    if t in _LEGACY_ELEMENTWISE:
        if t == "Dropout" or t == "Identity":
            return False
        for sh in shapes:
            core = tuple(sh)
            while core and core[0] == 1:
                core = core[1:]
            if sh != out and not (_rank4_channel(sh, out) or (len(out) <= 2 and core == out[-1:])):
                return True
        return False
    if t in ("Max",) and len(ins) == 2 and shapes[0] == shapes[1] == out:
        return False
    if t == "Sum" and len(ins) == 2 and shapes[0] == shapes[1] == out:
        return False
    if t == "Gelu":
        return a.get("approximate", "none") != "tanh"
    if t in ("Conv",):
        spatial = len(shapes[0]) - 2
        return (spatial != 2 or int(a.get("group", 1)) != 1 or any(int(d) != 1 for d in a.get("dilations") or [])
                or len(set(a.get("strides") or [1])) > 1)
    if t in ("MaxPool", "AveragePool"):
        pads = a.get("pads") or []
        return (len(out) != 4 or a.get("ceil_mode") or any(int(d) != 1 for d in a.get("dilations") or [])
                or len(set(a.get("strides") or [1])) > 1 or (t == "AveragePool" and any(pads))
                or (t == "MaxPool" and (pads[:2] != pads[2:] if pads else False)))
    if t == "GlobalAveragePool":
        return len(out) != 4
    if t == "Gemm":
        c = shapes[2] if len(shapes) > 2 else None
        return bool(a.get("transA") or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0
                    or (c is not None and c not in ((out[1],), (1, out[1]))))
    if t == "MatMul":
        sa, sb = shapes[0], shapes[1]
        # the matmul planner: 2-D operands, rows of a batched A times a 2-D B, and batches of
        # equal leading dimensions (attention); broadcast batches and vectors come here
        # (4-D operands are stored as channel-grouped images, which the matmul planner reads row-major)
        return not (2 <= len(sa) <= 3 and 2 <= len(sb) <= 3 and (len(sb) == 2 or sa[:-2] == sb[:-2]))
    if t == "Softmax":
        axis = int(a.get("axis", -1)) % max(len(shapes[0]), 1)
        return len(shapes[0]) > 3 or axis != len(shapes[0]) - 1 or len(shapes[0]) < 2
    if t == "ReduceSum" and prod(out) == 1:
        return False     # the reduce planner's partial sums then final sum are exact for a total
    if t in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
        # views of the storage, except a row-major tensor seen as a channel-grouped image (a
        # 4-D tensor that is not an image is row-major: a view, compiler/layout.py)
        return (len(out) == 4 and out != shapes[0] and channel_group_of(out[1], ctx) > 1 and out[2] * out[3] > 1
                and op["outputs"][0] not in getattr(ctx, "row_major", ()))
    if t == "BatchNormalization":
        if a.get("training_mode"):
            return False     # batch statistics: the norm planner's reductions (the backend refuses training_mode)
        return len(out) != 4 or any(opg.tensors[x].kind not in ("param", "constant", "state") for x in ins[1:5])
    return True


class IndexedPlanner(Planner):
    family = "indexed"

    def estimate(self, op, opt, ctx):
        n = int(np.prod(ctx.out_shape(op, 0))) if ctx.out_shape(op, 0) else 1
        per = -(-n // ctx.tiles) / ctx.chip.workers_per_tile
        return codelet_cycles("Map1", {"out": per}, ctx.dtype, {"fn": "copy"}, ctx.chip), 0.0

    # -- helpers -----------------------------------------------------------------------------
    def lower(self, op, opt, ctx):
        self.ctx, self.op = ctx, op
        # inputs / outputs by ONNX position ("" where an optional one is left out)
        self.I = list(op.get("slots") or op["inputs"]) + [""] * 6
        self.O = list(op.get("out_slots") or op["outputs"])
        # an fp16 result in an fp32 graph: the vertices round what they write to half precision
        self.half = ctx.dtype == "fp32" and ctx.opg.tensors[op["outputs"][0]].dtype == "fp16"
        t = op["op"]
        try:
            if getattr(ctx, "exact", False):
                self._refuse_inexact(op, ctx)
            if t in UNARY_GRADS:
                return self._unary_grad(op, ctx)
            if t in UNARY:
                return self._unary(op, ctx)
            if t in BINARY:
                return self._binary(op, ctx)
            if t in VARIADIC:
                return self._variadic(op, ctx)
            if t in REDUCE:
                return self._reduce(op, ctx)
            if t in ROWS:
                return self._rows_op(op, ctx)
            if t in POOLS:
                return self._pool(op, ctx)
            if t in NORMS:
                return self._norm(op, ctx)
            if t in SELECT or t == "Gather":
                return self._select(op, ctx)
            return getattr(self, "_" + t)(op, ctx)
        except LoweringError:
            raise
        except (ValueError, IndexError, KeyError, TypeError) as e:
            raise LoweringError(f"op {op['name']!r} ({t}): {type(e).__name__}: {e}") from e

    def src(self, name):
        ctx = self.ctx
        return ctx.act(name) if name in ctx.acts else ctx.weights_by_name(name)

    def addr(self, name):
        return addresses(self.src(name))

    def data(self, name, what):
        """The value of a constant input (axes, pads, indices...)."""
        t = self.ctx.opg.tensors[name]
        if t.data is None:
            raise LoweringError(f"op {self.op['name']!r} ({self.op['op']}): {what} ({name!r}) must be a constant "
                                "(an initializer or computed from constants), not given at run time")
        return np.asarray(t.data)

    def is_int(self, name):
        return self.ctx.opg.tensors[name].dtype not in FLOAT_DTYPES

    def dev(self, name):
        return self.ctx.tdtype(name)

    FILL_BLOCK = 1 << 12

    def pad(self, A, width, value, dtype):
        """``np.pad`` of an address array, the padding marked as a fill of ``value`` (a negative
        code): :meth:`emit` points each field's padding at consecutive elements of a block of
        constants, so a run of padding is one region, not one per element."""
        return np.pad(A, width, constant_values=-1 - self._fill_kind(value, dtype))

    def fill(self, value, dtype):
        """The code of a constant ``value`` (resolved by :meth:`emit` like padding)."""
        return -1 - self._fill_kind(value, dtype)

    def _fill_kind(self, value, dtype):
        kinds = self.ctx.__dict__.setdefault("_indexed_fill_kinds", [])
        key = (float(value), dtype)
        if key not in kinds:
            kinds.append(key)
        return kinds.index(key)

    def _fill_block(self, kind):
        ctx = self.ctx
        cache = ctx.__dict__.setdefault("_indexed_fill", {})
        if kind not in cache:
            value, dtype = ctx.__dict__["_indexed_fill_kinds"][kind]
            t = ctx.graph.add_constant(dtype, (self.FILL_BLOCK,), value, f"fill/{value}/{dtype}")
            ctx.graph.map_linearly(t, grain=256)
            cache[kind] = int(t._start)
        return cache[kind]

    def _resolve_fill(self, A):
        """Padding codes of a field's (V, L) addresses -> consecutive constants, in read order."""
        neg = A < 0
        if not neg.any():
            return A
        A = A.copy()
        flat, m = A.ravel(), neg.ravel()
        pos = np.flatnonzero(m)
        kind = -1 - flat[pos]
        for k in np.unique(kind):
            sel = pos[kind == k]
            flat[sel] = self._fill_block(int(k)) + np.arange(sel.size) % self.FILL_BLOCK
        return A

    def out(self, i=0):
        ctx, op = self.ctx, self.op
        y = ctx.new_act(op, op["outputs"].index(self.O[i]))
        return y, addresses(y)

    def temp(self, shape, tag):
        ctx, op = self.ctx, self.op
        t = ctx.graph.add_variable(ctx.dtype, (max(int(prod(shape)), 1),), f"{op['name']}/{tag}", kind="temporary",
                                   op=op["name"])
        return int(t._start) + np.arange(int(prod(shape)), dtype=np.int64).reshape(shape)

    def _var_starts(self):
        g = self.ctx.graph
        cache = self.ctx.__dict__.setdefault("_indexed_var_starts", [0, None])
        if cache[0] != len(g.variables):     # sorted: looked up with searchsorted
            cache[:] = [len(g.variables), np.sort(np.array([v.start for v in g.variables] or [-1], np.int64))]
        return cache[1]

    def emit(self, cs, codelet, fields, outs, params, map_out=True, tiles=None):
        """One vertex per row of the (V, L) address arrays in ``fields``; fields named in
        ``outs`` are written (and mapped to the vertex's tile unless ``map_out`` is False)."""
        ctx = self.ctx
        V = next(iter(fields.values())).shape[0]
        if V == 0:
            return
        if tiles is None:
            tiles = spread(V, ctx.tiles)
        edges = {}
        for name, A in fields.items():
            A = self._resolve_fill(np.asarray(A, np.int64).reshape(V, -1))
            L = A.shape[1]
            if L == 0:
                continue
            flat = A.ravel()
            vid = np.repeat(np.arange(V), L)
            brk = np.ones(flat.size, bool)
            brk[1:] = (flat[1:] != flat[:-1] + 1) | (vid[1:] != vid[:-1])
            vs = self._var_starts()                      # a region never spans two variables
            at = np.minimum(np.searchsorted(vs, flat), vs.size - 1)
            brk |= vs[at] == flat
            si = np.flatnonzero(brk)
            ln = np.diff(np.append(si, flat.size))
            edges[name] = (vid[si], flat[si], ln)
            if name in outs and map_out:
                ctx.graph.map_intervals(flat[si], ln, tiles[vid[si]])
        if getattr(self, "half", False):
            params = dict(params, half=True)
        ctx.graph.add_vertices(cs, codelet, tiles, edges, dtype=ctx.dtype, params=params)

    def emit_rows(self, cs, codelet, fields, outs, params, map_out=True, min_elems=64, scalars=()):
        """Rows (R, k_f) of every field, grouped into vertices of consecutive rows (in the order
        of their first output address), enough vertices to give every worker of the tiles work.
        A field named in ``scalars`` is one element per vertex: its first row's (every row of a
        vertex must read the same element)."""
        ctx = self.ctx
        R = next(iter(fields.values())).shape[0]
        if R == 0:
            return
        fields = {k: np.asarray(v, np.int64).reshape(R, -1) for k, v in fields.items()}
        first = fields[outs[0]][:, 0] if fields[outs[0]].shape[1] else None
        if first is not None and np.any(first[1:] < first[:-1]):
            order = np.argsort(first, kind="stable")
            fields = {k: v[order] for k, v in fields.items()}
        total = sum(v.shape[1] for v in fields.values()) * R
        V = max(1, min(R, ctx.tiles * ctx.chip.workers_per_tile, total // min_elems))
        per = -(-R // V)
        full = R // per
        def group(v, k, rows):      # rows of a field -> (vertices, elements): a scalar keeps its first row's
            return v[:, :fields[k].shape[1]] if k in scalars else v.reshape(rows, -1)

        if full:
            self.emit(cs, codelet, {k: group(v[:full * per].reshape(full, -1), k, full) for k, v in fields.items()},
                      outs, params, map_out)
        if R > full * per:
            self.emit(cs, codelet, {k: group(v[full * per:].reshape(1, -1), k, 1) for k, v in fields.items()},
                      outs, params, map_out)

    def cs(self, suffix):
        return self.ctx.compute_set(self.op, suffix)

    def dtypes(self, **fields):
        """params['dtypes'] for fields whose tensors are not of the vertex's dtype."""
        d = {f: dt for f, dt in fields.items() if dt != self.ctx.dtype}
        return {"dtypes": d} if d else {}

    def attrs(self, *names):
        a = self.op.get("attrs", {})
        return {k: (a[k].decode() if isinstance(a[k], bytes) else a[k]) for k in names if k in a}

    # -- element-wise --------------------------------------------------------------------------
    def _unary(self, op, ctx):
        x = self.I[0]
        y, Y = self.out()
        fn = UNARY[op["op"]]
        params = dict(self.attrs("alpha", "beta", "gamma", "lambd", "bias", "approximate", "detect_positive",
                                 "detect_negative"), fn=fn)
        yname = op["outputs"][0]
        if fn == "cast":
            dt = ctx.opg.tensors[yname].dtype
            params["to"] = "bool" if dt == "bool" else ("int" if dt not in FLOAT_DTYPES else
                                                        ("float16" if dt == "fp16" else "float"))
        params["int"] = self.is_int(yname)
        params.update(self.dtypes(**{"in": self.dev(x), "out": self.dev(yname)}))
        A = np.broadcast_to(self.addr(x), Y.shape)
        cs = self.cs("map")
        self.emit_rows(cs, "Map1", {"out": Y.reshape(-1, 1), "in": A.reshape(-1, 1)}, ["out"], params)
        if len(self.O) > 1 and self.O[1]:      # Dropout's mask: all kept in inference
            m, M = self.out(1)
            one = self.fill(1.0, self.dev(self.O[1]))
            self.emit_rows(cs, "Map1", {"out": M.reshape(-1, 1), "in": np.full((M.size, 1), one)}, ["out"],
                           dict({"fn": "copy"}, **self.dtypes(**{"in": self.dev(self.O[1]),
                                                                 "out": self.dev(self.O[1])})))
        return [cs]

    def _map2(self, cs, fn, a, b, Y, yname, params, map_out=True, adt=None, bdt=None):
        """out = fn(a, b) with a, b address arrays broadcast to Y's shape."""
        A = np.broadcast_to(a, Y.shape).reshape(-1, 1)
        B = np.broadcast_to(b, Y.shape).reshape(-1, 1)
        p = dict(params, fn=fn, int=self.is_int(yname))
        p.update(self.dtypes(a=adt or self.ctx.dtype, b=bdt or self.ctx.dtype, out=self.dev(yname)))
        self.emit_rows(cs, "Map2", {"out": Y.reshape(-1, 1), "a": A, "b": B}, ["out"], p, map_out)

    def _binary(self, op, ctx):
        a, b = self.I[:2]
        y, Y = self.out()
        cs = self.cs("map")
        self._map2(cs, BINARY[op["op"]], self.addr(a), self.addr(b), Y, op["outputs"][0],
                   self.attrs("fmod", "direction"), adt=self.dev(a), bdt=self.dev(b))
        return [cs]

    def _variadic(self, op, ctx):
        ins = [t for t in op["inputs"] if t]
        yname = op["outputs"][0]
        y, Y = self.out()
        fn = VARIADIC[op["op"]]
        css = []
        if len(ins) == 1:
            cs = self.cs("map")
            self.emit_rows(cs, "Map1", {"out": Y.reshape(-1, 1),
                                        "in": np.broadcast_to(self.addr(ins[0]), Y.shape).reshape(-1, 1)},
                           ["out"], dict({"fn": "copy"}, **self.dtypes(**{"in": self.dev(ins[0]), "out": self.dev(yname)})))
            css.append(cs)
        for i in range(1, len(ins)):
            cs = self.cs(f"map{i}")
            first = self.addr(ins[0]) if i == 1 else Y
            self._map2(cs, fn, first, self.addr(ins[i]), Y, yname, {}, map_out=(i == 1),
                       adt=self.dev(ins[0]) if i == 1 else self.dev(yname), bdt=self.dev(ins[i]))
            css.append(cs)
        if op["op"] == "Mean" and len(ins) > 1:
            cs = self.cs("mean")
            self.emit_rows(cs, "Map1", {"out": Y.reshape(-1, 1), "in": Y.reshape(-1, 1)}, ["out"],
                           {"fn": "scale", "alpha": 1.0 / len(ins)}, map_out=False)
            css.append(cs)
        return css

    def _Where(self, op, ctx):
        c, a, b = self.I[:3]
        y, Y = self.out()
        cs = self.cs("where")
        F = {k: np.broadcast_to(self.addr(n), Y.shape).reshape(-1, 1) for k, n in zip("abc", (c, a, b))}
        F["out"] = Y.reshape(-1, 1)
        p = dict(fn="where", **self.dtypes(a=self.dev(c), b=self.dev(a), c=self.dev(b), out=self.dev(op["outputs"][0])))
        self.emit_rows(cs, "Map3", F, ["out"], p)
        return [cs]

    def _Clip(self, op, ctx):
        ins = self.I
        x = ins[0]
        yname = op["outputs"][0]
        y, Y = self.out()
        dt = self.dev(yname)
        a = op.get("attrs", {})
        lo = self.addr(ins[1]) if ins[1] else self.fill(float(a.get("min", -np.inf)), dt)
        hi = self.addr(ins[2]) if ins[2] else self.fill(float(a.get("max", np.inf)), dt)
        F = {"a": np.broadcast_to(self.addr(x), Y.shape).reshape(-1, 1),
             "b": np.broadcast_to(lo, Y.shape).reshape(-1, 1), "c": np.broadcast_to(hi, Y.shape).reshape(-1, 1),
             "out": Y.reshape(-1, 1)}
        cs = self.cs("clip")
        self.emit_rows(cs, "Map3", F, ["out"], dict(fn="clip", **self.dtypes(a=dt, b=dt, c=dt, out=dt)))
        return [cs]

    def _BatchNormalization(self, op, ctx):
        if op.get("attrs", {}).get("training_mode"):
            return self._norm(op, ctx)
        x, s, b, m, v = self.I[:5]
        y, Y = self.out()
        shp = (1, Y.shape[1]) + (1,) * (Y.ndim - 2)
        F = {"in": self.addr(x).reshape(-1, 1), "out": Y.reshape(-1, 1)}
        for f, n in (("scale", s), ("bias", b), ("mean", m), ("var", v)):
            F[f] = np.broadcast_to(self.addr(n).reshape(shp), Y.shape).reshape(-1, 1)
        cs = self.cs("batchnorm")
        self.emit_rows(cs, "BatchNormMap", F, ["out"], {"epsilon": float(op["attrs"].get("epsilon", 1e-5))})
        return [cs]

    # -- data movement: a static selection of the input's elements -------------------------------
    def _copy(self, cs, Y, src, yname, sname):
        self.emit_rows(cs, "Map1", {"out": Y.reshape(-1, 1), "in": np.asarray(src).reshape(-1, 1)}, ["out"],
                       dict({"fn": "copy"}, **self.dtypes(**{"in": self.dev(sname), "out": self.dev(yname)})))

    def _select(self, op, ctx):
        t, a = op["op"], op.get("attrs", {})
        ins = self.I
        x = ins[0]
        A = self.addr(x)
        cs = self.cs(t.lower())
        if t == "Split":
            axis = int(a.get("axis", 0)) % A.ndim
            sizes = [int(ctx.shape(o)[axis]) for o in op["outputs"]]
            off = 0
            for i, o in enumerate(op["outputs"]):
                y, Y = self.out(i)
                sl = [slice(None)] * A.ndim
                sl[axis] = slice(off, off + sizes[i])
                self._copy(cs, Y, A[tuple(sl)], o, x)
                off += sizes[i]
            return [cs]
        yname = op["outputs"][0]
        y, Y = self.out()
        if t in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
            S = A.reshape(Y.shape)
        elif t == "Transpose":
            perm = [int(p) for p in (a.get("perm") or list(range(A.ndim))[::-1])]
            S = A.transpose(perm)
            if self._transpose_blocks(cs, S, Y, perm, yname, x):
                return [cs]
        elif t == "Expand":
            S = np.broadcast_to(A, Y.shape)
        elif t == "Tile":
            S = np.tile(A, [int(r) for r in self.data(ins[1], "repeats").reshape(-1)])
        elif t == "Slice":
            S = A[self._slices(op, A.ndim, A.shape)]
        elif t == "Concat":
            S = np.concatenate([self.addr(n) for n in op["inputs"] if n and ctx.numel(n) > 0] or [A[:0]],
                               axis=int(a["axis"]) % A.ndim)
        elif t == "Pad":
            S = self._pad(op, A, yname)
        elif t == "DepthToSpace":
            b = int(a["blocksize"])
            N, C, H, W = A.shape
            if a.get("mode", "DCR") == "CRD":
                S = A.reshape(N, C // (b * b), b, b, H, W).transpose(0, 1, 4, 2, 5, 3)
            else:
                S = A.reshape(N, b, b, C // (b * b), H, W).transpose(0, 3, 4, 1, 5, 2)
        elif t == "SpaceToDepth":
            b = int(a["blocksize"])
            N, C, H, W = A.shape
            perm = (0, 1, 3, 5, 2, 4) if a.get("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)
            S = A.reshape(N, C, H // b, b, W // b, b).transpose(perm)
        elif t == "Trilu":
            k = int(self.data(ins[1], "k").reshape(-1)[0]) if len(ins) > 1 and ins[1] else 0
            r, c = A.shape[-2:]
            keep = np.triu(np.ones((r, c), bool), k) if a.get("upper", 1) else np.tril(np.ones((r, c), bool), k)
            S = np.where(keep, A, self.fill(0.0, self.dev(yname)))
        elif t in ("Gather", "GatherElements") and ctx.opg.tensors[ins[1]].data is None:
            return self._dynamic_gather(op, cs, A, Y, yname, ins)
        elif t == "Gather":
            idx = self.data(ins[1], "indices").astype(np.int64)
            S = np.take(A, idx, axis=int(a.get("axis", 0)) % A.ndim)
        elif t == "GatherElements":
            idx = self.data(ins[1], "indices").astype(np.int64)
            ax = int(a.get("axis", 0)) % A.ndim
            S = np.take_along_axis(A, np.where(idx < 0, idx + A.shape[ax], idx), axis=ax)
        elif t == "GatherND":
            idx = self.data(ins[1], "indices").astype(np.int64)
            bd = int(a.get("batch_dims", 0))
            if bd:
                raise LoweringError(f"op {op['name']!r} (GatherND): batch_dims is not supported")
            S = A[tuple(np.moveaxis(idx, -1, 0))]
        elif t == "Compress":
            cond = self.data(ins[1], "condition").astype(bool)
            S = np.compress(cond, A, axis=None if "axis" not in a else int(a["axis"]))
        elif t == "ReverseSequence":
            lens = self.data(ins[1], "sequence_lens").astype(np.int64)
            ba, ta = int(a.get("batch_axis", 1)), int(a.get("time_axis", 0))
            S = A.copy()
            for bi, L in enumerate(lens):     # one slice per batch entry (compile time, not per vertex)
                src = [slice(None)] * A.ndim
                src[ba], src[ta] = bi, slice(0, int(L))
                dst = list(src)
                dst[ta] = slice(int(L) - 1, None, -1) if L > 0 else slice(0, 0)
                S[tuple(src)] = A[tuple(dst)]
        else:
            raise LoweringError(f"op {op['name']!r}: no selection for {t}")
        if S.shape != Y.shape:
            if S.size != Y.size:
                raise LoweringError(f"op {op['name']!r} ({t}): selected {S.shape}, output is {Y.shape}")
            S = S.reshape(Y.shape)
        self._copy(cs, Y, S, yname, x)
        return [cs]

    #: Transpose2d blocks: source runs (columns) of this many elements, and at least this many
    #: elements a vertex
    TRANSPOSE_COLS = 16
    TRANSPOSE_MIN_ELEMS = 128

    def _transpose_blocks(self, cs, S, Y, perm, yname, x) -> bool:
        """A Transpose that moves the last axis, as PopLibs rearranges one (``popops::rearrange``:
        the exchange brings each tile blocks of the source, whose rows are contiguous runs, and
        ``Transpose2d`` vertices transpose them on the tile): ``Transpose`` vertices of ``n``
        source rows of ``m`` columns each (``m`` along the source's last axis, ``n`` along the
        output's last), reading ``n`` runs of ``m`` elements and writing ``m`` runs of ``n``,
        rather than a copy whose every element is a region of its own.  False (a copy) where the
        last axis stays, the blocks are vectors, or the tensors are not of the graph's float type."""
        ctx = self.ctx
        nd = S.ndim
        if nd < 2 or perm[-1] == nd - 1 or S.size == 0 or self.half or not (
                self.dev(x) == self.dev(yname) == ctx.dtype and ctx.dtype in FLOAT_DTYPES):
            return False
        j = perm.index(nd - 1)            # the output axis along which the source is contiguous
        Sc = np.moveaxis(S, j, -2)        # (..., D source-contiguous, R output-contiguous)
        Yc = np.moveaxis(Y, j, -2)
        D, R = Sc.shape[-2:]
        if D == 1 or R == 1:              # a vector: a copy (runs), nothing to transpose
            return False
        Sc, Yc = Sc.reshape(-1, D, R), Yc.reshape(-1, D, R)
        nb = Sc.shape[0]
        m = min(D, self.TRANSPOSE_COLS)
        e = max(self.TRANSPOSE_MIN_ELEMS, -(-S.size // (ctx.tiles * ctx.chip.workers_per_tile)))
        n = min(R, max(1, e // m))
        c0 = np.arange(0, D, m)
        r0 = np.arange(0, R, n)
        blk, ci, ri = [v.ravel() for v in np.indices((nb, c0.size, r0.size))]
        cm = np.minimum(m, D - c0[ci])
        rn = np.minimum(n, R - r0[ri])
        tiles = spread(blk.size, ctx.tiles)
        for mm, nn in sorted(set(zip(cm.tolist(), rn.tolist()))):
            sel = np.flatnonzero((cm == mm) & (rn == nn))
            cc = c0[ci[sel]][:, None, None] + np.arange(mm)[None, :, None]
            rr = r0[ri[sel]][:, None, None] + np.arange(nn)[None, None, :]
            bb = blk[sel][:, None, None]
            src = Sc[bb, cc, rr]                                  # (V, m, n)
            self.emit(cs, "Transpose", {"in": src.transpose(0, 2, 1).reshape(sel.size, -1),
                                        "out": Yc[bb, cc, rr].reshape(sel.size, -1)},
                      ["out"], {"rows": int(nn), "cols": int(mm)}, tiles=tiles[sel])
        return True

    def _dynamic_gather(self, op, cs, A, Y, yname, ins):
        """Gather / GatherElements with indices known at run time: each output element reads the
        row of candidates along the axis (SelectRows picks one with its index)."""
        ax = int(op.get("attrs", {}).get("axis", 0)) % A.ndim
        I = self.addr(ins[1])
        D = A.shape[ax]
        Ar = np.moveaxis(A, ax, -1)
        if op["op"] == "Gather":
            pre, post = A.shape[:ax], A.shape[ax + 1:]
            S = I.shape
            rows = np.broadcast_to(Ar.reshape(pre + (1,) * len(S) + post + (D,)), pre + S + post + (D,))
            idx = np.broadcast_to(I.reshape((1,) * len(pre) + S + (1,) * len(post)), Y.shape)
        else:    # GatherElements: the output has the indices' shape
            sub = np.moveaxis(Ar, -1, ax)[tuple(slice(0, n) for n in I.shape[:ax]) + (slice(None),)
                                          + tuple(slice(0, n) for n in I.shape[ax + 1:])]
            sub = np.moveaxis(sub, ax, -1)                                    # (..., D), other dims of I
            rows = np.broadcast_to(np.expand_dims(sub, ax), I.shape + (D,))
            idx = I
        p = {"k": int(D), **self.dtypes(**{"in": self.dev(ins[0]), "index": self.dev(ins[1]),
                                           "out": self.dev(yname)})}
        self.emit_rows(cs, "SelectRows", {"out": Y.reshape(-1, 1), "in": rows.reshape(-1, D),
                                          "index": np.asarray(idx).reshape(-1, 1)}, ["out"], p)
        return [cs]

    def _slices(self, op, rank, shape):
        ins, a = self.I, op.get("attrs", {})
        if "starts" in a:
            st, en = list(a["starts"]), list(a["ends"])
            axes = list(a.get("axes", range(len(st))))
            steps = [1] * len(st)
        else:
            st = self.data(ins[1], "starts").reshape(-1).tolist()
            en = self.data(ins[2], "ends").reshape(-1).tolist()
            axes = self.data(ins[3], "axes").reshape(-1).tolist() if len(ins) > 3 and ins[3] else list(range(len(st)))
            steps = self.data(ins[4], "steps").reshape(-1).tolist() if len(ins) > 4 and ins[4] else [1] * len(st)
        sl = [slice(None)] * rank
        for s, e, ax, p in zip(st, en, axes, steps):
            ax = int(ax) % rank
            d = shape[ax]
            s, e, p = int(s), int(e), int(p)
            # ONNX clamps starts / ends (INT_MAX / INT_MIN mean 'to the end'); python slices do the same
            s = max(min(s, d), -d - 1) if p < 0 else max(min(s, d), -d)
            e = max(min(e, d), -d - 1)
            if p < 0 and e < -d:
                e = None
            sl[ax] = slice(s, e, p)
        return tuple(sl)

    def _pad(self, op, A, yname):
        ins, a = self.I, op.get("attrs", {})
        mode = a.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if "pads" in a:
            pads = list(a["pads"])
            value = float(a.get("value", 0.0))
            axes = list(range(A.ndim))
        else:
            pads = self.data(ins[1], "pads").reshape(-1).tolist()
            value = float(self.data(ins[2], "constant_value").reshape(-1)[0]) if len(ins) > 2 and ins[2] else 0.0
            axes = self.data(ins[3], "axes").reshape(-1).tolist() if len(ins) > 3 and ins[3] else list(range(A.ndim))
        n = len(axes)
        width = [(0, 0)] * A.ndim
        for i, ax in enumerate(axes):
            width[int(ax) % A.ndim] = (int(pads[i]), int(pads[i + n]))
        # negative pads crop
        sl = tuple(slice(-b if b < 0 else 0, A.shape[i] + e if e < 0 else None) for i, (b, e) in enumerate(width))
        A = A[sl]
        width = [(max(b, 0), max(e, 0)) for b, e in width]
        if mode == "constant":
            return self.pad(A, width, value, self.dev(yname))
        return np.pad(A, width, mode={"edge": "edge", "reflect": "reflect", "wrap": "wrap"}[mode])

    # -- rows: reductions, softmax, scans ----------------------------------------------------------
    def _axes(self, op, rank, default_all=True):
        a, ins = op.get("attrs", {}), self.I
        if "axes" in a:
            axes = list(a["axes"])
        elif len(ins) > 1 and ins[1]:
            axes = self.data(ins[1], "axes").reshape(-1).tolist()
        else:
            axes = []
        if not axes:
            if not default_all or a.get("noop_with_empty_axes"):
                return []
            return list(range(rank))
        return sorted({int(x) % rank for x in axes})

    def _reduce(self, op, ctx):
        x = op["inputs"][0]
        A = self.addr(x)
        a = op.get("attrs", {})
        fn = REDUCE[op["op"]]
        if fn in ("argmax", "argmin"):
            axes = [int(a.get("axis", 0)) % max(A.ndim, 1)]
        else:
            axes = self._axes(op, A.ndim)
        y, Y = self.out()
        keep = [i for i in range(A.ndim) if i not in axes]
        R = int(prod(A.shape[i] for i in keep))
        K = int(prod(A.shape[i] for i in axes))
        rows = A.transpose(keep + axes).reshape(R, K)
        cs = self.cs("reduce")
        if not axes:      # noop_with_empty_axes: the input as it is
            self._copy(cs, Y, A, op["outputs"][0], x)
            return [cs]
        p = {"fn": fn, "k": K, "select_last_index": int(a.get("select_last_index", 0))}
        p.update(self.dtypes(**{"in": self.dev(x), "out": self.dev(op["outputs"][0])}))
        if K == 0:
            raise LoweringError(f"op {op['name']!r} ({op['op']}): reduction over an empty axis is not supported")
        self.emit_rows(cs, "ReduceRows", {"out": Y.reshape(R, 1), "in": rows}, ["out"], p)
        return [cs]

    def _rows_op(self, op, ctx):
        x = op["inputs"][0]
        A = self.addr(x)
        a = op.get("attrs", {})
        y, Y = self.out()
        fn = ROWS[op["op"]]
        if fn in ("cumsum", "cumprod"):
            axis = int(self.data(self.I[1], "axis").reshape(-1)[0]) % A.ndim
            p = {"fn": fn, "exclusive": int(a.get("exclusive", 0)), "reverse": int(a.get("reverse", 0))}
        else:
            axis = int(a.get("axis", -1)) % max(A.ndim, 1)
            p = {"fn": fn}
            if int(getattr(ctx.opg, "onnx_opset", 13) or 13) < 13:     # older opsets: the input coerced to 2-D at axis
                K = int(prod(A.shape[axis:]))
                rows, yrows = A.reshape(-1, K), Y.reshape(-1, K)
                cs = self.cs(fn)
                self.emit_rows(cs, "SoftmaxRows", {"out": yrows, "in": rows}, ["out"], dict(p, k=K))
                return [cs]
        rows = np.moveaxis(A, axis, -1)
        K = rows.shape[-1]
        rows, yrows = rows.reshape(-1, K), np.moveaxis(Y, axis, -1).reshape(-1, K)
        cs = self.cs(fn)
        p.update(self.dtypes(**{"in": self.dev(x), "out": self.dev(op["outputs"][0])}))
        self.emit_rows(cs, "ScanRows" if fn.startswith("cum") else "SoftmaxRows", {"out": yrows, "in": rows},
                       ["out"], dict(p, k=K))
        return [cs]

    # -- windows: pooling, LRN, convolution ------------------------------------------------------
    def _windows(self, A, kernel, strides, dilations, pads, out_sp, fill, dtype):
        """(N, C, *out, *kernel) addresses of every window element, padding at ``fill``."""
        r = len(kernel)
        sp = A.shape[2:]
        # pad enough on both sides for every window (explicit pads and ceil-mode overhang)
        after = [max(0, (out_sp[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - sp[i] - pads[i])
                 for i in range(r)]
        P = self.pad(A, [(0, 0), (0, 0)] + [(pads[i], after[i]) for i in range(r)], fill, dtype)
        # gather with broadcasting index arrays: dims (out_0..out_r-1, k_0..k_r-1)
        grids = []
        for i in range(r):
            ix = np.arange(out_sp[i])[:, None] * strides[i] + np.arange(kernel[i])[None, :] * dilations[i]
            shape = [1] * (2 * r)
            shape[i], shape[r + i] = out_sp[i], kernel[i]
            grids.append(ix.reshape(shape))
        return P[(slice(None), slice(None)) + tuple(grids)]

    def _window_attrs(self, op, x_shape, y_shape, kernel=None):
        a = op.get("attrs", {})
        r = len(x_shape) - 2
        k = [int(v) for v in (a.get("kernel_shape") or kernel)]
        s = [int(v) for v in (a.get("strides") or [1] * r)]
        d = [int(v) for v in (a.get("dilations") or [1] * r)]
        pads = [int(v) for v in (a.get("pads") or [0] * (2 * r))]
        auto = a.get("auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * (2 * r)
            for i in range(r):
                total = max((y_shape[2 + i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - x_shape[2 + i], 0)
                lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
                pads[i], pads[i + r] = lo, total - lo
        elif auto == "VALID":
            pads = [0] * (2 * r)
        return k, s, d, pads

    def _pool(self, op, ctx):
        x = op["inputs"][0]
        A = self.addr(x)
        y, Y = self.out()
        t, a = op["op"], op.get("attrs", {})
        r = A.ndim - 2
        if t.startswith("Global"):
            k, s, d, pads = list(A.shape[2:]), [1] * r, [1] * r, [0] * (2 * r)
        else:
            k, s, d, pads = self._window_attrs(op, A.shape, Y.shape)
        fn = "max" if "Max" in t else ("lp" if "Lp" in t else "avg")
        dt = self.dev(x)
        Wn = self._windows(A, k, s, d, pads[:r], list(Y.shape[2:]), -np.inf if fn == "max" else 0.0, dt)
        K = int(prod(k))
        rows = Wn.reshape(-1, K)
        F = {"out": Y.reshape(-1, 1), "in": rows, "count": np.full((Y.size, 1), self.fill(1.0, ctx.dtype))}
        p = {"fn": fn, "k": K, "p": int(a.get("p", 2))}
        if fn == "avg":
            # the divisor of each output: the window's elements inside the input, or inside the
            # input and its explicit padding with count_include_pad
            include = int(a.get("count_include_pad", 0))
            cnt = np.ones([1] * (2 * r), np.float64)
            for i in range(r):
                pos = (np.arange(Y.shape[2 + i])[:, None] * s[i] + np.arange(k[i])[None, :] * d[i]) - pads[i]
                lo, hi = (-pads[i], A.shape[2 + i] + pads[i + r]) if include else (0, A.shape[2 + i])
                valid = ((pos >= lo) & (pos < hi)).sum(axis=1)
                shape = [1] * r
                shape[i] = Y.shape[2 + i]
                cnt = cnt * valid.reshape(shape) if i else valid.reshape(shape).astype(np.float64)
            cnt = np.broadcast_to(np.asarray(cnt, np.float64).reshape([1, 1] + list(Y.shape[2:])), Y.shape)
            ct = ctx.graph.add_constant(ctx.dtype, (Y.size,), np.ascontiguousarray(cnt).ravel(),
                                        f"{op['name']}/counts")
            ctx.graph.map_linearly(ct)
            F["count"] = (int(ct._start) + np.arange(Y.size)).reshape(-1, 1)
        cs = self.cs("pool")
        self.emit_rows(cs, "PoolRows", F, ["out"], dict(p, **self.dtypes(**{"in": dt, "out": self.dev(op["outputs"][0])})))
        return [cs]

    def _LRN(self, op, ctx):
        x = op["inputs"][0]
        A = self.addr(x)
        y, Y = self.out()
        a = op.get("attrs", {})
        size = int(a["size"])
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        P = self.pad(A, [(0, 0), (lo, hi)] + [(0, 0)] * (A.ndim - 2), 0.0, ctx.dtype)
        win = np.stack([P[:, j:j + A.shape[1]] for j in range(size)], axis=-1)
        cs = self.cs("lrn")
        self.emit_rows(cs, "LRNRows", {"out": Y.reshape(-1, 1), "in": A.reshape(-1, 1), "win": win.reshape(-1, size)},
                       ["out"], {"size": size, "alpha": float(a.get("alpha", 1e-4)), "beta": float(a.get("beta", 0.75)),
                                 "bias": float(a.get("bias", 1.0))})
        return [cs]

    def _matmul_vertices(self, cs, Am, Bm, Ym, map_out=True, tb=False):
        """Ym[b] = Am[b] @ Bm[b] for address arrays (batch, M, K), (batch, K, N), (batch, M, N):
        one MatMulPartial per (batch, block of rows)."""
        ctx = self.ctx
        Bt, M, K = Am.shape
        N = Bm.shape[1] if tb else Bm.shape[2]     # tb: B given as (batch, N, K) (weights' own order)
        want = max(1, ctx.tiles * ctx.chip.workers_per_tile // max(Bt, 1))
        mb = max(1, -(-M // want), 64 // max(N, 1) if N < 64 else 1)
        # every vertex reads its whole B operand: bound the B regions of all the vertices (about
        # 2^22 elements), as the AMP vertices of the matmul planner hold one weight block each
        mb = max(mb, -(-M * Bt * K * N // (1 << 22)))
        mb = min(mb, M)
        for r0 in (0,) if M % mb == 0 else (0, M - M % mb):
            rows = (M // mb) * mb if r0 == 0 else M % mb
            if rows == 0:
                continue
            m = mb if r0 == 0 else rows
            nblk = rows // m
            a = Am[:, r0:r0 + rows].reshape(Bt * nblk, m * K)
            b = np.repeat(Bm.reshape(Bt, K * N), nblk, axis=0)
            o = Ym[:, r0:r0 + rows].reshape(Bt * nblk, m * N)
            p = {"m": int(m), "k": int(K), "n": int(N), "partials": ctx.dtype}
            if tb:
                p["tb"] = True
            self.emit(cs, "MatMulPartial", {"a": a, "b": b, "out": o}, ["out"], p, map_out=map_out)

    def _MatMul(self, op, ctx):
        a, b = op["inputs"][:2]
        A, B = self.addr(a), self.addr(b)
        y, Y = self.out()
        A2 = A[None, :] if A.ndim == 1 else A
        B2 = B[:, None] if B.ndim == 1 else B
        batch = np.broadcast_shapes(A2.shape[:-2], B2.shape[:-2])
        Ab = np.broadcast_to(A2, batch + A2.shape[-2:]).reshape(-1, *A2.shape[-2:])
        Bb = np.broadcast_to(B2, batch + B2.shape[-2:]).reshape(-1, *B2.shape[-2:])
        Yb = Y.reshape(Ab.shape[0], A2.shape[-2], B2.shape[-1])
        cs = self.cs("matmul")
        self._matmul_vertices(cs, Ab, Bb, Yb)
        return [cs]

    def _Gemm(self, op, ctx):
        ins = self.I
        a = op.get("attrs", {})
        A, B = self.addr(ins[0]), self.addr(ins[1])
        if a.get("transA"):
            A = A.T
        y, Y = self.out()
        cs = self.cs("matmul")
        # transB: B read in its own (N, K) order, one region per vertex
        self._matmul_vertices(cs, A[None], B[None], Y[None], tb=bool(a.get("transB")))
        css = [cs]
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        has_c = len(ins) > 2 and ins[2] and beta != 0
        if has_c or alpha != 1.0:
            cs2 = self.cs("axpby")
            C = self.addr(ins[2]) if has_c else self.fill(0.0, ctx.dtype)
            self._map2(cs2, "axpby", Y, C, Y, op["outputs"][0], {"alpha": alpha, "beta": beta if has_c else 0.0},
                       map_out=False)
            css.append(cs2)
        return css

    def _Conv(self, op, ctx):
        ins = self.I
        X, Wt = self.addr(ins[0]), self.addr(ins[1])
        y, Y = self.out()
        r = X.ndim - 2
        k, s, d, pads = self._window_attrs(op, X.shape, Y.shape, kernel=Wt.shape[2:])
        G = int(op.get("attrs", {}).get("group", 1))
        N, C = X.shape[:2]
        M = Wt.shape[0]
        Cg, Mg = C // G, M // G
        if Cg == 1 and Mg == 1 and r == 2:
            css = self._depthwise(X, Wt, y, Y, k, s, d, pads)
        else:
            css = self._grouped(X, Wt, Y, k, s, d, pads, G, r)
        if len(ins) > 2 and ins[2]:
            cs2 = self.cs("bias")
            bias = self.addr(ins[2]).reshape((1, M) + (1,) * r)
            self._map2(cs2, "add", Y, bias, Y, op["outputs"][0], {}, map_out=False)
            css.append(cs2)
        return css

    def _depthwise(self, X, Wt, y, Y, k, s, d, pads):
        """A depthwise convolution: one DepthwiseRows vertex per (image, block of g channels,
        output row) reads its kh input rows of g channels (contiguous in channel-grouped
        storage: a few regions) and the g kernels."""
        ctx = self.ctx
        N, C, H, W = X.shape
        Ho, Wo = Y.shape[2:]
        g = y.g if C % y.g == 0 else 1
        Wneed = (Wo - 1) * s[1] + (k[1] - 1) * d[1] + 1
        Hneed = (Ho - 1) * s[0] + (k[0] - 1) * d[0] + 1
        P = self.pad(X, [(0, 0), (0, 0), (pads[0], max(0, Hneed - H - pads[0])),
                       (pads[1], max(0, Wneed - W - pads[1]))], 0.0, ctx.dtype)
        Xg = P[:, :, :, :Wneed].reshape(N, C // g, g, P.shape[2], Wneed).transpose(0, 1, 3, 4, 2)
        hidx = np.arange(Ho)[:, None] * s[0] + np.arange(k[0])[None, :] * d[0]        # (Ho, kh)
        rows = Xg[:, :, hidx]                                                           # (N, C/g, Ho, kh, Wneed, g)
        V = N * (C // g) * Ho
        Wg = np.broadcast_to(Wt.reshape(C // g, g * k[0] * k[1])[None, :, None], (N, C // g, Ho, g * k[0] * k[1]))
        Yg = Y.reshape(N, C // g, g, Ho, Wo).transpose(0, 1, 3, 4, 2)
        cs = self.cs("depthwise")
        self.emit(cs, "DepthwiseRows", {"in": rows.reshape(V, -1), "weights": Wg.reshape(V, -1),
                                        "out": Yg.reshape(V, -1)}, ["out"],
                  {"kh": int(k[0]), "kw": int(k[1]), "stride": int(s[1]), "dilation": int(d[1]), "g": int(g),
                   "wout": int(Wo)})
        return [cs]

    def _grouped(self, X, Wt, Y, k, s, d, pads, G, r):
        ctx = self.ctx
        N, C = X.shape[:2]
        M = Wt.shape[0]
        Cg, Mg = C // G, M // G
        Wn = self._windows(X, k, s, d, pads[:r], list(Y.shape[2:]), 0.0, ctx.dtype)
        # (N, C, *out, *k) -> (N, G, P, Cg * prod(k)) with (c, k...) the weights' order
        P = int(prod(Y.shape[2:]))
        Kc = Cg * int(prod(k))
        cols = Wn.reshape((N, G, Cg, P, int(prod(k)))).transpose(0, 1, 3, 2, 4).reshape(N * G, P, Kc)
        Wb = Wt.reshape(G, Mg, Kc)                   # each group's weights in their own order: one region
        Wb = np.broadcast_to(Wb[None], (N, G, Mg, Kc)).reshape(N * G, Mg, Kc)
        Yb = Y.reshape(N, G, Mg, P).transpose(0, 1, 3, 2).reshape(N * G, P, Mg)
        cs = self.cs("conv")
        self._matmul_vertices(cs, cols, Wb, Yb, tb=True)
        return [cs]

    # -- normalisations over rows ---------------------------------------------------------------
    def _norm(self, op, ctx):
        t, a = op["op"], op.get("attrs", {})
        ins = self.I
        x = ins[0]
        A = self.addr(x)
        y, Y = self.out()
        rank = A.ndim
        scale = bias = None
        p = {"epsilon": float(a.get("epsilon", 1e-5)), "fn": "layer"}
        if t in ("LayerNormalization", "RMSNormalization"):
            axis = int(a.get("axis", -1)) % rank
            axes = list(range(axis, rank))
            scale = np.broadcast_to(self.addr(ins[1]), A.shape)
            if ins[2]:
                bias = np.broadcast_to(self.addr(ins[2]), A.shape)
            p["fn"] = "layer" if t == "LayerNormalization" else "rms"
        elif t == "BatchNormalization":      # training mode: the batch's statistics per channel
            axes = [0] + list(range(2, rank))
            shp = (1, A.shape[1]) + (1,) * (rank - 2)
            scale = np.broadcast_to(self.addr(ins[1]).reshape(shp), A.shape)
            bias = np.broadcast_to(self.addr(ins[2]).reshape(shp), A.shape)
        elif t == "InstanceNormalization":
            axes = list(range(2, rank))
            shp = (1, A.shape[1]) + (1,) * (rank - 2)
            scale = np.broadcast_to(self.addr(ins[1]).reshape(shp), A.shape)
            bias = np.broadcast_to(self.addr(ins[2]).reshape(shp), A.shape)
        elif t == "LpNormalization":
            axes = [int(a.get("axis", -1)) % rank]
            p.update(fn="lp", p=int(a.get("p", 2)))
        else:   # MeanVarianceNormalization
            axes = sorted(int(v) % rank for v in a.get("axes", [0, 2, 3]))
            p["epsilon"] = 1e-9
        keep = [i for i in range(rank) if i not in axes]
        R, K = int(prod(A.shape[i] for i in keep)), int(prod(A.shape[i] for i in axes))

        def rows(Z):
            return Z.transpose(keep + axes).reshape(R, K)

        F = {"in": rows(A), "out": rows(Y)}
        p.update(k=K, scale=scale is not None, bias=bias is not None)
        one, zero = self.fill(1.0, ctx.dtype), self.fill(0.0, ctx.dtype)
        F["scale"] = rows(scale) if scale is not None else np.full((R, K), one)
        F["bias"] = rows(bias) if bias is not None else np.full((R, K), zero)
        outs = ["out", "mean", "istd"]
        # the statistics outputs: LayerNormalization's Mean / InvStdDev, a training graph's
        # saved_mean / saved_inv_std of a batch norm, inv_rms of an RMS norm
        stats = ((1, "istd"),) if t == "RMSNormalization" else ((1, "mean"), (2, "istd"))
        for f in ("mean", "istd"):
            i = next((i for i, g in stats if g == f), None)
            if i is not None and len(self.O) > i and self.O[i]:
                F[f] = self.out(i)[1].reshape(R, 1)
            else:
                F[f] = self.temp((R, 1), f)
        cs = self.cs("norm")
        self.emit_rows(cs, "NormRows", F, outs, p)
        return [cs]

    # -- losses -------------------------------------------------------------------------------------
    def _nll(self, cs_tag, L, T, Wt, yname, reduction, ignore):
        """NegativeLogLikelihoodLoss of log-probabilities at addresses ``L`` (N, C, d...) for targets
        ``T`` (N, d...) with class weights ``Wt`` (C,) or None, into the op's first output."""
        ctx = self.ctx
        C = L.shape[1]
        rows = np.moveaxis(L, 1, -1).reshape(-1, C)
        R = rows.shape[0]
        W = (np.broadcast_to(Wt, rows.shape) if Wt is not None else
             np.full(rows.shape, self.fill(1.0, ctx.dtype)))
        tdt = self.dev(self.I[1])
        p = {"k": C, "ignore_index": ignore, **self.dtypes(target=tdt)}
        css = []
        cs = self.cs(cs_tag)
        if reduction == "none":
            y, Y = self.out()
            self.emit_rows(cs, "NLLRows", {"out": Y.reshape(R, 1), "in": rows, "target": T.reshape(R, 1),
                                           "weight": W, "wout": self.temp((R, 1), "weights")},
                           ["out", "wout"], p)
            return [cs]
        loss, wsum = self.temp((R, 1), "losses"), self.temp((R, 1), "weights")
        self.emit_rows(cs, "NLLRows", {"out": loss, "in": rows, "target": T.reshape(R, 1), "weight": W,
                                       "wout": wsum}, ["out", "wout"], p)
        css.append(cs)
        y, Y = self.out()
        cs2 = self.cs(cs_tag + "-sum")
        if reduction == "sum":
            self.emit(cs2, "ReduceRows", {"out": Y.reshape(1, 1), "in": loss.reshape(1, R)}, ["out"],
                      {"fn": "sum", "k": R})
            return css + [cs2]
        tot = self.temp((2, 1), "totals")
        self.emit(cs2, "ReduceRows", {"out": tot.reshape(2, 1), "in": np.stack([loss.ravel(), wsum.ravel()])},
                  ["out"], {"fn": "sum", "k": R})
        cs3 = self.cs(cs_tag + "-mean")
        self._map2(cs3, "div", tot[0], tot[1], Y.reshape(1), yname, {})
        return css + [cs2, cs3]

    def _NegativeLogLikelihoodLoss(self, op, ctx):
        a = op.get("attrs", {})
        L, T = self.addr(self.I[0]), self.addr(self.I[1])
        Wt = self.addr(self.I[2]) if self.I[2] else None
        red = a.get("reduction", "mean")
        red = red.decode() if isinstance(red, bytes) else red
        return self._nll("nll", L, T, Wt, op["outputs"][0], red, a.get("ignore_index"))

    def _SoftmaxCrossEntropyLoss(self, op, ctx):
        a = op.get("attrs", {})
        x = self.I[0]
        A, T = self.addr(x), self.addr(self.I[1])
        Wt = self.addr(self.I[2]) if self.I[2] else None
        if len(self.O) > 1 and self.O[1]:
            _, LP = self.out(1)
        else:
            LP = self.temp(A.shape, "log_prob")
        C = A.shape[1]
        cs = self.cs("logsoftmax")
        self.emit_rows(cs, "SoftmaxRows", {"out": np.moveaxis(LP, 1, -1).reshape(-1, C),
                                           "in": np.moveaxis(A, 1, -1).reshape(-1, C)}, ["out"],
                       {"fn": "logsoftmax", "k": C})
        red = a.get("reduction", "mean")
        red = red.decode() if isinstance(red, bytes) else red
        return [cs] + self._nll("nll", LP, T, Wt, op["outputs"][0], red, a.get("ignore_index"))

    # -- training (functional mode): the backward pass and the updates ---------------------------
    def _refuse_inexact(self, op, ctx):
        """Forward ops of a training graph whose training semantics this lowering does not compute
        (it would compute their inference semantics): refused by name."""
        t, a = op["op"], op.get("attrs", {})
        why = None
        if t == "BatchNormalization" and a.get("training_mode") and len(op["outputs"]) != 3:
            why = "running statistics (training_mode with running mean / variance outputs)"
        elif t == "Dropout" and len(op["outputs"]) > 1 and op.get("phase") == "fwd" and \
                float(a.get("ratio", 0.5)) > 0 and ctx.training:
            why = "random dropout masks"
        if why:
            raise LoweringError(f"op {op['name']!r} ({t}, layer {op.get('layer')!r}): {why} are not computed "
                                "exactly in functional mode")

    def _unary_grad(self, op, ctx):
        """dx = f'(.) * dy from the op's output (Relu, Sigmoid, Tanh, Exp, Sqrt) or input."""
        dy, other = op["inputs"][:2]
        y, Y = self.out()
        cs = self.cs("grad")
        self._map2(cs, UNARY_GRADS[op["op"]], self.addr(dy), self.addr(other), Y, op["outputs"][0],
                   self.attrs("alpha", "approximate"))
        return [cs]

    def _scaled(self, css, Y, yname, alpha):
        if alpha != 1.0:
            cs = self.cs("alpha")
            self.emit_rows(cs, "Map1", {"out": Y.reshape(-1, 1), "in": Y.reshape(-1, 1)}, ["out"],
                           {"fn": "scale", "alpha": alpha}, map_out=False)
            css.append(cs)
        return css

    def _GemmGradA(self, op, ctx):
        """dA of Y = alpha op(A) op(B) + beta C: alpha dY op(B)^T (transposed with transA)."""
        a = op.get("attrs", {})
        DY, W = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        cs = self.cs("matmul")
        opB = W.T if a.get("transB") else W                    # (K, N)
        if a.get("transA"):      # dA (K, M) = op(B) dY^T: dY^T read as (M, N), its own order
            self._matmul_vertices(cs, opB[None], DY[None], Y[None], tb=True)
        else:                    # dA (M, K) = dY op(B)^T: op(B)^T is (N, K); B's own order when transB
            if a.get("transB"):
                self._matmul_vertices(cs, DY[None], W[None], Y[None])
            else:
                self._matmul_vertices(cs, DY[None], W[None], Y[None], tb=True)
        return self._scaled([cs], Y, op["outputs"][0], float(a.get("alpha", 1.0)))

    def _GemmGradB(self, op, ctx):
        """dB of Y = alpha op(A) op(B) + beta C: alpha op(A)^T dY (transposed with transB)."""
        a = op.get("attrs", {})
        A, DY = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        cs = self.cs("matmul")
        opA = A.T if a.get("transA") else A                    # (M, K)
        if a.get("transB"):      # dB (N, K) = dY^T op(A)
            self._matmul_vertices(cs, DY.T[None], opA[None], Y[None])
        else:                    # dB (K, N) = op(A)^T dY
            self._matmul_vertices(cs, opA.T[None], DY[None], Y[None])
        return self._scaled([cs], Y, op["outputs"][0], float(a.get("alpha", 1.0)))

    def _matmul_grad_shapes(self, op, A, B):
        if A.ndim < 2 or B.ndim < 2 or not (B.ndim == 2 or A.shape[:-2] == B.shape[:-2]):
            raise LoweringError(f"op {op['name']!r} ({op['op']}): the gradient of a MatMul of shapes {A.shape} "
                                f"and {B.shape} (vectors, broadcast batches) is not computed exactly in "
                                "functional mode")

    def _MatMulGradA(self, op, ctx):
        """dA = dY B^T (B 2-D: every row of every batch; else batch by batch)."""
        DY, B = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        self._matmul_grad_shapes(op, Y, B)
        cs = self.cs("matmul")
        if B.ndim == 2:
            self._matmul_vertices(cs, DY.reshape(1, -1, DY.shape[-1]), B[None], Y.reshape(1, -1, Y.shape[-1]),
                                  tb=True)
        else:
            K, N = B.shape[-2:]
            self._matmul_vertices(cs, DY.reshape(-1, DY.shape[-2], N), B.reshape(-1, K, N),
                                  Y.reshape(-1, Y.shape[-2], K), tb=True)
        return [cs]

    def _MatMulGradB(self, op, ctx):
        """dB = A^T dY (B 2-D: summed over every row of every batch; else batch by batch)."""
        A, DY = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        self._matmul_grad_shapes(op, A, Y)
        cs = self.cs("matmul")
        K = A.shape[-1]
        if Y.ndim == 2:
            self._matmul_vertices(cs, A.reshape(-1, K).T[None], DY.reshape(1, -1, DY.shape[-1]), Y[None])
        else:
            M, N = DY.shape[-2:]
            At = np.swapaxes(A.reshape(-1, M, K), 1, 2)
            self._matmul_vertices(cs, At, DY.reshape(-1, M, N), Y.reshape(-1, K, N))
        return [cs]

    def _SoftmaxCrossEntropyLossGrad(self, op, ctx):
        """d loss / d logits = (softmax - onehot(label)) / (samples counted) from the log-probabilities."""
        a = op.get("attrs", {})
        LP, T = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        C = LP.shape[1]
        red = a.get("reduction", "mean")
        red = red.decode() if isinstance(red, bytes) else red
        if len(op["inputs"]) > 2 or (red == "mean" and a.get("ignore_index") is not None):
            raise LoweringError(f"op {op['name']!r} ({op['op']}): class weights or ignore_index with a mean are "
                                "not computed exactly in functional mode")
        rows = np.moveaxis(LP, 1, -1).reshape(-1, C)
        R = rows.shape[0]
        cs = self.cs("grad")
        p = {"k": C, "ignore_index": a.get("ignore_index"), "scale": 1.0 / R if red == "mean" else 1.0,
             **self.dtypes(target=self.dev(op["inputs"][1]))}
        self.emit_rows(cs, "XentGradRows", {"out": np.moveaxis(Y, 1, -1).reshape(-1, C), "in": rows,
                                            "target": T.reshape(R, 1)}, ["out"], p)
        return [cs]

    def _step(self):
        """The optimizer's step count: a one-element tensor the host writes before each step
        (``acts['optimizer.step']``), read by Adam's and LAMB's bias corrections."""
        ctx = self.ctx
        if "optimizer.step" not in ctx.acts:
            a = Act.allocate(ctx.graph, "optimizer.step", (1,), ctx.dtype, kind="state")
            ctx.graph.map_linearly(a.tensor)
            ctx.acts["optimizer.step"] = a
        return addresses(ctx.acts["optimizer.step"])

    def _update_fields(self, op):
        """Weights, gradient and state addresses of an update op (element by element), its hyper-parameters."""
        ins = op["inputs"]
        F = {"weights": self.addr(ins[0]).reshape(-1, 1), "grad": self.addr(ins[1]).reshape(-1, 1)}
        for i, o in enumerate(op["outputs"]):   # in place: the outputs alias the weights and states
            self.ctx.new_act(op, i)
        hyper = {k: float(v) for k, v in op.get("attrs", {}).items()
                 if k in ("lr", "momentum", "beta1", "beta2", "epsilon", "weight_decay")}
        return ins, F, hyper

    def _SGDMomentumUpdate(self, op, ctx):
        """m = momentum m + g; w -= lr m (PyTorch's SGD with momentum, no dampening)."""
        ins, F, hyper = self._update_fields(op)
        F["momentum"] = self.addr(ins[2]).reshape(-1, 1)
        cs = self.cs("update")
        self.emit_rows(cs, "SGDMomentum", F, ["weights", "momentum"], hyper, map_out=False)
        return [cs]

    def _AdamUpdate(self, op, ctx):
        ins, F, hyper = self._update_fields(op)
        F["m"], F["v"] = self.addr(ins[2]).reshape(-1, 1), self.addr(ins[3]).reshape(-1, 1)
        F["step"] = np.broadcast_to(self._step(), F["grad"].shape)
        cs = self.cs("update")
        self.emit_rows(cs, "AdamStep", F, ["weights", "m", "v"], hyper, map_out=False, scalars=("step",))
        return [cs]

    def _LambUpdate(self, op, ctx):
        """LAMB: moments and direction r, the norms of w and r over the whole tensor, then
        w -= lr ||w|| / ||r|| r (ratio 1 where a norm is zero)."""
        ins, F, hyper = self._update_fields(op)
        W = F["weights"]
        n = W.shape[0]
        R = self.temp((n, 1), "r")
        F.update(m=self.addr(ins[2]).reshape(-1, 1), v=self.addr(ins[3]).reshape(-1, 1),
                 step=np.broadcast_to(self._step(), W.shape), r=R)
        cs1 = self.cs("lamb_direction")
        self.emit_rows(cs1, "LambDirection", F, ["r"], hyper, scalars=("step",))
        # the sums of squares of w and r: partial sums over parts of the tensor, then their sum
        P = max(1, min(n // 64, self.ctx.tiles * self.ctx.chip.workers_per_tile // 2))
        L = -(-n // P)
        zero = self.fill(0.0, self.ctx.dtype)
        parts = np.stack([np.pad(v.ravel(), (0, P * L - n), constant_values=zero).reshape(P, L)
                          for v in (W, R)]).reshape(2 * P, L)
        part = self.temp((2 * P, 1), "sum_sq_parts")
        sq = self.temp((2, 1), "sum_sq")
        cs2 = self.cs("lamb_norms")
        self.emit_rows(cs2, "ReduceRows", {"out": part, "in": parts}, ["out"], {"fn": "sumsquare", "k": L})
        cs2b = self.cs("lamb_norms_sum")
        self.emit(cs2b, "ReduceRows", {"out": sq, "in": part.reshape(2, P)}, ["out"], {"fn": "sum", "k": P})
        cs3 = self.cs("lamb_update")
        self.emit_rows(cs3, "LambUpdate", {"weights": W, "r": R, "w_sq": np.broadcast_to(sq[0], W.shape),
                                           "r_sq": np.broadcast_to(sq[1], W.shape)}, ["weights"], hyper,
                       map_out=False, scalars=("w_sq", "r_sq"))
        return [cs1, cs2, cs2b, cs3]

    def _param_sums(self, cs, src, P, out, shp):
        """out[e] = the sum of ``src`` (addresses shaped like the activations) over every position
        where parameter element e, broadcast from shape ``shp``, applies (a scale's or bias's
        gradient)."""
        n = int(prod(shp))
        pidx = np.broadcast_to(np.arange(n).reshape(shp), src.shape).ravel()
        order = np.argsort(pidx, kind="stable")
        rows = src.ravel()[order].reshape(n, -1)
        self.emit_rows(cs, "ReduceRows", {"out": out.reshape(n, 1), "in": rows}, ["out"],
                       {"fn": "sum", "k": int(rows.shape[1])})

    def _norm_grad(self, op, ctx):
        """Batch / layer / RMS normalisation gradients from the forward's saved statistics: dx per
        normalised row (NormGradRows), the scale's and bias's gradients summed over the positions
        each applies to (ReduceRows)."""
        t, a = op["op"], op.get("attrs", {})
        ins = op["inputs"]
        DY, X, S = self.addr(ins[0]), self.addr(ins[1]), self.addr(ins[2])
        rank = X.ndim
        if t == "BatchNormalizationGrad":
            axes = [0] + list(range(2, rank))
            shp = (1, X.shape[1]) + (1,) * (rank - 2)
        else:
            axis = int(a.get("axis", -1)) % rank
            axes = list(range(axis, rank))
            shp = (1,) * axis + tuple(X.shape[axis:])
        keep = [i for i in range(rank) if i not in axes]
        R, K = int(prod(X.shape[i] for i in keep)), int(prod(X.shape[i] for i in axes))

        def rows(Z):
            return Z.transpose(keep + axes).reshape(R, K)

        Sb = np.broadcast_to(S.reshape(shp), X.shape)
        if t == "RMSNormalizationGrad":
            mean, istd = np.full((R, 1), self.fill(0.0, ctx.dtype)), self.addr(ins[3]).reshape(R, 1)
        else:
            mean, istd = self.addr(ins[3]).reshape(R, 1), self.addr(ins[4]).reshape(R, 1)
        which = list(a.get("gradients", ["X", "scale", "B"]))
        outs = dict(zip(which, op["outputs"]))
        DX = self.out(which.index("X"))[1] if "X" in outs else self.temp(X.shape, "dx")
        XDY = self.temp(X.shape, "xdy")
        cs = self.cs("norm_grad")
        self.emit_rows(cs, "NormGradRows", {"out": rows(DX), "xdy": rows(XDY), "in": rows(X), "grad": rows(DY),
                                            "scale": rows(Sb), "mean": mean, "istd": istd}, ["out", "xdy"],
                       {"k": K, "fn": "rms" if t == "RMSNormalizationGrad" else "layer"})
        css = [cs]
        if "scale" in outs or "B" in outs:
            cs2 = self.cs("norm_param_grads")
            for tag, src in (("scale", XDY), ("B", DY)):
                if tag in outs:
                    self._param_sums(cs2, src, S.size, self.out(which.index(tag))[1], shp)
            css.append(cs2)
        return css

    _BatchNormalizationGrad = _LayerNormalizationGrad = _RMSNormalizationGrad = _norm_grad

    def _back_windows(self, DY, in_sp, k, s, d, pads, fill, dtype):
        """(N, C, *in, *k) addresses of the output element whose window reads each input element
        at kernel position kk (o s + kk d - pad = i), ``fill`` where there is none."""
        r = len(k)
        out_sp = DY.shape[2:]
        grids, valid = [], np.ones([1] * (2 * r), bool)
        for i in range(r):
            pos = np.arange(in_sp[i])[:, None] + pads[i] - np.arange(k[i])[None, :] * d[i]
            ok = (pos >= 0) & (pos % s[i] == 0) & (pos // s[i] < out_sp[i])
            shape = [1] * (2 * r)
            shape[i], shape[r + i] = in_sp[i], k[i]
            grids.append(np.where(ok, pos // s[i], 0).reshape(shape))
            valid = valid & ok.reshape(shape)
        G = DY[(slice(None), slice(None)) + tuple(grids)]
        return np.where(np.broadcast_to(valid, G.shape[2:]), G, self.fill(fill, dtype))

    def _ConvGradInput(self, op, ctx):
        """dx of a convolution (any rank, stride, padding, dilation, groups): per group, each input
        element's gradient is the dot product of the dy elements whose windows read it (zero where
        none) with the weights at the matching kernel positions: MatMulPartial on addresses."""
        DY, Wt = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        r = Y.ndim - 2
        k, s, d, pads = self._window_attrs(op, Y.shape, DY.shape, kernel=Wt.shape[2:])
        G = int(op.get("attrs", {}).get("group", 1))
        N, C = Y.shape[:2]
        M = Wt.shape[0]
        Cg, Mg, Kk, Pin = C // G, M // G, int(prod(k)), int(prod(Y.shape[2:]))
        B = self._back_windows(DY, list(Y.shape[2:]), k, s, d, pads[:r], 0.0, ctx.dtype)   # (N, M, *in, *k)
        A = B.reshape(N, G, Mg, Pin, Kk).transpose(0, 1, 3, 2, 4).reshape(N * G, Pin, Mg * Kk)
        Wb = Wt.reshape(G, Mg, Cg, Kk).transpose(0, 1, 3, 2).reshape(G, Mg * Kk, Cg)
        Wb = np.broadcast_to(Wb[None], (N, G, Mg * Kk, Cg)).reshape(N * G, Mg * Kk, Cg)
        Yb = Y.reshape(N, G, Cg, Pin).transpose(0, 1, 3, 2).reshape(N * G, Pin, Cg)
        cs = self.cs("conv_grad_input")
        self._matmul_vertices(cs, A, Wb, Yb)
        return [cs]

    def _ConvGradWeight(self, op, ctx):
        """dW of a convolution: per group, dy (Mg, N * out) times the input windows (N * out,
        Cg * kernel), padding read as zeros."""
        DY, X = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        r = X.ndim - 2
        k, s, d, pads = self._window_attrs(op, X.shape, DY.shape, kernel=Y.shape[2:])
        G = int(op.get("attrs", {}).get("group", 1))
        N, C = X.shape[:2]
        M = Y.shape[0]
        Cg, Mg, Kk, Po = C // G, M // G, int(prod(k)), int(prod(DY.shape[2:]))
        Wn = self._windows(X, k, s, d, pads[:r], list(DY.shape[2:]), 0.0, ctx.dtype)     # (N, C, *out, *k)
        cols = Wn.reshape(N, G, Cg, Po, Kk).transpose(1, 0, 3, 2, 4).reshape(G, N * Po, Cg * Kk)
        A = DY.reshape(N, G, Mg, Po).transpose(1, 2, 0, 3).reshape(G, Mg, N * Po)
        cs = self.cs("conv_grad_weight")
        self._matmul_vertices(cs, A, cols, Y.reshape(G, Mg, Cg * Kk))
        return [cs]

    def _MaxPoolGrad(self, op, ctx):
        """Each window's gradient to its first maximum (PyTorch's and ONNX Runtime's choice): the
        index of every window's maximum (ReduceRows argmax), then per input element the sum of
        the gradients of the windows whose maximum it is (SelectSumRows)."""
        a = op.get("attrs", {})
        DY, X = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        r = X.ndim - 2
        k, s, d, pads = self._window_attrs(op, X.shape, DY.shape)
        if a.get("ceil_mode") or a.get("storage_order"):
            raise LoweringError(f"op {op['name']!r} ({op['op']}): ceil_mode / storage_order gradients are not "
                                "computed exactly in functional mode")
        Kk = int(prod(k))
        Wn = self._windows(X, k, s, d, pads[:r], list(DY.shape[2:]), -np.inf, ctx.dtype).reshape(-1, Kk)
        arg = self.temp(DY.shape, "argmax")
        cs1 = self.cs("pool_argmax")
        self.emit_rows(cs1, "ReduceRows", {"out": arg.reshape(-1, 1), "in": Wn}, ["out"], {"fn": "argmax", "k": Kk})
        cs2 = self.cs("pool_grad")
        G = self._back_windows(DY, list(X.shape[2:]), k, s, d, pads[:r], 0.0, ctx.dtype).reshape(-1, Kk)
        Ag = self._back_windows(arg, list(X.shape[2:]), k, s, d, pads[:r], -1.0, ctx.dtype).reshape(-1, Kk)
        self.emit_rows(cs2, "SelectSumRows", {"out": Y.reshape(-1, 1), "grad": G, "arg": Ag}, ["out"], {"k": Kk})
        return [cs1, cs2]

    def _AveragePoolGrad(self, op, ctx):
        """Each window's gradient over its divisor (count_include_pad as the forward), summed per
        input element over the windows that read it."""
        a = op.get("attrs", {})
        DY = self.addr(op["inputs"][0])
        y, Y = self.out()
        r = Y.ndim - 2
        if a.get("ceil_mode"):
            raise LoweringError(f"op {op['name']!r} ({op['op']}): ceil_mode gradients are not computed exactly "
                                "in functional mode")
        k, s, d, pads = self._window_attrs(op, Y.shape, DY.shape)
        include = int(a.get("count_include_pad", 0))
        cnt = np.ones([1] * r, np.float64)
        for i in range(r):
            pos = (np.arange(DY.shape[2 + i])[:, None] * s[i] + np.arange(k[i])[None, :] * d[i]) - pads[i]
            lo, hi = (-pads[i], Y.shape[2 + i] + pads[i + r]) if include else (0, Y.shape[2 + i])
            shape = [1] * r
            shape[i] = DY.shape[2 + i]
            cnt = cnt * ((pos >= lo) & (pos < hi)).sum(axis=1).reshape(shape)
        cnt = np.broadcast_to(cnt.reshape((1, 1) + cnt.shape), DY.shape)
        ct = ctx.graph.add_constant(ctx.dtype, (DY.size,), np.ascontiguousarray(cnt, np.float64).ravel(),
                                    f"{op['name']}/counts")
        ctx.graph.map_linearly(ct)
        q = self.temp(DY.shape, "quotients")
        cs1 = self.cs("pool_div")
        self._map2(cs1, "div", DY, (int(ct._start) + np.arange(DY.size)).reshape(DY.shape), q, op["outputs"][0], {})
        Kk = int(prod(k))
        cs2 = self.cs("pool_grad")
        Gw = self._back_windows(q, list(Y.shape[2:]), k, s, d, pads[:r], 0.0, ctx.dtype).reshape(-1, Kk)
        self.emit_rows(cs2, "ReduceRows", {"out": Y.reshape(-1, 1), "in": Gw}, ["out"], {"fn": "sum", "k": Kk})
        return [cs1, cs2]

    def _GlobalAveragePoolGrad(self, op, ctx):
        DY = self.addr(op["inputs"][0])
        y, Y = self.out()
        n = int(prod(Y.shape[2:]))
        cs = self.cs("pool_grad")
        self._map2(cs, "div", DY, self.fill(float(n), ctx.dtype), Y, op["outputs"][0], {})
        return [cs]

    def _softmax_grad(self, op, ctx):
        a = op.get("attrs", {})
        DY, Yf = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        rank = Y.ndim
        axis = int(a.get("axis", -1)) % rank
        keep = [i for i in range(rank) if i != axis]
        K = Y.shape[axis]

        def rows(Z):
            return Z.transpose(keep + [axis]).reshape(-1, K)

        cs = self.cs("softmax_grad")
        self.emit_rows(cs, "SoftmaxGradRows", {"out": rows(Y), "y": rows(Yf), "grad": rows(DY)}, ["out"],
                       {"k": K, "fn": "logsoftmax" if op["op"] == "LogSoftmaxGrad" else "softmax"})
        return [cs]

    _SoftmaxGrad = _LogSoftmaxGrad = _softmax_grad

    def _GatherGrad(self, op, ctx):
        """The gradient of a gather (an embedding lookup; any axis): data[.., idx[i], ..] +=
        dy[.., i, ..].  Each vertex holds a block of the other dims' elements for every index
        value and reads every index and its block of dy (ScatterAddCols), so no two vertices
        write the same element whatever the indices (given at run time or constant)."""
        a = op.get("attrs", {})
        DY, I = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        axis = int(a.get("axis", 0)) % max(Y.ndim, 1)
        V = Y.shape[axis]
        pre, post = int(prod(Y.shape[:axis])), int(prod(Y.shape[axis + 1:]))
        row = pre * post
        T = I.size
        Yr = np.moveaxis(Y, axis, 0).reshape(V, row)
        D = DY.reshape(pre, T, post).transpose(1, 0, 2).reshape(T, row)
        hs = max(1, row // max(1, ctx.tiles * ctx.chip.workers_per_tile))
        cs = self.cs("scatter_add")
        c0 = list(range(0, row, hs))
        for width in sorted({min(hs, row - c) for c in c0}):
            cols = [c for c in c0 if min(hs, row - c) == width]
            sel = np.asarray(cols)[:, None] + np.arange(width)[None, :]          # (vertices, width)
            out = Yr[:, sel].transpose(1, 0, 2).reshape(len(cols), V * width)
            grad = D[:, sel].transpose(1, 0, 2).reshape(len(cols), T * width)
            idx = np.broadcast_to(I.reshape(1, T), (len(cols), T))
            self.emit(cs, "ScatterAddCols", {"out": out, "grad": grad, "index": idx}, ["out"],
                      {"rows": int(V), "cols": int(width), **self.dtypes(index=self.dev(op["inputs"][1]))})
        return [cs]

    def _rotary(self, op, ctx, inverse):
        """RotaryEmbedding (models/transformers.py: x (tokens, heads x head_dim), cos / sin
        (positions, head_dim / 2), token t at position t mod positions): a Rotary vertex per
        token; its gradient the same rotation with sin negated."""
        X, COS, SIN = (self.addr(t) for t in op["inputs"][:3])
        y, Y = self.out()
        T, row = X.shape
        S = COS.shape[0]
        pos = np.arange(T) % S
        cs = self.cs("rotary")
        self.emit(cs, "Rotary", {"out": Y, "in": X, "cos": COS[pos], "sin": SIN[pos]}, ["out"],
                  {"head_dim": int(op.get("attrs", {}).get("head_dim", 2 * COS.shape[1])), "inverse": int(inverse)})
        return [cs]

    def _RotaryEmbedding(self, op, ctx):
        return self._rotary(op, ctx, bool(op.get("attrs", {}).get("inverse", 0)))

    def _RotaryEmbeddingGrad(self, op, ctx):
        return self._rotary(op, ctx, bool(op.get("attrs", {}).get("inverse", 1)))

    # -- mixture-of-experts routing (models/transformers.py's Mixtral layers) --------------------
    def _TopKRoute(self, op, ctx):
        """logits (T, E) -> the k chosen experts (T, k) and their softmax gates (T, k), a
        TopKSoftmax vertex per block of tokens."""
        L = self.addr(op["inputs"][0])
        T, E = L.shape
        I, G = self.out(0)[1], self.out(1)[1]
        k = I.shape[1]
        cs = self.cs("topk")
        self.emit_rows(cs, "TopKSoftmax", {"idx": I, "gates": G, "in": L}, ["idx", "gates"],
                       {"k": int(k), "experts": int(E), **self.dtypes(idx=self.dev(op["outputs"][0]))})
        return [cs]

    def _slots(self, idx_name, E, C):
        """A temporary of every (token, choice) pair's expert * capacity + slot (-1: dropped):
        one MoESlots vertex reads all the choices (a slot depends on every earlier token's)."""
        I = self.addr(idx_name)
        pos = self.temp(I.shape, "slots")
        cs = self.cs("slots")
        self.emit(cs, "MoESlots", {"out": pos.reshape(1, -1), "idx": I.reshape(1, -1)}, ["out"],
                  {"experts": int(E), "capacity": int(C), **self.dtypes(idx=self.dev(idx_name))})
        return cs, pos

    def _MoEDispatch(self, op, ctx):
        """x (T, d) -> every expert's buffer (E, C, d): slot c of expert e holds the row of the
        pair given that slot (scaled by its gate where a third input gives the gates: the
        combine's gradient), a MoEDispatchRows vertex per expert."""
        X, I = self.addr(op["inputs"][0]), self.addr(op["inputs"][1])
        y, Y = self.out()
        E, C, d = Y.shape
        T, k = I.shape
        cs1, pos = self._slots(op["inputs"][1], E, C)
        gate = (self.addr(op["inputs"][2]) if len(op["inputs"]) > 2 and op["inputs"][2]
                else np.full(I.shape, self.fill(1.0, ctx.dtype)))
        cs2 = self.cs("dispatch")
        for e in range(E):
            self.emit(cs2, "MoEDispatchRows", {"out": Y[e].reshape(1, -1), "pos": pos.reshape(1, -1),
                                               "gate": gate.reshape(1, -1), "in": X.reshape(1, -1)}, ["out"],
                      {"expert": e, "capacity": int(C), "row": int(d), "k": int(k)})
        return [cs1, cs2]

    def _combine_like(self, op, ctx, buffers, idx_name, gate, dot_grad=None):
        """Per block of tokens a MoECombineRows vertex reads the tokens' slots, gates and every
        expert buffer (the slots are known only at run time)."""
        B = self.addr(buffers)
        E, C, d = B.shape
        I = self.addr(idx_name)
        T, k = I.shape
        y, Y = self.out()
        cs1, pos = self._slots(idx_name, E, C)
        ch = max(1, -(-T // max(1, min(T, ctx.tiles * ctx.chip.workers_per_tile))))
        cs2 = self.cs("combine")
        per = Y.size // T
        for t0, n in ((0, T - T % ch), (T - T % ch, T % ch)):
            if n == 0:
                continue
            m = n // ch if t0 == 0 else 1
            c = ch if t0 == 0 else n
            F = {"out": Y.reshape(T, per)[t0:t0 + n].reshape(m, c * per),
                 "pos": pos[t0:t0 + n].reshape(m, c * k), "gate": gate[t0:t0 + n].reshape(m, c * k),
                 "buffers": np.broadcast_to(B.reshape(1, -1), (m, B.size))}
            # the tokens' gradient rows where the gates' gradient is computed (else one zero)
            F["grad"] = (dot_grad[t0:t0 + n].reshape(m, c * d) if dot_grad is not None
                         else np.full((m, 1), self.fill(0.0, ctx.dtype)))
            self.emit(cs2, "MoECombineRows", F, ["out"], {"row": int(d), "k": int(k), "dot": dot_grad is not None})
        return [cs1, cs2]

    def _MoECombine(self, op, ctx):
        """ye (E, C, d) -> y (T, d): each token's rows of its k experts' slots, summed with its
        gates (without gates: the dispatch's gradient, a plain sum)."""
        I = self.addr(op["inputs"][1])
        gate = (self.addr(op["inputs"][2]) if len(op["inputs"]) > 2 and op["inputs"][2]
                else np.full(I.shape, self.fill(1.0, ctx.dtype)))
        return self._combine_like(op, ctx, op["inputs"][0], op["inputs"][1], gate)

    def _MoEGateGrad(self, op, ctx):
        """d gates (T, k): the token's gradient dotted with each chosen expert's slot row."""
        DY = self.addr(op["inputs"][0])
        I = self.addr(op["inputs"][2])
        return self._combine_like(op, ctx, op["inputs"][1], op["inputs"][2],
                                  np.full(I.shape, self.fill(1.0, ctx.dtype)), dot_grad=DY)

    def _TopKRouteGrad(self, op, ctx):
        """d logits (T, E): the gates' softmax gradient over the k chosen, zeros elsewhere, a
        TopKRouteGrad vertex per token."""
        DG, I, G = (self.addr(t) for t in op["inputs"][:3])
        y, Y = self.out()
        cs = self.cs("topk_grad")
        self.emit(cs, "TopKRouteGrad", {"out": Y, "grad": DG, "idx": I, "gates": G}, ["out"], {})
        return [cs]
