"""The out-of-memory advisor: when a model does not fit, which options would make it fit.

Each candidate is a change to the run configuration (``--recompute``, smaller
micro-batches (``--micro-batches``: the same samples per weight update, accumulated; a smaller
``--batch`` for inference), ``--dtype``, ``--offload``, more chips).  By default its
effect is an estimate: the op graph's always-live bytes and peak of live activation bytes
(:func:`compiler.memory.opgraph_memory`) for the current configuration and for the
candidate, whose ratios scale the per-tile categories of the real compile
(:func:`compiler.memory.estimate_tiles`); milliseconds per candidate.  With
``verify_suggestions`` each candidate is recompiled instead.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import models
from compiler.memory import estimate_tiles, opgraph_memory
from hardware.dtypes import DTYPE_BYTES
from compiler.recompute import recompute as apply_recompute

from .config import RunConfig

#: suggestions estimated (not recompiled) count as fitting below this fraction of a tile
ESTIMATE_MARGIN = 0.95


def candidates(cfg: RunConfig, training: bool) -> list[tuple[str, dict]]:
    """``(command-line label, changed options)`` of every single change worth trying."""
    out = []
    if training:
        for m in ("blocks", "sqrt", "all"):
            if cfg.recompute_mode == "none" or (cfg.recompute_mode != m and m == "all"):
                out.append((f"--recompute {m}", {"recompute": m, "recompute_checkpoints": ()}))
    b = cfg.micro_batch
    while b > 1:
        b //= 2
        if training:        # the same samples per weight update in more, smaller micro-batches
            if cfg.batch % b == 0:
                k = cfg.batch // b
                out.append((f"--batch {cfg.batch} --micro-batches {k}", {"micro_batches": k}))
        else:
            out.append((f"--batch {b}", {"batch": b}))
    if cfg.dtype == "fp32":
        out.append(("--dtype fp16", {"dtype": "fp16"}))
    elif cfg.dtype == "fp16" and not training:
        out.append(("--dtype int8", {"dtype": "int8"}))
    if training and "optimizer" not in cfg.offload:
        out.append(("--offload optimizer", {"offload": tuple(cfg.offload) + ("optimizer",)}))
    if "weights" not in cfg.offload:
        out.append(("--offload weights", {"offload": tuple(cfg.offload) + ("weights",)}))
    for k in (2, 4):
        out.append((f"--ipus {cfg.ipus * k} --mode spread (more chips)", {"ipus": cfg.ipus * k}))
    return out


def suggestions(cfg: RunConfig, og, mem, chip, *, rebuild: Callable | None = None, max_combo=4) -> list:
    """Options that would make the model fit, with the estimated peak tile bytes of each.

    ``og``: the op graph as loaded (before recomputation); ``mem``: this compile's memory
    report; ``rebuild(config) -> Compiled``: how to recompile a candidate when
    ``cfg.verify_suggestions`` is set.
    """
    sram = chip.sram_bytes_per_tile
    verify = cfg.verify_suggestions and rebuild is not None
    #: an estimate "fits" only with this margin left for its error (a recompile needs none)
    margin = 1.0 if verify else ESTIMATE_MARGIN
    training = any(og.op(n)["phase"] != "fwd" for n in og.graph)
    model = cfg.model

    def opgraph_for(o):
        g = og
        if o.micro_batch != cfg.micro_batch:
            if isinstance(model, str) or callable(model):
                g = models.load(model, batch=o.micro_batch, train=cfg.train, optimizer=cfg.optimizer,
                                model_kw=cfg.model_kw)
            else:
                return None
        return apply_recompute(g, o.recompute_mode, o.recompute_checkpoints) if training else g

    def est(o):
        g = opgraph_for(o)
        return None if g is None else opgraph_memory(g, o.dtype, o.offload)

    base = est(cfg)

    def estimate(o: RunConfig):
        if verify:
            try:
                c = rebuild(o.replace(chip=chip, suggest=False, verify_suggestions=False))
            except ValueError as e:      # the option does not compile (yet): say so, never crash the report
                return float("inf"), -1, f"recompile failed: {e.args[0] if e.args else e}"
            t = c.memory["per_tile"]["total"]
            return float(t.max()), int((t > sram).sum()), "recompiled"
        e = est(o)
        if e is None:
            return None
        # exchange temporaries follow the data a compute set moves: micro-batch x element size
        r_temp = (o.micro_batch / cfg.micro_batch) * DTYPE_BYTES.get(o.dtype, 4) / DTYPE_BYTES.get(cfg.dtype, 4)
        t = estimate_tiles(mem, r_always=e["always"] / max(base["always"], 1),
                           r_live=e["peak"] / max(base["peak"], 1), r_temp=r_temp,
                           r_state=e["ops"] / max(base["ops"], 1),
                           r_all=cfg.ipus / o.ipus)
        return float(t.max()), int((t > sram).sum()), "estimate (op-graph liveness scaled by this compile's per-tile categories)"

    def row(label, args, r):
        peak = min(r[0], 2**62)
        return {"option": label, "args": args, "peak_tile_bytes": int(peak), "oom_tiles": r[1],
                "fits": r[0] <= sram * margin, "saving_bytes": int(mem["peak_tile_bytes"] - peak), "method": r[2]}

    # the candidates are estimated or recompiled here, not asked to verify their own suggestions
    # (a multi-chip candidate, --ipus N, refuses verify_suggestions)
    plain = cfg.replace(verify_suggestions=False)
    res = []
    for label, ch in candidates(cfg, training):
        r = estimate(plain.replace(**ch))
        if r is not None:
            res.append(row(label, ch, r))
    # of the batch sizes, keep the largest that fits (or the smallest tried)
    batches = [s for s in res if s["option"].startswith("--batch")]
    keep_b = next((s for s in batches if s["fits"]), batches[-1] if batches else None)
    out = [s for s in res if not s["option"].startswith("--batch") or s is keep_b]
    if not any(s["fits"] for s in out):
        # combine: greedily add the option that saves most until it fits
        o, label, last = plain, [], None
        for _ in range(max_combo):
            best = None
            for lab, ch in candidates(o, training):
                if lab.startswith("--ipus"):
                    continue
                r = estimate(o.replace(**ch))
                if r is not None and (best is None or r[0] < best[0][0]):
                    best = (r, lab, ch)
            if best is None:
                break
            o = o.replace(**best[2])
            label.append(best[1])
            last = best
            if best[0][0] <= sram * margin:
                break
        if label:
            changed = {f.name: getattr(o, f.name) for f in dataclasses.fields(o)
                       if getattr(o, f.name) != getattr(cfg, f.name)}
            out.append(row(" ".join(label), changed, last[0]))
    out.sort(key=lambda s: (not s["fits"], -s["saving_bytes"] if not s["fits"] else 0))
    return out
