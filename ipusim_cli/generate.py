"""``ipusim generate``: LLM generation on one chip or several (simulator/generate.py).

    ipusim generate MODEL --prompt-len P --new-tokens N [--batch B] [--chip ...] [--dtype fp16]
                          [--ipus K --mode tensor|pipeline|pipeline+tensor|expert|pipeline+expert
                                    [--tensor-parallel T | --expert-parallel X]]
                          [--kv-cache sram|streaming] [--samples K] [--no-suggestions]
                          [--estimate-layers A,B] [--json F]

MODEL is a decoder: a built-in (gpt2..., llama-7b, mixtral-8x7b...) or a decoder config.json.
``--estimate-layers A,B``: a model too big to compile whole here, estimated from A and B of its
layers (:func:`simulator.generate.generate_by_layers`).
"""
from __future__ import annotations

from simulator.generate import GenerateError, format_estimate, format_generate, generate, generate_by_layers
from simulator.report import json_text

from .commands import help_of
from .options import add_run_options, check_output_path, config_from_args

__all__ = ["add_parser", "cmd_generate"]


def cmd_generate(args):
    cfg = config_from_args(args)
    if args.no_suggestions:
        cfg = cfg.replace(suggest=False)
    check_output_path(args.json)
    if args.estimate_layers is not None:
        layers = _layer_counts(args.estimate_layers)
        try:
            rep = generate_by_layers(cfg, args.prompt_len, args.new_tokens, layers=layers, samples=args.samples,
                                     kv_cache=args.kv_cache)
        except GenerateError as e:
            msg = str(e)
            raise GenerateError("--estimate-layers" + msg[len("layers"):] if msg.startswith("layers:") else msg) \
                from None
        print(format_estimate(rep))
    else:
        rep = generate(cfg, args.prompt_len, args.new_tokens, samples=args.samples, kv_cache=args.kv_cache)
        print(format_generate(rep))
    if args.json:
        text = json_text(rep, indent=1)     # refused, naming the value, where JSON cannot hold it
        with open(args.json, "w") as f:
            f.write(text)
        print(f"report    {args.json}")
    return 0


def _layer_counts(text):
    parts = str(text).split(",")
    try:
        a, b = (int(x) for x in parts)
    except ValueError:
        raise GenerateError(f"--estimate-layers: two layer counts A,B (e.g. 1,2), got {text!r}") from None
    return a, b


def add_parser(sub):
    p = sub.add_parser("generate", help=help_of("generate"))
    add_run_options(p)
    p.add_argument("--prompt-len", type=int, required=True, metavar="P", help="prompt tokens per sequence")
    p.add_argument("--new-tokens", type=int, required=True, metavar="N", help="tokens generated per sequence")
    p.add_argument("--samples", type=int, default=3, metavar="K",
                   help="decode steps simulated at K cache lengths, the others interpolated (default 3)")
    p.add_argument("--kv-cache", default="sram", choices=("sram", "streaming"),
                   help="where the KV cache lives: tile SRAM (default), or the streaming memory beside each "
                        "chip (each decode step loads the cached positions and stores the new one, timed at "
                        "the streaming-memory rate)")
    p.add_argument("--no-suggestions", action="store_true",
                   help="out of memory: do not recompile the variants that might fit (fewer tokens, smaller "
                        "batch, cache in streaming memory, more chips)")
    p.add_argument("--estimate-layers", metavar="A,B",
                   help="estimate a model too big to compile whole: generate with A and with B of its layers "
                        "(a pipeline: multiples of its stages) and extend every figure linearly to all")
    p.add_argument("--json", help="write the report here")
    return {"generate": cmd_generate}
