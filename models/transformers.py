"""Decoder-only transformers: GPT-2, Llama-style (RMSNorm, rotary embeddings, SwiGLU,
grouped-query attention) and Mixtral-style mixture-of-experts decoders.

One builder, :func:`decoder`, writes all three op by op with :class:`GraphBuilder`; the
named presets below only choose its shapes, and every parameter count follows from them:

=============  ====================================================  ===============
name           definition                                            params
=============  ====================================================  ===============
gpt2           12 x 768, 12 heads, 1024 positions, tied embeddings     124,439,808
gpt2-medium    24 x 1024, 16 heads                                     354,823,168
gpt2-large     36 x 1280, 20 heads                                     774,030,080
gpt2-xl        48 x 1600, 25 heads                                   1,557,611,200
llama-7b       Llama-2-7B: 32 x 4096, 32 heads, SwiGLU 11008         6,738,415,616
llama-tiny     2 x 128, 4 heads, 2 key-value heads (tests)                 426,624
mixtral-8x7b   Mixtral-8x7B: 32 x 4096, 32 / 8 kv heads, 8 experts  46,702,792,704
               of SwiGLU 14336, top-2
mixtral-tiny   2 x 128, 4 / 2 kv heads, 4 experts of 256, top-2 (tests) 1,017,472
=============  ====================================================  ===============

The graph is one forward pass over ``seq_len`` tokens of each of ``batch`` sequences (a
prefill, or a training step on sequences of that length); tokens are flattened to
``(batch x seq_len, hidden)`` between the attention blocks, so every linear layer is one
``Gemm``.  Per layer (a block ``<prefix>.<i>`` of kind ``gpt2_layer`` / ``llama_layer`` /
``mixtral_layer``):

* norm: ``LayerNormalization`` (GPT-2) or ``RMSNormalization`` (Llama, Mixtral);
* attention: q, k, v projections (``kv_heads`` heads for k and v), ``RotaryEmbedding``
  on q and k (Llama, Mixtral; cos / sin tables of ``rope_theta`` as constants), heads
  split by reshape + transpose; grouped-query attention reshapes q's ``heads / kv_heads``
  query heads of one key-value head into its rows, so k and v are never copied
  (``(B, kv, rep x S, hd) @ (B, kv, hd, S)``); scaled by ``sqrt(head_dim)``, a causal
  mask added (a constant), ``Softmax``, times v, heads merged, output projection;
* MLP: ``Gemm`` -> ``Gelu`` -> ``Gemm`` (GPT-2); SwiGLU ``down(Swish(gate(x)) * up(x))``
  (Llama); Mixtral: a router ``Gemm`` -> ``TopKRoute`` (top ``experts_per_tok`` of
  ``experts``) -> ``MoEDispatch`` into per-expert buffers of capacity
  ``ceil(capacity_factor x tokens x k / experts)`` -> SwiGLU experts as batched
  ``MatMul`` over the experts -> ``MoECombine`` (the layers of :mod:`models.sparse`);
* residual adds; GPT-2's dropouts (``dropout`` > 0) as in BERT.

Then the final norm and the language-model head, tied to the token embedding (GPT-2:
``tie_word_embeddings``) or its own weight (Llama, Mixtral), computed as
``(vocab, hidden) x (tokens, hidden)^T`` and transposed to logits ``(tokens, vocab)``.  The logits
have the vocabulary on dim 1, so ``train=True`` adds the next-token loss per token.

    >>> from models import get_model
    >>> get_model("gpt2").params(), get_model("llama-7b", layers=1, seq_len=8).name
    (124439808, 'llama-7b')
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from .builder import GraphBuilder
from .errors import ModelError
from .expert_parallel import check as expert_parallel_check
from .tensor_parallel import check as tensor_parallel_check
from .tensor_parallel import vocab_rows

STYLES = ("gpt2", "llama", "mixtral")


def check_shapes(where, *, hidden, heads, kv_heads, layers, intermediate, vocab, max_position, seq_len,
                 experts=0, experts_per_tok=0):
    """The shape rules every decoder / encoder obeys, each refused naming the field and value."""
    for field, v in (("hidden_size", hidden), ("num_attention_heads", heads), ("num_key_value_heads", kv_heads),
                     ("num_hidden_layers", layers), ("intermediate_size", intermediate), ("vocab_size", vocab),
                     ("max_position_embeddings", max_position), ("seq_len", seq_len)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ModelError(f"{where}: {field} must be an integer >= 1, got {v!r}")
    if hidden % heads:
        raise ModelError(f"{where}: num_attention_heads {heads} does not divide hidden_size {hidden}")
    if heads % kv_heads:
        raise ModelError(f"{where}: num_key_value_heads {kv_heads} does not divide num_attention_heads {heads}")
    if seq_len > max_position:
        raise ModelError(f"{where}: seq_len {seq_len} exceeds max_position_embeddings {max_position}")
    if experts:
        if not 1 <= experts_per_tok <= experts:
            raise ModelError(f"{where}: num_experts_per_tok {experts_per_tok} must be between 1 and "
                             f"num_local_experts {experts}")


def rotary_tables(positions, head_dim, theta=10000.0):
    """cos and sin of the rotary angles, ``(len(positions), head_dim / 2)`` (HF's
    ``inv_freq = theta ** (-arange(0, head_dim, 2) / head_dim)``)."""
    inv = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.outer(np.asarray(positions, np.float64), inv)
    return np.cos(ang), np.sin(ang)


#: where a decoder's KV cache lives (the model option ``kv_cache``): tile SRAM, or the
#: streaming memory beside the chip (compiler/kvcache.py moves it there after lowering)
KV_CACHE_PLACEMENTS = ("sram", "streaming")


def decoder(batch=1, dtype="fp32", *, style="gpt2", layers=12, hidden=768, heads=12, kv_heads=None,
            intermediate=None, vocab=50257, max_position=1024, seq_len=128, tie_word_embeddings=None,
            dropout=None, eps=None, rope_theta=10000.0, experts=0, experts_per_tok=2, capacity_factor=1.25,
            cache_len=0, past=0, last_logits=False, tensor_parallel=1, uneven_heads=False, kv_cache="sram",
            expert_parallel=1, name=None):
    """A decoder-only transformer of ``style`` gpt2, llama or mixtral (see the module doc);
    ``tensor_parallel=K``: one chip's slice of it (:mod:`models.tensor_parallel`);
    ``expert_parallel=K`` (mixtral): one chip of an expert-parallel group, ``experts / K`` whole
    experts and the all-to-alls (:mod:`models.expert_parallel`); ``batch`` is then that chip's."""
    if style not in STYLES:
        raise ModelError(f"decoder style {style!r} is not one of {', '.join(STYLES)}")
    name = name or style
    kv_heads = heads if kv_heads is None else kv_heads
    inter = intermediate or 4 * hidden
    gpt = style == "gpt2"
    moe = style == "mixtral"
    if moe and not experts:
        experts = 8
    check_shapes(name, hidden=hidden, heads=heads, kv_heads=kv_heads, layers=layers, intermediate=inter,
                 vocab=vocab, max_position=max_position, seq_len=seq_len,
                 experts=experts if moe else 0, experts_per_tok=experts_per_tok)
    tp, heads_tp, kv_tp, inter_tp = tensor_parallel_check(name, tensor_parallel, heads=heads, kv_heads=kv_heads,
                                                          intermediate=inter, uneven=uneven_heads)
    ep = expert_parallel_check(name, expert_parallel, experts=experts if moe else 0, tensor_parallel=tensor_parallel)
    tie = gpt if tie_word_embeddings is None else bool(tie_word_embeddings)
    drop = (0.1 if gpt else 0.0) if dropout is None else float(dropout)
    eps = (1e-5 if gpt else 1e-6) if eps is None else float(eps)
    hd = hidden // heads
    if not gpt and hd % 2:
        raise ModelError(f"{name}: head dim {hd} (hidden_size / num_attention_heads) must be even for "
                         "rotary embeddings")
    S = int(seq_len)
    cache_len, past = int(cache_len), int(past)
    if cache_len:
        if cache_len > max_position:
            raise ModelError(f"{name}: a KV cache of {cache_len} tokens (prompt + new tokens) exceeds "
                             f"max_position_embeddings {max_position}")
        if past + S > cache_len or past < 0:
            raise ModelError(f"{name}: {past} cached + {S} new tokens do not fit a KV cache of {cache_len}")
        if past and S != 1:
            raise ModelError(f"{name}: a decode step takes one new token per sequence, got seq_len {S}")
    elif past:
        raise ModelError(f"{name}: past {past} needs a KV cache (cache_len)")
    if kv_cache not in KV_CACHE_PLACEMENTS:
        raise ModelError(f"{name}: kv_cache must be one of {', '.join(KV_CACHE_PLACEMENTS)}, got {kv_cache!r}")
    if kv_cache == "streaming" and not cache_len:
        raise ModelError(f"{name}: kv_cache streaming needs a KV cache (cache_len)")
    b = GraphBuilder(name, batch, dtype)
    ids = b.input("input_ids", (batch, S), "int64")
    emb = "wte" if gpt else "embed_tokens"
    we = b.param(f"{emb}.weight", (vocab_rows(vocab, tp), hidden))    # vocabulary-parallel
    x = b.op("Gather", [we, ids], dict(axis=0), name=emb)
    if gpt:
        pos = b.const("position_ids", np.arange(past, past + S, dtype=np.int64))
        pe = b.param("wpe.weight", (max_position, hidden))
        p = b.op("Gather", [pe, pos], dict(axis=0), name="wpe")
        x = b.op("Add", [x, p], name="embeddings.add", layer="wpe")
        if drop:
            x = b.op("Dropout", [x], dict(ratio=drop), name="drop")
    x = b.reshape(x, "embeddings.flatten_tokens", (-1, hidden), layer="embeddings.flatten_tokens")
    ctx = dict(S=S, B=batch, hidden=hidden, H=heads_tp, KV=kv_tp, hd=hd, drop=drop, eps=eps, bias=gpt,
               cache_len=cache_len, past=past, kv_cache=kv_cache,
               scale=b.const("attention_scale", np.array(np.sqrt(hd), dtype=np.float32)))
    if not past:
        ctx["mask"] = b.const("causal_mask", np.triu(np.full((S, S), -1e4, np.float32), 1))
    if not gpt:
        cos, sin = rotary_tables(np.arange(past, past + S), hd, rope_theta)
        ctx["rope"] = (b.const("rotary.cos", cos), b.const("rotary.sin", sin))
    kind = f"{style}_layer"
    prefix = "h" if gpt else "layers"
    for i in range(layers):
        p = f"{prefix}.{i}"
        with b.block(p, kind):
            n1 = _norm(b, x, f"{p}.ln_1" if gpt else f"{p}.input_layernorm", gpt, eps)
            a = _attention(b, n1, f"{p}.attn" if gpt else f"{p}.self_attn", ctx)
            x = b.op("Add", [a, x], name=f"{p}.attn_residual", layer=f"{p}.attn_residual")
            n2 = _norm(b, x, f"{p}.ln_2" if gpt else f"{p}.post_attention_layernorm", gpt, eps)
            if gpt:
                m = _gelu_mlp(b, n2, f"{p}.mlp", hidden, inter_tp, drop)
            elif moe:
                m = _moe_mlp(b, n2, f"{p}.block_sparse_moe", hidden, inter_tp, experts, experts_per_tok,
                             capacity_factor, batch * S, ep)
            else:
                m = _swiglu_mlp(b, n2, f"{p}.mlp", hidden, inter_tp)
            x = b.op("Add", [m, x], name=f"{p}.mlp_residual", layer=f"{p}.mlp_residual")
    if last_logits:     # generation: only each sequence's last token is sampled from
        x = b.reshape(x, "last_token.unflatten", (-1, S, hidden), layer="last_token")
        last = b.const("last_token_index", np.array(S - 1, dtype=np.int64))
        x = b.op("Gather", [x, last], dict(axis=1), name="last_token")
    x = _norm(b, x, "ln_f" if gpt else "norm", gpt, eps)
    head = we if tie else b.param("lm_head.weight", (vocab_rows(vocab, tp), hidden))
    # the head as (vocab, hidden) x (tokens, hidden)^T: its output blocks are rows of tokens, so
    # the planner's split of the contraction reduces whole rows; as (tokens, hidden) x
    # (vocab, hidden)^T GPT-2's vocabulary of 50,257 (= 29 x 1,733) allows only 1-column blocks
    # and 6.4 M one-element ReducePartials (more than 20 GB to compile 128 tokens)
    lt = b.op("Gemm", [head, x], dict(alpha=1.0, beta=1.0, transA=0, transB=1), name="lm_head")
    logits = b.op("Transpose", [lt], dict(perm=[1, 0]), name="lm_head.transpose", layer="lm_head")
    return b.finish([logits])


