"""Design-space sweeps: the cross product of compile / simulate options and chip fields.

A sweep file is TOML. Every key is a parameter of the point; a list is an axis
of the cross product, a single value is the same for every point::

    model = ["mnist-mlp", "alexnet"]      # built-in names or .onnx paths
    chip = "gc200"                        # the base chip (preset or .toml)
    tiles = [736, 1472]                   # chip fields -> get_chip(chip).replace(...)
    sram_bytes_per_tile = [638976, 1048576]
    batch = [1, 4]                        # anything else -> a run option (simulator.config.RunConfig)
    train = false
    simulate = true                       # reserved: simulate each point (default true)

Keys: ``model`` (required), ``chip`` (default ``"gc200"``), any chip field
(``hardware.chips.VALUE_FIELDS``: ``tiles``, ``sram_bytes_per_tile``,
``clock_hz``, ``exchange_bytes_per_cycle_per_tile`` ...), and any field of
:class:`simulator.config.RunConfig` (``batch``, ``train``, ``dtype``, ``ipus``, ``mode``,
``available_memory_proportion`` ... and whatever options it grows later).
A parameter that is none of these is recorded as that point's error.

Each point gives one row: its parameters, ``point_id`` (a stable hash of the
parameters), ``error`` (``None`` or ``"ErrorType: message"``), ``wall_s`` and
the report flattened with dotted names (``model.name``, ``graph.vertices``,
``memory.fits``, ``memory.peak_tile_bytes``, ``sim.samples_per_second``,
``sim.seconds`` ...; lists such as ``memory.worst_tiles`` as JSON text).

Results are checkpointed one JSON file per point in ``<out>.parts/``; a sweep
that is interrupted and run again skips the points already there. The
combined table is written to ``<out>`` (parquet, or CSV when the name ends in
``.csv``) at the end, and also when the sweep is interrupted.

    >>> spec = SweepSpec.from_dict({"model": "mnist-mlp", "tiles": [368, 736], "batch": [1, 2]})
    >>> len(spec.points())
    4
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .config import ConfigError, RunConfig
from .report import jsonable
from .run import run

__all__ = ["SweepError", "SweepSpec", "SweepResult", "load_sweep", "point_id", "point_config",
           "evaluate_point", "flatten_report", "run_sweep", "read_results", "RESERVED"]

#: keys of a sweep file that are not parameters of a point
RESERVED = ("simulate", "name", "description")


#: CHOSEN: the most points one sweep file may make (each is a compile; the list of points and
#: the results table are held in memory)
MAX_POINTS = 1_000_000


class SweepError(ValueError):
    """A sweep file or a sweep parameter is invalid."""


# ---------------------------------------------------------------------------------------
# the points
@dataclass
class SweepSpec:
    """Fixed parameters, swept axes (in file order) and whether to simulate."""

    axes: dict[str, list]
    fixed: dict[str, Any]
    simulate: bool = True
    name: str = "sweep"
    source: str = "<dict>"

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "SweepSpec":
        axes, fixed = {}, {}
        simulate = d.get("simulate", True)
        if not isinstance(simulate, bool):
            raise SweepError(f"{source}: 'simulate' must be true or false, got {simulate!r}")
        for k, v in d.items():
            if k in RESERVED:
                continue
            if isinstance(v, dict):
                raise SweepError(f"{source}: key {k!r} is a table; a parameter is a value or a "
                                 f"list of values (tables are not supported)")
            if isinstance(v, list):
                if not v:
                    raise SweepError(f"{source}: key {k!r} is an empty list (an axis needs values)")
                kinds = {_kind(x) for x in v}
                if len(kinds) > 1:   # one column of the results table holds one type
                    raise SweepError(f"{source}: key {k!r} mixes {' and '.join(sorted(kinds))} values "
                                     f"({', '.join(repr(x) for x in v[:4])}); give one kind")
                axes[k] = list(v)
            else:
                fixed[k] = v
        if "model" not in axes and "model" not in fixed:
            raise SweepError(f"{source}: no 'model' key (a built-in name, an .onnx path or a list)")
        n = math.prod(len(v) for v in axes.values())
        if n > MAX_POINTS:
            raise SweepError(f"{source}: {n:,} points ({' x '.join(f'{k} {len(v)}' for k, v in axes.items())}); "
                             f"a sweep runs at most {MAX_POINTS:,}: split it into several files")
        return cls(axes=axes, fixed=fixed, simulate=simulate, name=str(d.get("name", Path(source).stem)),
                   source=source)

    def points(self) -> list[dict]:
        """Every point of the cross product, as ``{parameter: value}`` (fixed ones included)."""
        keys = list(self.axes)
        out = []
        for combo in itertools.product(*(self.axes[k] for k in keys)):
            p = dict(self.fixed)
            p.update(zip(keys, combo))
            out.append(p)
        return out

    def __len__(self):
        return math.prod(len(v) for v in self.axes.values())


def _kind(x) -> str:
    """The results-table type of a parameter value: text, number (int and float mix), flag."""
    if isinstance(x, bool):
        return "true/false"
    if isinstance(x, (int, float)):
        return "number"
    if isinstance(x, str):
        return "text"
    return type(x).__name__


def load_sweep(path) -> SweepSpec:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such sweep file")
    if path.is_dir():
        raise SweepError(f"{path}: is a folder; give a sweep .toml file")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: not valid TOML: {e}") from None
    return SweepSpec.from_dict(d, source=str(path))


def point_id(params: dict, simulate: bool = True) -> str:
    """A stable 16-hex-digit hash of a point's parameters (and whether it is simulated)."""
    blob = json.dumps({"params": params, "simulate": bool(simulate)}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# one point
def point_config(params: dict) -> RunConfig:
    """A point's parameters -> its run configuration (chip fields override the chip's values).
    An unknown parameter or a bad value raises :class:`SweepError` naming it (a bad chip
    field, :class:`hardware.chips.ChipError`)."""
    params = dict(params)
    if "model" not in params:
        raise SweepError("point has no 'model'")
    try:
        return RunConfig.from_dict(params)
    except ConfigError as e:
        raise SweepError(e.args[0]) from None


def flatten_report(rep: dict, prefix: str = "") -> dict:
    """Nested report -> ``{"section.key": scalar}``; lists become JSON text."""
    out = {}
    for k, v in rep.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_report(v, name + "."))
        elif isinstance(v, (list, tuple)):
            out[name] = json.dumps(jsonable(v))
        else:
            out[name] = jsonable(v)
    return out


