"""From the explorer's controls to a run: the point parameters of a setting (plain values of a
:class:`simulator.config.RunConfig`, validated by building it) and the trade-off axes around it.

Nothing here knows the run options beyond the controls on the page: names, defaults, choices
and the rules of several chips are :class:`RunConfig`'s (``RunConfig.layout`` says how many
replicas and micro-batches a mode uses).
"""
from __future__ import annotations

import dataclasses

from hardware.chips import get_chip
from simulator.config import EXPERT_MODES, MODES, RECOMPUTE_MODES, TENSOR_MODES, ConfigError, RunConfig
from simulator.sweep import point_config

__all__ = ["CHIP_FIELDS", "AXES", "CHIP_MODES", "DEFAULT", "RECOMPUTE_MODES", "choices", "mode_uses",
           "settings_to_params", "layout_note", "tradeoff_values", "with_value", "field_values"]

#: the run configuration the page starts from (its defaults are RunConfig's)
DEFAULT = RunConfig()

#: the chip fields the page edits: (field, control id, label, unit factor from the control to the field)
CHIP_FIELDS = (("tiles", "tiles", "tiles per chip", 1),
               ("sram_bytes_per_tile", "sram", "SRAM per tile (KiB)", 1024),
               ("clock_hz", "clock", "clock (GHz)", 1e9),
               ("exchange_bytes_per_cycle_per_tile", "exch", "exchange (B/cycle/tile)", 1))
AXES = {"tiles": "tiles per chip", "sram_bytes_per_tile": "SRAM per tile", "batch": "batch size"}

_MODE_NOTES = {"spread": "one graph over all the chips' tiles",
               "shard": "layers split over the chips, run in turn",
               "pipeline": "the same stages, micro-batches flow through them",
               "replicate": "data-parallel copies, gradients all-reduced",
               "pipeline+replicate": "replicas of a pipeline"}
#: how several chips are used: (value, label, what it does); the values are simulator.config.MODES,
#: "spread" (one graph, simulator.run.build) first
CHIP_MODES = tuple((m, m.replace("+", " + "), _MODE_NOTES.get(m, ""))
                   for m in ("spread",) + tuple(m for m in MODES if m != "spread" and m not in TENSOR_MODES + EXPERT_MODES))
# (the tensor- and expert-parallel modes need a transformer: the explorer's LLM mode offers the tensor ones)


def choices(name: str) -> tuple:
    """The values a :class:`RunConfig` field accepts (its declared choices)."""
    return next(f.metadata["choices"] for f in dataclasses.fields(RunConfig) if f.name == name)


def _layout(mode, **kw):
    try:
        return RunConfig(ipus=4, batch=64, mode=mode, **kw).layout()
    except ConfigError:
        return None


def mode_uses(mode: str, field: str) -> bool:
    """Whether ``mode`` reads ``field`` (``replicas`` or ``micro_batches``): whether setting it
    changes :meth:`RunConfig.layout` (the one rule for several chips)."""
    if mode not in MODES or mode == "spread":
        return False
    base = _layout(mode)
    # a value the mode refuses (shard: micro-batches) is not one it reads
    return any((lay := _layout(mode, **{field: v})) is not None and lay != base for v in (1, 2, 4))


def _count(v):
    """A blank count control is None (automatic)."""
    return None if v is None or v == "" else v


