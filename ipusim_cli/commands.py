"""The subcommands that live in their own module of this package, and their one-line help.

``ipusim`` imports a command's module only when that command runs, so ``ipusim compile``
does not load the views, the graph images or the explorer (plotly, scipy, Dash): each
module's ``add_parser(sub)`` adds its parsers and returns their handlers.  ``ipusim --help``
lists them from this table without importing them.
"""
from __future__ import annotations

#: command -> (module of this package that runs it, one-line help)
COMMANDS = {
    "report": ("report", "compile + simulate a model and write one self-contained HTML report"),
    "dot": ("report", "draw a model's op graph or its program tree with Graphviz"),
    "sweep": ("sweep", "run the cross product of the parameters in a sweep .toml file"),
    "plot": ("sweep", "draw the Pareto front of sweep results as interactive HTML"),
    "explore": ("explore", "interactive trade-off explorer in the browser (local Dash app)"),
    "render": ("render", "draw a model's whole compute graph (every vertex) as PNG / SVG"),
    "generate": ("generate", "LLM inference on one chip or several (--ipus N --mode tensor / pipeline / "
                             "pipeline+tensor / expert / pipeline+expert): prefill + decode steps with a KV cache (time to first token, time "
                             "per token, tokens/s, the physical bound)"),
    "train": ("train", "train a model functionally on the simulated chip (mnist-mlp on scikit-learn's digits): "
                       "the loss per step, the held-out accuracy, the simulated time per step"),
    "validate": ("validate", "run every validation row (simulator vs published figures), print the table, "
                             "write docs/validation.md"),
}


def help_of(command: str) -> str:
    return COMMANDS[command][1]