def evaluate_point(params: dict, simulate: bool = True) -> dict:
    """Compile (and simulate) one point; never raises: a failure is the row's ``error``."""
    t0 = time.perf_counter()
    row = {"point_id": point_id(params, simulate)}
    row.update({k: jsonable(v) for k, v in params.items()})
    try:
        rep = run(point_config(params), simulate=simulate).report
        flat = flatten_report(rep)
        row["error"] = None
    except Exception as e:  # noqa: BLE001 - a failed point is data
        msg = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
        row["error"] = f"{type(e).__name__}: {msg}"
        flat = {}
    row["wall_s"] = time.perf_counter() - t0
    row.update(flat)
    return row


def _evaluate_task(args):
    return evaluate_point(*args)


# ---------------------------------------------------------------------------------------
# checkpoints and results
def parts_dir(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _write_part(parts: Path, row: dict):
    parts.mkdir(parents=True, exist_ok=True)
    final = parts / f"{row['point_id']}.json"
    tmp = parts / f".{row['point_id']}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(jsonable(row), f)
    os.replace(tmp, final)


def _read_parts(parts: Path) -> dict[str, dict]:
    done = {}
    if not parts.is_dir():
        return done
    for p in parts.glob("*.json"):
        try:
            with open(p) as f:
                row = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue  # a torn file (cannot happen with os.replace, but be safe): run it again
        done[row.get("point_id", p.stem)] = row
    return done


def rows_to_frame(rows: list[dict], columns_first: Iterable[str] = ()):
    import pandas as pd
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    first = [c for c in ["point_id", *columns_first, "error", "wall_s"] if c in df.columns]
    rest = [c for c in df.columns if c not in first]
    df = df[first + rest]
    for c in df.columns:
        s = df[c].dropna()
        if len(s) and len(s) < len(df) and all(isinstance(x, bool) for x in s):
            df[c] = df[c].astype("boolean")      # True / False / <NA> for failed points
        elif (len(s) and len(s) < len(df) and str(df[c].dtype) == "float64"
              and all(isinstance(x, int) and not isinstance(x, bool) for r in rows for x in [r.get(c)] if x is not None)):
            df[c] = df[c].astype("Int64")        # integers stay integers beside failed points
        elif c == "error":
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def write_results(df, out):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".csv":
        df.to_csv(tmp, index=False)
    else:
        df.to_parquet(tmp, index=False)
    os.replace(tmp, out)


def read_results(path):
    import pandas as pd
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such results file")
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


@dataclass
class SweepResult:
    frame: Any                       # pandas DataFrame, one row per point, in sweep order
    ran: list = field(default_factory=list)       # point ids evaluated by this call
    skipped: list = field(default_factory=list)   # point ids found in the checkpoint
    interrupted: bool = False

    @property
    def errors(self) -> int:
        return int(self.frame["error"].notna().sum()) if len(self.frame) else 0


def _cost(p: dict) -> float:
    """A rough size of a point, to start the big ones first (less idle tail)."""
    c = 1.0
    for k in ("tiles", "ipus", "batch"):
        v = p.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            c *= v
    return c * (3.0 if p.get("train") else 1.0)


def run_sweep(spec, out, *, workers: int | None = None, dask: Any = None, retry_failed: bool = False,
              on_start: Callable[[int, int], None] | None = None,
              on_result: Callable[[dict], None] | None = None) -> SweepResult:
    """Run every point of ``spec`` (a SweepSpec, a dict or a .toml path) not already done.

    ``workers``: processes on this machine (default: the number of cores; 1 runs in this
    process). ``dask``: a scheduler address (or a ``distributed.Client``) to run on instead.
    ``on_start(total, to_run)`` and ``on_result(row)`` report progress.
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = load_sweep(spec)
    elif isinstance(spec, dict):
        spec = SweepSpec.from_dict(spec)
    points = spec.points()
    ids = [point_id(p, spec.simulate) for p in points]
    parts = parts_dir(out)
    done = _read_parts(parts)
    if retry_failed:
        done = {k: r for k, r in done.items() if r.get("error") is None}
    todo, seen = [], set()
    for pid, p in zip(ids, points):
        if pid not in done and pid not in seen:
            seen.add(pid)
            todo.append((pid, p))
    todo.sort(key=lambda t: -_cost(t[1]))
    result = SweepResult(frame=None, skipped=[i for i in ids if i in done])
    if on_start:
        on_start(len(points), len(todo))

    def record(row):
        _write_part(parts, row)
        done[row["point_id"]] = row
        result.ran.append(row["point_id"])
        if on_result:
            on_result(row)

    try:
        if todo:
            if dask is not None:
                _run_dask(dask, todo, spec.simulate, record)
            else:
                n = workers or os.cpu_count() or 1
                if n <= 1 or len(todo) == 1:
                    for _, p in todo:
                        record(evaluate_point(p, spec.simulate))
                else:
                    _run_local(min(n, len(todo)), todo, spec.simulate, record)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        rows = [done[i] for i in dict.fromkeys(ids) if i in done]
        axes_first = list(spec.axes) + [k for k in spec.fixed]
        result.frame = rows_to_frame(rows, axes_first)
        if len(result.frame):
            write_results(result.frame, out)
    return result


def _run_local(n, todo, simulate, record):
    import multiprocessing as mp
    ex = ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"))
    interrupted = False
    try:
        futs = {ex.submit(_evaluate_task, (p, simulate)): (pid, p) for pid, p in todo}
        for fut in as_completed(futs):
            pid, p = futs[fut]
            try:
                row = fut.result()
            except Exception as e:  # noqa: BLE001 - e.g. a worker killed for memory
                row = {"point_id": pid, **p, "error": f"{type(e).__name__}: {e}", "wall_s": None}
            record(row)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        ex.shutdown(wait=not interrupted, cancel_futures=True)


#: CHOSEN: seconds to wait for a Dask scheduler before saying it cannot be reached
DASK_CONNECT_TIMEOUT_S = 10


def _run_dask(dask, todo, simulate, record):
    import distributed
    if isinstance(dask, distributed.Client):
        client = dask
    else:
        try:
            client = distributed.Client(dask, timeout=DASK_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as e:
            raise SweepError(f"--dask {dask!r}: cannot reach the scheduler within {DASK_CONNECT_TIMEOUT_S} s "
                             f"({type(e).__name__}: {e})") from None
    try:
        futs = client.map(evaluate_point, [p for _, p in todo], simulate=simulate, pure=False,
                          key=[f"ipusim-point-{pid}" for pid, _ in todo])
        owner = {f.key: (pid, p) for f, (pid, p) in zip(futs, todo)}
        for fut in distributed.as_completed(futs):
            pid, p = owner[fut.key]
            try:
                row = fut.result()
            except Exception as e:  # noqa: BLE001
                row = {"point_id": pid, **p, "error": f"{type(e).__name__}: {e}", "wall_s": None}
            record(row)
    finally:
        if client is not dask:
            client.close()
