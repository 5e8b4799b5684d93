"""ONNX ops imported as a subgraph of other ops: ``Attention`` (opset 23 and later) and
``RotaryEmbedding`` (opset 23).

* ``Attention`` is replaced by the function body ONNX itself defines for the node
  (``OpSchema.get_context_dependent_function_with_opset_version``: the body depends on the
  node's attributes and input types), so every attribute means what the standard says:
  3-D inputs with ``q_num_heads`` / ``kv_num_heads``, grouped-query heads, ``scale``,
  ``is_causal`` (offset by the past length), boolean or float ``attn_mask`` (padded to the
  key length), ``past_key`` / ``past_value`` and the ``present_*`` outputs, ``softcap``,
  ``qk_matmul_output_mode`` 0-3, the fully-masked-row guard, and opset 24's
  ``nonpad_kv_seqlen`` and opset 25's windows.  The body's own ops (MatMul, Softmax, Add,
  Where, Concat, Transpose...) are then imported as any others, shape computations folded.
* ``RotaryEmbedding`` is written here as Slice / Mul / Sub / Add / Concat (the reference's
  own formula, ``onnx.reference.ops.op_rotary_embedding``, in the same order of operations):
  ONNX's body transposes a 4-D input to (batch, sequence, heads, head) and back, two copies
  this lowering avoids by broadcasting the cos / sin rows over the heads instead.

:func:`expand` gives the nodes; :class:`models.onnx_import._Importer` imports them in place of
the node, named ``<node>/<k>_<op>``, and drops the ones that do nothing at the node's shapes
(an Identity, a Cast to the same type, an Expand or Reshape to the same shape, a Where whose
constant condition is all one way, an Add of constant zeros).
"""
from __future__ import annotations

import numpy as np

from .errors import ModelError

#: op types :func:`expand` replaces by a subgraph
EXPANDED = frozenset({"Attention", "RotaryEmbedding"})

_ONNX_CODE = {"fp32": 1, "fp16": 10, "bf16": 16, "fp64": 11, "int8": 3, "uint8": 2, "int16": 5, "uint16": 4,
              "int32": 6, "uint32": 12, "int64": 7, "uint64": 13, "bool": 9}


def expand(node, ins, opset, prefix):
    """The nodes that compute ``node`` (an op of :data:`EXPANDED`) with inputs ``ins`` (per
    ONNX input position: an object with ``shape``, ``dtype`` and ``data``, or None where
    left out), their internal tensors named ``prefix + name``."""
    if node.op_type == "Attention":
        return _attention(node, ins, opset, prefix)
    return _rotary(node, ins, prefix)


def _type_proto(t):
    import onnx
    from onnx import helper
    if t is None:
        return onnx.TypeProto()
    return helper.make_tensor_type_proto(_ONNX_CODE[t.dtype], list(t.shape))


def _attention(node, ins, opset, prefix):
    import onnx
    from onnx import helper
    try:
        schema = onnx.defs.get_schema("Attention", max(int(opset), 23), "")
    except Exception as e:   # noqa: BLE001 - onnx names what it lacks
        raise ModelError(f"no Attention schema for opset {opset}: {e}") from None
    attrs = {a.name: a for a in node.attribute}
    sp = attrs.get("softmax_precision")
    if sp is not None and helper.get_attribute_value(sp) != 1:
        # the body casts the scores to that type (double, bfloat16...), which the chip does not compute
        raise ModelError(f"attribute softmax_precision={helper.get_attribute_value(sp)} "
                         f"({onnx.TensorProto.DataType.Name(helper.get_attribute_value(sp))}) is not supported "
                         "(only 1, FLOAT: the softmax in float32)")
    _check_attention(node, ins)
    full = onnx.NodeProto()
    full.CopyFrom(node)
    for name, a in schema.attributes.items():      # the schema's defaults, as the body expects
        if name not in attrs and a.default_value is not None and a.default_value.name:
            full.attribute.extend([a.default_value])
    versions = [v for v in schema.context_dependent_function_opset_versions if v <= max(int(opset), 23)]
    if not versions:
        raise ModelError(f"onnx {onnx.__version__} defines no function body for Attention at opset {opset}")
    types = [_type_proto(t) for t in ins]
    try:
        body = schema.get_context_dependent_function_with_opset_version(
            max(versions), full.SerializeToString(), [t.SerializeToString() for t in types])
    except Exception as e:   # noqa: BLE001 - onnx's reason for this node
        raise ModelError(f"onnx cannot build Attention's function body for this node: {e}") from None
    fn = onnx.FunctionProto()
    fn.ParseFromString(body)
    return _inline(full, fn, prefix)


