"""Sparse and conditional layers: SLIDE-style LSH layers and mixture-of-experts.

Builders of op graphs (inference) whose big layer computes only part of its
neurons, chosen per input:

* :func:`slide_mlp`: input -> dense hidden layer (ReLU) -> a wide output layer
  whose ``active`` neurons per sample are chosen by locality-sensitive hashing
  (as in SLIDE, Chen et al. 2020, MLSys): ``L`` hash tables of ``K``-bit SimHash
  codes (``MatMul`` with random projections, then ``LSHHash``), each bucket
  holding ``active / L`` neuron ids (``LSHSelect``), then ``SparseLinear`` over
  those ids.  ``dense=True`` builds the same network with a dense output layer.
* :func:`moe_layer_model`: tokens -> a mixture-of-experts FFN with top-``k``
  routing (router ``MatMul`` -> ``TopKRoute`` -> ``MoEDispatch`` into per-expert
  buffers of capacity ``C = ceil(capacity_factor x T x k / E)`` -> expert FFNs as
  batched ``MatMul`` -> ``MoECombine``).  ``dense=True`` builds a dense FFN
  with the same parameters (hidden = ``E x hidden``), i.e. every expert for
  every token.

The new op types are family ``gather``; their planners live in
compiler/planners/sparse.py (the compiler's planner registry imports them), and
bench/sparse_compare.py compiles and simulates a sparse layer beside its dense
equivalent.  Training graphs of these layers are not supported (no gradient rules).

    >>> g = slide_mlp(batch=4, n_in=64, hidden=32, n_out=4096, active=128, tables=4, bits=6)
    >>> sorted({g.op(n)["op"] for n in g.graph})
    ['Gemm', 'LSHHash', 'LSHSelect', 'MatMul', 'Relu', 'SparseLinear']
"""
from __future__ import annotations

import math

from .opgraph import OpGraph


