"""The ``ipusim`` command line.

    ipusim chips
    ipusim models
    ipusim presets
    ipusim layers MODEL [--train]
    ipusim compile MODEL [--train] [--batch N] [--micro-batches M] [--chip gc2|gc200|bow|FILE.toml] [--ipus N]
                         [--dtype fp32|fp16|int8] [--partials fp32|fp16] [--json PATH]
                         [--recompute none|blocks|sqrt|all] [--recompute-checkpoints LAYER,...]
                         [--offload optimizer,weights] [--available-memory-proportion P|P0,P1,...] ...
    ipusim simulate MODEL [same options] [--json PATH] [--trace PATH]
    ipusim simulate --preset NAME [options that override the preset's]
    ipusim validate [--slow] [--write docs/validation.md]

MODEL is a built-in name (``ipusim models``), a path to an ``.onnx`` file or a Hugging Face-style
``config.json`` (``--seq-len S`` for its tokens per sequence).  The run
options come from :class:`simulator.config.RunConfig` (:mod:`ipusim_cli.options`); each
subcommand lives in its own module of this package, the top layer of the project.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import models
from compiler.recompute import layer_names
from hardware.chips import get_chip, list_chips
from simulator.config import list_presets, load_preset
from simulator.run import run

from .commands import COMMANDS
from .options import add_run_options, check_output_path, config_from_args, flag_message
from .text import summary


def cmd_multichip(r):
    """Print what a run on several chips (shard, pipeline, replicate) gave."""
    cfg, rep = r.config, r.report
    s, mc = rep["sim"], rep.get("multichip", {})
    m = rep["model"]
    print(f"model     {m.get('name', cfg.model)}: batch {cfg.batch} per replica per update "
          f"({mc.get('micro_batches')} micro-batches of {m.get('micro_batch')}), "
          f"{'training' if cfg.train else 'inference'}, {cfg.dtype}"
          + (f", recompute {m['recompute']}" if m.get("recompute", "none") != "none" else "")
          + (f", offload {'+'.join(m['offload'])}" if m.get("offload") else "")
          + (", replicated tensor sharding" if mc.get("replicated_tensor_sharding") else ""))
    print(f"chips     {cfg.ipus} x {rep['chip']['name']}, mode {cfg.mode}: {mc.get('stages')} stages x "
          f"{mc.get('replicas')} replicas, {mc.get('micro_batches')} micro-batches, schedule {mc.get('schedule')}")
    for st in mc.get("per_stage", []):
        print(f"stage {st['stage']}   IPUs {st['ipus']}: {st['first_layer']} .. {st['last_layer']} ({st['layers']} layers), "
              f"{st['vertices']:,} vertices, fwd {st['fwd_cycles']:,.0f} / bwd {st['bwd_cycles']:,.0f} / update "
              f"{st['update_cycles']:,.0f} cycles, {'fits' if st['memory'].get('fits') else 'DOES NOT FIT'} "
              f"(peak tile {st['memory'].get('peak_tile_bytes', 0):,} B)")
        h = st["memory"].get("holds")
        if h:
            print("          each chip holds " + ", ".join(
                f"{k.replace('_bytes', '').replace('_', ' ')} {h[k] / 2**20:,.2f} MiB" for k in
                ("weights_bytes", "kv_cache_bytes", "optimizer_state_bytes", "activations_bytes", "code_bytes")
                if h.get(k)))
    tp = mc.get("tensor_parallel")
    if tp:
        n, b = tp["allreduces_per_micro_batch"], tp["allreduce_bytes_per_micro_batch"]
        print(f"tensor    {tp['degree']} chips per stage, {tp['params_per_chip'][0]:,} of {tp['params_full_model']:,} "
              f"params on each chip of stage 0; per micro-batch {n['fwd']} all-reduces forward ({b['fwd']:,} B), "
              f"{n['bwd']} backward ({b['bwd']:,} B); {tp['link_bytes_per_step']:,} B over the links and "
              f"{tp['allreduce_seconds_per_step'] * 1e3:.3f} ms of all-reduce per step")
    ep = mc.get("expert_parallel")
    if ep:
        print(f"experts   {ep['degree']} chips per stage, {ep['experts_per_chip']} of {ep['experts']} experts and "
              f"{ep['sequences_per_chip_per_micro_batch']} sequences per micro-batch on each; "
              f"{ep['params_per_chip'][0]:,} of {ep['params_full_model']:,} params on each chip of stage 0; per "
              f"micro-batch {ep['all_to_alls_per_micro_batch']['fwd']} all-to-alls forward (dispatch, combine)"
              + (f" and {ep['all_to_alls_per_micro_batch']['bwd']} backward"
                 if ep['all_to_alls_per_micro_batch']['bwd'] else "") + " of "
              f"{', '.join(f'{b:,}' for b in ep['all_to_all_bytes_per_chip'])} B per chip, "
              f"{ep['link_bytes_sent_per_chip_per_micro_batch']:,.0f} B sent by each chip; "
              f"{ep['link_bytes_per_step']:,} B over the links and {ep['all_to_all_seconds_per_step'] * 1e3:.3f} ms "
              f"of all-to-all per step"
              + (f"; the replicated weights' gradients all-reduced over the group: "
                 f"{ep['gradient_allreduce_bytes_per_step']:,} B, "
                 f"{ep['gradient_allreduce_seconds_per_step'] * 1e3:.3f} ms per step"
                 if ep.get("gradient_allreduce_bytes_per_step") else ""))
    print(f"time      {s['step_seconds'] * 1e3:.3f} ms per step, {s['samples_per_second']:,.1f} samples/s "
          f"({s['samples_per_second_per_replica']:,.1f} per replica, {s['samples_per_second_per_chip']:,.1f} per chip), "
          f"bubble {s['bubble_fraction']:.0%}, link bytes {s['link_bytes']:,}, "
          f"host transfer hidden {s['hidden_transfer_fraction']:.0%}")


def cmd_compile(args, simulate=False):
    cfg = config_from_args(args)
    check_output_path(args.json)
    check_output_path(getattr(args, "trace", None), "--trace")
    r = run(cfg, simulate=simulate)
    if r.multichip is not None:
        cmd_multichip(r)
    else:
        print(summary(r.report))
        mem = r.report["memory"]
        print(f"reuse     {mem['no_reuse_bytes'] / 2**20:.1f} MiB without reuse -> {mem['with_reuse_bytes'] / 2**20:.1f} MiB "
              f"with liveness + in-place reuse ({mem['reuse_factor']:.2f}x); not-always-live peak at step "
              f"{mem['peak_step']} ({mem['peak_step_name']})")
    if args.json:
        r.to_json(args.json)
        print(f"report    {args.json}")
    if r.sim is not None and getattr(args, "trace", None):
        r.chrome_trace(args.trace)
        print(f"trace     {args.trace} (open in https://ui.perfetto.dev)")
    return r


def cmd_chips(args):
    for n in list_chips():
        print(get_chip(n).describe())


def cmd_models(args):
    for n in models.list_models():
        print(n)


def cmd_presets(args):
    """One line per shipped run configuration: its name, what it is, and what the real system measured."""
    names = list_presets()
    w = max(map(len, names), default=0)
    for n in names:
        p = load_preset(n)
        m = p.get("measured", {})
        meas = f" [measured {m['throughput']:,} {m.get('unit', 'samples/s')} per {m.get('per', 'chip')}]" if m else ""
        print(f"{n:<{w}}  {p.get('title', '')}{meas}")


def cmd_layers(args):
    """The forward layer names of a model, then its repeated blocks: what --pipeline-splits and
    --recompute-checkpoints may name, and what --layers-per-chip counts."""
    og = models.load(args.model, batch=1, train=args.train)
    blocks = set(og.op(o)["block"] for o in og.ops() if og.op(o)["block"] is not None)
    names = layer_names(og)
    layers = [n for n in names if n not in blocks]
    print(f"{og.name}: {len(layers)} layers, {len(blocks)} repeated blocks (--layers-per-chip counts these)")
    for n in names:
        print(("block  " if n in blocks else "layer  ") + n)


def _core_commands(sub):
    sub.add_parser("chips", help="list chip presets")
    sub.add_parser("models", help="list built-in models")
    sub.add_parser("presets", help="list the shipped run configurations (--preset NAME)")
    p = sub.add_parser("layers", help="list a model's layer and block names (for --pipeline-splits, "
                                      "--recompute-checkpoints, --layers-per-chip)")
    p.add_argument("model", help="built-in model name, an .onnx file or a config.json")
    p.add_argument("--train", action="store_true", help="the training graph's forward layers")
    p = sub.add_parser("compile", help="compile a model and report graph size and memory")
    add_run_options(p)
    p.add_argument("--json", help="write the report here")
    p = sub.add_parser("simulate", help="compile and simulate a model")
    add_run_options(p)
    p.add_argument("--json", help="write the report here")
    p.add_argument("--trace", help="write a Chrome trace (Perfetto) JSON here")
    return {"chips": cmd_chips, "models": cmd_models, "presets": cmd_presets, "layers": cmd_layers,
            "compile": cmd_compile,
            "simulate": lambda a: cmd_compile(a, simulate=True)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="ipusim", description="IPU / graph-processor simulator")
    sub = ap.add_subparsers(dest="cmd", required=True)
    handlers = _core_commands(sub)
    argv = sys.argv[1:] if argv is None else list(argv)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    if wanted in COMMANDS:      # only the module of the command that runs is imported (commands.py)
        handlers.update(importlib.import_module(f"{__name__}.{COMMANDS[wanted][0]}").add_parser(sub))
    for name, (_, text) in COMMANDS.items():
        if name not in handlers:
            sub.add_parser(name, help=text)     # listed by --help; its options load when it runs
    args = ap.parse_args(argv)
    try:
        rc = handlers[args.cmd](args)
    except (ValueError, KeyError, FileNotFoundError) as e:
        # our errors name the file / node / tensor / tile / option; no traceback for bad input
        msg = flag_message(str(e.args[0]) if e.args else str(e))
        print(f"ipusim: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:     # `ipusim ... | head`: the reader stopped reading; no traceback
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