def _check_attention(node, ins):
    """Q, K, V shapes and head attributes the standard requires, refused naming the input or
    attribute (the body would otherwise fail on one of its own nodes)."""
    from onnx import helper
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    if len(ins) < 3 or any(t is None for t in ins[:3]):
        raise ModelError("inputs Q, K and V are required")
    q, k, v = (tuple(t.shape) for t in ins[:3])
    if not (len(q) == len(k) == len(v)) or len(q) not in (3, 4):
        raise ModelError(f"Q {list(q)}, K {list(k)}, V {list(v)}: all rank 3 or all rank 4")
    if len(q) == 3:
        qh, kvh = int(a.get("q_num_heads", 0)), int(a.get("kv_num_heads", 0))
        if qh <= 0 or kvh <= 0:
            raise ModelError(f"3-D inputs need attributes q_num_heads and kv_num_heads (got {qh}, {kvh})")
        for nm, s, h in (("Q", q, qh), ("K", k, kvh), ("V", v, kvh)):
            if s[2] % h:
                raise ModelError(f"input {nm} {list(s)}: its hidden size {s[2]} is not a multiple of "
                                 f"{'q' if nm == 'Q' else 'kv'}_num_heads={h}")
        dq, dk = q[2] // qh, k[2] // kvh
    else:
        qh, kvh, dq, dk = q[1], k[1], q[3], k[3]
        if v[1] != kvh:
            raise ModelError(f"K {list(k)} and V {list(v)} have different head counts")
    if kvh <= 0 or qh % kvh:
        raise ModelError(f"{qh} query heads are not a multiple of {kvh} key-value heads")
    if dq != dk:
        raise ModelError(f"Q's head size {dq} differs from K's {dk}")
    if q[0] != k[0] or k[0] != v[0] or k[-2 if len(k) == 4 else 1] != v[-2 if len(v) == 4 else 1]:
        raise ModelError(f"Q {list(q)}, K {list(k)}, V {list(v)}: batch or key / value lengths differ")


def _inline(node, fn, prefix):
    """``fn``'s nodes with its formal inputs / outputs renamed to ``node``'s, its other tensors
    prefixed, and attribute references resolved from ``node``'s attributes."""
    import onnx
    names = {}
    for i, x in enumerate(fn.input):
        names[x] = node.input[i] if i < len(node.input) else ""
    for i, y in enumerate(fn.output):
        if i < len(node.output) and node.output[i]:
            names[y] = node.output[i]
    given = {a.name: a for a in node.attribute}

    def ren(x):
        return x if x == "" else names.get(x, prefix + x)

    out = []
    for n in fn.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        del m.input[:], m.output[:], m.attribute[:]
        m.input.extend(ren(x) for x in n.input)
        m.output.extend(ren(y) for y in n.output)
        for a in n.attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ModelError(f"its function body has a subgraph attribute ({n.op_type}), which is not supported")
            if a.HasField("ref_attr_name"):
                if a.ref_attr_name in given:
                    b = onnx.AttributeProto()
                    b.CopyFrom(given[a.ref_attr_name])
                    b.name = a.name
                    m.attribute.extend([b])
            else:
                m.attribute.extend([a])
        out.append(m)
    return out


