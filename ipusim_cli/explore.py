"""``ipusim explore``: the interactive trade-off explorer (a local Dash app, see viz/explorer)."""
from __future__ import annotations

from viz.explorer import serve
from viz.explorer.llm import serve_llm

from .commands import help_of


def add_parser(sub):
    p = sub.add_parser("explore", help=help_of("explore"),
                       description="Serve the explorer on this machine and print its URL.")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--llm", action="store_true",
                   help="the LLM mode: prefill, decode and the KV cache of a decoder (ipusim generate), "
                        "tokens/s against batch and chips")
    return {"explore": cmd_explore}


def cmd_explore(args):
    (serve_llm if args.llm else serve)(host=args.host, port=args.port)
    return 0
