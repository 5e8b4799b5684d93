"""Chip descriptions: a chip is data.

Every hardware constant the simulator uses lives in a :class:`Chip`. The
presets ``gc2`` (Mk1 Colossus), ``gc200`` (Mk2) and ``bow`` (Mk2, wafer-on-wafer)
carry published figures with their sources (``Chip.sources`` maps every field to
a citation); the handful of values that have no public source are marked
"CHOSEN" there and in the comments beside them, so that they can be recalibrated
in one place. Custom chips come from TOML files, either complete or as
``base = "gc200"`` plus overrides (see docs/chips.md).

No other module should test a chip's name: ask the chip for the number instead.

>>> gc200.tiles, gc200.sram_bytes_per_tile
(1472, 638976)
>>> round(gc200.peak_flops("fp16") / 1e12, 1)
249.7
>>> get_chip("gc2").replace(tiles=608).tiles
608
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .dtypes import canonical as _canonical_dtype

__all__ = [
    "Chip", "ChipError", "gc2", "gc200", "bow", "PRESETS", "FLOP_DTYPES",
    "chip_from_toml", "get_chip", "list_chips", "multi_chip_sync_cycles",
    "PRESET_DIR", "VALUE_FIELDS",
]

PRESET_DIR = Path(__file__).with_name("presets")

#: the dtypes a chip's matrix unit (AMP) has a FLOP/cycle rate for
FLOP_DTYPES = ("fp32", "fp16", "int8")


class ChipError(ValueError):
    """A chip description is invalid (bad value, unknown key, missing file...)."""


class _FrozenDict(dict):
    """A dict that refuses mutation, so a preset's tables cannot be edited in place.

    It is still a ``dict`` (``json.dumps`` and ``isinstance(x, dict)`` work)."""

    def _readonly(self, *args, **kwargs):
        raise TypeError("chip tables are read-only; use Chip.replace(...)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __reduce__(self):
        return (type(self), (dict(self),))

    def __hash__(self):
        return hash(tuple(sorted(self.items())))


# ---------------------------------------------------------------------------
# field specifications: (kind, minimum allowed, what the message says)
# kinds: "str", "int", "float", "flops" (table fp32/fp16/int8 -> number), "sources"
_SPEC: dict[str, tuple[str, str]] = {
    "name": ("str", "a non-empty string"),
    "tiles": ("int", "positive"),
    "sram_bytes_per_tile": ("int", "positive"),
    "workers_per_tile": ("int", "positive"),
    "clock_hz": ("float", "positive"),
    "flops_per_cycle_per_tile": ("flops", "positive"),
    "vector_bytes_per_cycle": ("int", "positive"),
    "exchange_bytes_per_cycle_per_tile": ("float", "positive"),
    "tiles_per_supertile": ("int", "positive"),
    "exchange_message_cycles": ("int", "non-negative"),
    "sync_cycles": ("int", "non-negative"),
    "sync_cycles_multi_chip": ("int", "non-negative"),
    "links_per_chip": ("int", "non-negative"),
    "link_bytes_per_s": ("float", "non-negative"),
    "link_latency_s": ("float", "non-negative"),
    "host_link_bytes_per_s": ("float", "positive"),
    "host_link_latency_s": ("float", "non-negative"),
    "streaming_memory_bytes": ("int", "non-negative"),
    "streaming_memory_bytes_per_s": ("float", "non-negative"),
    "vertex_overhead_cycles": ("int", "non-negative"),
    "amp_entry_cycles": ("int", "non-negative"),
    "amp_pass_cycles": ("int", "non-negative"),
    "mac_output_cycles": ("int", "non-negative"),
    "sources": ("sources", ""),
}
#: fields a chip file may leave out, and the value they then take (0: the matrix unit's
#: loop costs are not modelled, as before these fields existed)
OPTIONAL = {"amp_entry_cycles": 0, "amp_pass_cycles": 0, "mac_output_cycles": 0}
#: CHOSEN upper bounds: far above any IPU (1,472 tiles, 624 KiB, 6 workers), low enough that
#: the per-tile arrays of a compile fit a workstation's memory
LIMITS = {"tiles": 1 << 16, "sram_bytes_per_tile": 1 << 30, "workers_per_tile": 64, "tiles_per_supertile": 64}
LIMIT_REASON = "a bound of this simulator, far above any IPU"
#: fields that carry a hardware value (everything but the name and the citations)
VALUE_FIELDS = tuple(k for k in _SPEC if k not in ("name", "sources"))


def _known(keys) -> str:
    return ", ".join(keys)


def _check_number(where: str, key: str, value: Any, kind: str, rule: str):
    """Type- and range-check one scalar; return it converted (int or float)."""
    noun = "integer" if kind == "int" else "number"
    what = f"{rule} {noun}"
    if isinstance(value, bool):
        raise ChipError(f"{where}: key {key!r} must be a {what}, got {value!r} (a boolean)")
    if kind == "int":
        if not isinstance(value, int):
            raise ChipError(f"{where}: key {key!r} must be a {what}, "
                            f"got {value!r} ({type(value).__name__})")
    else:
        if not isinstance(value, (int, float)):
            raise ChipError(f"{where}: key {key!r} must be a {what}, "
                            f"got {value!r} ({type(value).__name__})")
        value = float(value)
        if not math.isfinite(value):
            raise ChipError(f"{where}: key {key!r} must be a finite {what}, got {value!r}")
    if rule == "positive" and value <= 0:
        raise ChipError(f"{where}: key {key!r} must be a {what}, got {value!r}")
    if rule == "non-negative" and value < 0:
        raise ChipError(f"{where}: key {key!r} must be a {what}, got {value!r}")
    return value


def _normalise(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate a complete set of chip fields; return them with canonical types.

    ``where`` prefixes every message (a file name, or ``chip 'x'``)."""
    unknown = [k for k in values if k not in _SPEC]
    if unknown:
        raise ChipError(f"{where}: unknown key {unknown[0]!r} (known keys: {_known(_SPEC)})")
    values = {**OPTIONAL, **values}
    missing = [k for k in _SPEC if k not in values and k != "sources"]
    if missing:
        raise ChipError(f"{where}: missing key {missing[0]!r} "
                        f"(a chip needs: {_known(k for k in _SPEC if k != 'sources')}; "
                        f"or start from a preset with base = \"gc200\")")
    out: dict[str, Any] = {}
    for key, (kind, rule) in _SPEC.items():
        value = values.get(key, {} if key == "sources" else None)
        if kind == "str":
            if not isinstance(value, str) or not value.strip():
                raise ChipError(f"{where}: key {key!r} must be {rule}, got {value!r}")
            out[key] = value
        elif kind == "flops":
            if not isinstance(value, Mapping):
                raise ChipError(f"{where}: key {key!r} must be a table of "
                                f"{', '.join(FLOP_DTYPES)} -> FLOP per cycle per tile, "
                                f"got {value!r} ({type(value).__name__})")
            bad = [d for d in value if d not in FLOP_DTYPES]
            if bad:
                raise ChipError(f"{where}: key '{key}.{bad[0]}' is unknown "
                                f"(known keys: {_known(FLOP_DTYPES)})")
            lacking = [d for d in FLOP_DTYPES if d not in value]
            if lacking:
                raise ChipError(f"{where}: key '{key}.{lacking[0]}' is missing "
                                f"(needs: {_known(FLOP_DTYPES)})")
            out[key] = _FrozenDict(
                (d, _check_number(where, f"{key}.{d}", value[d], "float", rule))
                for d in FLOP_DTYPES)
        elif kind == "sources":
            if not isinstance(value, Mapping):
                raise ChipError(f"{where}: key 'sources' must be a table of field name -> "
                                f"citation string, got {type(value).__name__}")
            for k, v in value.items():
                if k not in _SPEC or k == "sources":
                    raise ChipError(f"{where}: key 'sources.{k}' names no chip field "
                                    f"(known keys: {_known(VALUE_FIELDS)})")
                if not isinstance(v, str):
                    raise ChipError(f"{where}: key 'sources.{k}' must be a string, "
                                    f"got {v!r} ({type(v).__name__})")
            out[key] = _FrozenDict(value)
        else:
            out[key] = _check_number(where, key, value, kind, rule)

    # sizes this simulator can hold (its per-tile arrays are dense over the tiles)
    for k, hi in LIMITS.items():
        if out[k] > hi:
            raise ChipError(f"{where}: key {k!r} must be at most {hi:,} ({LIMIT_REASON}), got {out[k]:,}")
    # relations between fields
    if out["tiles"] % out["tiles_per_supertile"]:
        raise ChipError(f"{where}: key 'tiles' must be a multiple of tiles_per_supertile "
                        f"({out['tiles_per_supertile']}), got {out['tiles']}")
    if out["sync_cycles_multi_chip"] < out["sync_cycles"]:
        raise ChipError(f"{where}: key 'sync_cycles_multi_chip' must be at least "
                        f"sync_cycles ({out['sync_cycles']}), got {out['sync_cycles_multi_chip']}")
    if out["links_per_chip"] > 0 and out["link_bytes_per_s"] <= 0:
        raise ChipError(f"{where}: key 'link_bytes_per_s' must be positive when "
                        f"links_per_chip is {out['links_per_chip']}, got {out['link_bytes_per_s']!r}")
    if out["streaming_memory_bytes"] > 0 and out["streaming_memory_bytes_per_s"] <= 0:
        raise ChipError(f"{where}: key 'streaming_memory_bytes_per_s' must be positive "
                        f"when streaming_memory_bytes is {out['streaming_memory_bytes']}, "
                        f"got {out['streaming_memory_bytes_per_s']!r}")
    return out


# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Chip:
    """One IPU-like chip. All rates are per chip unless the name says otherwise."""

    name: str
    tiles: int
    sram_bytes_per_tile: int
    workers_per_tile: int            # worker threads per tile (the supervisor is extra)
    clock_hz: float
    flops_per_cycle_per_tile: dict   # AMP peak FLOP / cycle / tile, keys fp32, fp16, int8
    vector_bytes_per_cycle: int      # per worker: the 64-bit load/store datapath
    exchange_bytes_per_cycle_per_tile: float
    tiles_per_supertile: int         # tiles sharing one exchange bus
    exchange_message_cycles: int     # fixed cost per exchange message (packet header, setup)
    sync_cycles: int                 # on-chip BSP sync
    sync_cycles_multi_chip: int      # BSP sync spanning several chips
    links_per_chip: int              # chip-to-chip links (IPU-Links)
    link_bytes_per_s: float          # per link, per direction
    link_latency_s: float
    host_link_bytes_per_s: float     # this chip's share of the host connection
    host_link_latency_s: float
    streaming_memory_bytes: int      # this chip's share of DRAM beside the chip (0: none)
    streaming_memory_bytes_per_s: float
    vertex_overhead_cycles: int      # launch cost of one vertex on one worker
    amp_entry_cycles: int = 0        # matrix unit: one worklist entry of one pass, one worker
    amp_pass_cycles: int = 0         # matrix unit: one pass (weights loaded), per tile
    mac_output_cycles: int = 0       # vector MACs: loop code of one dot product, one worker
    sources: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        where = f"chip {self.name!r}" if isinstance(self.name, str) else "chip"
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in _normalise(values, where).items():
            object.__setattr__(self, key, value)

    def __hash__(self):
        return hash(tuple(getattr(self, k) for k in _SPEC if k != "sources"))

    # -- derived -------------------------------------------------------------
    @property
    def total_sram_bytes(self) -> int:
        return self.tiles * self.sram_bytes_per_tile

    @property
    def workers_total(self) -> int:
        return self.tiles * self.workers_per_tile

    @property
    def supertiles(self) -> int:
        return self.tiles // self.tiles_per_supertile

    @property
    def exchange_bytes_per_s_total(self) -> float:
        """On-chip exchange bandwidth summed over all tiles (bytes/s)."""
        return self.tiles * self.exchange_bytes_per_cycle_per_tile * self.clock_hz

    @property
    def link_bytes_per_s_total(self) -> float:
        """All chip-to-chip links together, one direction (bytes/s)."""
        return self.links_per_chip * self.link_bytes_per_s

    def flops_per_cycle(self, dtype: str) -> float:
        """AMP FLOP per cycle per tile for ``dtype`` (Poplar aliases accepted)."""
        try:
            d = _canonical_dtype(dtype)
        except ValueError:
            d = str(dtype)
        if d not in self.flops_per_cycle_per_tile:
            raise ChipError(f"chip {self.name!r}: no matrix-unit rate for dtype {dtype!r} "
                            f"(known: {_known(self.flops_per_cycle_per_tile)})")
        return self.flops_per_cycle_per_tile[d]

    def peak_flops(self, dtype: str = "fp16") -> float:
        """Peak FLOP/s of the whole chip: tiles x clock x FLOP/cycle/tile."""
        return self.tiles * self.clock_hz * self.flops_per_cycle(dtype)

    def seconds(self, cycles: float) -> float:
        """Convert a cycle count at this chip's clock to seconds."""
        return cycles / self.clock_hz

    def cycles(self, seconds: float) -> float:
        """Convert seconds to (fractional) cycles at this chip's clock."""
        return seconds * self.clock_hz

    def host_transfer_cycles(self, nbytes: float, *, streaming: bool = False) -> float:
        """Cycles to move ``nbytes`` over this chip's host link: latency + bytes / rate.

        ``streaming=True``: to or from the streaming memory (its own rate where the chip
        has one, else the host link's).  The one home of this formula: the engine's host
        streams and offloaded tensors and the multi-chip host links all call it.

        >>> round(gc200.host_transfer_cycles(6.25e9 / 1000))   # (1 ms + 5 us) x 1.325 GHz
        1331625
        """
        rate = (self.streaming_memory_bytes_per_s or self.host_link_bytes_per_s) if streaming \
            else self.host_link_bytes_per_s
        return self.cycles(self.host_link_latency_s + nbytes / rate)

    # -- copies and reports ----------------------------------------------------
    def replace(self, **overrides) -> "Chip":
        """A validated copy with some fields changed (for sweeps).

        ``flops_per_cycle_per_tile`` may be given partially: the missing dtypes
        keep this chip's values. Overridden fields get the citation
        "override of <name>" unless ``sources`` is given as well."""
        unknown = [k for k in overrides if k not in _SPEC]
        if unknown:
            raise ChipError(f"chip {self.name!r}: unknown key {unknown[0]!r} "
                            f"(known keys: {_known(_SPEC)})")
        return Chip(**_merge(self, overrides, f"override of {self.name!r}"))

    def to_dict(self) -> dict:
        """Plain, JSON-ready dict: every field, plus a ``derived`` table."""
        d = {}
        for k in _SPEC:
            v = getattr(self, k)
            d[k] = dict(v) if isinstance(v, dict) else v
        d["derived"] = {
            "total_sram_bytes": self.total_sram_bytes,
            "peak_flops": {dt: self.peak_flops(dt) for dt in self.flops_per_cycle_per_tile},
            "exchange_bytes_per_s_total": self.exchange_bytes_per_s_total,
            "link_bytes_per_s_total": self.link_bytes_per_s_total,
        }
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Chip":
        """Inverse of :meth:`to_dict` (the ``derived`` table is ignored)."""
        return cls(**{k: v for k, v in d.items() if k != "derived"})

    def describe(self) -> str:
        return (f"{self.name}: {self.tiles} tiles x {self.sram_bytes_per_tile // 1024} KiB "
                f"({self.total_sram_bytes / 2**20:.0f} MiB), {self.clock_hz / 1e9:.3f} GHz, "
                f"{self.peak_flops('fp16') / 1e12:.1f} TFLOP/s fp16, "
                f"{self.exchange_bytes_per_s_total / 1e12:.2f} TB/s exchange")


