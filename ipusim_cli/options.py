"""The command line's run options, made from :class:`simulator.config.RunConfig`'s fields.

An option is declared once, as a field of the configuration (its help, choices and flag
live in the field's metadata); this module turns the fields into argparse flags and an
argparse namespace back into a configuration.  Output paths (``--json``, ``--trace``) are
not run options: each command adds its own.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

from simulator.config import ConfigError, RunConfig


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Add one flag per command-line field of :class:`RunConfig` (and the positional MODEL)."""
    for f in dataclasses.fields(RunConfig):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        default = f.default
        kw = {"help": meta["help"]}
        if meta.get("kind") == "positional":
            p.add_argument(f.name, **kw)
            continue
        if isinstance(default, bool):
            action = "store_false" if default else "store_true"
            p.add_argument(_flag(f), dest=f.name, action=action, **kw)
            continue
        if meta.get("choices"):
            kw["choices"] = list(meta["choices"])
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if meta.get("kind") == "list":
            kw["type"], default = str, ""
        else:
            ann = str(f.type)
            kw["type"] = int if ann.startswith("int") else float if ann.startswith("float") else str
        p.add_argument(_flag(f), dest=f.name, default=default, **kw)


def config_from_args(args) -> RunConfig:
    """The run configuration the flags describe; a bad value names its flag."""
    try:
        return RunConfig.from_args(args)
    except ConfigError as e:
        name = e.args[0].split(":", 1)[0]
        f = next((f for f in dataclasses.fields(RunConfig) if f.name == name), None)
        raise ConfigError(f"{_flag(f)}{e.args[0][len(name):]}" if f is not None else e.args[0]) from None


def check_output_path(path, what="--json"):
    """Refuse an output path whose folder is missing or that is a folder, before any work starts."""
    if not path:
        return
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder; give a file name")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise FileNotFoundError(f"{what} {path!r}: folder {d!r} does not exist")
