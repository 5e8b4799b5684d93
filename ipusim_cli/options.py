"""The command line's run options, made from :class:`simulator.config.RunConfig`'s fields.

An option is declared once, as a field of the configuration (its help, choices and flag
live in the field's metadata); this module turns the fields into argparse flags and an
argparse namespace back into a configuration.  Output paths (``--json``, ``--trace``) are
not run options: each command adds its own.

``--preset NAME`` starts from a shipped run configuration (``ipusim presets``); the flags
given beside it override its options.  So that a flag given with its default value still
overrides, the flags have no argparse defaults: an option not given is absent from the
namespace, and the configuration (or the preset) supplies it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

from simulator.config import ConfigError, RunConfig, list_presets


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Add one flag per command-line field of :class:`RunConfig`, the positional MODEL and ``--preset``."""
    p.add_argument("--preset", default=argparse.SUPPRESS, metavar="NAME",
                   help=f"start from a shipped run configuration ({', '.join(list_presets())}; "
                        "`ipusim presets`); the other flags override it")
    for f in dataclasses.fields(RunConfig):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        default = f.default
        kw = {"help": meta["help"], "default": argparse.SUPPRESS}
        if meta.get("kind") == "positional":
            p.add_argument(f.name, nargs="?", **kw)
            continue
        if isinstance(default, bool):
            action = "store_false" if default else "store_true"
            p.add_argument(_flag(f), dest=f.name, action=action, **kw)
            if not default:          # a preset may turn it on: the flag that turns it off
                p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            continue
        if meta.get("choices"):
            kw["choices"] = list(meta["choices"])
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if meta.get("kind") == "list":
            kw["type"] = str
        else:
            ann = str(f.type)
            kw["type"] = int if ann.startswith("int") else float if ann.startswith("float") else str
        p.add_argument(_flag(f), dest=f.name, **kw)


def config_from_args(args) -> RunConfig:
    """The run configuration the flags describe (over ``--preset``'s); a bad value names its flag."""
    if getattr(args, "model", None) is None and not getattr(args, "preset", None):
        raise ConfigError("MODEL: missing: give a built-in model (`ipusim models`), an .onnx file, a config.json, "
                          "or --preset NAME (`ipusim presets`)")
    try:
        return RunConfig.from_args(args)
    except ConfigError as e:
        msg = e.args[0]
        if msg.startswith("preset ") and ": " in msg:      # "preset NAME: field: ..." -> "field: ..."
            msg = msg.split(": ", 1)[1]
        name = msg.split(":", 1)[0]
        f = next((f for f in dataclasses.fields(RunConfig) if f.name == name), None)
        if name == "preset":
            raise ConfigError("--preset" + msg[len(name):]) from None
        raise ConfigError(f"{_flag(f)}{msg[len(name):]}" if f is not None else e.args[0]) from None


def flag_message(msg: str) -> str:
    """An error message that starts with a run option's field name, with the field's flag instead
    (``recompute_checkpoints: ...`` -> ``--recompute-checkpoints: ...``)."""
    name = msg.split(":", 1)[0]
    f = next((f for f in dataclasses.fields(RunConfig) if f.name == name and f.metadata.get("cli", True)
              and f.metadata.get("kind") != "positional"), None)
    return f"{_flag(f)}{msg[len(name):]}" if f is not None else msg


def check_output_path(path, what="--json"):
    """Refuse an output path whose folder is missing or that is a folder, before any work starts."""
    if not path:
        return
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder; give a file name")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise FileNotFoundError(f"{what} {path!r}: folder {d!r} does not exist")
    # can it be written? (permissions, read-only or special file systems such as /sys)
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path!r}: cannot write there ({e.strerror})") from None
    if not existed:
        os.remove(path)