def _merge(base: Chip, overrides: Mapping[str, Any], note: str) -> dict[str, Any]:
    """Fields of ``base`` with ``overrides`` applied; tables merge key by key."""
    values = {k: getattr(base, k) for k in _SPEC}
    for k, v in overrides.items():
        if k in ("flops_per_cycle_per_tile", "sources") and isinstance(v, Mapping):
            merged = dict(values[k])
            merged.update(v)
            values[k] = merged
        else:
            values[k] = v
    if not isinstance(values["sources"], Mapping):
        return values            # _normalise words the type error
    sources = dict(values["sources"])
    given = overrides.get("sources") or {}
    for k in overrides:
        if k in VALUE_FIELDS and k not in given:
            sources[k] = note
    values["sources"] = sources
    return values


# ---------------------------------------------------------------------------
# Presets. Every value cites its source; "CHOSEN" marks values with none.
_REF = "/work/shared/reference/ipu-hardware.md"
_JIA = "Jia et al. 2019, 'Dissecting the Graphcore IPU Architecture via Microbenchmarking' (arXiv 1912.03413)"
_LOGDOC = "Poplar compilation report excerpt, graphcore/tensorflow logging docs"
_M2000 = "IPU-M2000 datasheet (5,888 cores / 4 IPUs); Poplar OOM message 'tiles only have 638976'"
_POD64 = "IPU-POD64 datasheet (15.978 PFLOP/s FP16.16 over 64 IPUs)"
_BOW = "Bow-2000 datasheet / Bow Poplar compilation report"
_EXCH = "Poplar target exchangeBytesPerCycle = 4; Elk (MICRO'25): 5.5 GB/s per tile, ~8 TB/s"
_SUPER = ("PopLibs exchange estimators (lib/poplin/ExchangeEstimator.hpp, lib/popops/ExchangeEstimator.cpp): "
          "2 tiles per supertile, which can receive the same data in the same cycle (double-width "
          "exchange); each tile sends and receives at exchangeBytesPerCycle")
