"""Programs: the control flow that runs compute sets, copies and host streams.

Poplar's program classes with Poplar's names.  A program is a small tree;
``Repeat`` and ``Call`` never duplicate the graph.

    >>> from types import SimpleNamespace
    >>> from compiler.graph import Graph
    >>> g = Graph(SimpleNamespace(tiles=2, sram_bytes_per_tile=1024))
    >>> cs = g.add_compute_set("step")
    >>> p = Sequence(Repeat(10, Execute(cs)), Sync())
    >>> [type(c).__name__ for c in p.children]
    ['Repeat', 'Sync']
"""
from __future__ import annotations

from dataclasses import dataclass, field


class Program:
    """Base class of all programs."""


@dataclass
class Sequence(Program):
    children: list = field(default_factory=list)

    def __init__(self, *children):
        if len(children) == 1 and isinstance(children[0], (list, tuple)):
            children = tuple(children[0])
        for c in children:
            if not isinstance(c, Program):
                raise TypeError(f"Sequence child {c!r} is not a program")
        self.children = list(children)

    def add(self, p: Program):
        if not isinstance(p, Program):
            raise TypeError(f"{p!r} is not a program")
        self.children.append(p)
        return self


@dataclass
class Execute(Program):
    compute_set: object


@dataclass
class Copy(Program):
    """Copy between tensors (an exchange), or between a host stream and a tensor.

    ``call_result``: the copy hands a function call's result to its caller (it follows
    the ``Call`` in the same sequence); liveness counts it as part of that call.
    ``merge``: consecutive copies of a sequence that all have it run as one exchange
    phase and one sync (a function call's arguments, its results)."""
    src: object
    dst: object
    call_result: bool = False
    merge: bool = False


@dataclass
class Repeat(Program):
    count: int
    body: Program

    def __post_init__(self):
        if int(self.count) < 0:
            raise ValueError(f"Repeat count must be >= 0, got {self.count}")


@dataclass
class Call(Program):
    function: object


@dataclass
class Sync(Program):
    """An explicit BSP sync across all tiles (and chips)."""


def walk(program, functions=None):
    """Yield every program node once (function bodies included once)."""
    seen = set()
    stack = [program]
    while stack:
        p = stack.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        yield p
        if isinstance(p, Sequence):
            stack.extend(reversed(p.children))
        elif isinstance(p, Repeat):
            stack.append(p.body)
        elif isinstance(p, Call):
            stack.append(p.function.program)


def leaves(program, mult=1):
    """Yield (node, times) for every Execute / Copy / Sync in the order the program runs
    them once, ``times`` being how often it runs (Repeat multiplies, Call recurses)."""
    if isinstance(program, Sequence):
        for c in program.children:
            yield from leaves(c, mult)
    elif isinstance(program, Repeat):
        yield from leaves(program.body, mult * int(program.count))
    elif isinstance(program, Call):
        yield from leaves(program.function.program, mult)
    else:
        yield program, mult