def _norm(b, x, name, gpt, eps):
    if gpt:
        return b.layernorm(x, name, eps=eps)
    w = b.param(f"{name}.weight", (b.shape(x)[-1],))
    return b.op("RMSNormalization", [x, w], dict(axis=-1, epsilon=eps), name=name)


def _cache(b, a, c, x, which):
    """Write this step's keys or values into the layer's KV cache (a state tensor of the graph,
    ``cache_len`` positions per sequence and key-value head; keys stored transposed, (hd, L), so
    that scores are q x K without a transpose).  A prefill writes positions [0, S); a decode step
    writes position ``past`` and attends to the ``past + 1`` positions written so far, which are
    one tensor, the rest of the cache another (held, never read)."""
    B, KV, hd, S, L, past = c["B"], c["KV"], c["hd"], c["S"], c["cache_len"], c["past"]
    live = past + S if past else L
    shape = (B * KV, hd, live) if which == "k" else (B * KV, live, hd)
    cache = b.param(f"{a}.{which}_cache", shape, kind="state")
    if past and L > live:
        b.param(f"{a}.{which}_cache.free", (B * KV, hd, L - live) if which == "k" else (B * KV, L - live, hd),
                kind="state")
    return b.custom("KVCacheWrite", [x, cache], [(shape, b.dtype, cache)],
                    {"layout": which, "position": past, "tokens": S, "kv_heads": KV, "head_dim": hd,
                     "placement": c["kv_cache"]},
                    name=f"{a}.{which}_cache_write", family="gather", flops=0, layer=a)