_SYNC = "Poplar target globalSyncCycles ~600 (IPU21 target dump, third party)"
_VEC = ("Jia et al. 2019: 64-bit load/store path per worker "
        "(31.1 TB/s read ceiling = 1216 tiles x 1.6 GHz x 16 B/cycle, i.e. 8 B/cycle x 2 per tile)")
_HOPS_NOTE = "PopLibs test utilities: 15 ns sync latency per IPU-Link hop"

#: IPU-Link sync latency per hop (PopLibs test utilities)
SYNC_HOP_LATENCY_S = 15e-9
#: CHOSEN: hops one way in a multi-chip sync (gather to the sync master, then release):
#: 8 covers the longest path of a 16-IPU ladder (IPU-POD16) end to end.
SYNC_HOPS_ASSUMED = 8


def multi_chip_sync_cycles(sync_cycles: int, clock_hz: float,
                           hops: int = SYNC_HOPS_ASSUMED,
                           hop_latency_s: float = SYNC_HOP_LATENCY_S) -> int:
    """On-chip sync plus a round trip (gather + release) over ``hops`` links."""
    return int(sync_cycles + math.ceil(2 * hops * hop_latency_s * clock_hz))


def _mk_sync_source(clock_hz: float) -> str:
    return (f"derived: sync_cycles + 2 x {SYNC_HOPS_ASSUMED} hops x 15 ns x "
            f"{clock_hz / 1e9:g} GHz ({_HOPS_NOTE}; hop count CHOSEN)")


