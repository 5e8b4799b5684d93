"""Per-op-type rules shared by the built-in models, the ONNX importer and the
training-graph builder: lowering family, output shapes and FLOPs.

FLOP conventions (one place, used everywhere):

* a multiply-add counts as 2 FLOPs;
* ``Conv``: ``2 * N * M * prod(out spatial) * C/group * prod(kernel)``, plus one
  FLOP per output element for the bias when there is one;
* ``Gemm``: ``2 * M * N * K`` plus ``M * N`` for the bias ``C``;
  ``MatMul``: ``2 * prod(output batch dims) * M * N * K``;
* elementwise ops (Relu, Add, Mul, Sigmoid, Gelu, Dropout, ...): 1 FLOP per
  output element whatever the function's real cost; variadic ``Sum`` of k
  inputs: ``k - 1`` per element;
* ``MaxPool`` / ``AveragePool``: ``prod(kernel)`` per output element;
  ``GlobalAveragePool`` / ``ReduceMean`` / ``ReduceSum``: 1 per input element;
* ``BatchNormalization``: 2 per element in inference (folded scale and shift),
  7 per element with ``training_mode=1`` (batch statistics + normalisation);
  ``LayerNormalization``: 7 per element; ``RMSNormalization``: 5 per element
  (square, mean, scale by 1 / rms, weight); ``LRN``: ``2 * size + 3`` per element;
* ``RotaryEmbedding`` (x, cos, sin; ONNX opset 23): 3 per element (two products, one sum);
  ``Swish`` (x sigmoid(x), the SiLU of SwiGLU): 1 per element like every unary op;
* ``Softmax`` / ``LogSoftmax``: 5 per element (max, subtract, exp, sum, divide);
* data movement (Reshape, Flatten, Transpose, (Un)Squeeze, Concat, Gather,
  Slice, Pad, Identity, Cast): 0.

Shapes are tuples of ints; a scalar is ``()``.
"""
from __future__ import annotations

from math import prod

import numpy as np

from .errors import ModelError

FAMILY = {
    "Conv": "conv",
    "Gemm": "matmul", "MatMul": "matmul",
    "MaxPool": "pool", "AveragePool": "pool", "GlobalAveragePool": "pool",
    "GlobalMaxPool": "pool",
    "BatchNormalization": "norm", "LayerNormalization": "norm", "LRN": "norm",
    "RMSNormalization": "norm",
    "Softmax": "softmax", "LogSoftmax": "softmax",
    "ReduceMean": "reduce", "ReduceSum": "reduce",
    "Reshape": "reshape", "Flatten": "reshape", "Transpose": "reshape",
    "Unsqueeze": "reshape", "Squeeze": "reshape", "Identity": "reshape",
    "Concat": "concat", "Pad": "concat",
    "Gather": "gather", "Slice": "gather",
}
UNARY = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Erf", "Gelu", "Sqrt",
         "Exp", "Log", "Neg", "Abs", "Reciprocal", "Cast", "Dropout", "Softplus",
         "Elu", "HardSigmoid", "Floor", "Ceil", "Swish")
BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min")
for _op in UNARY + BINARY + ("Sum", "RotaryEmbedding"):
    FAMILY[_op] = "elementwise"
#: ONNX ops lowered only through index maps (compiler/planners/indexed.py); their output
#: shapes come from onnx's shape inference
INDEXED = ("Round", "Sign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh",
           "Acosh", "Atanh", "Softsign", "Selu", "Celu", "HardSwish", "ThresholdedRelu", "Mish",
           "Shrink", "IsNaN", "IsInf", "Not", "CastLike", "Mod", "Equal", "Less", "Greater",
           "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "BitwiseAnd", "BitwiseOr",
           "BitwiseXor", "BitShift", "PRelu", "Mean", "Where", "ReduceMax", "ReduceMin",
           "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
           "ReduceSumSquare", "ArgMax", "ArgMin", "Expand", "Tile", "Split", "DepthToSpace",
           "SpaceToDepth", "Trilu", "GatherElements", "GatherND", "Compress", "ReverseSequence",
           "Hardmax", "CumSum", "CumProd", "LpPool", "GlobalLpPool", "InstanceNormalization",
           "LpNormalization", "MeanVarianceNormalization", "NegativeLogLikelihoodLoss",
           "SoftmaxCrossEntropyLoss")
