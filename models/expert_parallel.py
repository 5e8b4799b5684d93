"""Expert parallelism of the mixture-of-experts decoders (Mixtral): what one chip of ``K``
holds and where the chips exchange tokens.

A model built with ``expert_parallel=K`` (a builder option of the decoders) is the graph ONE
chip of an expert-parallel group of ``K`` compiles, as GShard (Lepikhin et al. 2020, section
3.2) and DeepSpeed-MoE (Rajbhandari et al. 2022) lay a mixture of experts out:

* the experts: ``experts / K`` whole experts per chip (``w1``, ``w3``, ``w2`` of shape
  ``(experts / K, ...)``), so a chip's expert weights are ``1 / K`` of the model's;
* everything else replicated on every chip (attention, norms, router, embedding, head): the
  group is data-parallel outside the experts, each chip runs ``batch / K`` of the sequences
  (and holds their KV cache), so ``batch`` must be a multiple of ``K``;
* per MoE layer: each chip routes its own tokens (the router is replicated), dispatches them
  into ``experts`` buffers of ``C = ceil(capacity_factor x tokens_per_chip x k / experts)``
  slots, then an **all-to-all** sends buffer block ``j`` (the ``experts / K`` experts of chip
  ``j``, ``experts / K x C x hidden`` elements) to chip ``j``; each chip runs its experts on
  the ``K x C`` slots it received (``experts / K`` batched matmuls), and a second all-to-all
  sends the results back, where ``MoECombine`` weights them by the gates.

In the graph the two all-to-alls are ``Identity`` copies named ``<layer>.block_sparse_moe.
dispatch_all_to_all`` and ``...combine_all_to_all`` (the received buffer is a tensor of its
own: the send buffer and the received one are both live across the exchange), each followed
by a view to the shape the next op reads.  :func:`all_to_all_ops` finds them; the multi-chip
simulation times each as :meth:`simulator.links.Network.all_to_all` of the buffer's bytes.

    >>> from models import get_model
    >>> g = get_model("mixtral-tiny", expert_parallel=2)
    >>> g.tensors["layers.0.block_sparse_moe.experts.w1"].shape
    (2, 128, 256)
    >>> all_to_all_ops(g)[:2]
    ['layers.0.block_sparse_moe.dispatch_all_to_all', 'layers.0.block_sparse_moe.combine_all_to_all']
"""
from __future__ import annotations

from .errors import ModelError

#: the graph's all-to-all ops end with these (the builder's names)
ALL_TO_ALL = (".dispatch_all_to_all", ".combine_all_to_all")


def check(where, ep, *, experts, tensor_parallel=1, experts_field="num_local_experts") -> int:
    """``ep`` as an int, or ModelError naming the option: not an integer >= 1, a model without
    experts, a count that does not divide the experts, or combined with tensor parallelism."""
    if isinstance(ep, bool) or not isinstance(ep, int) or ep < 1:
        raise ModelError(f"{where}: expert_parallel must be an integer >= 1, got {ep!r}")
    if ep == 1:
        return 1
    if not experts:
        raise ModelError(f"{where}: expert_parallel {ep}: the model has no experts ({experts_field} 0; expert "
                         f"parallelism spreads a mixture of experts' experts over the chips: Mixtral, or a "
                         f"config.json with num_local_experts)")
    if experts % ep:
        raise ModelError(f"{where}: expert_parallel {ep} does not divide {experts_field} {experts} (each chip "
                         f"holds {experts_field} / expert_parallel whole experts)")
    if tensor_parallel != 1:
        raise ModelError(f"{where}: expert_parallel {ep} with tensor_parallel {tensor_parallel}: one or the other")
    return ep


def all_to_all_ops(og) -> list:
    """The forward ops (in order) whose outputs arrive over an all-to-all (dispatch, combine)."""
    return [n for n in og.ops() if og.op(n)["phase"] == "fwd" and n.endswith(ALL_TO_ALL)]


def degree(og) -> int:
    """The expert-parallel degree ``K`` a graph was built for (1 without all-to-alls)."""
    for n in all_to_all_ops(og):
        return int(og.op(n)["attrs"].get("expert_parallel", 1))
    return 1
