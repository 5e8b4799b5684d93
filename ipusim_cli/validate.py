"""``ipusim validate``: the validation table (:mod:`simulator.validation`), as ``python -m simulator.validation``."""
from __future__ import annotations

from simulator.validation import add_arguments, validate

from .commands import help_of

__all__ = ["add_parser", "cmd_validate"]


def cmd_validate(args):
    return validate(slow=args.slow, write=args.write)


def add_parser(sub):
    p = sub.add_parser("validate", help=help_of("validate"))
    add_arguments(p)
    return {"validate": cmd_validate}