for _op in INDEXED:
    FAMILY[_op] = "indexed"
#: shape rules of the index-mapped ops where onnx's inference leaves a gap
_PREDICATES = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not", "IsNaN",
               "IsInf"}
_BROADCAST_RULES = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod",
                    "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "PRelu", "Mean", "Where"}
INDEXED_UNARY = {"Round", "Sign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh",
                 "Atanh", "Softsign", "Selu", "Celu", "HardSwish", "ThresholdedRelu", "Mish", "Shrink", "IsNaN",
                 "IsInf", "Not"}

#: Op types the lowering knows how to run (everything with a family).
KNOWN_OPS = frozenset(FAMILY)

_NO_FLOPS = {"Reshape", "Flatten", "Transpose", "Unsqueeze", "Squeeze", "Identity",
             "Concat", "Pad", "Gather", "Slice", "Cast"}


def family(op: str) -> str:
    """Lowering family of a forward op type (see ``opgraph.FAMILIES``)."""
    try:
        return FAMILY[op]
    except KeyError:
        raise ModelError(f"no lowering family for op type {op!r}") from None


# -- helpers ----------------------------------------------------------------
def _ints(v):
    return [int(x) for x in v]


def broadcast(*shapes) -> tuple:
    """Numpy broadcasting of shapes; ModelError when incompatible."""
    try:
        return tuple(int(s) for s in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        raise ModelError(f"shapes {', '.join(str(tuple(s)) for s in shapes)} "
                         "do not broadcast") from None


def _axis(a, rank):
    a = int(a)
    if not -rank <= a < max(rank, 1):
        raise ModelError(f"axis {a} out of range for rank {rank}")
    return a + rank if a < 0 else a


def window_attrs(attrs: dict, spatial: tuple, kernel=None) -> dict:
    """Complete ``kernel_shape``/``strides``/``pads``/``dilations`` of a Conv or
    pool (ONNX defaults), turning ``auto_pad`` into explicit ``pads``."""
    n = len(spatial)
    k = _ints(attrs.get("kernel_shape") or kernel or [])
    if len(k) != n:
        raise ModelError(f"kernel_shape {k} does not match {n} spatial dims")
    if kernel is not None and attrs.get("kernel_shape") and tuple(k) != tuple(_ints(kernel)):
        raise ModelError(f"kernel_shape {k} contradicts the weight's {list(kernel)}")
    s = _ints(attrs.get("strides") or [1] * n)
    d = _ints(attrs.get("dilations") or [1] * n)
    p = _ints(attrs.get("pads") or [0] * (2 * n))
    for name, v, want in (("kernel_shape", k, n), ("strides", s, n), ("dilations", d, n), ("pads", p, 2 * n)):
        if len(v) != want:
            raise ModelError(f"{name} {v} needs {want} values")
        if any(x < (0 if name == "pads" else 1) for x in v):
            raise ModelError(f"{name} {v} must be {'non-negative' if name == 'pads' else 'positive'}")
    auto = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise ModelError(f"auto_pad {auto!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        p = [0] * (2 * n)
        for i in range(n):
            out = -(-spatial[i] // s[i])
            total = max((out - 1) * s[i] + d[i] * (k[i] - 1) + 1 - spatial[i], 0)
            small, big = total // 2, total - total // 2
            p[i], p[i + n] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        p = [0] * (2 * n)
    out = dict(attrs)
    out.pop("auto_pad", None)
    out.update(kernel_shape=k, strides=s, pads=p)
    if "dilations" in attrs or "group" in attrs or kernel is not None:
        out["dilations"] = d
    return out


def window_out(spatial, attrs, ceil=False) -> tuple:
    """Output spatial size of a Conv / pool window with complete attrs."""
    k, s, p = attrs["kernel_shape"], attrs["strides"], attrs["pads"]
    d = attrs.get("dilations") or [1] * len(k)
    n = len(k)
    out = []
    for i in range(n):
        span = spatial[i] + p[i] + p[i + n] - (d[i] * (k[i] - 1) + 1)
        if span < 0:
            raise ModelError(f"window {k} larger than padded input {tuple(spatial)}")
        o = (-(-span // s[i]) if ceil else span // s[i]) + 1
        if ceil and (o - 1) * s[i] >= spatial[i] + p[i]:
            o -= 1
        out.append(o)
    return tuple(out)


def _perm(attrs, rank):
    perm = attrs.get("perm")
    return _ints(perm) if perm is not None else list(range(rank))[::-1]


def reshape_target(in_shape, target, allowzero=0) -> tuple:
    """Resolve an ONNX Reshape target (``0`` copies, ``-1`` is inferred)."""
    target = _ints(target)
    out = [in_shape[i] if (t == 0 and not allowzero) else t for i, t in enumerate(target)]
    if out.count(-1) > 1:
        raise ModelError(f"Reshape target {target} has more than one -1")
    if -1 in out:
        known = prod(x for x in out if x != -1)
        total = prod(in_shape)
        if known == 0 or total % known:
            raise ModelError(f"cannot reshape {tuple(in_shape)} to {target}")
        out[out.index(-1)] = total // known
    if prod(out) != prod(in_shape):
        raise ModelError(f"cannot reshape {tuple(in_shape)} to {target}")
    return tuple(out)


def _axes(attrs, ins, idx):
    """Axes from the attribute (old opsets) or from constant input ``idx``."""
    if "axes" in attrs:
        return _ints(attrs["axes"])
    if len(ins) > idx and ins[idx] is not None:
        if ins[idx].data is None:
            raise ModelError("axes input is not a constant")
        return _ints(np.asarray(ins[idx].data).reshape(-1))
    return None


def _const(ins, idx, what):
    if len(ins) <= idx or ins[idx] is None or ins[idx].data is None:
        raise ModelError(f"{what} must be a constant (or computable from shapes)")
    return np.asarray(ins[idx].data)


def _slice_shape(shape, starts, ends, axes, steps):
    out = list(shape)
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax = _axis(ax, len(shape))
        out[ax] = len(range(shape[ax])[slice(int(st), int(en), int(sp))])
    return tuple(out)


# -- shape inference ----------------------------------------------------------
def infer(op: str, ins: list, attrs: dict, n_out: int = 1) -> list:
    """Output ``(shape, dtype)`` pairs of an op.

    ``ins`` are objects with ``shape``, ``dtype`` and ``data`` (``TensorInfo``),
    by ONNX input position (``None`` for an omitted optional input); ``data`` is
    only read for inputs that must be constant (Reshape target, axes, pads, ...).
    Raises :class:`ModelError` for inconsistent shapes.
    """
    x = ins[0]
    xs, dt = tuple(x.shape), x.dtype
    if op == "Conv":
        w = ins[1].shape
        if len(xs) != len(w) or len(xs) < 3:
            raise ModelError(f"Conv input {xs} and weight {w} ranks differ")
        g = int(attrs.get("group", 1))
        if xs[1] != w[1] * g:
            raise ModelError(f"Conv input channels {xs[1]} != weight {w[1]} x group {g}")
        if g < 1 or w[0] % g:
            raise ModelError(f"Conv group {g} does not divide the {w[0]} output channels")
        if len(ins) > 2 and ins[2] is not None and tuple(ins[2].shape) != (w[0],):
            raise ModelError(f"Conv bias of shape {tuple(ins[2].shape)} for {w[0]} output channels")
        a = window_attrs(attrs, xs[2:], kernel=w[2:])
        return [((xs[0], w[0]) + window_out(xs[2:], a), dt)]
    if op in ("MaxPool", "AveragePool"):
        a = window_attrs(attrs, xs[2:])
        y = (xs[0], xs[1]) + window_out(xs[2:], a, bool(attrs.get("ceil_mode", 0)))
        return [(y, dt), (y, "int64")][:n_out]
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        return [((xs[0], xs[1]) + (1,) * (len(xs) - 2), dt)]
    if op == "Gemm":
        a, b = xs, ins[1].shape
        if len(a) != 2 or len(b) != 2:
            raise ModelError(f"Gemm needs 2-D inputs, got {a} and {b}")
        m, k = (a[1], a[0]) if attrs.get("transA", 0) else a
        k2, n = (b[1], b[0]) if attrs.get("transB", 0) else b
        if k != k2:
            raise ModelError(f"Gemm inner dimensions differ: {a} x {b}")
        if len(ins) > 2 and ins[2] is not None:
            try:
                broadcast(tuple(ins[2].shape), (m, n))
            except ModelError:
                raise ModelError(f"Gemm bias of shape {tuple(ins[2].shape)} does not broadcast to "
                                 f"the output {(m, n)}") from None
        return [((m, n), dt)]
    if op == "MatMul":
        a, b = xs, tuple(ins[1].shape)
        a2 = (1,) + a if len(a) == 1 else a
        b2 = b + (1,) if len(b) == 1 else b
        if a2[-1] != b2[-2]:
            raise ModelError(f"MatMul inner dimensions differ: {a} x {b}")
        out = broadcast(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
        if len(a) == 1:
            out = out[:-2] + out[-1:]
        if len(b) == 1:
            out = out[:-1]
        return [(out, dt)]
    if op in BINARY or op == "Sum":
        return [(broadcast(*[t.shape for t in ins if t is not None]), dt)]
    if op == "Dropout":
        return [(xs, dt), (xs, "bool")][:n_out]
    if op == "Cast":
        return [(xs, onnx_dtype_name(attrs.get("to", 1)))]
    if op in ("Softmax", "LogSoftmax"):
        _axis(attrs.get("axis", -1), len(xs))        # raises for an axis outside the rank
    if op in UNARY or op in ("Identity", "LRN", "Softmax", "LogSoftmax"):
        return [(xs, dt)]
    if op == "BatchNormalization":
        c = (xs[1],)
        for i, role in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")):
            if len(ins) > i and ins[i] is not None and tuple(ins[i].shape) != c:
                raise ModelError(f"BatchNormalization {role} of shape {tuple(ins[i].shape)} for {xs[1]} channels")
        return [(xs, dt)] + [(c, dt)] * (n_out - 1)
    if op == "RotaryEmbedding":
        hd = int(attrs.get("head_dim", 0))
        cs = tuple(ins[1].shape)
        if hd < 2 or hd % 2 or xs[-1] % hd:
            raise ModelError(f"RotaryEmbedding head_dim {hd} must be even and divide the last dim {xs[-1]}")
        if len(cs) != 2 or cs[1] != hd // 2 or tuple(ins[2].shape) != cs:
            raise ModelError(f"RotaryEmbedding cos / sin caches {cs}, {tuple(ins[2].shape)} must be "
                             f"(positions, {hd // 2})")
        return [(xs, dt)]
    if op in ("LayerNormalization", "RMSNormalization"):
        ax = _axis(attrs.get("axis", -1), len(xs))
        norm = xs[ax:]
        for i, role in ((1, "scale"), (2, "bias")):     # unidirectionally broadcast to the normalized dims
            s = tuple(ins[i].shape) if len(ins) > i and ins[i] is not None else None
            if s is not None and (len(s) > len(norm) or any(a not in (1, b) for a, b in zip(s[::-1], norm[::-1]))):
                raise ModelError(f"{op} {role} of shape {s} does not broadcast to the normalized dims {norm} "
                                 f"(axis {ax} of {xs})")
        stat = xs[:ax] + (1,) * (len(xs) - ax)
        return [(xs, dt)] + [(stat, "fp32")] * (n_out - 1)
    if op == "Reshape":
        return [(reshape_target(xs, _const(ins, 1, "Reshape shape"),
                                attrs.get("allowzero", 0)), dt)]
    if op == "Flatten":     # axis in [-rank, rank]; a negative one counts from the back of the rank
        ax = int(attrs.get("axis", 1))
        if not -len(xs) <= ax <= len(xs):
            raise ModelError(f"Flatten axis {ax} out of range for rank {len(xs)}")
        ax = ax + len(xs) if ax < 0 else ax
        return [((prod(xs[:ax]), prod(xs[ax:])), dt)]
    if op == "Transpose":
        perm = _perm(attrs, len(xs))
        if sorted(perm) != list(range(len(xs))):
            raise ModelError(f"Transpose perm {perm} does not match rank {len(xs)}")
        return [(tuple(xs[p] for p in perm), dt)]
    if op == "Unsqueeze":
        axes = _axes(attrs, ins, 1)
        r = len(xs) + len(axes)
        axes = sorted(_axis(a, r) for a in axes)
        out = list(xs)
        for a in axes:
            out.insert(a, 1)
        return [(tuple(out), dt)]
    if op == "Squeeze":
        axes = _axes(attrs, ins, 1)
        if axes is None:
            return [(tuple(s for s in xs if s != 1), dt)]
        axes = {_axis(a, len(xs)) for a in axes}
        return [(tuple(s for i, s in enumerate(xs) if i not in axes), dt)]
    if op == "Concat":
        ax = _axis(attrs["axis"], len(xs))
        for t in ins[1:]:
            ts = tuple(t.shape)
            if len(ts) != len(xs) or any(a != b for i, (a, b) in enumerate(zip(ts, xs)) if i != ax):
                raise ModelError(f"Concat on axis {ax}: input shapes {xs} and {ts} differ off that axis")
        out = list(xs)
        out[ax] = sum(t.shape[ax] for t in ins)
        return [(tuple(out), dt)]
    if op == "Gather":
        ax = _axis(attrs.get("axis", 0), len(xs))
        return [(xs[:ax] + tuple(ins[1].shape) + xs[ax + 1:], dt)]
    if op == "Slice":
        if "starts" in attrs:  # opset < 10
            st, en = attrs["starts"], attrs["ends"]
            axes = attrs.get("axes", list(range(len(st))))
            steps = [1] * len(st)
        else:
            st = _const(ins, 1, "Slice starts").reshape(-1)
            en = _const(ins, 2, "Slice ends").reshape(-1)
            axes = (_const(ins, 3, "Slice axes").reshape(-1) if len(ins) > 3 and ins[3]
                    else list(range(len(st))))
            steps = (_const(ins, 4, "Slice steps").reshape(-1) if len(ins) > 4 and ins[4]
                     else [1] * len(st))
        return [(_slice_shape(xs, st, en, axes, steps), dt)]
    if op == "Pad":
        pads = attrs.get("pads")
        if pads is None:
            pads = _const(ins, 1, "Pad pads").reshape(-1)
        pads = _ints(pads)
        n = len(xs)
        axes = list(range(n))
        if len(ins) > 3 and ins[3] is not None:   # opset 18: the axes the pads are for
            axes = [int(a) % n for a in _const(ins, 3, "Pad axes").reshape(-1)]
        k = len(axes)
        if len(pads) != 2 * k:
            raise ModelError(f"Pad pads {pads} do not match rank {n}" + (f" / axes {axes}" if k != n else ""))
        out = list(xs)
        for j, ax in enumerate(axes):
            out[ax] += pads[j] + pads[j + k]
        return [(tuple(out), dt)]
    if op in ("ReduceMean", "ReduceSum") or (op.startswith("Reduce") and FAMILY.get(op) == "indexed"):
        axes = _axes(attrs, ins, 1)
        keep = attrs.get("keepdims", 1)
        if axes is None or len(axes) == 0:
            axes = [] if attrs.get("noop_with_empty_axes", 0) else list(range(len(xs)))
        axes = {_axis(a, len(xs)) for a in axes}
        out = [1 if i in axes else s for i, s in enumerate(xs)] if keep else \
              [s for i, s in enumerate(xs) if i not in axes]
        return [(tuple(out), dt)]
    if op in _BROADCAST_RULES:
        shape = broadcast(*[t.shape for t in ins if t is not None])
        return [(shape, "bool" if op in _PREDICATES else (ins[1].dtype if op == "Where" else dt))]
    if op == "CastLike":
        return [(xs, ins[1].dtype)]
    if op == "Expand" and len(ins) > 1 and ins[1] is not None and ins[1].data is not None:
        return [(broadcast(xs, tuple(int(v) for v in np.asarray(ins[1].data).reshape(-1))), dt)]
    if op in INDEXED_UNARY:
        return [(xs, "bool" if op in _PREDICATES else dt)]
    if op == "Split":
        return _split(xs, dt, ins, attrs, n_out)
    if FAMILY.get(op) == "indexed":
        return None      # onnx's shape inference gives these
    raise ModelError(f"no shape rule for op type {op!r}")


def _split(xs, dt, ins, attrs, n_out):
    """Split's outputs: sizes from the ``split`` input (constant; None when given at run
    time) or attribute, else ``num_outputs`` (or the outputs) pieces of ceil(dim / n), the
    last the rest.  A piece may be empty (0)."""
    ax = _axis(attrs.get("axis", 0), len(xs))
    sizes = attrs.get("split")
    if sizes is None and len(ins) > 1 and ins[1] is not None:
        if ins[1].data is None:
            return None
        sizes = np.asarray(ins[1].data).reshape(-1)
    if sizes is None:
        k = int(attrs.get("num_outputs", n_out))
        if k < 1:
            raise ModelError(f"Split num_outputs {k} must be at least 1")
        chunk = -(-xs[ax] // k)
        sizes = [chunk] * (k - 1) + [xs[ax] - chunk * (k - 1)]
    sizes = [int(v) for v in sizes]
    if len(sizes) != n_out or min(sizes) < 0 or sum(sizes) != xs[ax]:
        raise ModelError(f"Split sizes {sizes} of axis {ax} ({xs[ax]}) for {n_out} outputs: they must be "
                         f"{n_out}, non-negative, and sum to {xs[ax]}")
    return [(xs[:ax] + (v,) + xs[ax + 1:], dt) for v in sizes]


# -- FLOPs --------------------------------------------------------------------
def flops(op: str, in_shapes: list, out_shapes: list, attrs: dict) -> int:
    """FLOPs of a forward op from its input / output shapes (see module doc)."""
    y = out_shapes[0]
    ny = prod(y)
    if op == "Conv":
        w = in_shapes[1]
        macs = ny * prod(w[1:])
        return 2 * macs + (ny if len(in_shapes) > 2 else 0)
    if op == "Gemm":
        a = in_shapes[0]
        k = a[0] if attrs.get("transA", 0) else a[1]
        return 2 * ny * k + (ny if len(in_shapes) > 2 else 0)
    if op == "MatMul":
        return 2 * ny * in_shapes[0][-1]
    if op in ("MaxPool", "AveragePool"):
        return ny * prod(attrs["kernel_shape"])
    if op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum"):
        return prod(in_shapes[0])
    if op == "BatchNormalization":
        return (7 if attrs.get("training_mode", 0) else 2) * ny
    if op == "LayerNormalization":
        return 7 * ny
    if op == "RMSNormalization":
        return 5 * ny
    if op == "RotaryEmbedding":
        return 3 * ny
    if op == "LRN":
        return (2 * int(attrs.get("size", 1)) + 3) * ny
    if op in ("Softmax", "LogSoftmax"):
        return 5 * ny
    if op == "Sum":
        return (len(in_shapes) - 1) * ny
    if op in _NO_FLOPS:
        return 0
    if op in UNARY or op in BINARY:
        return ny
    if FAMILY.get(op) == "indexed":
        return int(ny)   # one per output element, as the element-wise ops
    raise ModelError(f"no FLOP rule for op type {op!r}")


# -- dtypes -------------------------------------------------------------------
_ONNX_DTYPES = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64", 3: "int8", 2: "uint8",
                6: "int32", 7: "int64", 9: "bool", 4: "int32", 5: "int32", 12: "int32",
                13: "int64"}
_NP_DTYPES = {"fp32": np.float32, "fp16": np.float16, "fp64": np.float64, "int8": np.int8,
              "uint8": np.uint8, "int32": np.int32, "int64": np.int64, "bool": np.bool_,
              "bf16": np.float32}


def onnx_dtype_name(code: int) -> str:
    """Our dtype name of an ONNX ``TensorProto`` element type code."""
    try:
        return _ONNX_DTYPES[int(code)]
    except KeyError:
        raise ModelError(f"unsupported ONNX element type {code}") from None


def numpy_dtype(name: str):
    """Numpy dtype used to hold tensors of our dtype ``name``."""
    return _NP_DTYPES[name]


def dtype_of_array(a: np.ndarray) -> str:
    """Our dtype name of a numpy array."""
    for name, t in _NP_DTYPES.items():
        if a.dtype == t and name != "bf16":
            return name
    if a.dtype.kind in "iu":
        return "int64"
    raise ModelError(f"unsupported numpy dtype {a.dtype}")