# CHOSEN (no published figure) -- shared by all presets, recalibrate here:
#: exchange message fixed cost: one 4-byte packet header at 4 B/cycle plus ~3
#: cycles of send/receive instruction setup per message.
EXCHANGE_MESSAGE_CYCLES = 4
#: vertex launch on a worker: supervisor `run` + loading the vertex state
#: pointer + the codelet's prologue/epilogue; order of the fixed terms in
#: PopLibs cycle estimators.
VERTEX_OVERHEAD_CYCLES = 20

# The matrix unit's loop costs, from PopLibs' own cycle estimators for its AMP
# convolution vertices (lib/poplin/PerformanceEstimation.hpp, ConvPartialnx1 with half
# activations, half partials and 16 conv units: the Mk2 path).  A supervisor vertex runs
# one *pass* per (kernel position, input-channel group, output pass of 16 channels); in
# each pass the supervisor loads the weights into the AMP and starts the workers, and
# each worker walks its worklist of *entries* (runs of output positions).  In PopLibs'
# units (one issue of a worker every 6 cycles):
#: an entry of n >= 3 positions costs 3 + 34 + 4 (n - 3) - 9 (state retained) = 16 + 4n
#: issues (getConvPartialnx1WorkerCycles); 4n are the AMP's own work (the rate of
#: flops_per_cycle_per_tile), 16 issues x 6 cycles are the entry's overhead.
AMP_ENTRY_CYCLES = 16 * 6
#: a pass costs the supervisor 32 cycles of weight loads (16 conv units x 32 B at 16 B per
#: cycle) + 15 + 3 + (17 - 5) of loop code, + 9 waiting for the workers
#: (max(max, min + 9)), and each worker 17 + 1 issues to start (x 6 cycles) = 179 cycles
#: per tile (getConvPartialnx1SupervisorInnerLoopCycleEstimateHalfFloat /
#: ...KernelLoopCycleEstimateHalfFloat).  Mk2 figures; applied to GC2 too (same ISA loop).
AMP_PASS_CYCLES = 32 + 15 + 3 + (17 - 5) + 9 + (17 + 1) * 6
#: the vector-MAC (horizontal MAC) vertices' loop code per dot product (one output
#: element at one kernel position): getDenseDotProductCycles' rpt + wind down 3,
#: accumulate into the partials 3, branch 1 = 7 issues x 6 cycles (fp32 partials; the
#: per-position 7 issues of getConvPartialHorizontalMacCycleEstimate are left out).
MAC_OUTPUT_CYCLES = 7 * 6
#: IPU-Link data latency per hop (SerDes + link layer); the 15 ns figure is for
#: sync only, a data packet's latency is not published.
LINK_LATENCY_S = 200e-9
#: one IPU-Link, one direction, payload: 128 Gbit/s x 0.85 efficiency (PopLibs test
#: utilities model a link so).  The datasheets' 320 GB/s per GC200 chip is the raw rate of
#: 10 links x 2 directions x 16 GB/s; the model follows PopLibs for what data moves at.
LINK_BYTES_PER_S = 128e9 / 8 * 0.85
#: Mk2 host path: 2 x 100 Gbit/s RoCE per 4-IPU machine, shared by 4 chips.
MK2_HOST_LINK_BYTES_PER_S = 2 * 100e9 / 8 / 4
#: CHOSEN: Mk2 host latency: RoCE through the IPU-Gateway, a few microseconds.
MK2_HOST_LINK_LATENCY_S = 5e-6
#: CHOSEN: Mk2 streaming-memory bandwidth per chip. Not published; bounded by
#: the chip's PCIe Gen4 x16 port to the gateway (31.5 GB/s one way) and shared
#: DDR4 on the gateway, so take about two thirds of the port.
MK2_STREAMING_BYTES_PER_S = 20e9

_COMMON_SOURCES = {
    "workers_per_tile": f"{_JIA}; datasheets (8,832 threads / 1,472 tiles = 6)",
    "vector_bytes_per_cycle": _VEC,
    "exchange_bytes_per_cycle_per_tile": _EXCH,
    "tiles_per_supertile": _SUPER,
    "exchange_message_cycles": "CHOSEN: 1-cycle packet header + ~3 cycles send/receive setup (not published)",
    "sync_cycles": f"{_SYNC}; applied to every preset",
    "link_latency_s": "CHOSEN: 200 ns per hop for data (only the 15 ns sync figure is published)",
    "vertex_overhead_cycles": "CHOSEN: ~20 cycles per vertex launch (not published; calibrate)",
    "amp_entry_cycles": ("PopLibs lib/poplin/PerformanceEstimation.hpp getConvPartialnx1WorkerCycles "
                         "(half, 16 conv units): 16 issues of overhead per worklist entry x 6 cycles"),
    "amp_pass_cycles": ("PopLibs lib/poplin/PerformanceEstimation.hpp ConvPartialnx1 supervisor loop: "
                        "weight load 32 + loop 30 + worker sync 9 + worker start 18 issues x 6 = 179"),
    "mac_output_cycles": ("PopLibs lib/poplin/PerformanceEstimation.hpp getDenseDotProductCycles: "
                          "7 issues of loop per dot product x 6 cycles"),
}

