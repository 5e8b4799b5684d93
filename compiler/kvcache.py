"""The KV cache in streaming memory (``ipusim generate --kv-cache streaming``).

A decoder built with the model option ``kv_cache="streaming"`` (models/transformers.py)
marks its ``KVCacheWrite`` ops so; :func:`stream_kv_cache`, applied to the lowered program
before it is compiled (simulator/run.py, simulator/multichip.py), then keeps every layer's
cache in the streaming memory beside the chip instead of tile SRAM, as Poplar's remote
buffers would:

* before the first program step that touches a layer's key (or value) cache, a copy from
  streaming memory loads the positions already cached, the ones this program's attention
  reads (``[0, position)`` of its ``KVCacheWrite``: none in a prefill, ``past`` positions in
  a decode step);
* after the last step that touches it, a copy to streaming memory stores the positions the
  program wrote (``[position, position + tokens)``: the prompt's in a prefill, the new
  token's in a decode step);
* the cache variables are marked ``offloaded``: memory planning counts a layer's cache only
  while it is resident (from its load to its last use), so one layer's buffer at a time,
  not every layer's cache all program long; the cache's unread rest (``*_cache.free``, the
  positions later steps will fill) is never in SRAM.

The copies are remote streams (``remote = True``): the engine times each synchronously at the
chip's streaming-memory rate (``streaming_memory_bytes_per_s``, else its host link), one at
a time, the program waiting for it, and spreads the bytes over the tiles at the exchange
rate.  Nothing overlaps the loads with computation, so the figures are those of a program
that waits for its cache (Poplar overlaps remote-buffer copies only with I/O tiles, which
the simulator does not model).
"""
from __future__ import annotations

from hardware.dtypes import DTYPE_BYTES

from .graph import GraphError
from .program import Call, Copy, Execute, Repeat, Sequence, walk
from .tensor import Tensor
from .transforms import _uses, splice

def streamed_caches(opgraph) -> list:
    """``[(cache tensor, KVCacheWrite attrs)]`` of the writes the model marks ``streaming``."""
    out = []
    for n in opgraph.ops():
        d = opgraph.op(n)
        if d["op"] == "KVCacheWrite" and d["attrs"].get("placement") == "streaming":
            out.append((d["inputs"][1], d["attrs"]))
    return out


def _logical(graph, act) -> Tensor:
    """The variable behind ``act`` seen with the op graph's shape.  A cache is stored with its
    last dimension innermost and nothing around it (H = W = 1), so its storage order is its
    logical row-major order."""
    if act.H != 1 or act.W != 1:
        raise GraphError(f"{act.name}: a KV cache stored as {act.shape5} cannot be streamed by position")
    var = graph.variables[act.var]
    return Tensor(graph, act.dtype, act.logical, start=var.start, name=var.name)


def _positions(t, axis, a, b) -> Tensor:
    key = [slice(None)] * t.rank
    key[axis] = slice(a, b)
    return t[tuple(key)]


def _touches(graph, children) -> dict:
    """{var id: [positions in ``children`` of the steps that read or write it]}."""
    uses = _uses(graph)
    out = {}
    for i, c in enumerate(children):
        if isinstance(c, Execute):
            vs = uses.get(c.compute_set.id, {})
        elif isinstance(c, Copy):
            vs = [graph.variable(t).id for t in (c.src, c.dst) if hasattr(t, "elements") and t.numel]
        else:
            continue
        for v in vs:
            out.setdefault(v, []).append(i)
    return out


def stream_kv_cache(low) -> dict | None:
    """Move the KV cache of a lowered decoder program to streaming memory (module doc); None
    when its model keeps the cache in SRAM.  Returns what moved: the variables, the bytes loaded
    and stored per run of the program, and the copies."""
    og = low.opgraph
    caches = streamed_caches(og)
    if not caches:
        return None
    prog = low.program
    if not isinstance(prog, Sequence) or any(isinstance(c, Repeat) for c in prog.children):
        raise GraphError("kv_cache streaming needs a program without loops")
    g = low.graph
    children = list(prog.children)
    touches = _touches(g, children)
    # graph-function calls are fine where no function touches a cache (an outlined decoder layer
    # leaves the ops on its cache in the caller, compiler/lower.py): the loads and stores go
    # around the caller's steps
    called = _touches(g, [q for c in children if isinstance(c, Call) for q in walk(c.function.program)])
    for name, _ in caches:
        if g.variables[low.acts[name].var].id in called:
            raise GraphError(f"kv_cache streaming: {name} is used inside a graph function: lower with "
                             f"use_functions=False")
    before = {i: [] for i in range(len(children) + 1)}
    after = {i: [] for i in range(len(children) + 1)}
    loaded = stored = held = 0
    copies = 0
    for name, attrs in caches:
        act = low.acts[name]
        var = g.variables[act.var]
        eb = DTYPE_BYTES[var.dtype]
        axis = 2 if attrs["layout"] == "k" else 1      # keys (B kv, hd, L), values (B kv, L, hd)
        pos, tok = int(attrs["position"]), int(attrs["tokens"])
        steps = touches.get(var.id, [])
        var.offloaded = True
        held += var.size * eb
        free = low.acts.get(f"{name}.free")
        if free is not None:
            g.variables[free.var].offloaded = True
            held += g.variables[free.var].size * eb
        if not steps:
            continue
        t = _logical(g, act)
        if pos > 0:
            src = _positions(t, axis, 0, pos)
            s = g.add_host_to_device_fifo(f"remote:{name}:load", var.dtype, src.numel, buffers=1)
            s.remote = True
            cp = Copy(s, src)
            cp.phase = "fwd"
            before[steps[0]].append(cp)
            loaded += src.numel * eb
            copies += 1
        dst = _positions(t, axis, pos, pos + tok)
        s2 = g.add_device_to_host_fifo(f"remote:{name}:store", var.dtype, dst.numel, buffers=1)
        s2.remote = True
        cp2 = Copy(dst, s2)
        cp2.phase = "fwd"
        after[steps[-1]].append(cp2)
        stored += dst.numel * eb
        copies += 1
    prog.children = splice(children, before, after)
    return {"placement": "streaming", "variables": len(caches), "cache_bytes": int(held),
            "bytes_loaded": int(loaded), "bytes_stored": int(stored), "copies": copies}


__all__ = ["stream_kv_cache", "streamed_caches"]