def _rotary(node, ins, prefix):
    """RotaryEmbedding (opset 23) as the reference computes it: x (batch, heads, seq, head) or
    (batch, seq, heads x head) with ``num_heads``; cos / sin (max positions, r / 2) gathered
    at ``position_ids`` (batch, seq), or (batch, seq, r / 2) without them; the first r of each
    head rotated (r = ``rotary_embedding_dim``, 0: all), as halves or ``interleaved`` pairs."""
    from onnx import helper, numpy_helper
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    unknown = sorted(set(a) - {"interleaved", "rotary_embedding_dim", "num_heads"})
    if unknown:
        raise ModelError(f"attribute {unknown[0]!r} is not one of RotaryEmbedding's (interleaved, "
                         "rotary_embedding_dim, num_heads)")
    inter, rdim, heads = int(a.get("interleaved", 0)), int(a.get("rotary_embedding_dim", 0)), int(a.get("num_heads", 0))
    x, cos, sin = ins[0], ins[1], ins[2]
    pos = ins[3] if len(ins) > 3 else None
    if x is None or cos is None or sin is None:
        raise ModelError("inputs X, cos_cache and sin_cache are required")
    xs = tuple(x.shape)
    if len(xs) == 4:
        B, H, S, D = xs
    elif len(xs) == 3:
        if heads <= 0:
            raise ModelError(f"a 3-D input {list(xs)} needs attribute num_heads (got {heads})")
        if xs[2] % heads:
            raise ModelError(f"attribute num_heads={heads} does not divide the hidden size {xs[2]}")
        B, S, H, D = xs[0], xs[1], heads, xs[2] // heads
    else:
        raise ModelError(f"input X of rank {len(xs)} (shape {list(xs)}): RotaryEmbedding takes rank 3 or 4")
    if heads and len(xs) == 4 and heads != H:
        raise ModelError(f"attribute num_heads={heads} but X {list(xs)} has {H} heads")
    r = rdim or D
    if r > D or r % 2 or r <= 0:
        raise ModelError(f"attribute rotary_embedding_dim={rdim}: the rotated part {r} must be even and at most "
                         f"the head size {D}")
    half = r // 2
    want = 2 if pos is not None else 3
    for nm, c in (("cos_cache", cos), ("sin_cache", sin)):
        cs = tuple(c.shape)
        if len(cs) != want:
            raise ModelError(f"input {nm} of shape {list(cs)}: with{'' if pos is not None else 'out'} position_ids "
                             f"it must be rank {want}")
        if cs[-1] != half:
            raise ModelError(f"input {nm} of shape {list(cs)}: its last dim must be rotary_embedding_dim / 2 = {half}")
        if pos is None and cs[:2] != (B, S):
            raise ModelError(f"input {nm} of shape {list(cs)}: without position_ids it must be ({B}, {S}, {half})")
    if pos is not None and tuple(pos.shape) != (B, S):
        raise ModelError(f"input position_ids of shape {list(pos.shape)} must be ({B}, {S})")

    nodes = []
    k = [0]

    def t(name):
        return prefix + name

    def const(name, v):
        nodes.append(helper.make_node("Constant", [], [t(name)], value=numpy_helper.from_array(
            np.asarray(v, dtype=np.int64), t(name))))
        return t(name)

    def op(kind, inputs, out, **kw):
        k[0] += 1
        nodes.append(helper.make_node(kind, inputs, [out], **kw))
        return out

    def sl(src, start, end, step, name):
        return op("Slice", [src, const(name + "_starts", [start]), const(name + "_ends", [end]),
                            const(name + "_axes", [-1]), const(name + "_steps", [step])], t(name))

    X, Y = node.input[0], node.output[0]
    c, s = node.input[1], node.input[2]
    if pos is not None:
        c = op("Gather", [c, node.input[3]], t("cos"), axis=0)
        s = op("Gather", [s, node.input[3]], t("sin"), axis=0)
    # cos / sin (batch, seq, r/2) broadcast over the heads of (B, H, S, D), or of (B, S, H, D)
    c = op("Unsqueeze", [c, const("head_axis", [1 if len(xs) == 4 else 2])], t("cos_b"))
    s = op("Unsqueeze", [s, t("head_axis")], t("sin_b"))
    x4 = X if len(xs) == 4 else op("Reshape", [X, const("shape4", [B, S, H, D])], t("x4"))
    xr = x4 if r == D else sl(x4, 0, r, 1, "x_rot")
    if inter:
        x1, x2 = sl(xr, 0, r, 2, "x1"), sl(xr, 1, r, 2, "x2")
    else:
        x1, x2 = sl(xr, 0, half, 1, "x1"), sl(xr, half, r, 1, "x2")
    real = op("Sub", [op("Mul", [c, x1], t("cos_x1")), op("Mul", [s, x2], t("sin_x2"))], t("real"))
    imag = op("Add", [op("Mul", [s, x1], t("sin_x1")), op("Mul", [c, x2], t("cos_x2"))], t("imag"))
    last = len(xs) == 4 and r == D
    if inter:
        pair = op("Concat", [op("Unsqueeze", [real, const("last_axis", [-1])], t("real_u")),
                             op("Unsqueeze", [imag, t("last_axis")], t("imag_u"))], t("pairs"), axis=-1)
        rot_shape = [B, H, S, r] if len(xs) == 4 else [B, S, H, r]
        rot = op("Reshape", [pair, const("rot_shape", rot_shape)], Y if last else t("rot"))
    else:
        rot = op("Concat", [real, imag], Y if last else t("rot"), axis=-1)
    if r < D:
        rot = op("Concat", [rot, sl(x4, r, D, 1, "x_pass")], Y if len(xs) == 4 else t("y4"), axis=-1)
    if len(xs) == 3:
        op("Reshape", [rot, const("shape3", list(xs))], Y)
    return nodes