gc2 = Chip(
    name="gc2",
    tiles=1216,                      # logging docs; Jia et al.
    sram_bytes_per_tile=256 * 1024,  # 256 KiB; logging docs; Jia et al. (304 MiB total)
    workers_per_tile=6,              # Jia et al.
    clock_hz=1.600e9,                # logging docs
    # 124.5 TF / (1216 x 1.6 GHz) = 64 fp16; 31.1 TF -> 16 fp32 (Jia et al.);
    # int8 CHOSEN = fp16 rate (no int8 AMP rate is published)
    flops_per_cycle_per_tile={"fp32": 16, "fp16": 64, "int8": 64},
    vector_bytes_per_cycle=8,        # 64-bit load/store path (Jia et al.)
    exchange_bytes_per_cycle_per_tile=4,   # Poplar exchangeBytesPerCycle; 7.8 TB/s aggregate
    tiles_per_supertile=2,           # PopLibs exchange estimator
    exchange_message_cycles=EXCHANGE_MESSAGE_CYCLES,   # CHOSEN
    sync_cycles=600,                 # globalSyncCycles (IPU21 target); applied to Mk1 too
    sync_cycles_multi_chip=multi_chip_sync_cycles(600, 1.600e9),   # derived: 984
    links_per_chip=10,               # CHOSEN: Mk2 count (10); C2 card's 192 + 128 GB/s = 10 x 32 GB/s
    link_bytes_per_s=LINK_BYTES_PER_S,     # 13.6 GB/s payload per direction (PopLibs 128 Gbit/s x 0.85)
    link_latency_s=LINK_LATENCY_S,   # CHOSEN
    host_link_bytes_per_s=31.5e9,    # PCIe Gen4 x16 (C2 card datasheet)
    host_link_latency_s=1e-6,        # CHOSEN: ~1 us PCIe round trip
    streaming_memory_bytes=0,        # none on Mk1
    streaming_memory_bytes_per_s=0.0,
    vertex_overhead_cycles=VERTEX_OVERHEAD_CYCLES,     # CHOSEN
    amp_entry_cycles=AMP_ENTRY_CYCLES,                 # PopLibs cycle estimator
    amp_pass_cycles=AMP_PASS_CYCLES,                   # PopLibs cycle estimator
    mac_output_cycles=MAC_OUTPUT_CYCLES,               # PopLibs cycle estimator
    sources={
        **_COMMON_SOURCES,
        "tiles": f"{_LOGDOC}; {_JIA}",
        "sram_bytes_per_tile": f"{_LOGDOC}; {_JIA} (256 KiB, 304 MiB per chip)",
        "clock_hz": f"{_LOGDOC} (1.6 GHz)",
        "flops_per_cycle_per_tile": (f"derived from {_JIA}: 124.5 TFLOP/s fp16 and 31.1 TFLOP/s fp32 "
                                     "/ (1216 tiles x 1.6 GHz); int8 CHOSEN = fp16 rate (not published)"),
        "sync_cycles_multi_chip": _mk_sync_source(1.6e9),
        "links_per_chip": ("CHOSEN: 10 as on Mk2; consistent with the C2 card's 192 GB/s between its two "
                           "IPUs + 128 GB/s card to card = 320 GB/s = 10 links x 2 x 16 GB/s (legacy drivers README)"),
        "link_bytes_per_s": "PopLibs test utilities: 128 Gbit/s per link per direction x 0.85 efficiency (payload)",
        "host_link_bytes_per_s": "C2 card: PCIe Gen4 x16, 31.5 GB/s (vendor datasheet)",
        "host_link_latency_s": "CHOSEN: ~1 us (typical PCIe round trip; not published)",
        "streaming_memory_bytes": "Mk1 has no streaming memory (datasheets)",
        "streaming_memory_bytes_per_s": "Mk1 has no streaming memory (datasheets)",
    },
)

_MK2_SOURCES = {
    **_COMMON_SOURCES,
    "tiles": f"{_M2000}; {_LOGDOC}",
    "sram_bytes_per_tile": f"{_M2000} (624 KiB)",
    "links_per_chip": "IPU-M2000 / Elk (MICRO'25): 10 IPU-Links, 320 GB/s per chip",
    "link_bytes_per_s": ("PopLibs test utilities: 128 Gbit/s per link per direction x 0.85 efficiency "
                         "= 13.6 GB/s of payload; the datasheets' 320 GB/s per chip (Elk) is the raw "
                         "10 links x 2 directions x 16 GB/s, so payload is 272 GB/s"),
    "host_link_bytes_per_s": "derived: 2 x 100 Gbit/s RoCE host links per 4-IPU machine / 4 chips (datasheets)",
    "host_link_latency_s": "CHOSEN: 5 us (RoCE through the IPU-Gateway; not published)",
    "streaming_memory_bytes_per_s": ("CHOSEN: 20 GB/s per chip (not published; below the chip's PCIe Gen4 "
                                     "x16 port to the gateway, 31.5 GB/s)"),
}

