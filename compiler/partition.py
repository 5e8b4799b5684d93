"""Split an op graph into pipeline stages, one per chip.

``partition(og, stages, chip)`` cuts the op graph along its forward layer
order into ``stages`` contiguous groups of layers.  Every stage is an
ordinary :class:`~models.opgraph.OpGraph` that the existing ``lower()`` and
``compile_program()`` compile for ONE chip:

* a stage holds the forward ops of its layers and, in a training graph, the
  backward and update ops of the same layers (they carry the forward op's
  ``layer``), so each chip keeps its own weights, gradients and optimizer state;
  the loss goes with the last stage;
* a tensor a stage reads but another stage produces (an activation crossing
  the cut forwards, a gradient crossing it backwards) becomes an ``input`` of
  the stage; a tensor it produces that another stage reads becomes one of its
  ``outputs``.  :attr:`Partition.transfers` lists them with their bytes and
  the phase (``fwd`` / ``bwd``) in which they move.

Placement (:func:`place`): ``"even"`` gives each stage the same number of
layers; ``"auto"`` chooses the cut points by dynamic programming so that the
slowest stage is as fast as possible while each stage's estimated memory stays
under the chip's SRAM.  Per-layer costs come from :func:`op_costs`: cycles from
each op's FLOPs (or elements) and the chip's peak rates, plus a fixed cost per
op for its superstep's sync and exchange; memory from parameters (x 2 for the
gradient, + optimizer state) and the activations a stage keeps for its
backward pass (x the micro-batches in flight in a pipeline).

    >>> from models import get_model
    >>> from hardware.chips import gc200
    >>> p = partition(get_model("mnist-mlp", batch=4, train=True), 2, gc200, placement="even")
    >>> [len(s.units) for s in p.stages], sum(len(s.graph) for s in p.stages) == p.source_ops
    ([2, 2], True)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hardware.dtypes import DTYPE_BYTES, FLOAT_DTYPES as _FLOAT
from models.opgraph import OpGraph

#: fraction of a chip's SRAM the placement lets a stage's tensors use (the rest:
#: vertex code and state, exchange temporaries, fragmentation).  CHOSEN.
USABLE_MEMORY_FRACTION = 0.6

#: efficiency of the matrix unit on convolutions / matmuls in the placement's
#: cost estimate (measured in this simulator for ResNet-50 layers: 0.3 - 0.6).  CHOSEN.
AMP_EFFICIENCY = {"conv": 0.45, "matmul": 0.45}
#: vector-unit passes over the output per element, by family (element-wise ~1,
#: norms read twice and write once ...).  CHOSEN, order of the codelet costs.
VECTOR_PASSES = {"elementwise": 1.0, "pool": 9.0, "norm": 4.0, "softmax": 6.0, "reduce": 1.0,
                 "loss": 8.0, "optimizer": 3.0, "gather": 2.0, "concat": 1.0, "reshape": 0.0}


@dataclass
class Stage:
    index: int
    graph: OpGraph
    units: list                    # layer names, forward order
    ops: list                      # op names (source graph order)
    inputs_from: dict = field(default_factory=dict)   # tensor -> producing stage (-1: host)
    outputs_to: dict = field(default_factory=dict)    # tensor -> [consuming stages] (-1: host)
    est_cycles: float = 0.0        # placement estimate, one micro-batch (fwd + bwd + update)
    est_bytes: float = 0.0         # placement estimate of the stage's memory

    @property
    def params(self) -> int:
        return self.graph.params()


@dataclass
class Partition:
    source: OpGraph
    stages: list
    transfers: list                # dicts: tensor, src, dst, bytes, phase
    placement: str
    cuts: list                     # index of the first unit of each stage
    units: list                    # all units (layer names) in forward order
    unit_cycles: list
    unit_bytes: list
    source_ops: int = 0

    def stage_of_op(self) -> dict:
        return {o: s.index for s in self.stages for o in s.ops}

    def summary(self) -> dict:
        return {"placement": self.placement, "cuts": list(self.cuts),
                "stages": [{"stage": s.index, "first_layer": s.units[0] if s.units else None,
                            "last_layer": s.units[-1] if s.units else None, "layers": len(s.units),
                            "ops": len(s.ops), "params": int(s.params), "est_cycles": float(s.est_cycles),
                            "est_bytes": float(s.est_bytes)} for s in self.stages],
                "est_max_stage_cycles": float(max(s.est_cycles for s in self.stages)),
                "transfers": len(self.transfers),
                "transfer_bytes": int(sum(t["bytes"] for t in self.transfers))}


# -- legalisation -----------------------------------------------------------------------------
def legalise(og: OpGraph) -> OpGraph:
    """A copy of ``og`` with the dilation of strided 1x1 ``ConvGradInput`` ops deferred until
    after the convolution, as PopLibs does.

    dX of a strided convolution is a convolution of dY zero-dilated by the stride.  When the
    kernel is 1x1 and unpadded, PopLibs' planner defers that dilation (``ConvPlan.cpp``
    ``getDilatePostConvDims``, ``ConvModel.cpp`` ``canDeferDilation``; applied in
    ``Convolution.cpp`` as ``activationsPostDilate``): it convolves the undilated dY, a
    1/s^2 of the work, and then copies the result into every s-th pixel of a new dX, zeros
    elsewhere.  So here such an op becomes a stride-1 ``ConvGradInput`` of dY into
    ``<op>.undilated_dx`` (dY's pixels, dX's channels) and a ``ZeroInsert`` (family
    ``elementwise``) of that into dX.  Other strided ``ConvGradInput`` ops (3x3, padded) are
    left to the conv planner, which places their windows on dY's grid.  Idempotent; graphs
    without a strided 1x1 ``ConvGradInput`` are returned unchanged.
    """
    def deferred(d):
        if d["op"] != "ConvGradInput":
            return False
        a = d["attrs"]
        s = [int(v) for v in (a.get("strides") or [1])]
        k = [int(v) for v in (a.get("kernel_shape") or og.tensors[d["inputs"][1]].shape[2:])]
        return (max(s) > 1 and all(v == 1 for v in k)
                and not any(int(v) for v in (a.get("pads") or [])) and int(a.get("group", 1)) == 1
                and all(int(v) == 1 for v in (a.get("dilations") or [1])))
    todo = {n for n in og.graph if deferred(og.op(n))}
    if not todo:
        return og
    out = og.without_ops()
    for n in og.ops():
        d = og.op(n)
        if n not in todo:
            out.add_op_like(d, n)
            continue
        dy, dx = d["inputs"][0], d["outputs"][0]
        N, _, Ho, Wo = og.tensors[dy].shape
        small = f"{n}.undilated_dx"
        out.add_tensor(small, (N, og.tensors[dx].shape[1], Ho, Wo), og.tensors[dx].dtype, og.tensors[dx].kind)
        strides = list(d["attrs"]["strides"])
        out.add_op_like(d, n, outputs=[small], attrs=dict(d["attrs"], strides=[1] * len(strides)))
        out.add_op_like(d, f"{n}.dilate", op="ZeroInsert", inputs=[small], outputs=[dx], family="elementwise",
                        attrs={"strides": strides}, flops=0)
    return out


# -- per-op cost estimates -----------------------------------------------------------------------
def op_costs(og: OpGraph, chip, dtype="fp32") -> dict:
    """Cheap per-op estimates: op name -> (cycles, bytes of its outputs).

    cycles = FLOPs / (tiles x AMP FLOP/cycle/tile x efficiency) for conv / matmul,
    elements x passes / (tiles x vector elements/cycle/tile) for the rest, plus a
    fixed ``sync_cycles + 2 x vertex_overhead x workers`` per op (its superstep)
    and the exchange of its output once (bytes / (tiles x exchange B/cycle/tile)).
    """
    b = DTYPE_BYTES.get(dtype, 4)
    T = chip.tiles
    amp = T * chip.flops_per_cycle(dtype if dtype in ("fp32", "fp16") else "fp32")
    vec = T * max(chip.vector_bytes_per_cycle // b, 1)       # elements per cycle per chip (all workers)
    xch = T * chip.exchange_bytes_per_cycle_per_tile
    fixed = chip.sync_cycles + 2 * chip.vertex_overhead_cycles * chip.workers_per_tile
    out = {}
    for n in og.graph:
        d = og.op(n)
        fam = d["family"]
        obytes = sum(og.tensors[t].size * (b if og.tensors[t].dtype in _FLOAT else 4) for t in d["outputs"]
                     if og.tensors[t].inplace_of is None)
        oel = sum(og.tensors[t].size for t in d["outputs"])
        if fam == "reshape":
            out[n] = (0.0, 0.0)
            continue
        if fam in AMP_EFFICIENCY or d["op"] == "ConvGradWeight":
            cyc = d["flops"] / (amp * AMP_EFFICIENCY.get(fam, 0.45))
        else:
            cyc = oel * VECTOR_PASSES.get(fam, 1.0) / vec
        out[n] = (cyc + fixed + obytes / xch, float(obytes))
    return out


def _units(og: OpGraph):
    """Layer names in forward order, and op -> unit index."""
    ops = og.ops()
    units, index = [], {}
    for n in ops:
        d = og.op(n)
        if d["phase"] == "fwd" and d["layer"] not in index:
            index[d["layer"]] = len(units)
            units.append(d["layer"])
    of = {}
    last = max(len(units) - 1, 0)
    for n in ops:
        d = og.op(n)
        if d["phase"] == "loss":
            of[n] = last
        else:
            of[n] = index.get(d["layer"], None)
    # ops whose layer has no forward op: with their first producer, else their first consumer, else last
    for n in ops:
        if of[n] is None:
            d = og.op(n)
            prods = [og.tensors[t].producer for t in d["inputs"] if og.tensors[t].producer in of
                     and of[og.tensors[t].producer] is not None]
            of[n] = of[prods[0]] if prods else last
    return units, of


def _unit_costs(og, chip, dtype, units, of):
    costs = op_costs(og, chip, dtype)
    b = DTYPE_BYTES.get(dtype, 4)
    U = len(units)
    cyc = np.zeros(U)
    act = np.zeros(U)       # activations kept for the backward pass (or live in inference)
    par = np.zeros(U)       # parameters + gradients + optimizer state
    training = any(og.op(n)["phase"] != "fwd" for n in og.graph)
    seen = set()
    for n in og.graph:
        u = of[n]
        c, ob = costs[n]
        cyc[u] += c
        d = og.op(n)
        if d["phase"] == "fwd":
            act[u] += ob
        for t in d["inputs"]:
            ti = og.tensors[t]
            if ti.kind in ("param", "state", "constant") and ti.inplace_of is None and t not in seen:
                seen.add(t)
                par[u] += ti.size * b * ((3 if ti.kind == "param" else 1) if training else 1)
    return cyc, act, par, training


def cut_cycles(og, chip, dtype, units, of):
    """Per boundary k (between unit k-1 and unit k, k = 0..U), the link cycles of the
    tensors that cross it: activations forwards and gradients backwards, each tensor
    over every boundary between its producer and its last consumer.  Boundaries 0
    and U (the host side) cost nothing.  Link rate: ``links_per_chip // 2`` lanes of
    ``link_bytes_per_s`` between neighbouring chips (simulator/links.py)."""
    U = len(units)
    cut = np.zeros(U + 2)
    lanes = max(int(getattr(chip, "links_per_chip", 0)) // 2, 1)
    rate = lanes * float(getattr(chip, "link_bytes_per_s", 0.0))
    if rate <= 0 or U < 2:
        return np.zeros(U + 1)
    last = {}
    for n in og.graph:
        for t in og.op(n)["inputs"]:
            u = of[n]
            last[t] = max(last.get(t, u), u)
    for t, b in last.items():
        ti = og.tensors[t]
        if ti.producer is None or ti.kind in ("param", "state", "constant"):
            continue
        a = of[ti.producer]
        if b > a:
            nb = _nbytes(ti, dtype)
            cut[a + 1] += nb
            cut[b + 1] -= nb
    cut = np.cumsum(cut)[:U + 1]
    cut[0] = cut[U] = 0.0
    return cut / rate * float(chip.clock_hz)


# -- placement ------------------------------------------------------------------------------------
def place(unit_cycles, unit_act, unit_par, stages, limit_bytes, *, method="auto", inflight=None, cut=None):
    """Cut points (first unit of each stage) for ``stages`` contiguous stages.

    ``method="even"``: the same number of units per stage.  ``"auto"``:
    minimise the largest stage's cycles, subject to each stage's bytes
    (``params + activations x inflight[stage]``) <= ``limit_bytes``; when no
    split fits, the memory limit is dropped (the report then says it does not fit).
    ``cut[k]``: cycles of moving what crosses boundary k over the link; a stage
    pays its incoming and outgoing boundaries, so cuts avoid fat boundaries.
    """
    U = len(unit_cycles)
    S = min(int(stages), U)
    if method == "even":
        return [(i * U) // S for i in range(S)]
    infl = list(inflight) if inflight is not None else [1] * S
    pc = np.concatenate(([0.0], np.cumsum(unit_cycles)))
    pa = np.concatenate(([0.0], np.cumsum(unit_act)))
    pp = np.concatenate(([0.0], np.cumsum(unit_par)))
    cc = np.zeros(U + 1) if cut is None else np.asarray(cut, np.float64)

    def solve(lim):
        INF = float("inf")
        # best[s][j]: minimal max-cost of splitting units [0, j) into s stages
        best = np.full((S + 1, U + 1), INF)
        arg = np.zeros((S + 1, U + 1), np.int64)
        best[0][0] = 0.0
        for s in range(1, S + 1):
            for j in range(s, U - (S - s) + 1):
                for i in range(s - 1, j):
                    if best[s - 1][i] == INF:
                        continue
                    mem = (pp[j] - pp[i]) + (pa[j] - pa[i]) * infl[s - 1]
                    if mem > lim:
                        continue
                    v = max(best[s - 1][i], pc[j] - pc[i] + cc[i] + cc[j])
                    if v < best[s][j] - 1e-9:
                        best[s][j], arg[s][j] = v, i
        if best[S][U] == float("inf"):
            return None
        cuts, j = [], U
        for s in range(S, 0, -1):
            i = int(arg[s][j])
            cuts.append(i)
            j = i
        return cuts[::-1]

    return solve(limit_bytes) or solve(float("inf"))


def partition(og: OpGraph, stages: int, chip, *, placement="auto", dtype="fp32", pipelined=True,
              micro_batches=1, cuts=None) -> Partition:
    """Split ``og`` into ``stages`` stage graphs (see the module docstring).

    ``pipelined``: a training pipeline keeps ``min(stages - s, micro_batches)``
    micro-batches of activations on stage ``s`` (1F1B), which the ``auto``
    placement's memory limit accounts for.  ``cuts`` forces the cut points.
    """
    og = legalise(og)
    units, of = _units(og)
    cyc, act, par, training = _unit_costs(og, chip, dtype, units, of)
    S = max(1, min(int(stages), len(units)))
    if training and pipelined:
        inflight = [min(S - s, max(int(micro_batches), 1)) for s in range(S)]
    else:
        inflight = [1] * S
    limit = USABLE_MEMORY_FRACTION * chip.total_sram_bytes
    cc = cut_cycles(og, chip, dtype, units, of)
    if cuts is None:
        cuts = place(cyc, act, par, S, limit, method=placement, inflight=inflight, cut=cc)
    cuts = list(cuts)
    bounds = cuts + [len(units)]
    unit_stage = np.zeros(len(units), np.int64)
    for s in range(S):
        unit_stage[bounds[s]:bounds[s + 1]] = s
    op_stage = {n: int(unit_stage[of[n]]) if units else 0 for n in og.graph}
    ops = og.ops()
    _check_forward_order(og, ops, op_stage, units, of)
    consumers = {}
    for n in ops:
        for t in og.op(n)["inputs"]:
            consumers.setdefault(t, []).append(n)
    st_objs, transfers, seen = [], [], set()
    for s in range(S):
        mine = [n for n in ops if op_stage[n] == s]
        g = OpGraph(f"{og.name}.stage{s}", batch=og.batch)
        inputs_from, outputs_to = {}, {}

        def need(t):
            if t in g.tensors:
                return
            ti = og.tensors[t]
            if ti.inplace_of is not None:
                need(ti.inplace_of)
            prod = ti.producer
            if prod is None or op_stage[prod] == s:
                g.add_tensor(t, ti.shape, ti.dtype, ti.kind, data=ti.data, inplace_of=ti.inplace_of)
                if ti.kind == "input":
                    inputs_from[t] = -1
            else:
                g.add_tensor(t, ti.shape, ti.dtype, "input")
                src = op_stage[prod]
                inputs_from[t] = src
                if (t, s) not in seen:
                    seen.add((t, s))
                    ph = og.op(prod)["phase"]
                    transfers.append({"tensor": t, "src": src, "dst": s, "bytes": _nbytes(ti, dtype),
                                      "phase": "fwd" if ph == "fwd" else "bwd"})

        for n in mine:
            d = og.op(n)
            for t in d["inputs"] + d["outputs"]:
                need(t)
            g.add_op(n, d["op"], d["inputs"], d["outputs"], family=d["family"], attrs=d["attrs"],
                     layer=d["layer"], block=d["block"], block_type=d["block_type"], phase=d["phase"],
                     flops=d["flops"])
        outs = []
        for n in mine:
            for t in og.op(n)["outputs"]:
                dst = sorted({op_stage[c] for c in consumers.get(t, []) if op_stage[c] != s})
                if t in og.outputs:
                    dst.append(-1)
                if dst:
                    outputs_to[t] = dst
                    outs.append(t)
        g.outputs = outs
        g.grads = {k: v for k, v in og.grads.items() if k in g.tensors and v in g.tensors}
        # a stage with no loss still needs the lowering's notion of "training" (phases), kept by the ops
        stage = Stage(s, g, units[bounds[s]:bounds[s + 1]], mine, inputs_from, outputs_to,
                      est_cycles=float(cyc[bounds[s]:bounds[s + 1]].sum() + cc[bounds[s]] + cc[bounds[s + 1]]),
                      est_bytes=float(par[bounds[s]:bounds[s + 1]].sum()
                                      + act[bounds[s]:bounds[s + 1]].sum() * inflight[s]))
        st_objs.append(stage)
    return Partition(og, st_objs, transfers, placement if cuts is not None else "given", cuts, units,
                     cyc.tolist(), (par + act).tolist(), source_ops=len(og))


def _check_forward_order(og, ops, op_stage, units, of):
    """Every transfer between stages runs with the pipeline: a forward tensor to a later stage, a
    backward one (a gradient) to an earlier stage.  The stages run in turn, so a read against
    that flow would wait for ever (a simulated pipeline would stop short and time too little).  It
    happens only when a layer name's ops are not adjacent in forward order (one unit, placed
    where the name first appears): ValueError naming the op, its layer and the tensor."""
    for n in ops:
        s = op_stage[n]
        for t in og.op(n)["inputs"]:
            prod = og.tensors[t].producer
            if prod is None or op_stage[prod] == s or og.op(prod)["phase"] == "recompute":
                continue        # recomputed tensors are exempt (test_recomputation_and_offload_run_on_several_chips)
            fwd = og.op(prod)["phase"] == "fwd"
            if fwd != (op_stage[prod] < s):
                lay = units[of[n]] if units and of[n] is not None else None
                raise ValueError(f"{og.name}: the op {n!r} (layer {lay!r}, stage {s}) reads {t!r}, made on stage "
                                 f"{op_stage[prod]} by {prod!r}, against the pipeline's "
                                 f"{'forward' if fwd else 'backward'} flow: the ops of layer {lay!r} are not "
                                 f"adjacent in forward order (give them their own layer names)")


def even_vs_auto(og: OpGraph, stages: int, chip, *, dtype="fp32", micro_batches=1, pipelined=True) -> dict:
    """The estimated slowest stage of the even and the automatic placement, side by side."""
    og = legalise(og)
    units, of = _units(og)
    cyc, act, par, training = _unit_costs(og, chip, dtype, units, of)
    cc = cut_cycles(og, chip, dtype, units, of)
    S = max(1, min(int(stages), len(units)))
    inflight = [min(S - s, micro_batches) for s in range(S)] if training and pipelined else [1] * S
    limit = USABLE_MEMORY_FRACTION * chip.total_sram_bytes
    res = {}
    for m in ("even", "auto"):
        cuts = place(cyc, act, par, S, limit, method=m, inflight=inflight, cut=cc)
        b = cuts + [len(units)]
        sc = [float(cyc[b[i]:b[i + 1]].sum() + cc[b[i]] + cc[b[i + 1]]) for i in range(S)]
        sm = [float(par[b[i]:b[i + 1]].sum() + act[b[i]:b[i + 1]].sum() * inflight[i]) for i in range(S)]
        res[m] = {"cuts": cuts, "est_stage_cycles": sc, "est_max_stage_cycles": max(sc), "est_stage_bytes": sm,
                  "fits_estimate": all(x <= limit for x in sm)}
    res["est_speedup_auto_vs_even"] = res["even"]["est_max_stage_cycles"] / max(res["auto"]["est_max_stage_cycles"], 1e-9)
    return res


def _nbytes(ti, dtype):
    if ti.dtype in _FLOAT:
        return int(ti.size * DTYPE_BYTES.get(dtype, 4))
    return int(ti.size * 4)       # integer tensors are int32 on the chip
