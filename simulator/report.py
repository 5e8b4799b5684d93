"""The simulation report: cycles, phases, per-tile utilisation, Chrome trace.

Every figure is computed here from what the engine recorded, so each number a
user sees can be traced to one function.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np


def jsonable(v):
    """``v`` with numpy scalars and arrays made plain Python (dict keys as strings), for JSON.

    >>> jsonable({1: np.float32(0.5), "a": (np.arange(2),)})
    {'1': 0.5, 'a': [[0, 1]]}
    """
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


class ReportError(ValueError):
    """A report that JSON cannot hold (a non-finite number)."""


def json_text(report, indent=2) -> str:
    """``report`` as JSON text; :class:`ReportError` naming the first non-finite value (JSON has no
    Infinity / NaN: a file with them is not JSON) instead of writing it.

    >>> json_text({"sim": {"cycles": float("inf")}})
    Traceback (most recent call last):
    ...
    simulator.report.ReportError: report: sim.cycles is inf, which JSON cannot hold (a chip value out of any physical range, e.g. a rate near 0, makes times overflow)
    """
    v = jsonable(report)
    try:
        return json.dumps(v, indent=indent, allow_nan=False)
    except ValueError:
        path = _non_finite(v, "")
        chip = v.get("chip", {}).get("name") if isinstance(v, dict) and isinstance(v.get("chip"), dict) else None
        raise ReportError(f"report: {path[0]} is {path[1]}, which JSON cannot hold (a "
                          f"{f'value of chip {chip!r}' if chip else 'chip value'} out of any physical range, e.g. "
                          f"a rate near 0, makes times overflow)") from None


def _non_finite(v, where):
    if isinstance(v, float) and not math.isfinite(v):
        return where, v
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, x in items:
        found = _non_finite(x, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


@dataclass
class SimReport:
    chip: object
    num_tiles: int
    tiles_per_chip: int
    ipus: int = 1
    steps: list = field(default_factory=list)
    cycles: float = 0.0
    control_cycles: float = 0.0
    host_bytes: int = 0
    host_transfer_cycles: float = 0.0
    stream_wait_cycles: float = 0.0
    remote_bytes: int = 0          # bytes moved to / from streaming memory (offloaded tensors)
    remote_cycles: float = 0.0
    link_bytes: int = 0
    exchange_bytes: int = 0
    vertices_executed: int = 0
    flops_executed: float = 0.0
    samples: int = 1
    tile_busy: np.ndarray = None

    def __post_init__(self):
        self.tile_busy = np.zeros(self.num_tiles, np.float64)

    # -- recording (called by the engine) ---------------------------------------------
    def add_step(self, name, start, compute, sync, exchange, *, csid=None, tiles=None,
                 tile_cycles=None, vertices=0, flops=0.0, plan=None, plan2=None,
                 link_cycles=0.0, host_wait=0.0):
        self.steps.append({"name": name, "start": float(start), "compute": float(compute),
                           "sync": float(sync), "exchange": float(exchange), "cs": csid,
                           "link": float(link_cycles), "host_wait": float(host_wait)})
        if tiles is not None and len(tiles):
            np.add.at(self.tile_busy, tiles.astype(np.int64), tile_cycles)
        self.vertices_executed += int(vertices)
        self.flops_executed += float(flops)
        for p in (plan, plan2):
            if p is not None:
                self.exchange_bytes += p.total_bytes
                self.link_bytes += int(sum(p.chip_bytes.values()))

    def finish(self, now):
        self.cycles = float(now)

    # -- figures --------------------------------------------------------------------------
    def _sum(self, key):
        return float(sum(s[key] for s in self.steps))

    @property
    def supersteps(self) -> int:
        return sum(1 for s in self.steps if s["cs"] is not None)

    @property
    def compute_cycles(self) -> float:
        return self._sum("compute")

    @property
    def exchange_cycles(self) -> float:
        return self._sum("exchange")

    @property
    def sync_cycles(self) -> float:
        return self._sum("sync")

    @property
    def seconds(self) -> float:
        return self.chip.seconds(self.cycles)

    @property
    def tile_utilisation(self) -> np.ndarray:
        return self.tile_busy / self.cycles if self.cycles else np.zeros_like(self.tile_busy)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    @property
    def hidden_transfer_fraction(self) -> float:
        if self.host_transfer_cycles <= 0:
            return 1.0
        return max(0.0, 1.0 - self.stream_wait_cycles / self.host_transfer_cycles)

    def per_ipu(self) -> list:
        out = []
        for i in range(self.ipus):
            busy = self.tile_busy[i * self.tiles_per_chip:(i + 1) * self.tiles_per_chip]
            out.append({"ipu": i, "busy_cycles": float(busy.sum()),
                        "utilisation": float(busy.mean() / self.cycles) if self.cycles else 0.0})
        return out

    def to_dict(self) -> dict:
        return {
            "cycles": self.cycles, "seconds": self.seconds, "supersteps": self.supersteps,
            "compute_cycles": self.compute_cycles, "exchange_cycles": self.exchange_cycles,
            "sync_cycles": self.sync_cycles, "control_cycles": self.control_cycles,
            "samples_per_second": self.samples_per_second,
            "vertices_executed": self.vertices_executed, "flops_executed": self.flops_executed,
            "achieved_flops_per_second": self.flops_executed / self.seconds if self.seconds else 0.0,
            "exchange_bytes": self.exchange_bytes, "link_bytes": self.link_bytes,
            "host_bytes": self.host_bytes, "hidden_transfer_fraction": self.hidden_transfer_fraction,
            "mean_tile_utilisation": float(self.tile_utilisation.mean()),
            "max_tile_utilisation": float(self.tile_utilisation.max()) if self.num_tiles else 0.0,
            "per_ipu": self.per_ipu(), "clock_hz": self.chip.clock_hz,
            "remote_bytes": self.remote_bytes, "remote_cycles": self.remote_cycles,
        }

    def to_json(self, path):
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    def chrome_trace(self, path=None, names=None) -> dict:
        """Trace-event JSON (opens in Perfetto / chrome://tracing); times in microseconds.

        One track per phase kind (exchange / compute / sync / host) per chip.
        """
        us = 1e6 / self.chip.clock_hz
        ev = []
        for pid in range(self.ipus):
            ev.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"IPU {pid}"}})
            for tid, n in enumerate(("exchange", "compute", "sync", "host")):
                ev.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": n}})
        for s in self.steps:
            t = s["start"]
            xin = s["exchange"] if s["cs"] is None else 0.0
            phases = []
            if s["host_wait"]:
                phases.append(("host", s["host_wait"]))
            if s["cs"] is not None:
                phases += [("compute", s["compute"]), ("sync", s["sync"]), ("exchange", s["exchange"])]
            else:
                phases += [("exchange", xin), ("sync", s["sync"])]
            for kind, dur in phases:
                if dur <= 0:
                    continue
                tid = ("exchange", "compute", "sync", "host").index(kind)
                for pid in range(self.ipus):
                    ev.append({"ph": "X", "name": s["name"], "cat": kind, "pid": pid, "tid": tid,
                               "ts": t * us, "dur": dur * us})
                t += dur
        trace = {"traceEvents": ev, "displayTimeUnit": "ns"}
        if path:
            with open(path, "w") as f:
                json.dump(trace, f)
        return trace