gc200 = Chip(
    name="gc200",
    tiles=1472,                      # IPU-M2000 datasheet (5,888 / 4)
    sram_bytes_per_tile=638_976,     # 624 KiB; Poplar OOM message
    workers_per_tile=6,              # datasheets: 8,832 threads / 1,472 tiles
    clock_hz=1.325e9,                # derived: 15.978 PF / 64 IPUs / (1472 x 128) (POD64 datasheet)
    # 128 fp16 and 32 fp32: 249.7 / 62.4 TF / (1472 x 1.325 GHz); int8 CHOSEN = fp16 rate
    flops_per_cycle_per_tile={"fp32": 32, "fp16": 128, "int8": 128},
    vector_bytes_per_cycle=8,        # 64-bit load/store path
    exchange_bytes_per_cycle_per_tile=4,   # exchangeBytesPerCycle; Elk 5.5 GB/s per tile
    tiles_per_supertile=2,           # PopLibs exchange estimator
    exchange_message_cycles=EXCHANGE_MESSAGE_CYCLES,   # CHOSEN
    sync_cycles=600,                 # globalSyncCycles (IPU21 target dump)
    sync_cycles_multi_chip=multi_chip_sync_cycles(600, 1.325e9),   # derived: 918
    links_per_chip=10,               # 10 IPU-Links, 320 GB/s (Elk; M2000)
    link_bytes_per_s=LINK_BYTES_PER_S,     # 128 Gbit/s x 0.85 per direction (PopLibs)
    link_latency_s=LINK_LATENCY_S,   # CHOSEN
    host_link_bytes_per_s=MK2_HOST_LINK_BYTES_PER_S,   # derived: 2 x 100 GbE / 4 = 6.25 GB/s
    host_link_latency_s=MK2_HOST_LINK_LATENCY_S,       # CHOSEN
    streaming_memory_bytes=112 * 10**9,                # 448 GB per 4-IPU M2000 / 4
    streaming_memory_bytes_per_s=MK2_STREAMING_BYTES_PER_S,   # CHOSEN
    vertex_overhead_cycles=VERTEX_OVERHEAD_CYCLES,     # CHOSEN
    amp_entry_cycles=AMP_ENTRY_CYCLES,                 # PopLibs cycle estimator
    amp_pass_cycles=AMP_PASS_CYCLES,                   # PopLibs cycle estimator
    mac_output_cycles=MAC_OUTPUT_CYCLES,               # PopLibs cycle estimator
    sources={
        **_MK2_SOURCES,
        "clock_hz": f"derived: {_POD64} / 64 / (1472 x 128 FLOP/cycle) = 1.325 GHz",
        "flops_per_cycle_per_tile": (f"derived from {_POD64}: 249.7 TFLOP/s fp16, 62.4 fp32 / "
                                     "(1472 x 1.325 GHz); int8 CHOSEN = fp16 rate (not published)"),
        "sync_cycles_multi_chip": _mk_sync_source(1.325e9),
        "streaming_memory_bytes": "IPU-M2000 datasheet: up to 448 GB per 4-IPU machine / 4 chips",
    },
)