def slide_mlp(batch=1, dtype="fp32", n_in=784, hidden=128, n_out=100_000, active=1024, tables=8, bits=10,
              dense=False):
    """An MLP whose output layer is a SLIDE layer (``active`` of ``n_out`` neurons per sample)."""
    B = int(batch)
    g = OpGraph(f"slide-mlp{'-dense' if dense else ''}", batch=B)
    g.add_tensor("input", (B, n_in), dtype, "input")
    g.add_tensor("fc1.weight", (hidden, n_in), dtype, "param")
    g.add_tensor("fc1.bias", (hidden,), dtype, "param")
    g.add_tensor("fc1.out", (B, hidden), dtype)
    g.add_op("fc1", "Gemm", ["input", "fc1.weight", "fc1.bias"], ["fc1.out"], family="matmul",
             attrs=dict(alpha=1.0, beta=1.0, transA=0, transB=1), flops=2 * B * n_in * hidden + B * hidden)
    g.add_tensor("relu1.out", (B, hidden), dtype)
    g.add_op("relu1", "Relu", ["fc1.out"], ["relu1.out"], family="elementwise", flops=B * hidden)
    g.add_tensor("out.weight", (n_out, hidden), dtype, "param")
    if dense:
        g.add_tensor("out.bias", (n_out,), dtype, "param")
        g.add_tensor("out.out", (B, n_out), dtype, "output")
        g.add_op("out", "Gemm", ["relu1.out", "out.weight", "out.bias"], ["out.out"], family="matmul",
                 attrs=dict(alpha=1.0, beta=1.0, transA=0, transB=1), flops=2 * B * hidden * n_out + B * n_out)
        g.outputs = ["out.out"]
        return g
    L, K = int(tables), int(bits)
    A = int(active) // L * L
    g.add_tensor("lsh.proj_weight", (hidden, K * L), dtype, "constant")
    g.add_tensor("lsh.proj", (B, K * L), dtype)
    g.add_op("lsh.project", "MatMul", ["relu1.out", "lsh.proj_weight"], ["lsh.proj"], family="matmul",
             layer="lsh", flops=2 * B * hidden * K * L)
    g.add_tensor("lsh.codes", (B, L), "int32")
    g.add_op("lsh.hash", "LSHHash", ["lsh.proj"], ["lsh.codes"], family="gather", layer="lsh",
             attrs={"bits": K, "tables": L}, flops=B * K * L)
    g.add_tensor("lsh.buckets", (L, (2 ** K) * (A // L)), "int32", "state")
    g.add_tensor("lsh.active", (B, A), "int32")
    g.add_op("lsh.select", "LSHSelect", ["lsh.codes", "lsh.buckets"], ["lsh.active"], family="gather",
             layer="lsh", attrs={"per_bucket": A // L}, flops=0)
    g.add_tensor("out.out", (B, A), dtype, "output")
    g.add_op("out", "SparseLinear", ["relu1.out", "out.weight", "lsh.active"], ["out.out"], family="gather",
             attrs={"active": A, "n_out": n_out}, flops=2 * B * hidden * A)
    g.outputs = ["out.out"]
    return g


def moe_layer_model(batch=1, dtype="fp32", tokens_per_sample=128, d_model=512, hidden=1024, experts=16, k=2,
                    capacity_factor=1.25, dense=False):
    """Tokens through one mixture-of-experts FFN (top-``k`` of ``experts``), or its dense equivalent."""
    T = int(batch) * int(tokens_per_sample)
    E, d, h = int(experts), int(d_model), int(hidden)
    g = OpGraph(f"moe{'-dense' if dense else ''}", batch=int(batch))
    g.add_tensor("tokens", (T, d), dtype, "input")
    if dense:
        H = E * h
        g.add_tensor("ffn.w1", (d, H), dtype, "param")
        g.add_tensor("ffn.h", (T, H), dtype)
        g.add_op("ffn.fc1", "MatMul", ["tokens", "ffn.w1"], ["ffn.h"], family="matmul", layer="ffn",
                 flops=2 * T * d * H)
        g.add_tensor("ffn.a", (T, H), dtype)
        g.add_op("ffn.act", "Gelu", ["ffn.h"], ["ffn.a"], family="elementwise", layer="ffn", flops=8 * T * H)
        g.add_tensor("ffn.w2", (H, d), dtype, "param")
        g.add_tensor("out", (T, d), dtype, "output")
        g.add_op("ffn.fc2", "MatMul", ["ffn.a", "ffn.w2"], ["out"], family="matmul", layer="ffn",
                 flops=2 * T * H * d)
        g.outputs = ["out"]
        return g
    C = max(1, math.ceil(capacity_factor * T * k / E))
    g.add_tensor("router.weight", (d, E), dtype, "param")
    g.add_tensor("router.logits", (T, E), dtype)
    g.add_op("router", "MatMul", ["tokens", "router.weight"], ["router.logits"], family="matmul", layer="router",
             flops=2 * T * d * E)
    g.add_tensor("router.idx", (T, k), "int32")
    g.add_tensor("router.gates", (T, k), dtype)
    g.add_op("router.topk", "TopKRoute", ["router.logits"], ["router.idx", "router.gates"], family="gather",
             layer="router", attrs={"k": k}, flops=T * E * k)
    g.add_tensor("moe.dispatched", (E, C, d), dtype)
    g.add_op("moe.dispatch", "MoEDispatch", ["tokens", "router.idx"], ["moe.dispatched"], family="gather",
             layer="experts", attrs={"capacity": C}, flops=0)
    g.add_tensor("experts.w1", (E, d, h), dtype, "param")
    g.add_tensor("experts.h", (E, C, h), dtype)
    g.add_op("experts.fc1", "MatMul", ["moe.dispatched", "experts.w1"], ["experts.h"], family="matmul",
             layer="experts", flops=2 * E * C * d * h)
    g.add_tensor("experts.a", (E, C, h), dtype)
    g.add_op("experts.act", "Gelu", ["experts.h"], ["experts.a"], family="elementwise", layer="experts",
             flops=8 * E * C * h)
    g.add_tensor("experts.w2", (E, h, d), dtype, "param")
    g.add_tensor("experts.y", (E, C, d), dtype)
    g.add_op("experts.fc2", "MatMul", ["experts.a", "experts.w2"], ["experts.y"], family="matmul",
             layer="experts", flops=2 * E * C * h * d)
    g.add_tensor("out", (T, d), dtype, "output")
    g.add_op("moe.combine", "MoECombine", ["experts.y", "router.idx", "router.gates"], ["out"], family="gather",
             layer="combine", attrs={"k": k}, flops=T * k * d)
    g.outputs = ["out"]
    return g