def _decode_attention(b, q, k, v, a, c):
    """One new token per sequence against the cache: (B kv, rep, hd) x (B kv, hd, past + 1)."""
    H, KV, hd, hidden = c["H"], c["KV"], c["hd"], c["hidden"]
    rep = H // KV
    kc = _cache(b, a, c, k, "k")
    vc = _cache(b, a, c, v, "v")
    q = b.reshape(q, f"{a}.group_q", (-1, rep, hd), layer=a)
    s = b.op("MatMul", [q, kc], name=f"{a}.scores", layer=a)
    s = b.op("Div", [s, c["scale"]], name=f"{a}.scale", layer=a)
    s = b.op("Softmax", [s], dict(axis=-1), name=f"{a}.softmax", layer=a)
    o = b.op("MatMul", [s, vc], name=f"{a}.context", layer=a)
    o = b.reshape(o, f"{a}.merge_heads", (-1, H * hd), layer=a)
    return b.linear(o, f"{a}.o_proj", hidden, bias=c["bias"])


def _attention(b, x, a, c):
    S, H, KV, hd, hidden = c["S"], c["H"], c["KV"], c["hd"], c["hidden"]
    rep = H // KV
    q = b.linear(x, f"{a}.q_proj", H * hd, bias=c["bias"])
    k = b.linear(x, f"{a}.k_proj", KV * hd, bias=c["bias"])
    v = b.linear(x, f"{a}.v_proj", KV * hd, bias=c["bias"])
    if "rope" in c:
        cos, sin = c["rope"]
        q = b.op("RotaryEmbedding", [q, cos, sin], dict(head_dim=hd), name=f"{a}.rotary_q", layer=a)
        k = b.op("RotaryEmbedding", [k, cos, sin], dict(head_dim=hd), name=f"{a}.rotary_k", layer=a)
    if c["past"]:
        return _decode_attention(b, q, k, v, a, c)
    if c["cache_len"]:       # a prefill fills the cache; its own attention reads k and v directly
        _cache(b, a, c, k, "k")
        _cache(b, a, c, v, "v")
    q = b.reshape(q, f"{a}.split_heads_q", (-1, S, H, hd), layer=a)
    q = b.op("Transpose", [q], dict(perm=[0, 2, 1, 3]), name=f"{a}.transpose_q", layer=a)
    k = b.reshape(k, f"{a}.split_heads_k", (-1, S, KV, hd), layer=a)
    k = b.op("Transpose", [k], dict(perm=[0, 2, 3, 1]), name=f"{a}.transpose_k", layer=a)
    v = b.reshape(v, f"{a}.split_heads_v", (-1, S, KV, hd), layer=a)
    v = b.op("Transpose", [v], dict(perm=[0, 2, 1, 3]), name=f"{a}.transpose_v", layer=a)
    if rep > 1:   # grouped-query attention: a key-value head's query heads are its rows
        q = b.reshape(q, f"{a}.group_q", (-1, KV, rep * S, hd), layer=a)
    s = b.op("MatMul", [q, k], name=f"{a}.scores", layer=a)
    s = b.op("Div", [s, c["scale"]], name=f"{a}.scale", layer=a)
    if rep > 1:
        s = b.reshape(s, f"{a}.ungroup_scores", (-1, H, S, S), layer=a)
    s = b.op("Add", [s, c["mask"]], name=f"{a}.causal_mask", layer=a)
    s = b.op("Softmax", [s], dict(axis=-1), name=f"{a}.softmax", layer=a)
    if c["drop"]:
        s = b.op("Dropout", [s], dict(ratio=c["drop"]), name=f"{a}.attn_dropout", layer=a)
    if rep > 1:
        s = b.reshape(s, f"{a}.group_probs", (-1, KV, rep * S, S), layer=a)
    o = b.op("MatMul", [s, v], name=f"{a}.context", layer=a)
    if rep > 1:
        o = b.reshape(o, f"{a}.ungroup_context", (-1, H, S, hd), layer=a)
    o = b.op("Transpose", [o], dict(perm=[0, 2, 1, 3]), name=f"{a}.transpose_context", layer=a)
    o = b.reshape(o, f"{a}.merge_heads", (-1, H * hd), layer=a)
    o = b.linear(o, f"{a}.o_proj", hidden, bias=c["bias"])
    if c["drop"]:
        o = b.op("Dropout", [o], dict(ratio=c["drop"]), name=f"{a}.resid_dropout", layer=f"{a}.o_proj")
    return o


