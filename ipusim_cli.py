"""The ``ipusim`` command line.

    ipusim chips
    ipusim models
    ipusim compile MODEL [--train] [--batch N] [--chip gc2|gc200|bow|FILE.toml] [--ipus N]
                         [--dtype fp32|fp16|int8] [--partials fp32|fp16] [--json PATH]
                         [--recompute none|blocks|sqrt|all] [--accumulate N] [--offload optimizer,weights]
    ipusim simulate MODEL [same options] [--json PATH] [--trace PATH]

MODEL is a built-in name (``ipusim models``) or a path to an ``.onnx`` file.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _add_model_args(p):
    p.add_argument("model", help="built-in model name (see `ipusim models`) or an .onnx file")
    p.add_argument("--train", action="store_true", help="compile the training step (loss, backward, update)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--chip", default="gc200", help="preset (gc2, gc200, bow) or a chip .toml file")
    p.add_argument("--ipus", type=int, default=1)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="weights and activations (int8: inference)")
    p.add_argument("--partials", default=None, choices=["fp32", "fp16"])
    p.add_argument("--recompute", default="none", choices=["none", "blocks", "sqrt", "all"],
                   help="training: recompute forward activations before the backward pass (docs/memory.md)")
    p.add_argument("--accumulate", type=int, default=1, metavar="N",
                   help="training: accumulate gradients over N micro-batches of --batch, then update once")
    p.add_argument("--offload", default="", metavar="optimizer|weights",
                   help="keep optimizer state and / or weights in streaming memory (comma-separated)")
    p.add_argument("--mode", default="shard", choices=["shard", "pipeline", "replicate", "pipeline+replicate", "spread"],
                   help="how --ipus N chips are used: shard (layers split over the chips, run in turn), "
                        "pipeline, replicate, pipeline+replicate, or spread (one graph over all their tiles)")
    p.add_argument("--micro-batches", type=int, default=None, help="pipelining: micro-batches per step")
    p.add_argument("--replicas", type=int, default=None, help="replication: data-parallel copies")
    p.add_argument("--placement", default="auto", choices=["auto", "even"], help="pipeline stage placement")
    p.add_argument("--no-fuse", action="store_true", help="do not fuse element-wise ops into their producers")
    p.add_argument("--available-memory-proportion", type=float, default=0.6)
    p.add_argument("--no-functions", action="store_true", help="inline repeated blocks instead of graph functions")
    p.add_argument("--json", help="write the report here")


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return o


def _fmt(n):
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n:.0f}"


def summary(rep) -> str:
    m, g, mem, chip = rep["model"], rep["graph"], rep["memory"], rep["chip"]
    lines = [
        f"model     {m['name']}: {_fmt(m['params'])} params, {_fmt(m['flops'])}FLOP per step, batch {m['batch']}, "
        f"{'training' if m['train'] else 'inference'}, {m['dtype']}",
        f"chip      {chip['name']} x {chip['ipus']}: {chip['tiles']} tiles, {chip['sram_bytes_per_tile']} B SRAM per tile",
        f"graph     {g['vertices']:,} vertices placed ({g['vertices_executed']:,} executed), {g['edges']:,} edges, "
        f"{g['compute_sets']:,} compute sets, {g['functions']} functions ({g['function_calls']} calls), "
        f"{g['tiles_used']} tiles used",
        f"memory    {'fits' if mem['fits'] else 'DOES NOT FIT'}: peak tile {mem['peak_tile_bytes']:,} B "
        f"(tile {mem['peak_tile']}), total {mem['total_bytes'] / 2**20:.1f} MiB",
    ]
    if mem.get("message"):
        lines.append(f"          {mem['message']}")
    fu = g.get("fusion")
    if fu and fu["supersteps_saved"]:
        lines.append(f"fusion    {g['fused_ops']} element-wise ops fused into their producers: "
                     f"{fu['supersteps_saved']} supersteps and ~{fu['cycles_saved_estimate']:,} cycles saved per step")
    pub = g.get("published")
    if pub:
        lines.append(f"published Poplar: {pub['vertices'] / 1e6:.2f} M vertices, {pub['edges'] / 1e6:.2f} M edges "
                     f"({pub['source']}); ours / theirs: vertices {pub['ratio_vertices']:.2f}, edges {pub['ratio_edges']:.2f}")
    if "sim" in rep:
        s = rep["sim"]
        lines.append(f"time      {s['cycles']:,.0f} cycles = {s['seconds'] * 1e3:.3f} ms: compute {s['compute_cycles']:,.0f}, "
                     f"exchange {s['exchange_cycles']:,.0f}, sync {s['sync_cycles']:,.0f} ({s['supersteps']} supersteps)")
        lines.append(f"          {s['samples_per_second']:,.1f} samples/s, {s['achieved_flops_per_second'] / 1e12:.2f} TFLOP/s achieved, "
                     f"mean tile utilisation {s['mean_tile_utilisation']:.1%}")
    t = rep["timing"]
    lines.append("wall      " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in t.items()))
    return "\n".join(lines)


def build_kwargs(args) -> dict:
    """The keyword arguments of simulator.pipeline.build that the model options give."""
    return dict(chip=args.chip, batch=args.batch, train=args.train, optimizer=args.optimizer,
                dtype=args.dtype, partials=args.partials, ipus=args.ipus,
                available_memory_proportion=args.available_memory_proportion,
                use_functions=not args.no_functions, recompute=args.recompute,
                accumulate=args.accumulate, offload=args.offload, fuse=not args.no_fuse)


def build_from_args(args, simulate=False):
    """Compile (and simulate) what the command line asks for: every command uses this."""
    from simulator.pipeline import build
    return build(args.model, simulate=simulate, **build_kwargs(args))


def cmd_multichip(args, simulate=True):
    """--ipus N with --mode pipeline / replicate / pipeline+replicate."""
    from simulator.multichip import report_json, run_multichip
    rep = run_multichip(args.model, chip=args.chip, ipus=args.ipus, mode=args.mode, replicas=args.replicas,
                        micro_batches=args.micro_batches, batch=args.batch, train=args.train, dtype=args.dtype,
                        partials=args.partials, optimizer=args.optimizer, placement=args.placement,
                        available_memory_proportion=args.available_memory_proportion,
                        use_functions=not args.no_functions, trace=getattr(args, "trace", None))
    s, mc = rep["sim"], rep.get("multichip", {})
    print(f"model     {args.model}: batch {args.batch}, {'training' if args.train else 'inference'}, {args.dtype}")
    print(f"chips     {args.ipus} x {args.chip}, mode {args.mode}: {mc.get('stages')} stages x "
          f"{mc.get('replicas')} replicas, {mc.get('micro_batches')} micro-batches, schedule {mc.get('schedule')}")
    for st in mc.get("per_stage", []):
        print(f"stage {st['stage']}   IPUs {st['ipus']}: {st['first_layer']} .. {st['last_layer']} ({st['layers']} layers), "
              f"{st['vertices']:,} vertices, fwd {st['fwd_cycles']:,.0f} / bwd {st['bwd_cycles']:,.0f} / update "
              f"{st['update_cycles']:,.0f} cycles, {'fits' if st['memory'].get('fits') else 'DOES NOT FIT'} "
              f"(peak tile {st['memory'].get('peak_tile_bytes', 0):,} B)")
    print(f"time      {s['step_seconds'] * 1e3:.3f} ms per step, {s['samples_per_second']:,.1f} samples/s, "
          f"bubble {s['bubble_fraction']:.0%}, link bytes {s['link_bytes']:,}, "
          f"host transfer hidden {s['hidden_transfer_fraction']:.0%}")
    if args.json:
        with open(args.json, "w") as f:
            f.write(report_json(rep))
        print(f"report    {args.json}")
    return rep


def cmd_compile(args, simulate=False):
    if args.ipus > 1 and args.mode != "spread":
        return cmd_multichip(args, simulate)
    c = build_from_args(args, simulate)
    print(summary(c.report))
    mem = c.report["memory"]
    print(f"reuse     {mem['no_reuse_bytes'] / 2**20:.1f} MiB without reuse -> {mem['with_reuse_bytes'] / 2**20:.1f} MiB "
          f"with liveness + in-place reuse ({mem['reuse_factor']:.2f}x); not-always-live peak at step "
          f"{mem['peak_step']} ({mem['peak_step_name']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_jsonable(c.report), f, indent=2)
        print(f"report    {args.json}")
    if simulate and getattr(args, "trace", None):
        c.sim.chrome_trace(args.trace)
        print(f"trace     {args.trace} (open in https://ui.perfetto.dev)")
    return c


def cmd_chips(args):
    from hardware.chips import get_chip, list_chips
    for n in list_chips():
        print(get_chip(n).describe())


def cmd_models(args):
    import models
    for n in models.list_models():
        print(n)


def _core_commands(sub):
    """Built-in subcommands: name -> handler.  Feature modules add theirs in EXTRA_COMMANDS."""
    sub.add_parser("chips", help="list chip presets")
    sub.add_parser("models", help="list built-in models")
    p = sub.add_parser("compile", help="compile a model and report graph size and memory")
    _add_model_args(p)
    p = sub.add_parser("simulate", help="compile and simulate a model")
    _add_model_args(p)
    p.add_argument("--trace", help="write a Chrome trace (Perfetto) JSON here")
    return {"chips": cmd_chips, "models": cmd_models, "compile": cmd_compile,
            "simulate": lambda a: cmd_compile(a, simulate=True)}


# Modules that add subcommands: each has `add_parser(sub, add_model_args) -> {name: handler}`.
# Kept as module paths so that `ipusim compile` does not import the viz stack.
EXTRA_COMMANDS = ["viz.cli_report", "simulator.cli_sweep", "viz.cli_explore", "viz.cli_render"]


def main(argv=None):
    import importlib
    ap = argparse.ArgumentParser(prog="ipusim", description="IPU / graph-processor simulator")
    sub = ap.add_subparsers(dest="cmd", required=True)
    handlers = _core_commands(sub)
    for mod in EXTRA_COMMANDS:
        handlers.update(importlib.import_module(mod).add_parser(sub, _add_model_args))
    args = ap.parse_args(argv)
    try:
        handlers[args.cmd](args)
    except (ValueError, KeyError, FileNotFoundError) as e:
        # our errors name the file / node / tensor / tile; no traceback for bad input
        msg = e.args[0] if e.args else str(e)
        print(f"ipusim: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
