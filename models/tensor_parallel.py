"""Megatron-style tensor parallelism of the transformers: what one chip of ``K`` holds and
where the chips all-reduce.

A model built with ``tensor_parallel=K`` (a builder option of every decoder and of BERT)
is the graph ONE chip of a tensor-parallel group of ``K`` compiles: its slice of the model,
not the whole model, so its memory per chip is real.

* attention: ``heads / K`` query heads and ``kv_heads / K`` key-value heads per chip
  (q, k, v projections column-split: their output features; the output projection
  row-split: its input features); the KV cache of a chip holds its ``kv_heads / K`` heads;
* MLP: the first matmul(s) (GPT-2 / BERT ``c_fc`` / ``intermediate.dense``, Llama's
  ``gate_proj`` and ``up_proj``) column-split into ``intermediate / K`` features, the second
  (``c_proj`` / ``down_proj`` / ``output.dense``) row-split;
* mixture of experts (Mixtral): every expert column-split the same way (``intermediate / K``
  features of each of the ``experts`` on every chip); the router is replicated, so every chip
  routes every token alike and the dispatch needs no link traffic (not expert parallelism);
* embedding and head: vocabulary-parallel, ``ceil(vocab / K)`` rows of the token embedding
  (and of the untied head) per chip: each chip looks up the ids in its rows (zeros
  elsewhere), the lookups are all-reduced; the head gives each chip its slice of the logits
  (inference: each chip streams its slice to the host; training: the vocabulary-parallel
  cross-entropy all-reduces three fp32 numbers per token: max, sum of exponentials, target
  logit);
* ``uneven_heads=True`` (multi-head attention): a ``K`` that does not divide the heads or
  the intermediate size splits them unevenly, and the chip compiled is the busiest one
  (``ceil(heads / K)`` heads, ``ceil(intermediate / K)`` features); otherwise refused by name;
* replicated on every chip: norms, GPT-2's position embedding, BERT's position / token-type
  embeddings, pooler and classifier, the row-split layers' biases, the router.

Per layer the forward all-reduces twice, ``tokens x hidden`` elements each: the attention's
output projection and the MLP's second matmul (partial sums over the chips' heads / features);
plus once after the embedding lookup.  Training mirrors them in the backward pass (Megatron's
``f`` / ``g`` pair: the gradient of the input of the attention and of the MLP, and of the
head's input), ``2 x layers + 1`` (decoders) or ``2 x layers`` (BERT), the same sizes.

    >>> from models import get_model
    >>> g = get_model("llama-tiny", tensor_parallel=2)
    >>> [n for n in allreduce_ops(g)]
    ['embed_tokens', 'layers.0.self_attn.o_proj', 'layers.0.mlp.down_proj', 'layers.1.self_attn.o_proj', 'layers.1.mlp.down_proj']
"""
from __future__ import annotations

from .errors import ModelError

#: forward ops whose outputs are partial sums over the chips (by name: the builders' names)
_EMBEDDINGS = ("wte", "embed_tokens", "embeddings.word_embeddings")
_ROW_PARALLEL = (".attn.o_proj", ".self_attn.o_proj", ".mlp.c_proj", ".mlp.down_proj", ".block_sparse_moe.combine",
                 ".attention.output.dense", ".output.dense")
#: the head whose input gradient is all-reduced in training (vocabulary-parallel)
_HEADS = ("lm_head",)


def check(where, tp, *, heads, kv_heads, intermediate, uneven=False, heads_field="num_attention_heads",
          kv_field="num_key_value_heads", inter_field="intermediate_size") -> tuple:
    """``(tp, heads, kv_heads, intermediate)`` of one chip, or ModelError naming the field ``tp``
    does not divide.  ``uneven=True`` (multi-head attention only: ``kv_heads == heads``) lets
    the heads and features be split unevenly: the chip compiled is the busiest one, with
    ``ceil(heads / tp)`` heads and ``ceil(intermediate / tp)`` features (the others wait for
    it at every all-reduce), as GPT-2 XL's 25 heads on 2 or 4 chips need."""
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ModelError(f"{where}: tensor_parallel must be an integer >= 1, got {tp!r}")
    if tp > heads:
        raise ModelError(f"{where}: tensor_parallel {tp}: more tensor-parallel chips than {heads_field} {heads}")
    if uneven and kv_heads == heads:
        return tp, -(-heads // tp), -(-heads // tp), -(-intermediate // tp)
    for field, v in ((heads_field, heads), (kv_field, kv_heads), (inter_field, intermediate)):
        if v % tp:
            if kv_heads == heads:
                hint = (" (the model option uneven_heads=True, --uneven-heads, splits them unevenly: the busiest "
                        "chip takes "
                        f"ceil({v} / {tp}) = {-(-v // tp)})")
            elif uneven:
                hint = (f" (uneven_heads splits multi-head attention only; {kv_field} {kv_heads} is not "
                        f"{heads_field} {heads})")
            else:
                hint = ""
            raise ModelError(f"{where}: tensor_parallel {tp} does not divide {field} {v}{hint}")
    return tp, heads // tp, kv_heads // tp, intermediate // tp


def vocab_rows(vocab, tp) -> int:
    """Rows of the embedding / head one chip holds: ``ceil(vocab / tp)``."""
    return -(-int(vocab) // int(tp))


def allreduce_ops(og) -> list:
    """The forward ops (in order) whose outputs the tensor-parallel chips all-reduce."""
    out = []
    for n in og.ops():
        d = og.op(n)
        if d["phase"] != "fwd":
            continue
        if n in _EMBEDDINGS or n.endswith(_ROW_PARALLEL):
            out.append(n)
    return out


def head_ops(og) -> list:
    """The vocabulary-parallel head ops (their input gradient is all-reduced in training)."""
    return [n for n in og.ops() if n in _HEADS and og.op(n)["phase"] == "fwd"]