bow = Chip(
    name="bow",
    tiles=1472,                      # Bow-2000 datasheet (same die as GC200)
    sram_bytes_per_tile=638_976,     # 624 KiB
    workers_per_tile=6,
    clock_hz=1.850e9,                # Bow Poplar report (1.85 GHz)
    # 1472 x 1.85 GHz x 128 = 348.6 TF (datasheet: 350); fp32 32 -> 87.1 TF; int8 CHOSEN = fp16
    flops_per_cycle_per_tile={"fp32": 32, "fp16": 128, "int8": 128},
    vector_bytes_per_cycle=8,
    exchange_bytes_per_cycle_per_tile=4,
    tiles_per_supertile=2,
    exchange_message_cycles=EXCHANGE_MESSAGE_CYCLES,   # CHOSEN
    sync_cycles=600,                 # globalSyncCycles (IPU21 target dump)
    sync_cycles_multi_chip=multi_chip_sync_cycles(600, 1.850e9),   # derived: 1044
    links_per_chip=10,               # same Mk2 IPU-Links
    link_bytes_per_s=LINK_BYTES_PER_S,     # 128 Gbit/s x 0.85 per direction (PopLibs)
    link_latency_s=LINK_LATENCY_S,   # CHOSEN
    host_link_bytes_per_s=MK2_HOST_LINK_BYTES_PER_S,   # 2 x 100 Gbit/s gateway links / 4 IPUs
    host_link_latency_s=MK2_HOST_LINK_LATENCY_S,       # CHOSEN
    streaming_memory_bytes=64 * 10**9,                 # 256 GB per Bow-2000 / 4
    streaming_memory_bytes_per_s=MK2_STREAMING_BYTES_PER_S,   # CHOSEN
    vertex_overhead_cycles=VERTEX_OVERHEAD_CYCLES,     # CHOSEN
    amp_entry_cycles=AMP_ENTRY_CYCLES,                 # PopLibs cycle estimator
    amp_pass_cycles=AMP_PASS_CYCLES,                   # PopLibs cycle estimator
    mac_output_cycles=MAC_OUTPUT_CYCLES,               # PopLibs cycle estimator
    sources={
        **_MK2_SOURCES,
        "tiles": f"{_BOW} (same Mk2 die: 1,472 tiles)",
        "sram_bytes_per_tile": f"{_BOW} (624 KiB)",
        "clock_hz": f"{_BOW}: 1.85 GHz",
        "flops_per_cycle_per_tile": (f"{_BOW}: 350 TFLOP/s fp16 / (1472 x 1.85 GHz) = 128 (Mk2 AMP); "
                                     "fp32 32 as GC200; int8 CHOSEN = fp16 rate (not published)"),
        "sync_cycles_multi_chip": _mk_sync_source(1.85e9),
        "links_per_chip": "Bow-2000 datasheet: same Mk2 IPU-Links as GC200 (10 per chip)",
        "link_bytes_per_s": ("PopLibs test utilities: 128 Gbit/s per link per direction, as GC200 "
                             "(the datasheet's 512 Gbit/s IPU-Link figure is not broken down per link)"),
        "host_link_bytes_per_s": "derived: Bow-2000 2 x 100 Gbit/s gateway links / 4 chips",
        "streaming_memory_bytes": "Bow-2000 datasheet: up to 256 GB per 4-IPU machine / 4 chips",
    },
)

PRESETS: dict[str, Chip] = {c.name: c for c in (gc2, gc200, bow)}


def list_chips() -> list[str]:
    """Names of the built-in presets."""
    return sorted(PRESETS)


# ---------------------------------------------------------------------------
# TOML
_MAX_BASE_DEPTH = 8


def _load_toml(path: Path, where: str) -> dict:
    if not path.is_file():
        raise ChipError(f"{where}: no such chip file" + (" (it is a directory)" if path.exists() else ""))
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ChipError(f"{where}: malformed TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ChipError(f"{where}: cannot read chip file: {exc}") from None


def chip_from_toml(path, _depth: int = 0) -> Chip:
    """Read a chip from a TOML file.

    Either every field is given, or ``base = "<preset or other .toml>"`` names a
    starting chip and the file overrides some fields. ``name`` defaults to the
    file's stem. A relative ``base`` path is resolved beside the file."""
    path = Path(path)
    where = str(path)
    if _depth > _MAX_BASE_DEPTH:
        raise ChipError(f"{where}: key 'base' nests more than {_MAX_BASE_DEPTH} files deep "
                        "(a cycle?)")
    data = _load_toml(path, where)
    unknown = [k for k in data if k not in _SPEC and k != "base"]
    if unknown:
        raise ChipError(f"{where}: unknown key {unknown[0]!r} "
                        f"(known keys: base, {_known(_SPEC)})")
    data.setdefault("name", path.stem)
    base_name = data.pop("base", None)
    if base_name is None:
        values = data
        sources = dict(values.get("sources", {}))
        if isinstance(values.get("sources", {}), Mapping):
            for k in VALUE_FIELDS:
                if k in values and k not in sources:
                    sources[k] = f"set in {path.name}"
            values["sources"] = sources
    else:
        if not isinstance(base_name, str):
            raise ChipError(f"{where}: key 'base' must be a preset name "
                            f"({', '.join(list_chips())}) or a .toml path, got {base_name!r}")
        if _looks_like_path(base_name):
            bpath = Path(base_name)
            if not bpath.is_absolute():
                bpath = path.parent / bpath
            try:
                base = chip_from_toml(bpath, _depth + 1)
            except ChipError as exc:
                raise ChipError(f"{where}: key 'base': {exc}") from None
        else:
            base = PRESETS.get(base_name.lower())
            if base is None:
                raise ChipError(f"{where}: key 'base' names unknown chip {base_name!r} "
                                f"(known presets: {', '.join(list_chips())})")
        values = _merge(base, data, f"set in {path.name} (base {base.name})")
    return Chip(**_normalise(values, where))


def _looks_like_path(s: str) -> bool:
    return s.endswith(".toml") or "/" in s or "\\" in s


def get_chip(name_or_path) -> Chip:
    """A preset by name (case-insensitive), a chip from a ``.toml`` path, or a Chip."""
    if isinstance(name_or_path, Chip):
        return name_or_path
    if isinstance(name_or_path, Path) or _looks_like_path(str(name_or_path)):
        return chip_from_toml(name_or_path)
    key = str(name_or_path).strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    raise ChipError(f"unknown chip {name_or_path!r} (known presets: {', '.join(list_chips())}; "
                    "or give the path of a .toml file)")