def _gelu_mlp(b, x, m, hidden, inter, drop):
    h = b.linear(x, f"{m}.c_fc", inter)
    h = b.op("Gelu", [h], name=f"{m}.gelu")
    y = b.linear(h, f"{m}.c_proj", hidden)
    if drop:
        y = b.op("Dropout", [y], dict(ratio=drop), name=f"{m}.dropout", layer=f"{m}.c_proj")
    return y


def _swiglu_mlp(b, x, m, hidden, inter):
    g = b.linear(x, f"{m}.gate_proj", inter, bias=False)
    g = b.op("Swish", [g], name=f"{m}.act_fn")
    u = b.linear(x, f"{m}.up_proj", inter, bias=False)
    h = b.op("Mul", [g, u], name=f"{m}.gate_mul")
    return b.linear(h, f"{m}.down_proj", hidden, bias=False)


def _moe_mlp(b, x, m, d, inter, E, k, cf, T, ep=1):
    """Mixtral's sparse MoE block with the op types of :mod:`models.sparse`; ``ep > 1``: this
    chip's ``E / ep`` experts between the dispatch and the combine all-to-alls
    (:mod:`models.expert_parallel`)."""
    C = max(1, math.ceil(cf * T * k / E))
    dt = b.dtype
    r = b.linear(x, f"{m}.gate", E, bias=False)
    idx, gates = b.custom("TopKRoute", [r], [((T, k), "int32"), ((T, k), dt)], {"k": k},
                          name=f"{m}.topk", family="gather", flops=T * E * k, layer=f"{m}.gate")
    xe = b.custom("MoEDispatch", [x, idx], [((E, C, d), dt)], {"capacity": C}, name=f"{m}.dispatch",
                  family="gather", flops=0, layer=f"{m}.experts")
    lay = f"{m}.experts"
    if ep > 1:    # buffer block j -> chip j; this chip receives ep blocks of its E / ep experts
        xe = b.op("Identity", [xe], dict(expert_parallel=ep), name=f"{m}.dispatch_all_to_all", layer=lay)
        xe = b.reshape(xe, f"{m}.dispatch_all_to_all.view", (E // ep, ep * C, d), layer=lay)
    El = E // ep
    w1 = b.param(f"{m}.experts.w1", (El, d, inter))
    w3 = b.param(f"{m}.experts.w3", (El, d, inter))
    w2 = b.param(f"{m}.experts.w2", (El, inter, d))
    g = b.op("MatMul", [xe, w1], name=f"{m}.experts.gate_proj", layer=lay)
    g = b.op("Swish", [g], name=f"{m}.experts.act_fn", layer=lay)
    u = b.op("MatMul", [xe, w3], name=f"{m}.experts.up_proj", layer=lay)
    h = b.op("Mul", [g, u], name=f"{m}.experts.gate_mul", layer=lay)
    ye = b.op("MatMul", [h, w2], name=f"{m}.experts.down_proj", layer=lay)
    if ep > 1:    # the results back to the chips whose tokens they are
        ye = b.op("Identity", [ye], dict(expert_parallel=ep), name=f"{m}.combine_all_to_all",
                  layer=f"{m}.combine")
        ye = b.reshape(ye, f"{m}.combine_all_to_all.view", (E, C, d), layer=f"{m}.combine")
    return b.custom("MoECombine", [ye, idx, gates], [((T, d), dt)], {"k": k}, name=f"{m}.combine",
                    family="gather", flops=T * k * d, layer=f"{m}.combine")


# -- presets -------------------------------------------------------------------------------------
def _preset(style, name, **shape):
    def build(batch=1, dtype="fp32", **kw):
        bad = sorted(set(kw) - OPTIONS)
        if bad:
            raise ModelError(f"{name}: unknown option(s) {', '.join(bad)}; options: {', '.join(sorted(OPTIONS))}")
        return decoder(batch, dtype, style=style, name=name, **(shape | kw))
    defaults = {k: v.default for k, v in inspect.signature(decoder).parameters.items() if k in OPTIONS}
    P = inspect.Parameter
    build.__signature__ = inspect.Signature(
        [P("batch", P.POSITIONAL_OR_KEYWORD, default=1), P("dtype", P.POSITIONAL_OR_KEYWORD, default="fp32")]
        + [P(k, P.KEYWORD_ONLY, default=shape.get(k, defaults.get(k))) for k in sorted(OPTIONS)])
    build.__name__ = name.replace("-", "_")
    build.__doc__ = f"{name}: a {style}-style decoder ({', '.join(f'{k}={v}' for k, v in shape.items())})."
    return build


#: the builder options of every decoder preset (``get_model(name, **options)``)
OPTIONS = {"layers", "hidden", "heads", "kv_heads", "intermediate", "vocab", "max_position", "seq_len",
           "tie_word_embeddings", "dropout", "eps", "rope_theta", "experts", "experts_per_tok",
           "capacity_factor", "cache_len", "past", "last_logits", "tensor_parallel",
           "uneven_heads", "kv_cache", "expert_parallel"}

_GPT2 = dict(vocab=50257, max_position=1024)
_LLAMA2_7B = dict(layers=32, hidden=4096, heads=32, kv_heads=32, intermediate=11008, vocab=32000,
                  max_position=4096, eps=1e-5)
_MIXTRAL_8X7B = dict(layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336, vocab=32000,
                     max_position=32768, eps=1e-5, rope_theta=1e6, experts=8, experts_per_tok=2)

#: name -> builder (batch, dtype, **options)
DECODERS = {
    "gpt2": _preset("gpt2", "gpt2", layers=12, hidden=768, heads=12, **_GPT2),
    "gpt2-medium": _preset("gpt2", "gpt2-medium", layers=24, hidden=1024, heads=16, **_GPT2),
    "gpt2-large": _preset("gpt2", "gpt2-large", layers=36, hidden=1280, heads=20, **_GPT2),
    "gpt2-xl": _preset("gpt2", "gpt2-xl", layers=48, hidden=1600, heads=25, **_GPT2),
    "llama-7b": _preset("llama", "llama-7b", **_LLAMA2_7B),
    "llama-tiny": _preset("llama", "llama-tiny", layers=2, hidden=128, heads=4, kv_heads=2, intermediate=256,
                          vocab=512, max_position=256),
    "mixtral-8x7b": _preset("mixtral", "mixtral-8x7b", **_MIXTRAL_8X7B),
    "mixtral-tiny": _preset("mixtral", "mixtral-tiny", layers=2, hidden=128, heads=4, kv_heads=2, intermediate=256,
                            vocab=512, max_position=256, experts=4, experts_per_tok=2),
}
