"""Host memory: what building a graph will need, checked before it is built.

Lowering an op graph to vertices and edges, compiling it and planning its memory holds
numpy arrays that grow with the tensors the ops touch (edges are regions of tensors,
vertices split the ops' work over the tiles).  A model too big for the *host* (VGG-16
training at batch 32, ResNet-50 at batch 256) used to die with ``MemoryError`` deep inside
the compile, or be killed by the kernel, instead of reporting anything.  So every lowering
(:func:`compiler.lower.lower`: ``compile``, ``simulate``, ``report``, ``render``, sweeps,
each stage of several chips) first estimates its peak host memory from the op graph and
refuses, naming the estimate and the memory available, when it would not fit.

The estimate (:func:`estimate_bytes`) is linear in what the op graph says, cheap
(one pass over the ops), and calibrated as an upper-ish bound against the peak RSS of real
compile + simulate runs (``bench/bench_hostmem.py`` measures them; docs/robustness.md lists
them): ``BASE`` for the interpreter and the libraries, ``PER_WEIGHT_ELEMENT`` bytes per
element of a parameter / state / constant tensor each op reads or writes (the weights'
mappings and the convolution / matmul plans' vertices over them), ``PER_ELEMENT`` bytes per
element of every other tensor each op reads or writes (activations, gradients: their
edges and element-wise vertices), and ``PER_OP`` per op.

The memory available is ``MemAvailable`` of ``/proc/meminfo``; the environment variable
``IPUSIM_HOST_MEMORY`` overrides it (bytes, or with a K / M / G / T suffix, e.g. ``64G``;
``0`` or ``off`` turns the check off).

>>> parse_size("64G") == 64 * 2**30, parse_size("1.5M") == int(1.5 * 2**20), parse_size("off")
(True, True, None)
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading

#: CALIBRATED (see the module doc and docs/memory.md): bytes of peak host memory
BASE = 64 * 2**20
PER_OP = 6.4e6
PER_WEIGHT_ELEMENT = 2.1
PER_ELEMENT = 1.4
#: CALIBRATED: bytes per element a graph-function call copies in (an outlined inference
#: graph's later blocks, :func:`graph_features`): the smallest whole number with which the
#: outlined estimate covers ResNet-50 batch 16 (2,295 MiB measured) and GPT-2 batch 1
#: (1,273 MiB) inference (``bench/bench_hostmem.py``, docs/robustness.md)
PER_COPIED_ELEMENT = 12

ENV = "IPUSIM_HOST_MEMORY"
_WEIGHT_KINDS = ("param", "state", "constant")
_SUFFIX = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class HostMemoryError(ValueError):
    """Building the graph would need more host memory than the machine has."""


def parse_size(text):
    """``"64G"`` -> bytes; ``"0"`` / ``"off"`` / ``""`` -> None (no limit)."""
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B") if text is not None else ""
    if t in ("", "0", "OFF", "NONE"):
        return None
    unit = t[-1] if t[-1] in _SUFFIX else ""
    try:
        v = float(t[: len(t) - len(unit)] if unit else t) * _SUFFIX[unit]
    except ValueError:
        raise HostMemoryError(f"{ENV}: {text!r} is not a size (bytes, or a number with K, M, G or T; "
                              f"0 or off: no check)") from None
    if not v > 0 or v != v or v == float("inf"):
        raise HostMemoryError(f"{ENV}: {text!r} must be a positive size (0 or off: no check)")
    return int(v)


def available_bytes():
    """``(bytes, where from)``: ``$IPUSIM_HOST_MEMORY``, else MemAvailable; bytes None: no check."""
    env = os.environ.get(ENV)
    if env is not None:
        return parse_size(env), f"${ENV}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except OSError:
        pass
    return None, "unknown (no /proc/meminfo)"


def graph_features(opg, outlined=False) -> dict:
    """What the estimate reads from an op graph: ops, and the elements its ops touch (each
    input and output of each op, weights and the rest counted apart).

    ``outlined`` (an inference graph lowered with graph functions, compiler/lower.py): a block
    whose ``block_type`` occurred before is a call of the function lowered from the first,
    so its ops build nothing; what it builds is the copies of the tensors it takes in (each
    counted once, as one op) and the ops on its own state (a KV cache), lowered in the
    caller, counted as ops.  Ignored for a training graph."""
    tensors = opg.tensors
    weight = other = copies = 0
    ops = 0
    # training graphs outline only where their blocks repeat alike (compiler/lower.py
    # _training_block): counted op by op
    outlined = outlined and all(d["phase"] == "fwd" for _, d in opg.graph.nodes(data=True))
    first = {}          # block_type -> the block lowered as its function
    copied, called = set(), set()
    # state written in place (a KV cache) and its in-place outputs: the ops on them stay in the caller
    stateful = {x for t in tensors.values() if t.inplace_of and tensors[t.inplace_of].kind == "state"
                for x in (t.name, t.inplace_of)}
    for n in opg.ops():
        d = opg.op(n)
        bt, blk = d.get("block_type"), d.get("block")
        later = outlined and bt and first.setdefault(bt, blk) != blk
        if later and not stateful.intersection(d["inputs"] + d["outputs"]):
            if blk not in called:       # the call (and its copies), one op's worth
                called.add(blk)
                ops += 1
            for t in d["inputs"]:       # what the call copies in
                p = tensors[t].producer
                if (blk, t) not in copied and (p is None or opg.op(p).get("block") != blk):
                    copied.add((blk, t))
                    copies += tensors[t].size
            continue
        ops += 1
        for t in d["inputs"] + d["outputs"]:
            ti = tensors[t]
            if ti.kind in _WEIGHT_KINDS:
                weight += ti.size
            else:
                other += ti.size
    return {"ops": ops, "weight_elements": weight, "other_elements": other, "copied_elements": copies}


def estimate_bytes(opg, outlined=False) -> int:
    """Peak host memory (bytes) of lowering, compiling and simulating ``opg``: an upper-ish bound
    (``outlined``: see :func:`graph_features`)."""
    f = graph_features(opg, outlined)
    return int(BASE + PER_OP * f["ops"] + PER_WEIGHT_ELEMENT * f["weight_elements"]
               + PER_ELEMENT * f["other_elements"] + PER_COPIED_ELEMENT * f["copied_elements"])


def check(opg, what=None, outlined=False) -> int:
    """Raise :class:`HostMemoryError` when building ``opg`` would not fit in the host's memory;
    returns the estimate (bytes).  ``outlined``: repeated inference blocks are graph-function
    calls (:func:`graph_features`)."""
    need = estimate_bytes(opg, outlined)
    have, source = available_bytes()
    if have is not None and need > have:
        f = graph_features(opg, outlined)
        name = what or getattr(opg, "name", "the model")
        raise HostMemoryError(
            f"{name}: building its graph would need about {need / 2**30:,.1f} GiB of host memory (estimated from "
            f"its {f['ops']:,} ops touching {f['weight_elements'] + f['other_elements']:,} tensor elements"
            + (f", {f['copied_elements']:,} copied into graph functions" if f["copied_elements"] else "") + "), "
            f"more than the {have / 2**30:,.1f} GiB available ({source}); use a smaller --batch (or more "
            f"--micro-batches), fewer layers, or more chips; {ENV}=SIZE (e.g. 64G) overrides the available "
            f"memory, {ENV}=off turns this check off")
    return need


# -- reusing freed host memory while a graph compiles -------------------------------------------
#: glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
#: while compiling: allocations below this come from the heap, not from fresh pages of their own
REUSE_MMAP_THRESHOLD = 1 << 30
#: and freed heap memory is kept (up to this much at its top) for the next allocation
REUSE_TRIM_THRESHOLD = (1 << 31) - 1
#: after: glibc's own thresholds once they have grown (its DEFAULT_MMAP_THRESHOLD_MAX, twice that)
_AFTER_MMAP_THRESHOLD = 32 << 20
_AFTER_TRIM_THRESHOLD = 64 << 20
_reuse_lock = threading.Lock()
_reuse_depth = 0


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


@contextlib.contextmanager
def reuse_freed_memory():
    """Within: freed numpy temporaries are reused, not given back to the system and faulted in
    again.  A compile makes and drops arrays of hundreds of megabytes (one per edge of a 70 M
    edge graph) again and again; by default glibc gives each above 32 MiB fresh pages
    (``mmap``), which the kernel must fault in and zero (numpy asks for transparent huge pages
    on them, which adds compaction): a BERT-Large stage spent 15 of its 44 s in the kernel.
    Within this context glibc serves them from its heap and keeps what is freed (threads started
    within it share that heap: one arena; a thread's own arena would map its big arrays afresh),
    and numpy does not ask for huge pages; on leaving, the heap's free memory goes back to the system
    (``malloc_trim``) and the settings are glibc's grown defaults again.  Speed only: nothing
    computed changes.  A no-op where the C library is not glibc; nests."""
    global _reuse_depth
    if _LIBC is None:
        yield
        return
    import numpy as np
    madvise = getattr(getattr(np, "_core", None), "multiarray", None)
    with _reuse_lock:
        _reuse_depth += 1
        if _reuse_depth == 1:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, REUSE_MMAP_THRESHOLD)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, REUSE_TRIM_THRESHOLD)
            _LIBC.mallopt(_M_ARENA_MAX, 1)      # the compiler's threads too (their own arenas mmap big arrays)
            hugepage = madvise._get_madvise_hugepage() if hasattr(madvise, "_get_madvise_hugepage") else None
            if hugepage:
                madvise._set_madvise_hugepage(False)
            reuse_freed_memory._hugepage = hugepage
    try:
        yield
    finally:
        with _reuse_lock:
            _reuse_depth -= 1
            if _reuse_depth == 0:
                _LIBC.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP_THRESHOLD)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM_THRESHOLD)
                _LIBC.mallopt(_M_ARENA_MAX, 0)      # glibc's own limit again
                if reuse_freed_memory._hugepage:
                    madvise._set_madvise_hugepage(True)
                _LIBC.malloc_trim(0)