def settings_to_params(model, mode, preset, fields: dict, ipus, batch, dtype, recompute, amp,
                       chip_mode=None, replicas=None, micro_batches=None) -> dict:
    """Control values -> point parameters, validated by building the :class:`RunConfig`
    (raises ValueError, e.g. :class:`ConfigError` naming the field, with a message for the page).

    ``mode``: "train" or "infer"; ``fields``: the chip controls by id (:data:`CHIP_FIELDS`), kept
    only where they differ from the preset; ``chip_mode``: how several chips are used
    (:data:`CHIP_MODES`), ignored for one chip.  ``replicas`` / ``micro_batches`` are kept only
    for the modes that use them (blank: automatic), and recomputation only for one graph (the
    multichip simulation does not recompute): an ignored control never makes a new cache entry.
    """
    if not model:
        raise ValueError("model: choose a model")
    base = DEFAULT.chip if preset in (None, "custom") else preset
    chip = get_chip(base)
    params = {"model": model, "chip": base}
    for field, cid, label, scale in CHIP_FIELDS:
        v = fields.get(cid)
        if v is None or v == "":
            raise ValueError(f"{label}: enter a number")
        v = v * scale
        if field == "sram_bytes_per_tile" or (field == "tiles" and float(v).is_integer()):
            v = int(round(v))           # a fractional tile count is left for the chip to reject
        elif field == "clock_hz":
            v = float(round(v))
        if v != getattr(chip, field):
            params[field] = v
    params.update(train=(mode == "train"), batch=batch, ipus=ipus, dtype=dtype or DEFAULT.dtype,
                  available_memory_proportion=round(float(amp if amp is not None else
                                                          DEFAULT.available_memory_proportion), 3))
    several = isinstance(ipus, (int, float)) and ipus > 1
    if several:
        params["mode"] = chip_mode or "spread"
        for name, v in (("replicas", replicas), ("micro_batches", micro_batches)):
            if _count(v) is not None and mode_uses(params["mode"], name):
                params[name] = v
    if mode == "train" and recompute not in (None, DEFAULT.recompute) and params.get("mode", "spread") == "spread":
        params["recompute"] = recompute
    cfg = point_config(params)          # every error now, before any compile
    # the values as the configuration holds them (8.0 -> 8): the same setting, the same cache entry
    for name in ("batch", "ipus", "replicas", "micro_batches"):
        if name in params:
            params[name] = getattr(cfg, name)
    return params


def layout_note(ipus, chip_mode, batch=None) -> str:
    """What the chip-mode control does with these settings (under the control)."""
    if not isinstance(ipus, (int, float)) or ipus <= 1:
        return "one chip: set chips to 2 or more to choose how they are used"
    if chip_mode in (None, "spread"):
        return f"one graph compiled over the {int(ipus)} chips' tiles (simulator.run.build)"
    bits = [f"simulated by simulator.multichip over {int(ipus)} chips"]
    try:
        S, R, M = RunConfig(ipus=int(ipus), batch=int(batch or 1), mode=chip_mode).layout()
        bits.append(f"with blanks: {S} stage{'s' if S > 1 else ''} × {R} replica{'s' if R > 1 else ''}, "
                    f"{M} micro-batch{'es' if M > 1 else ''}")
    except (ConfigError, ValueError, TypeError):
        pass
    bits.append("recomputation does not apply")
    return "; ".join(bits)


def tradeoff_values(axis: str, params: dict) -> list:
    """5-8 values of ``axis`` around the current setting (the current one included).

    Batch sizes the configuration rejects (replicas x micro-batches do not divide them) are left out.
    """
    cfg = point_config(params)
    chip = cfg.get_chip()
    if axis == "tiles":
        step = chip.tiles_per_supertile
        vals = {max(step, int(round(chip.tiles * f / step)) * step) for f in (0.25, 0.5, 0.75, 1, 1.25, 1.5, 2)}
    elif axis == "sram_bytes_per_tile":
        kib = chip.sram_bytes_per_tile / 1024
        vals = {int(round(kib * f)) * 1024 for f in (0.25, 0.5, 0.75, 1, 1.5, 2, 3)}
        vals.add(chip.sram_bytes_per_tile)
    elif axis == "batch":
        b = cfg.batch

        def ok(v):
            try:
                cfg.replace(batch=v)
                return True
            except ConfigError:
                return v == b
        vals = {v for v in (max(1, b // 4), max(1, b // 2), b, 2 * b, 4 * b, 8 * b) if ok(v)}
    else:
        raise ValueError(f"unknown trade-off axis {axis!r}")
    return sorted(v for v in vals if v > 0)


def with_value(params: dict, axis: str, value) -> dict:
    """``params`` with ``axis`` set to ``value`` (a chip field equal to the preset's is left out:
    the same point as no override, the same cache entry)."""
    p = dict(params)
    p[axis] = value
    if axis in ("tiles", "sram_bytes_per_tile") and getattr(get_chip(p["chip"]), axis) == value:
        p.pop(axis)
    return p


def field_values(chip) -> list:
    """The chip fields in the units of the controls (tiles, KiB, GHz, B/cycle/tile)."""
    out = []
    for field, _, _, scale in CHIP_FIELDS:
        v = getattr(chip, field) / scale
        out.append(int(v) if float(v).is_integer() else round(v, 6))
    return out
