"""``ipusim explore``: the interactive trade-off explorer (a local Dash app, see viz/explorer)."""
from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("explore", help="interactive trade-off explorer in the browser (local Dash app)",
                       description="Serve the explorer on this machine and print its URL.")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    return {"explore": cmd_explore}


def cmd_explore(args):
    from viz.explorer import serve      # Dash loads in about a second: only for this command
    serve(host=args.host, port=args.port)
    return 0
