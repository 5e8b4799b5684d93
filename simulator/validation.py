"""Validation: the simulator's predictions beside published measurements.

    ipusim validate [--slow] [--write docs/validation.md]
    python -m simulator.validation [--slow] [--write docs/validation.md]

Every row runs the simulator (a microbenchmark program through the engine, the
link model, or a model build) and puts its prediction beside a published
figure, with the relative error ``(predicted - published) / published``.
Rows marked "by construction" check a preset against the figure it was
derived from (they guard the calibration: a change to the chip data breaks
them).  ``--slow`` adds the rows that compile a whole network: ResNet-50
inference, and the measured systems (:data:`SYSTEMS`): each runs a shipped
run configuration (``ipusim simulate --preset NAME``) and compares its
throughput with the ``[measured]`` figure of the same preset file, so the
measurement is written once.  tests/test_validation.py holds every fast row
within its ``tolerance`` (rows with a ``known_gap`` are expected outside it
until the gap is closed; the table flags them); bench/bench_mlperf.py runs the
system rows with their wall times.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import simpy

from compiler.executable import compile_program
from compiler.graph import Graph
from compiler.program import Copy, Execute
from hardware.chips import gc2, gc200
from models import get_model
from models.isolated import call_forked

from .config import RunConfig, load_preset
from .engine import Engine
from .links import Network
from .run import run

#: the measured systems of the validation table: presets with a ``[measured]`` figure (MLPerf Training)
SYSTEMS = ("mlperf-v1.0-resnet50-pod16", "mlperf-v2.0-resnet50-bow-pod16", "mlperf-v1.0-bert-large-pod16")
#: tolerance of the microbenchmark rows (exchange, sync, links, host link)
MICROBENCHMARK_TOLERANCE = 0.10

JIA = "Jia et al. 2019, arXiv 1912.03413"
REF = "/work/shared/reference/ipu-hardware.md"


def _row(name, published, predicted, unit, source, how, tolerance, note="", known_gap=None):
    err = (predicted - published) / published if published else float("nan")
    return {"name": name, "published": published, "predicted": predicted, "unit": unit, "source": source,
            "how": how, "error": err, "tolerance": tolerance, "ok": abs(err) <= tolerance, "note": note,
            "known_gap": known_gap}


def _exchange_copy(chip, pairs_fn, nbytes_per_tile):
    """Engine time of one Copy where tile t sends ``nbytes_per_tile`` to tile pairs_fn(t)."""
    n = nbytes_per_tile // 4
    g = Graph(chip)
    T = chip.tiles
    src = g.add_variable("fp32", (T * n,), "src")
    dst = g.add_variable("fp32", (T * n,), "dst")
    g.map_linearly(src)
    srcs = [t for t in range(T) if pairs_fn(t) is not None]
    # the dst block of tile t lives on tile pairs_fn(t) (on t itself when t sends nothing)
    d = np.array([pairs_fn(t) if pairs_fn(t) is not None else t for t in range(T)], np.int64)
    g.map_intervals(dst._start + np.arange(T, dtype=np.int64) * n, np.full(T, n, np.int64), d.astype(np.int32))
    exe = compile_program(g, Copy(src, dst))
    rep = Engine(exe, chip).run()
    xch = sum(s["exchange"] for s in rep.steps)
    return len(srcs) * n * 4, xch


def rows(slow=False) -> list:
    out = []
    # -- peaks and clocks (by construction) --------------------------------------------------
    out.append(_row("GC2 peak FP16 (chip)", 124.5e12, gc2.peak_flops("fp16"), "FLOP/s", JIA,
                    "tiles x clock x AMP FLOP/cycle/tile (preset)", 0.01, "by construction"))
    out.append(_row("GC2 peak FP32 (chip)", 31.1e12, gc2.peak_flops("fp32"), "FLOP/s", JIA,
                    "tiles x clock x AMP FLOP/cycle/tile (preset)", 0.01, "by construction"))
    out.append(_row("GC200 peak FP16 (chip)", 249.7e12, gc200.peak_flops("fp16"), "FLOP/s",
                    "IPU-POD64 datasheet (15.978 PF / 64)", "preset", 0.01, "by construction"))
    # -- on-chip exchange -----------------------------------------------------------------
    T = gc2.tiles
    nb, cyc = _exchange_copy(gc2, lambda t: (t + 2) % T, 4096)
    out.append(_row("GC2 exchange, all tiles sending (aggregate)", 7.8e12, nb / gc2.seconds(cyc), "B/s",
                    f"{JIA} ('8 TB/s'); Poplar exchangeBytesPerCycle = 4",
                    "engine: one Copy, every tile sends 4 KiB to a tile of the next supertile",
                    MICROBENCHMARK_TOLERANCE,
                    "every tile at its own 4 B/cycle (PopLibs' exchange estimators share no sender's rate "
                    "within a supertile), minus the per-message cost"))
    nb, cyc = _exchange_copy(gc200, lambda t: 2 if t == 0 else None, 64 * 1024)
    out.append(_row("GC200 exchange, one tile sending", 5.5e9, nb / gc200.seconds(cyc), "B/s",
                    "Elk (MICRO'25): 5.5 GB/s per tile", "engine: one Copy of 64 KiB from tile 0 to tile 2",
                    MICROBENCHMARK_TOLERANCE, "4 B/cycle x 1.325 GHz = 5.3 GB/s, minus the per-message cost"))
    nb, cyc = _exchange_copy(gc2, lambda t: (t + 2) % T if t % 2 == 0 else None, 4096)
    out.append(_row("GC2 exchange, one tile per supertile sending (aggregate)", 7.8e12 / 2,
                    nb / gc2.seconds(cyc), "B/s", f"{JIA} ('8 TB/s') / 2 active tiles",
                    "engine: one Copy, even tiles send 4 KiB each", MICROBENCHMARK_TOLERANCE,
                    "half the tiles at the full 4 B/cycle"))
    # -- sync -------------------------------------------------------------------------------
    g = Graph(gc200)
    x = g.add_variable("fp32", (gc200.tiles * 4,), "x")
    g.map_linearly(x)
    cs = g.add_compute_set("relu")
    for t in range(gc200.tiles):
        g.add_vertex(cs, "Relu", {"in": x[4 * t:4 * t + 4], "out": x[4 * t:4 * t + 4]}, tile=t)
    rep = Engine(compile_program(g, Execute(cs)), gc200).run()
    out.append(_row("GC200 BSP sync (one superstep)", 600, rep.sync_cycles, "cycles",
                    "Poplar target globalSyncCycles (IPU21 target dump, third party)",
                    "engine: sync phase of one superstep", 0.01, "by construction"))
    # -- links ------------------------------------------------------------------------------
    env = simpy.Environment()
    net = Network(env, gc200, [(0, 1), (0, 3), (1, 2), (2, 3)])     # ring of 4: 2 neighbours, 5 links each
    nbytes = 64 * 2**20
    for a, b in ((0, 1), (0, 3), (1, 0), (3, 0)):
        env.process(net.send(a, b, nbytes))
    env.run()
    bw = 4 * nbytes / gc200.seconds(env.now)
    out.append(_row("GC200 chip-to-chip payload, one chip, all links both ways", 320e9 * 0.85, bw, "B/s",
                    "IPU-M2000 / Elk: 10 IPU-Links, 320 GB/s per chip (raw) x PopLibs' 0.85 link efficiency",
                    "links.Network: chip 0 of a ring sends and receives 64 MiB to/from both neighbours",
                    MICROBENCHMARK_TOLERANCE,
                    "the two published figures disagree on what moves: 320 GB/s is the raw signalling rate, "
                    "PopLibs models payload at 0.85 of it; the model follows PopLibs"))
    env = simpy.Environment()
    net = Network(env, gc200, [(0, 1)] + [(0, k) for k in range(2, 11)])   # 10 neighbours: 1 link each
    env.process(net.send(0, 1, nbytes))
    env.run()
    out.append(_row("IPU-Link effective rate (one link, one direction)", 128e9 / 8 * 0.85,
                    nbytes / gc200.seconds(env.now), "B/s",
                    "PopLibs test utilities: 128 Gbit/s x 0.85 efficiency",
                    "links.Network: 64 MiB over one link", MICROBENCHMARK_TOLERANCE,
                    "the presets' link rate is this payload rate; latency (200 ns CHOSEN) costs little at 64 MiB"))
    # -- host ------------------------------------------------------------------------------
    g = Graph(gc2)
    n = 16 * 2**20 // 4
    y = g.add_variable("fp32", (n,), "y")
    g.map_linearly(y)
    s = g.add_host_to_device_fifo("in", "fp32", n)
    rep = Engine(compile_program(g, Copy(s, y)), gc2).run()
    out.append(_row("GC2 host link (PCIe Gen4 x16)", 31.5e9, n * 4 / gc2.seconds(rep.host_transfer_cycles), "B/s",
                    "C2 card datasheet", "engine: one 16 MiB host-to-device stream copy", MICROBENCHMARK_TOLERANCE,
                    "latency (1 us CHOSEN) costs 0.2% at this size"))
    # -- models -----------------------------------------------------------------------------
    r50 = get_model("resnet50", batch=1)
    out.append(_row("ResNet-50 parameters", 25_557_032, r50.params(), "params",
                    "torchvision / Caffe2 definition (published-figures.md)", "models.get_model('resnet50')", 0.0))
    acts = sum(t.size for t in r50.tensors.values() if t.kind in ("activation", "output"))
    out.append(_row("ResNet-50 forward activations, one image", 16e6, acts, "elements",
                    "published-figures.md ('about 16 M activations')",
                    "sum of every forward op output of the op graph", 1.5,
                    "known gap: counts BN and ReLU outputs as separate tensors (frameworks run them in place); "
                    "see the next row"))
    main_ops = ("Conv", "Gemm", "MaxPool", "AveragePool", "GlobalAveragePool", "Add")
    acts2 = sum(r50.tensors[t].size for n in r50.graph if r50.op(n)["op"] in main_ops for t in r50.op(n)["outputs"])
    out.append(_row("ResNet-50 forward activations, one image (conv / fc / pool / add outputs only)", 16e6,
                    acts2, "elements", "published-figures.md ('about 16 M activations')",
                    "sum of the outputs of Conv, Gemm, pooling and residual Add ops (BN / ReLU in place)", 0.35))
    out.append(_row("ResNet-50 weights + activations, FP32", 168e6, (r50.params() + acts2) * 4, "bytes",
                    "published-figures.md ('about 168 MB together')",
                    "(params + conv / fc / pool / add outputs) x 4", 0.35))
    if slow:
        out += slow_rows()
    return out


def system_row(name, *, workers=None) -> dict:
    """Run preset ``name`` and compare its throughput with the preset's ``[measured]`` figure: per chip
    or per replica (``per``), counting ``samples_per_sample`` (two sequences per BERT pack).  The row
    also says whether it fits, the peak tile bytes of each chip of a replica, and the wall time (compile +
    simulate).  ``workers``: processes compiling the stages (by default one per CPU, fewer where the stages'
    host-memory estimates do not fit at once: :func:`simulator.multichip.stage_workers`; a BERT-Large
    stage takes about 6 GB while it compiles).  A run that fails (a model not built in yet) is a row with no prediction and the error."""
    p = load_preset(name)
    meas = p["measured"]
    per, unit = meas.get("per", "chip"), meas.get("unit", "samples/s")
    how = f"ipusim simulate --preset {name}: samples/s per {per}" + (
        f" x {meas['samples_per_sample']} per sample" if meas.get("samples_per_sample", 1) != 1 else "")
    t0 = time.perf_counter()
    try:
        cfg = RunConfig.preset(name)
        r = run(cfg, workers=workers).report
    except (ValueError, KeyError, FileNotFoundError, MemoryError) as e:
        why = "out of host memory" if isinstance(e, MemoryError) else (e.args[0] if e.args else e)
        return not_run_row(name, why, time.perf_counter() - t0)
    wall = time.perf_counter() - t0
    s = r["sim"]
    S, R, _ = cfg.layout()
    total = s["samples_per_second"]
    pred = total / (S * R) if per == "chip" else total / R
    pred *= meas.get("samples_per_sample", 1)
    if "multichip" in r:
        peaks = [st["memory"].get("peak_tile_bytes", 0) for st in r["multichip"]["per_stage"]]
    else:
        peaks = [r["memory"]["peak_tile_bytes"]]
    fits = bool(r["memory"]["fits"])
    sram = int(r["memory"].get("sram_bytes_per_tile") or cfg.get_chip().sram_bytes_per_tile)
    note = (f"{'fits' if fits else 'DOES NOT FIT'}: peak tile {', '.join(f'{b:,}' for b in peaks)} B of {sram:,} "
            f"(per chip of a replica)")
    row = _row(p.get("title", name), meas["throughput"], pred, unit, meas.get("source", ""), how,
               meas.get("tolerance", 0.15), note=note)
    return row | {"kind": "system", "preset": name, "per": per, "fits": fits, "peak_tile_bytes": peaks,
                  "sram_bytes_per_tile": sram, "wall_s": wall}


def not_run_row(name, why, wall_s=0.0) -> dict:
    """The row of a measured system whose run failed: no prediction, the reason in the note."""
    p = load_preset(name)
    meas = p["measured"]
    row = _row(p.get("title", name), meas["throughput"], float("nan"), meas.get("unit", "samples/s"),
               meas.get("source", ""), f"ipusim simulate --preset {name}", meas.get("tolerance", 0.15),
               note=f"not run: {why}")
    return row | {"kind": "system", "preset": name, "per": meas.get("per", "chip"), "fits": None,
                  "peak_tile_bytes": [], "sram_bytes_per_tile": None, "wall_s": wall_s}


def system_rows(names=SYSTEMS, *, on_row=None, isolate=True) -> list:
    """:func:`system_row` of each preset; ``on_row(row)`` is called as each finishes.  ``isolate``:
    each run in a child process, so that one killed by the system (out of host memory: a BERT-Large
    stage takes about 12 GB while it compiles) is a row that says so, not the end of the table."""
    out = []
    for n in names:
        if not isolate:
            row = system_row(n)
        else:
            t0 = time.perf_counter()
            row, code = call_forked(system_row, n)
            if row is None:
                row = not_run_row(n, f"the run was killed (exit code {code}; out of host memory?)",
                                  time.perf_counter() - t0)
        out.append(row)
        if on_row:
            on_row(row)
    return out


def slow_rows() -> list:
    return inference_rows() + system_rows()


def inference_rows() -> list:
    r = run(RunConfig(model="resnet50", chip="gc200", batch=1)).report
    res = [_row("ResNet-50 inference graph: vertices", 3.22e6, r["graph"]["vertices_executed"], "vertices",
                "Graphcore blog / The Register, Feb 2017 (Poplar, GC2-era)",
                "compile resnet50 batch 1 on gc200: vertices executed (functions counted per call)", 1.0,
                "the published graph is Poplar's of 2017; a different compiler, so a loose bound"),
           _row("ResNet-50 inference graph: edges", 6.21e6, r["graph"]["edges"], "edges",
                "Graphcore blog / The Register, Feb 2017", "compile resnet50 batch 1 on gc200", 1.0)]
    s = r["sim"]
    tot = s["compute_cycles"] + s["exchange_cycles"] + s["sync_cycles"]
    for k, pub in (("compute", 0.6), ("exchange", 0.3), ("sync", 0.1)):
        res.append(_row(f"ResNet-50 inference: {k} share of time", pub, s[f"{k}_cycles"] / tot, "fraction",
                        "Hot Chips 33 (typical workload, 'algorithm dependent')",
                        "simulate resnet50 batch 1 on gc200", 1.0, "a typical split, not a ResNet-50 measurement"))
    return res


NOT_RUN = [
    ("AlexNet training graph: vertices / edges", "18.7 M / 115.8 M", "Graphcore blog, Feb 2017",
     "batch size of the published graph not given; compiling AlexNet training is slow (not in --slow)"),
]


def _fmt(v, unit):
    if isinstance(v, float) and math.isnan(v):
        return "-"
    if unit in ("B/s", "FLOP/s"):
        for k, s in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
            if abs(v) >= k:
                return f"{v / k:.3g} {s}{unit}"
    if unit == "fraction":
        return f"{v:.2f}"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g} M {unit}"
    return f"{v:,.4g} {unit}"


def _err(r):
    if math.isnan(r["error"]):
        return "not run **(outside)**"
    return f"{r['error'] * 100:+.1f}%" + ("" if r["ok"] else " **(outside)**")


def system_table(rs) -> list:
    """Markdown lines of the measured-system rows."""
    lines = ["| system | preset | measured | simulator | error | tolerance | fits | peak tile per chip (B) | "
             "wall (compile + simulate) | source |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rs:
        unit = f"{r['unit']} per {r['per']}"
        fits = "-" if r["fits"] is None else ("yes" if r["fits"] else "**no**")
        peaks = " / ".join(f"{b:,}" for b in r["peak_tile_bytes"]) or "-"
        if r["sram_bytes_per_tile"]:
            peaks += f" of {r['sram_bytes_per_tile']:,}"
        nr = f" ({r['note']})" if r["note"].startswith("not run") else ""
        lines.append(f"| {r['name']} | `{r['preset']}` | {r['published']:,.0f} {unit} | "
                     f"{_fmt(r['predicted'], unit)}{nr} | {_err(r)} | ±{r['tolerance'] * 100:.0f}% | {fits} | {peaks} | "
                     f"{r['wall_s']:.1f} s | {r['source']} |")
    return lines


def markdown(rs) -> str:
    systems = [r for r in rs if r.get("kind") == "system"]
    rs = [r for r in rs if r.get("kind") != "system"]
    lines = ["# Validation: simulator vs published figures", "",
             "Generated by `ipusim validate --write docs/validation.md"
             + (" --slow" if systems or any(r["name"].startswith("ResNet-50 inference") for r in rs) else "")
             + "` (the same as `python -m simulator.validation`); "
             "tests/test_validation.py keeps every fast row within its tolerance, except the rows marked as a "
             "known gap, which it expects outside. Error = (predicted - "
             "published) / published. \"by construction\" rows check a preset against the figure it was "
             "derived from.", ""]
    if systems:
        lines += ["## Measured systems (MLPerf Training, Graphcore closed division)", "",
                  "Each row runs a shipped run configuration (`ipusim presets`; `ipusim simulate --preset NAME`) "
                  "and compares its throughput with the `[measured]` figure written in the same preset file. "
                  "Throughput per chip (ResNet-50, 16 replicas of one chip) or per replica (BERT-Large: a "
                  "replica is a 4-chip pipeline; a 512-token pack counts as two sequences). Peak tile memory: "
                  "one figure per chip of a replica. Wall time: compile + simulate on the machine that wrote "
                  "this table.", ""] + system_table(systems) + [""]
    lines += ["## Microbenchmarks, chip figures and graph sizes", "",
              "| quantity | published | simulator | error | tolerance | source | how the simulator gets it | note |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rs:
        note = r["note"] + (f" Known gap ({r['known_gap']})." if r.get("known_gap") and not r["ok"] else "")
        lines.append(f"| {r['name']} | {_fmt(r['published'], r['unit'])} | {_fmt(r['predicted'], r['unit'])} | "
                     f"{_err(r)} | ±{r['tolerance'] * 100:.0f}% | {r['source']} | {r['how']} | "
                     f"{note.strip()} |")
    lines += ["", "## Published figures not compared yet", "",
              "| quantity | published | source | why not |", "|---|---|---|---|"]
    for name, pub, src, why in NOT_RUN:
        lines.append(f"| {name} | {pub} | {src} | {why} |")
    lines += ["", "Rows outside their tolerance are kept and flagged, not hidden. Tolerances: 1% for values "
              "derived from the same figure, 10% for the microbenchmarks (exchange, sync, links, host link), "
              "15% for the measured systems, 35% for the activation count (which ops count as separate "
              "tensors differs), and loose bounds (100%) for figures from another compiler or a 'typical' "
              "workload.", ""]
    return "\n".join(lines)


def add_arguments(ap) -> None:
    """The options of ``ipusim validate`` and ``python -m simulator.validation``."""
    ap.add_argument("--write", default=None, metavar="PATH", help="also write the markdown table here "
                    "(docs/validation.md)")
    ap.add_argument("--slow", action="store_true", help="also compile ResNet-50 inference and run the measured "
                    "systems' presets (a few minutes)")


def validate(slow=False, write=None) -> int:
    """Run every row, print the table, write it to ``write``; 0 when every row is within its tolerance."""
    if write:
        d = os.path.dirname(os.path.abspath(write))
        if not os.path.isdir(d):
            raise FileNotFoundError(f"--write {write!r}: folder {d!r} does not exist")
    rs = rows(slow=slow)
    md = markdown(rs)
    if write:
        with open(write, "w") as f:
            f.write(md)
    print(md)
    return 0 if all(r["ok"] for r in rs) else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description="simulator vs published figures")
    add_arguments(ap)
    a = ap.parse_args(argv)
    return validate(slow=a.slow, write=a.write)


if __name__ == "__main__":
    raise SystemExit(main())
