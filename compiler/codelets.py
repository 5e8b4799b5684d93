"""The one table of codelets.

Every codelet is declared once here: its fields (direction, dtype, vector or
scalar), its cycle estimator, its code size, its per-vertex state size and its
numpy semantics.  Planners, the memory planner and the engine all read this
table; nothing else knows what a codelet costs or does.

Conventions
-----------
* A vertex's cycle estimate is in tile clock cycles *for one worker context*
  while all of the tile's workers are active (the IPU tile is barrel-threaded,
  so one worker issues once every ``workers_per_tile`` cycles).  A tile's time
  in a compute phase is therefore the longest of its workers' queues.
* Estimators are vectorized: they receive ``sizes`` (field name -> array of
  element counts, one per vertex), the dtype, the vertex batch's ``params`` and
  the chip, and return one cycle count per vertex.
* Semantics are vectorized over a batch of vertices that share params and
  field sizes: each field arrives as a 2-D array ``[vertices, elements]`` and the
  function returns the output / in-out fields in the same shape.

Example:
    >>> c = CODELETS["Add"]
    >>> [f.name for f in c.fields]
    ['a', 'b', 'out']
    >>> c.compute({"a": np.ones((2, 3)), "b": np.ones((2, 3))}, {})["out"].tolist()
    [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hardware.dtypes import DTYPE_BYTES
from .parallel import threads

IN, OUT, INOUT = "in", "out", "inout"


@dataclass(frozen=True)
class Field:
    name: str
    direction: str            # IN, OUT or INOUT
    dtype: str = "T"          # "T": the vertex's dtype; "P": its partials dtype
                              # (params["partials"], default T); or a concrete dtype
    vector: bool = True       # False: exactly one element
    same_size_as: str | None = None  # must have as many elements as this field

    @property
    def writes(self) -> bool:
        return self.direction in (OUT, INOUT)

    @property
    def reads(self) -> bool:
        return self.direction in (IN, INOUT)


@dataclass(frozen=True)
class Codelet:
    name: str
    fields: tuple
    cycles: Callable           # (sizes, dtype, params, chip) -> np.ndarray
    compute: Callable          # (arrays, params) -> dict of output arrays
    flops: Callable = None     # (sizes, dtype, params) -> np.ndarray
    code_bytes: int = 256      # machine code, once per tile that runs it
    state_bytes: int = 12      # the vertex's own fields (outer pointers, scalars): once per
                               # Poplar vertex, see compiler/memory.py ``vertex_state``
    supervisor: bool = False   # one supervisor vertex per tile and compute set covers all of
                               # the tile's work (else up to one vertex per worker)
    worklist_bytes: int = 0    # per partition of the work (one of this table's vertices) and
                               # kernel row (params["kh"]): the worklist entry it needs
    doc: str = ""
    passes: Callable = None    # (sizes, dtype, params) -> matrix-unit passes of one vertex
                               # (AMP codelets): each costs its entry's overhead in the
                               # vertex, and the tile ``amp_pass_cycles`` (see amp_cycles)
    shared: tuple = ()         # fields whose semantics accept rows shared between vertices
                               # (``arrays[f]`` distinct rows, ``arrays[f + "__rows"]`` which one each reads)
    field_index: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        self.field_index.update({f.name: i for i, f in enumerate(self.fields)})

    def field(self, name: str) -> Field:
        try:
            return self.fields[self.field_index[name]]
        except KeyError:
            raise KeyError(f"codelet {self.name} has no field {name!r} "
                           f"(fields: {', '.join(f.name for f in self.fields)})") from None


# -- cost helpers ---------------------------------------------------------------

def vector_cycles(elements, dtype, chip, ops_per_element=1.0, overhead=None):
    """Cycles of a worker streaming ``elements`` through the vector unit.

    One worker issues every ``workers_per_tile`` cycles; each issue moves
    ``vector_bytes_per_cycle`` bytes (64-bit load/store path).
    """
    per_issue = max(chip.vector_bytes_per_cycle // DTYPE_BYTES[dtype], 1)
    issues = np.ceil(np.asarray(elements, np.float64) * ops_per_element / per_issue)
    oh = chip.vertex_overhead_cycles if overhead is None else overhead
    return oh + issues * chip.workers_per_tile


def amp_cycles(macs, dtype, chip, passes=0):
    """Cycles of one worker driving the matrix unit (AMP) for ``macs`` multiply-adds in
    ``passes`` passes (one worklist entry each).

    The tile's peak is ``flops_per_cycle_per_tile[dtype]`` when all workers are
    busy, so one worker's share is that divided by the worker count.  Each pass costs
    the worker ``amp_entry_cycles`` (its worklist entry's loop code); what a pass costs
    the whole tile (the supervisor loading the weights, starting the workers) is
    ``amp_pass_cycles``, charged once per tile by :func:`tile_pass_cycles`.
    """
    flops_per_cycle = chip.flops_per_cycle_per_tile.get(dtype, chip.flops_per_cycle_per_tile["fp32"])
    per_worker = flops_per_cycle / chip.workers_per_tile
    return (chip.vertex_overhead_cycles + np.asarray(passes, np.float64) * chip.amp_entry_cycles
            + np.ceil(2.0 * np.asarray(macs, np.float64) / per_worker))


def amp_out_width(dtype) -> int:
    """Output channels the AMP produces per pass (its conv units): 16 for fp16 / int8,
    8 for fp32 (PopLibs' numConvUnits on Mk2)."""
    return 16 if DTYPE_BYTES[dtype] <= 2 else 8


def conv_passes(dtype, params):
    """AMP passes of one ConvPartial vertex: kernel positions x input-channel groups x
    output passes (PopLibs' ConvPartialnx1 loop)."""
    return (params["groups"] * params["kh"] * params["kw"]
            * -(-int(params.get("cog", amp_out_width(dtype))) // amp_out_width(dtype)))


def matmul_passes(dtype, params):
    """AMP passes of one MatMulPartial vertex: contraction groups x output passes (a
    matmul is PopLibs' 1x1 convolution: k the input channels, n the output channels)."""
    return (-(-int(params["k"]) // amp_width(dtype))
            * -(-int(params.get("n", amp_out_width(dtype))) // amp_out_width(dtype)))


def tile_pass_cycles(passes, chip):
    """What ``passes`` matrix-unit passes cost a tile beyond its workers' entries: the
    supervisor's weight loads and worker starts (``amp_pass_cycles`` each)."""
    return np.asarray(passes, np.float64) * chip.amp_pass_cycles


def amp_width(dtype) -> int:
    """Input channels (contraction elements) the AMP takes per pass: 8 for fp32, 16 for
    fp16 / int8.  A contraction of fewer elements per group is padded to this width."""
    return 16 if DTYPE_BYTES[dtype] <= 2 else 8


def amp_padded(k, dtype):
    """``k`` contraction elements rounded up to whole AMP passes."""
    w = amp_width(dtype)
    return np.ceil(np.asarray(k, np.float64) / w) * w


def mac_cycles(macs, dtype, chip, dots=0):
    """Cycles of one worker doing ``macs`` multiply-adds with plain vector MAC
    instructions (no matrix unit): one 64-bit vector of MACs per issue, no padding, in
    ``dots`` dot products (one per output element and kernel position), each costing
    ``mac_output_cycles`` of loop code (PopLibs' horizontal-MAC estimator)."""
    return vector_cycles(macs, dtype, chip) + np.asarray(dots, np.float64) * chip.mac_output_cycles


def _ew_flops(field_name, per=1.0):
    return lambda sizes, dtype, params: np.asarray(sizes[field_name], np.float64) * per


def _zero_flops(sizes, dtype, params):
    return np.zeros(len(next(iter(sizes.values()))), np.float64)


# -- semantics ------------------------------------------------------------------

def _binary(fn):
    return lambda a, p: {"out": fn(a["a"], a["b"])}


def _unary(fn):
    return lambda a, p: {"out": fn(a["in"])}


def _pad_window(x, p, fill=0.0):
    """Re-insert the padding a vertex's window lost at the image border.

    ``x``: [..., rows present, pixels present, c]; params ``ptop``/``pbot`` rows
    and ``pleft``/``pright`` pixels of padding (default 0).
    """
    pt, pb, pl, pr = (int(p.get(k, 0)) for k in ("ptop", "pbot", "pleft", "pright"))
    if pt == pb == pl == pr == 0:
        return x
    width = [(0, 0)] * (x.ndim - 3) + [(pt, pb), (pl, pr), (0, 0)]
    return np.pad(x, width, constant_values=fill)


# random odd multipliers: a row's hash is a wrapping dot product with them
_ROW_HASH = np.random.default_rng(2024).integers(1, 2**62, size=4096, dtype=np.int64) | 1


def _unique_rows(rows):
    """(distinct rows, which distinct row each row is) of a 2-D int64 array, like
    ``np.unique(rows, axis=0, return_inverse=True)`` (the distinct rows in no particular
    order), through one hash per row: checked exactly, the row-wise unique (a sort of
    the rows as bytes, ten times slower) when two rows collide or rows are too long."""
    n, k = rows.shape
    if 0 < k <= _ROW_HASH.size:
        h = rows @ _ROW_HASH[:k]      # wraps: a hash
        _, first, inv = np.unique(h, return_index=True, return_inverse=True)
        inv = inv.ravel()
        u = rows[first]
        if np.array_equal(u[inv], rows):
            return u, inv
    u, inv = np.unique(rows, axis=0, return_inverse=True)
    return u, inv.ravel()


def _im2col(x, p, kh, kw, s, wout):
    """[nu, wout, g, kh, kw, cig]: for each output pixel the window it reads, from the rows
    ``x`` [nu, g, rows inside the image, pixels inside, cig]; the padding (params ``ptop``,
    ``pbot``, ``pleft``, ``pright``) zero.  One strided copy per kernel column, straight
    into the columns (no padded copy of the rows first)."""
    nu, g, rows, win, cig = x.shape
    pt, pb, pl, pr = (int(p.get(k, 0)) for k in ("ptop", "pbot", "pleft", "pright"))
    cols = (np.zeros if (pt or pb or pl or pr) else np.empty)((nu, wout, g, kh, kw, cig), x.dtype)
    xt = x.transpose(0, 3, 1, 2, 4)          # [nu, pixels, g, rows, cig]
    for j in range(kw):
        # output pixel w reads input pixel w * s + j - pl: those inside the image
        lo = max(0, -(-(pl - j) // s))
        hi = min(wout, (win - 1 - j + pl) // s + 1)
        if hi > lo:
            c0 = lo * s + j - pl
            cols[:, lo:hi, :, pt: pt + rows, j, :] = xt[:, c0: c0 + (hi - lo - 1) * s + 1: s]
    return cols

#: a vertex batch's matrix products of at least this many multiply-adds in all are shared
#: out over threads (below it the hand-off costs more than the second core gains)
SPLIT_MATMUL_MACS = 1 << 22
_matmul_pool = None     # (pid, ThreadPoolExecutor)


def _matmuls(jobs):
    """``np.matmul(a, b, out=o)`` for each ``(a, b, o)`` of ``jobs`` (``a`` [M, K], ``b``
    [m, K, N], ``o`` [m, M, N], writing disjoint outputs), shared out over
    :func:`compiler.parallel.threads` threads in groups of about equal work (a large product
    cut along its weight sets ``m``, or its rows ``M``), each group one thread's
    single-threaded BLAS calls.  The functional executor runs BLAS on one thread
    (simulator/functional.py: its worker threads spin-wait when the cores are busy); threads
    that each run whole products use the free cores without spinning.  A cut changes which
    rows or weight sets one call computes, not any element's dot product along ``K``: the
    result is the same, bit for bit (tests/test_functional_plans.py)."""
    global _matmul_pool
    macs = [a.shape[0] * a.shape[1] * b.shape[0] * b.shape[2] for a, b, _ in jobs]
    total = sum(macs)
    n = threads() if total >= SPLIT_MATMUL_MACS else 1
    if n < 2:
        for a, b, o in jobs:
            np.matmul(a, b, out=o)
        return
    pieces, most = [], total / (2 * n)
    for (a, b, o), w in zip(jobs, macs):
        k = min(-(-w // int(most)), 2 * n)
        if k <= 1:
            pieces.append((a, b, o, w))
        elif b.shape[0] >= k:
            cuts = [b.shape[0] * i // k for i in range(k + 1)]
            pieces += [(a, b[i:j], o[i:j], w * (j - i) // b.shape[0]) for i, j in zip(cuts, cuts[1:]) if j > i]
        else:
            cuts = [a.shape[0] * i // k for i in range(k + 1)]
            pieces += [(a[i:j], b, o[:, i:j], w * (j - i) // a.shape[0]) for i, j in zip(cuts, cuts[1:]) if j > i]
    groups, acc, g = [[] for _ in range(n)], 0, 0
    for pc in pieces:      # contiguous groups of about total / n each
        while g < n - 1 and acc >= total * (g + 1) / n:
            g += 1
        groups[g].append(pc)
        acc += pc[3]

    def run(group):
        for a, b, o, _ in group:
            np.matmul(a, b, out=o)

    if _matmul_pool is None or _matmul_pool[0] != os.getpid():
        # (a forked child inherits the pool but not its threads: it makes its own)
        from concurrent.futures import ThreadPoolExecutor
        _matmul_pool = (os.getpid(), ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="ipusim-matmul"))
    futs = [_matmul_pool[1].submit(run, grp) for grp in groups[1:] if grp]
    run(groups[0])
    for f in futs:
        f.result()


def _conv_partial(a, p):
    """out[w, co] (+)= sum_{g, kh, kw, ci} in[g, kh, w*stride + kw, ci] * weights[g, kh, kw, ci, co].

    ``in`` holds, for each of ``groups`` input channel groups and each kernel
    row inside the image, one input row segment of ``cig`` channels per pixel;
    rows and pixels that fall in the padding are not connected and are given
    by params ``ptop``, ``pbot``, ``pleft``, ``pright``.  ``weights`` holds
    [groups, kh, kw, cig, cog].

    Both ``in`` and ``weights`` may arrive as distinct rows shared by several
    vertices (``in__rows`` / ``weights__rows``: which row each vertex reads):
    vertices are then computed as one matrix product per set of windows that
    meet the same weights (im2col of the windows times the weights side by side).
    """
    xin, wts = a["in"], a["weights"]
    iu, iw = a.get("in__rows"), a.get("weights__rows")
    nu, nw = xin.shape[0], wts.shape[0]
    nv = iu.size if iu is not None else (iw.size if iw is not None else nu)
    iu = np.arange(nv) if iu is None else np.asarray(iu, np.int64)
    iw = np.arange(nv) if iw is None else np.asarray(iw, np.int64)
    kh, kw, s = p["kh"], p["kw"], p["stride"]
    g, cig, cog, wout = p["groups"], p["cig"], p["cog"], p["wout"]
    rows = kh - p.get("ptop", 0) - p.get("pbot", 0)
    win = xin.shape[1] // (g * rows * cig)
    # im2col once per distinct window: [nu, wout, g * kh * kw * cig]
    K = g * kh * kw * cig
    x = xin.reshape(nu, g, rows, win, cig)
    if kh == 1 and kw == 1 and not any(p.get(k, 0) for k in ("ptop", "pbot", "pleft", "pright")):
        cols = x[:, :, 0, : (wout - 1) * s + 1: s, :].transpose(0, 2, 1, 3).reshape(nu, wout, K)
    else:
        cols = _im2col(x, p, kh, kw, s, wout).reshape(nu, wout, K)
    w = wts.reshape(nw, K, cog)
    cnt = np.bincount(iu, minlength=nu)
    m = int(cnt[0]) if nu else 0
    if nv and m and np.all(cnt == m):
        # every window feeds m vertices: sort them by (window, weights), then one product
        # per distinct set of weights [nu_s * wout, K] @ [K, m * cog]
        order = np.lexsort((iw, iu)).reshape(nu, m)
        wsets = iw[order]
        if np.all(wsets == wsets[:1]):
            sets, sinv = wsets[:1], np.zeros(nu, np.int64)
        else:
            sets, sinv = _unique_rows(wsets)
        dest = None if p.get("accumulate") or not hasattr(a, "dest") else a.dest("out")
        dtype = np.result_type(cols, w)
        # the tiles' memory itself when the executor offers it (simulator/functional.py):
        # 61 M output floats of ResNet-50 not written to a temporary and copied again
        out = dest if dest is not None and dest.dtype == dtype and dest.shape == (nv, wout * cog) else \
            np.empty((nv, wout * cog), dtype)
        wt = w.transpose(1, 0, 2)
        flat_out = out.flags.c_contiguous
        ns = sets.shape[0]
        # the windows of each set, in order: [bounds[si], bounds[si + 1]) of by_set
        by_set = np.argsort(sinv, kind="stable") if ns > 1 else None
        nus_all = np.bincount(sinv, minlength=ns)
        bounds = np.concatenate(([0], np.cumsum(nus_all)))
        blocked = False
        if flat_out:
            # is every set's vertices one block of rows, weights-major (as the conv planner lays
            # them out)?  Checked for all sets at once: vertex of (window i of the set, weights j)
            # = the block's first + j * windows + i
            po = order if by_set is None else order[by_set]
            setof = sinv if by_set is None else sinv[by_set]
            rank = np.arange(nu) - bounds[:-1][setof]
            blocked = np.array_equal(po, (po[bounds[:-1], 0][setof] + rank)[:, None]
                                     + np.arange(m) * nus_all[setof][:, None])
        jobs = []     # the blocked sets' products, run together (_matmuls)
        for si in range(ns):
            us = None if by_set is None else by_set[bounds[si]: bounds[si + 1]]
            nus = nu if us is None else us.size
            ws = sets[si]
            v0 = int(order[0 if us is None else us[0], 0])
            pos = None
            if not blocked and flat_out:
                pos = order if us is None else order[us]      # [windows, m]: vertex of (window, weights)
            if blocked or (pos is not None and np.array_equal(pos, v0 + np.arange(m) * nus + np.arange(nus)[:, None])):
                # the set's vertices are one block of rows, weights-major (as the conv planner
                # lays them out): one product per weights into its rows of ``out``, no scatter
                c = cols if us is None else (cols[int(us[0]): int(us[-1]) + 1]
                                             if int(us[-1]) - int(us[0]) == nus - 1 else cols[us])
                Wb = w[int(ws[0]): int(ws[-1]) + 1] if int(ws[-1]) - int(ws[0]) == m - 1 else w[ws]
                jobs.append((c.reshape(-1, K), Wb, out[v0: v0 + m * nus].reshape(m, nus * wout, cog)))
                continue
            if pos is None:
                pos = order if us is None else order[us]
            c = cols if us is None else cols[us]
            W = wt[:, ws, :].reshape(K, m * cog)
            r = np.matmul(c.reshape(-1, K), W).reshape(-1, wout, m, cog)
            # rows made contiguous first: a fancy-index write from the transposed view
            # was ten times slower than the copy and the write
            r = np.ascontiguousarray(r.transpose(0, 2, 1, 3)).reshape(-1, wout * cog)
            out[pos.ravel()] = r
        _matmuls(jobs)
    else:
        out = np.matmul(cols[iu], w[iw]).reshape(nv, wout * cog)
    if p.get("accumulate"):
        out = out + a["out"]
    return {"out": out}


def _matmul_partial(a, p):
    """out[m, n] (+)= a[m, k] @ b[k, n] for each vertex (``b`` held as [n, k] with params["tb"])."""
    nv = a["a"].shape[0]
    m, k, n = p["m"], p["k"], p["n"]
    b = a["b"].reshape(nv, n, k).transpose(0, 2, 1) if p.get("tb") else a["b"].reshape(nv, k, n)
    out = np.matmul(a["a"].reshape(nv, m, k), b).reshape(nv, m * n)
    if p.get("accumulate"):
        out = out + a["out"]
    return {"out": out}


def _reduce_partials(a, p):
    # the partials in place where the executor offers them as [vertices, k, elements]
    # (simulator/functional.py: a strided view of the tiles' memory, no gathered copy)
    k = p.get("k")
    r = a.regions("in") if k and hasattr(a, "regions") else None
    if r is None or r.shape[1] != k:
        nv = a["in"].shape[0]
        k = k or a["in"].shape[1] // a["out"].shape[1]
        r = a["in"].reshape(nv, k, -1)
    op = p.get("op", "add")
    scale = p.get("scale", 1.0)
    # straight into the tiles' memory where the executor offers it (the sums as computed, not
    # a temporary copied there): a plain sum or max of float32 partials
    dest = a.dest("out") if op in ("add", "max") and scale == 1.0 and r.dtype == np.float32 \
        and hasattr(a, "dest") else None
    if dest is not None and dest.shape == (r.shape[0], r.shape[2]):
        return {"out": (np.max if op == "max" else np.sum)(r, axis=1, out=dest)}
    res = r.max(axis=1) if op == "max" else r.sum(axis=1)
    if op == "mean":
        res = res / k
    if scale != 1.0:     # x * 1.0 is x: a pass over the sums saved
        res = res * scale
    return {"out": res}


def _reduce_vec(a, p):
    op = p.get("op", "add")
    x = a["in"]
    res = x.max(axis=1, keepdims=True) if op == "max" else x.sum(axis=1, keepdims=True)
    return {"out": res * p.get("scale", 1.0)}


def _pool(a, p):
    """Pooling over the input rows inside the image (padding re-inserted from params)."""
    nv = a["in"].shape[0]
    kh, kw, s, wout, c = p["kh"], p["kw"], p["stride"], p["wout"], p["c"]
    rows = kh - p.get("ptop", 0) - p.get("pbot", 0)
    is_max = p.get("op", "max") == "max"
    x = _pad_window(a["in"].reshape(nv, rows, -1, c), p, fill=-np.inf if is_max else 0.0)
    wins = np.stack([x[:, :, j: j + (wout - 1) * s + 1: s, :] for j in range(kw)], axis=2)
    if is_max:
        out = wins.max(axis=(1, 2))
    else:
        out = wins.sum(axis=(1, 2)) / p.get("divisor", kh * kw)
    return {"out": out.reshape(nv, wout * c)}


def _affine(a, p):
    """Per-channel scale and shift over [pixels, c] (batch-norm inference, bias add)."""
    nv = a["in"].shape[0]
    c = a["scale"].shape[1]
    x = a["in"].reshape(nv, -1, c)
    out = x * a["scale"][:, None, :]
    shift = a["shift"][:, None, :]
    if np.result_type(out, shift) == out.dtype:
        np.add(out, shift, out=out)     # in place: no second temporary
    else:
        out = out + shift
    if p.get("relu"):
        np.maximum(out, 0, out=out)
    return {"out": out.reshape(nv, -1)}


def _broadcast(a, p):
    """out = in (op) b, with b repeated along ``in`` (per-channel / per-row operands)."""
    nv = a["in"].shape[0]
    nb = a["b"].shape[1]
    x = a["in"].reshape(nv, -1, nb)
    b = a["b"][:, None, :]
    op = p.get("op", "add")
    out = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[op](x, b)
    return {"out": out.reshape(nv, -1)}


def _scaled_add(a, p):
    return {"data": a["data"] + p.get("scale", 1.0) * a["delta"]}


def _sgd_momentum(a, p):
    m = p.get("momentum", 0.9) * a["momentum"] + a["grad"]
    return {"momentum": m, "weights": a["weights"] - p.get("lr", 0.01) * m}


def _adam(a, p):
    b1, b2, lr, eps = p.get("beta1", 0.9), p.get("beta2", 0.999), p.get("lr", 1e-3), 1e-8
    m = b1 * a["m"] + (1 - b1) * a["grad"]
    v = b2 * a["v"] + (1 - b2) * a["grad"] ** 2
    return {"m": m, "v": v, "weights": a["weights"] - lr * m / (np.sqrt(v) + eps)}


def _dynamic_slice(a, p):
    """Copy rows of ``table`` chosen by ``index`` (embedding lookup / sparse layers)."""
    nv = a["table"].shape[0]
    rows = a["table"].reshape(nv, -1, p["row"])
    idx = np.clip(a["index"].astype(np.int64), 0, rows.shape[1] - 1)
    out = np.take_along_axis(rows, idx[:, :, None], axis=1)
    return {"out": out.reshape(nv, -1)}


def _softmax_xent(a, p):
    x = a["logits"]
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    prob = e / e.sum(axis=1, keepdims=True)
    lbl = a["label"].astype(np.int64)[:, 0]
    loss = -np.log(prob[np.arange(x.shape[0]), lbl] + 1e-30)
    grad = prob.copy()
    grad[np.arange(x.shape[0]), lbl] -= 1.0
    return {"loss": loss[:, None], "grad": grad * p.get("scale", 1.0)}


def _lsh_hash(a, p):
    bits = (a["in"] > 0).astype(np.int64)
    w = (1 << np.arange(bits.shape[1], dtype=np.int64))
    return {"out": (bits * w).sum(axis=1, keepdims=True).astype(np.int32)}


def _topk(a, p):
    k = int(p["k"])
    x = a["in"]
    idx = np.argsort(-x, axis=1, kind="stable")[:, :k]
    return {"idx": idx.astype(np.int32), "gates": np.take_along_axis(x, idx, axis=1)}


def _rotary(a, p):
    """Rotary embedding (Su et al. 2021, HF ``apply_rotary_pos_emb``): each vertex holds one
    token's ``heads`` rows of ``head_dim`` and that position's ``head_dim / 2`` cos and sin."""
    nv, half = a["cos"].shape[0], int(p["head_dim"]) // 2
    x = a["in"].reshape(nv, -1, 2, half)
    c, s = a["cos"][:, None, :], a["sin"][:, None, :] * (-1.0 if p.get("inverse") else 1.0)
    x1, x2 = x[:, :, 0], x[:, :, 1]
    out = np.stack([x1 * c - x2 * s, x2 * c + x1 * s], axis=2)
    return {"out": out.reshape(nv, -1)}


def _topk_route_grad(a, p):
    """d logits of a top-k softmax router for one token: the softmax gradient over the chosen
    ``k`` (gates g, their gradient dg: g (dg - sum g dg)) scattered to the chosen experts."""
    nv, E = a["out"].shape
    g, dg = a["gates"], a["grad"]
    d = g * (dg - (g * dg).sum(axis=1, keepdims=True))
    out = np.zeros((nv, E))
    np.put_along_axis(out, a["idx"].astype(np.int64), d, axis=1)
    return {"out": out}


def _fill(a, p):
    """out = value (zeroing a gradient before a scatter-add)."""
    return {"out": np.full(np.shape(a["out"]), p.get("value", 0.0))}


def _zero_insert(a, p):
    """One row of a zero-dilated image: the ``in`` row's pixels (``g`` channels each) at every
    ``stride``-th pixel of the ``out`` row, zeros between and after."""
    nv, g, s = a["in"].shape[0], int(p["g"]), int(p["stride"])
    x = a["in"].reshape(nv, -1, g)
    out = np.zeros((nv, a["out"].shape[1] // g, g), dtype=np.result_type(x.dtype, np.float32))
    out[:, ::s][:, :x.shape[1]] = x[:, :out[:, ::s].shape[1]]
    return {"out": out.reshape(nv, -1)}


def _multi_update_add(a, p):
    """table[index[i]] += in[i] for the part of the rows the vertex holds: its ``table``
    region starts ``offset`` elements into a block of rows of ``params["row"]`` elements
    (a block may be cut anywhere at a tile boundary); indices outside it are skipped."""
    nv, L, row = a["table"].shape[0], a["table"].shape[1], int(p["row"])
    table = np.array(a["table"], copy=True)
    upd = a["in"].reshape(nv, -1, row)
    idx = a["index"].astype(np.int64).reshape(nv, -1)
    off = a["offset"].astype(np.int64).reshape(nv)
    for v in range(nv):
        pos = idx[v][:, None] * row - off[v] + np.arange(row)[None, :]
        ok = (pos >= 0) & (pos < L)
        np.add.at(table[v], pos[ok], upd[v][ok])
    return {"table": table}


def _lamb_moments(a, p):
    """Adam's bias-corrected moments, the update direction r = m^ / (sqrt(v^) + eps) + wd w,
    and the partial sums of squares of the weights and of r (one per vertex) that the
    per-tensor trust ratio reduces."""
    b1, b2, eps, wd = p.get("beta1", 0.9), p.get("beta2", 0.999), p.get("epsilon", 1e-6), p.get("weight_decay", 0.01)
    step = p.get("step", 1)
    m = b1 * a["m"] + (1 - b1) * a["grad"]
    v = b2 * a["v"] + (1 - b2) * a["grad"] ** 2
    r = (m / (1 - b1 ** step)) / (np.sqrt(v / (1 - b2 ** step)) + eps) + wd * a["weights"]
    return {"m": m, "v": v, "r": r, "w_sq": (a["weights"] ** 2).sum(axis=1, keepdims=True),
            "r_sq": (r ** 2).sum(axis=1, keepdims=True)}


def _lamb_update(a, p):
    """w -= lr * (||w|| / ||r||) * r, the trust ratio from the reduced sums of squares
    (1 where either norm is zero)."""
    wn, rn = np.sqrt(a["w_sq"]), np.sqrt(a["r_sq"])
    ratio = np.where((wn > 0) & (rn > 0), wn / np.where(rn > 0, rn, 1.0), 1.0)
    return {"weights": a["weights"] - p.get("lr", 1e-3) * ratio * a["r"]}


def _transpose(a, p):
    """out = in^T per vertex: ``in`` is [rows][cols] row-major, ``out`` [cols][rows]."""
    nv = a["in"].shape[0]
    r, c = p["rows"], p["cols"]
    return {"out": a["in"].reshape(nv, r, c).transpose(0, 2, 1).reshape(nv, r * c)}


# -- the table ------------------------------------------------------------------

def _ew(name, fn, nin, flops_per=1.0, cost=1.0, doc=""):
    if nin == 1:
        fields = (Field("in", IN), Field("out", OUT, same_size_as="in"))
        sem = _unary(fn)
    else:
        fields = (Field("a", IN), Field("b", IN, same_size_as="a"), Field("out", OUT, same_size_as="a"))
        sem = _binary(fn)
    return Codelet(name, fields,
                   cycles=lambda s, d, p, c, _k=cost: vector_cycles(s["out"], d, c, _k),
                   compute=sem, flops=_ew_flops("out", flops_per), code_bytes=128, doc=doc)


_TABLE = [
    # element-wise maps
    _ew("Add", np.add, 2, doc="out = a + b"),
    _ew("Sub", np.subtract, 2, doc="out = a - b"),
    _ew("Mul", np.multiply, 2, doc="out = a * b"),
    _ew("Div", np.divide, 2, cost=4.0, doc="out = a / b"),
    _ew("Max", np.maximum, 2, doc="out = max(a, b)"),
    _ew("Copy", lambda x: x, 1, flops_per=0.0, doc="out = in"),
    _ew("Cast", lambda x: x, 1, flops_per=0.0, doc="out = in (converted)"),
    _ew("Relu", lambda x: np.maximum(x, 0), 1, doc="out = max(in, 0)"),
    _ew("Exp", np.exp, 1, cost=4.0, doc="out = exp(in)"),
    _ew("Sqrt", np.sqrt, 1, cost=4.0, doc="out = sqrt(in)"),
    _ew("Tanh", np.tanh, 1, cost=6.0, doc="out = tanh(in)"),
    _ew("Sigmoid", lambda x: 1 / (1 + np.exp(-x)), 1, cost=6.0, doc="out = 1 / (1 + exp(-in))"),
    _ew("Gelu", lambda x: 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3))), 1,
        flops_per=8.0, cost=8.0, doc="out = gelu(in) (tanh form)"),
    _ew("Swish", lambda x: x / (1 + np.exp(-x)), 1, cost=7.0,
        doc="out = in * sigmoid(in) (SiLU, the gate of SwiGLU): the sigmoid's 6 issues and a product"),
    Codelet("Rotary", (Field("in", IN), Field("cos", IN), Field("sin", IN, same_size_as="cos"),
                       Field("out", OUT, same_size_as="in")),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 3.0),
            compute=_rotary, flops=_ew_flops("out", 3.0), code_bytes=256,
            doc="rotary position embedding of one token's rows of params['head_dim'] elements: "
                "out = in * cos + rotate_half(in) * sin (sin negated with params['inverse']: its gradient)"),
    Codelet("ReluGrad", (Field("grad", IN), Field("act", IN, same_size_as="grad"),
                         Field("out", OUT, same_size_as="grad")),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 1.5),
            compute=lambda a, p: {"out": a["grad"] * (a["act"] > 0)},
            flops=_ew_flops("out"), code_bytes=128, doc="out = grad * (act > 0)"),
    Codelet("BroadcastOp", (Field("in", IN), Field("b", IN), Field("out", OUT, same_size_as="in")),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 1.0),
            compute=_broadcast, flops=_ew_flops("out"), code_bytes=192,
            doc="out = in op b, b repeated (bias add, per-channel scale, softmax's subtract/divide)"),
    Codelet("ScaledAdd", (Field("data", INOUT), Field("delta", IN, same_size_as="data")),
            cycles=lambda s, d, p, c: vector_cycles(s["data"], d, c, 1.0),
            compute=_scaled_add, flops=_ew_flops("data", 2.0), code_bytes=160,
            doc="data += scale * delta (in place)"),
    Codelet("Affine", (Field("in", IN), Field("scale", IN), Field("shift", IN, same_size_as="scale"),
                       Field("out", OUT, same_size_as="in")),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 1.0),
            compute=_affine, flops=_ew_flops("out", 2.0), code_bytes=192,
            doc="out[p, c] = in[p, c] * scale[c] + shift[c] (optionally relu)"),
    # reductions
    Codelet("Reduce", (Field("in", IN), Field("out", OUT, dtype="P", vector=False)),
            cycles=lambda s, d, p, c: vector_cycles(s["in"], d, c, 1.0),
            compute=_reduce_vec, flops=_ew_flops("in"), code_bytes=192, state_bytes=16,
            doc="out = reduce(in) with op add | max, times scale"),
    Codelet("ReducePartials", (Field("in", IN, dtype="P"), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(s["in"], "fp32" if p.get("partials") == "fp32" else d, c, 1.0),
            compute=_reduce_partials, flops=_ew_flops("in"), code_bytes=256, state_bytes=16,
            doc="out[j] = reduce_i in[i, j]: sums the partials of a split contraction"),
    Codelet("ReducePartialsUpdate", (Field("in", IN, dtype="P"), Field("out", INOUT)),
            cycles=lambda s, d, p, c: vector_cycles(np.asarray(s["in"], np.float64) + s["out"],
                                                    "fp32" if p.get("partials") == "fp32" else d, c, 1.0),
            compute=lambda a, p: {"out": a["out"] + _reduce_partials(a, p)["out"]},
            flops=lambda s, d, p: np.asarray(s["in"], np.float64) + s["out"], code_bytes=256, state_bytes=16,
            doc="out[j] += reduce_i in[i, j]: partials reduced straight into an accumulator (PopLibs' "
                "reductions with update)"),
    # matrix-unit (AMP) vertices
    Codelet("ConvPartial", (Field("in", IN), Field("weights", IN), Field("out", INOUT, dtype="P")),
            cycles=lambda s, d, p, c: amp_cycles(np.asarray(s["out"], np.float64) * p["groups"] * p["kh"] * p["kw"]
                                                 * amp_padded(p["cig"], d) / p.get("wdil", 1), d, c,
                                                 conv_passes(d, p)),
            passes=lambda s, d, p: conv_passes(d, p),
            compute=_conv_partial, shared=("in", "weights"),
            flops=lambda s, d, p: (2.0 * np.asarray(s["out"], np.float64) * p["groups"] * p["kh"] * p["kw"] * p["cig"]
                                   / p.get("wdil", 1)),
            code_bytes=1024, state_bytes=48, supervisor=True, worklist_bytes=6,
            doc="one row segment of a convolution's output for one channel group, on the AMP "
                                 "(input channel groups padded to the AMP's width)"),
    Codelet("MatMulPartial", (Field("a", IN), Field("b", IN), Field("out", INOUT, dtype="P")),
            cycles=lambda s, d, p, c: amp_cycles(np.asarray(s["out"], np.float64) * amp_padded(p["k"], d), d, c,
                                                 matmul_passes(d, p)),
            passes=lambda s, d, p: matmul_passes(d, p),
            compute=_matmul_partial,
            flops=lambda s, d, p: 2.0 * np.asarray(s["out"], np.float64) * p["k"],
            code_bytes=768, state_bytes=28, supervisor=True, worklist_bytes=6,
            doc="out[m, n] (+)= a[m, k] b[k, n] on the AMP (k padded to the AMP's width)"),
    # the same contractions with plain vector MACs (Poplar's horizontal-MAC vertices): no
    # padding, a fraction of the AMP's rate; the planners choose per op
    Codelet("ConvPartialMAC", (Field("in", IN), Field("weights", IN), Field("out", INOUT, dtype="P")),
            cycles=lambda s, d, p, c: mac_cycles(np.asarray(s["out"], np.float64) * p["groups"] * p["kh"] * p["kw"]
                                                 * p["cig"] / p.get("wdil", 1), d, c,
                                                 np.asarray(s["out"], np.float64) * p["groups"] * p["kh"] * p["kw"]
                                                 / p.get("wdil", 1)),
            compute=_conv_partial, shared=("in", "weights"),
            flops=lambda s, d, p: (2.0 * np.asarray(s["out"], np.float64) * p["groups"] * p["kh"] * p["kw"] * p["cig"]
                                   / p.get("wdil", 1)),
            code_bytes=768, state_bytes=48, supervisor=True, worklist_bytes=6,
            doc="ConvPartial with vector MACs instead of the AMP"),
    Codelet("MatMulPartialMAC", (Field("a", IN), Field("b", IN), Field("out", INOUT, dtype="P")),
            cycles=lambda s, d, p, c: mac_cycles(np.asarray(s["out"], np.float64) * p["k"], d, c, s["out"]),
            compute=_matmul_partial,
            flops=lambda s, d, p: 2.0 * np.asarray(s["out"], np.float64) * p["k"],
            code_bytes=512, state_bytes=28, supervisor=True, worklist_bytes=6,
            doc="MatMulPartial with vector MACs instead of the AMP"),
    Codelet("Pool", (Field("in", IN), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(np.asarray(s["out"], np.float64) * p["kh"] * p["kw"], d, c),
            compute=_pool,
            flops=lambda s, d, p: np.asarray(s["out"], np.float64) * p["kh"] * p["kw"],
            code_bytes=384, doc="max / average pooling of one output row segment"),
    # optimisers
    Codelet("SGDMomentum", (Field("weights", INOUT), Field("grad", IN, same_size_as="weights"),
                            Field("momentum", INOUT, same_size_as="weights")),
            cycles=lambda s, d, p, c: vector_cycles(s["weights"], d, c, 3.0),
            compute=_sgd_momentum, flops=_ew_flops("weights", 4.0), code_bytes=256,
            doc="m = mu m + g; w -= lr m"),
    Codelet("Adam", (Field("weights", INOUT), Field("grad", IN, same_size_as="weights"),
                     Field("m", INOUT, same_size_as="weights"), Field("v", INOUT, same_size_as="weights")),
            cycles=lambda s, d, p, c: vector_cycles(s["weights"], d, c, 10.0),
            compute=_adam, flops=_ew_flops("weights", 12.0), code_bytes=512,
            doc="Adam update of one region of weights"),
    # dynamic slicing (embeddings, sparse / conditional layers)
    Codelet("DynamicSlice", (Field("table", IN), Field("index", IN, dtype="int32"), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 1.0) + 20 * np.asarray(s["index"]),
            compute=_dynamic_slice, flops=_zero_flops, code_bytes=384,
            doc="out = rows of table chosen by index"),
    Codelet("SoftmaxCrossEntropy", (Field("logits", IN), Field("label", IN, dtype="int32", vector=False),
                                    Field("loss", OUT, vector=False), Field("grad", OUT, same_size_as="logits")),
            cycles=lambda s, d, p, c: vector_cycles(s["logits"], d, c, 8.0),
            compute=_softmax_xent, flops=_ew_flops("logits", 6.0), code_bytes=512,
            doc="loss and d(loss)/d(logits) of one sample"),
    # sparse and conditional layers (models/sparse.py, compiler/planners/sparse.py)
    Codelet("LSHHash", (Field("in", IN), Field("out", OUT, dtype="int32", vector=False)),
            cycles=lambda s, d, p, c: vector_cycles(s["in"], d, c, 2.0),
            compute=_lsh_hash, flops=lambda s, d, p: np.asarray(s["in"], np.float64), code_bytes=192,
            doc="out = sum_i (in[i] > 0) << i: a K-bit bucket id from K random projections (SimHash)"),
    Codelet("TopK", (Field("in", IN), Field("idx", OUT, dtype="int32"), Field("gates", OUT, same_size_as="idx")),
            cycles=lambda s, d, p, c: vector_cycles(np.asarray(s["in"], np.float64) * max(int(p.get("k", 1)), 1),
                                                    d, c, 1.0),
            compute=_topk, flops=lambda s, d, p: np.asarray(s["in"], np.float64) * max(int(p.get("k", 1)), 1),
            code_bytes=384, doc="idx, gates = the k largest entries of in (k passes over the row)"),
    Codelet("TopKRouteGrad", (Field("grad", IN), Field("idx", IN, dtype="int32", same_size_as="grad"),
                              Field("gates", IN, same_size_as="grad"), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(np.asarray(s["out"], np.float64)
                                                    + 4.0 * np.asarray(s["grad"], np.float64), d, c, 1.0),
            compute=_topk_route_grad,
            flops=lambda s, d, p: 4.0 * np.asarray(s["grad"], np.float64), code_bytes=256,
            doc="d logits of one token's top-k router: zero the row, then g (dg - sum g dg) at the k experts"),
    # scatter-add (gradient of a gather / embedding lookup), zero fill
    Codelet("Fill", (Field("out", OUT),),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 1.0),
            compute=_fill, flops=_zero_flops, code_bytes=96,
            doc="out = value (params['value'], default 0): zeroes a tensor before a scatter-add"),
    Codelet("ZeroInsert", (Field("in", IN), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 1.0),
            compute=_zero_insert, flops=_zero_flops, code_bytes=160,
            doc="one row of dX from a strided 1x1 convolution's deferred dilation (PopLibs' "
                "activationsPostDilate): the undilated row's pixels at every stride-th pixel, zeros between"),
    Codelet("MultiUpdateAdd", (Field("in", IN), Field("index", IN, dtype="int32"),
                                Field("offset", IN, dtype="int32", vector=False), Field("table", INOUT)),
            cycles=lambda s, d, p, c: (20 * np.asarray(s["index"], np.float64) + vector_cycles(
                np.asarray(s["in"], np.float64) * np.asarray(s["table"], np.float64)
                / max(int(p["row"]) * int(p.get("rows", 1)), 1), d, c, 2.0)),
            compute=_multi_update_add,
            flops=lambda s, d, p: (np.asarray(s["in"], np.float64) * np.asarray(s["table"], np.float64)
                                   / max(int(p["row"]) * int(p.get("rows", 1)), 1)),
            code_bytes=384,
            doc="table[index[i]] += in[i]: every index is checked against the rows the vertex holds "
                "(its region starts 'offset' elements into a block of 'rows' rows of 'row' elements); the "
                "expected share of the indices that hit them is added (popops MultiUpdateAdd)"),
    # LAMB (You et al. 2019): moments and partial norms, then the trust-ratio-scaled step
    Codelet("LambMoments", (Field("weights", IN), Field("grad", IN, same_size_as="weights"),
                            Field("m", INOUT, same_size_as="weights"), Field("v", INOUT, same_size_as="weights"),
                            Field("r", OUT, same_size_as="weights"),
                            Field("w_sq", OUT, dtype="fp32", vector=False),
                            Field("r_sq", OUT, dtype="fp32", vector=False)),
            cycles=lambda s, d, p, c: vector_cycles(s["weights"], d, c, 14.0),
            compute=_lamb_moments, flops=_ew_flops("weights", 16.0), code_bytes=640,
            doc="m, v updated; r = m^/(sqrt(v^)+eps) + wd w; w_sq, r_sq = sums of squares of w and r"),
    Codelet("LambUpdate", (Field("weights", INOUT), Field("r", IN, same_size_as="weights"),
                           Field("w_sq", IN, dtype="fp32", vector=False),
                           Field("r_sq", IN, dtype="fp32", vector=False)),
            cycles=lambda s, d, p, c: vector_cycles(s["weights"], d, c, 2.0) + 40,
            compute=_lamb_update, flops=_ew_flops("weights", 2.0), code_bytes=256,
            doc="w -= lr (||w|| / ||r||) r with the tensor's reduced sums of squares"),
    # data rearrangement (PopLibs popops::rearrange / poplin: the Transpose2d codelets transpose
    # small blocks on the tile, after an exchange brings each tile its blocks)
    Codelet("Transpose", (Field("in", IN), Field("out", OUT, same_size_as="in")),
            cycles=lambda s, d, p, c: vector_cycles(s["in"], d, c, 2.0),
            compute=_transpose, flops=_zero_flops, code_bytes=256, state_bytes=12,
            doc="out[c][r] = in[r][c] for an in block of params rows x cols (a load and a shuffled "
                "store per 64-bit vector: 2 issues per vector, CHOSEN)"),
]


# -- index-mapped vertices (compiler/planners/indexed.py) ------------------------------------
# Their fields are gathered from any regions (broadcast operands, transposed or padded
# windows, another tensor's layout), so one codelet computes an op of any rank and layout.
# ``params["fn"]`` names the function; ``params["int"]``: the result is an integer tensor
# (exact while its values stay below 2^24 in magnitude, which the ONNX backend checks).

def _erf(x):
    from scipy.special import erf
    return erf(x)


def _gelu(x, p):
    if p.get("approximate", "none") == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def _gelu_grad(x, p):
    """d gelu(x) / dx: Phi(x) + x phi(x), or the tanh approximation's derivative."""
    if p.get("approximate", "none") == "tanh":
        c = np.sqrt(2 / np.pi)
        t = np.tanh(c * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    return 0.5 * (1 + _erf(x / np.sqrt(2))) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def _swish_grad(x, alpha):
    """d (x sigmoid(alpha x)) / dx = s + alpha x s (1 - s)."""
    s = 1 / (1 + np.exp(-alpha * x))
    return s + alpha * x * s * (1 - s)


def _cast(x, p):
    to = p.get("to", "float")
    if to == "bool":
        return (x != 0).astype(np.float32)
    if to == "int":
        return np.trunc(x)
    if to == "float16":
        return x.astype(np.float16).astype(np.float32)
    return x


def _selu(x, p):
    a, g = p.get("alpha", 1.67326319217681884765625), p.get("gamma", 1.05070102214813232421875)
    return g * np.where(x > 0, x, a * (np.exp(np.minimum(x, 0)) - 1))


def _bits(p):
    return int(p.get("bits", 32)), bool(p.get("unsigned", False))


def _as_int(x):
    return np.asarray(x, np.float64).astype(np.int64)


def _bitwise(fn):
    def f(a, b, p):
        return fn(_as_int(a), _as_int(b)).astype(np.float64)
    return f


def _bitwise_not(x, p):
    bits, unsigned = _bits(p)
    v = ~_as_int(x)
    return (v & ((1 << bits) - 1) if unsigned else v).astype(np.float64)


def _int_div(a, b, p):
    if p.get("int"):
        return np.trunc(np.asarray(a, np.float64) / b)
    return a / b


def _mod(a, b, p):
    if p.get("fmod"):
        return np.fmod(a, b)
    return np.mod(np.asarray(a, np.float64), b)


def _pow(a, b, p):
    r = np.power(np.asarray(a, np.float64), b)
    return np.trunc(r) if p.get("int") else r


def _bitshift(a, b, p):
    a, b = _as_int(a), _as_int(b)
    return (a << b if p.get("direction") == "LEFT" else a >> b).astype(np.float64)


def _isinf(x, p):
    return ((x == np.inf) & bool(p.get("detect_positive", 1))) | ((x == -np.inf) & bool(p.get("detect_negative", 1)))


#: unary functions: name -> (f(x, params), vector issues per element)
UNARY_FNS = {
    "abs": (lambda x, p: np.abs(x), 1.0), "neg": (lambda x, p: -x, 1.0),
    "exp": (lambda x, p: np.exp(x), 4.0), "log": (lambda x, p: np.log(x), 4.0),
    "sqrt": (lambda x, p: np.sqrt(x), 4.0), "reciprocal": (lambda x, p: 1.0 / x, 4.0),
    "floor": (lambda x, p: np.floor(x), 1.0), "ceil": (lambda x, p: np.ceil(x), 1.0),
    "round": (lambda x, p: np.round(x), 1.0), "sign": (lambda x, p: np.sign(x), 1.0),
    "sin": (lambda x, p: np.sin(x), 6.0), "cos": (lambda x, p: np.cos(x), 6.0), "tan": (lambda x, p: np.tan(x), 8.0),
    "asin": (lambda x, p: np.arcsin(x), 8.0), "acos": (lambda x, p: np.arccos(x), 8.0),
    "atan": (lambda x, p: np.arctan(x), 8.0), "sinh": (lambda x, p: np.sinh(x), 8.0),
    "cosh": (lambda x, p: np.cosh(x), 8.0), "asinh": (lambda x, p: np.arcsinh(x), 8.0),
    "acosh": (lambda x, p: np.arccosh(x), 8.0), "atanh": (lambda x, p: np.arctanh(x), 8.0),
    "erf": (lambda x, p: _erf(x), 8.0), "relu": (lambda x, p: np.maximum(x, 0), 1.0),
    "sigmoid": (lambda x, p: 1 / (1 + np.exp(-x)), 6.0), "tanh": (lambda x, p: np.tanh(x), 6.0),
    "softplus": (lambda x, p: np.logaddexp(0, x), 8.0), "softsign": (lambda x, p: x / (1 + np.abs(x)), 4.0),
    "elu": (lambda x, p: np.where(x > 0, x, p.get("alpha", 1.0) * (np.exp(np.minimum(x, 0)) - 1)), 6.0),
    "selu": (_selu, 6.0),
    "celu": (lambda x, p: np.maximum(x, 0) + np.minimum(0, p.get("alpha", 1.0)
                                                        * (np.exp(np.minimum(x, 0) / p.get("alpha", 1.0)) - 1)), 6.0),
    "leakyrelu": (lambda x, p: np.where(x >= 0, x, p.get("alpha", 0.01) * x), 2.0),
    "hardsigmoid": (lambda x, p: np.clip(p.get("alpha", 0.2) * x + p.get("beta", 0.5), 0, 1), 3.0),
    "hardswish": (lambda x, p: x * np.clip(x / 6 + 0.5, 0, 1), 4.0),
    "thresholdedrelu": (lambda x, p: np.where(x > p.get("alpha", 1.0), x, 0), 2.0),
    "mish": (lambda x, p: x * np.tanh(np.logaddexp(0, x)), 12.0), "gelu": (_gelu, 8.0),
    "swish": (lambda x, p: x / (1 + np.exp(-p.get("alpha", 1.0) * x)), 6.0),
    "shrink": (lambda x, p: np.where(x < -p.get("lambd", 0.5), x + p.get("bias", 0.0),
                                     np.where(x > p.get("lambd", 0.5), x - p.get("bias", 0.0), 0)), 3.0),
    "isnan": (lambda x, p: np.isnan(x), 1.0), "isinf": (_isinf, 2.0),
    "not": (lambda x, p: x == 0, 1.0), "bitwise_not": (_bitwise_not, 1.0),
    "copy": (lambda x, p: x, 0.5), "cast": (_cast, 1.0),
    "clip": (lambda x, p: np.minimum(np.maximum(x, p.get("min", -np.inf)), p.get("max", np.inf)), 2.0),
    "scale": (lambda x, p: x * p.get("alpha", 1.0), 1.0),
}

#: binary functions (numpy broadcasting already done by the gather): name -> (f(a, b, params), issues)
BINARY_FNS = {
    "add": (lambda a, b, p: a + b, 1.0), "sub": (lambda a, b, p: a - b, 1.0),
    "mul": (lambda a, b, p: np.asarray(a, np.float64) * b if p.get("int") else a * b, 1.0),
    "div": (_int_div, 4.0), "pow": (_pow, 8.0), "mod": (_mod, 4.0),
    "max": (lambda a, b, p: np.maximum(a, b), 1.0), "min": (lambda a, b, p: np.minimum(a, b), 1.0),
    "equal": (lambda a, b, p: a == b, 1.0), "less": (lambda a, b, p: a < b, 1.0),
    "greater": (lambda a, b, p: a > b, 1.0), "less_equal": (lambda a, b, p: a <= b, 1.0),
    "greater_equal": (lambda a, b, p: a >= b, 1.0),
    "and": (lambda a, b, p: (a != 0) & (b != 0), 1.0), "or": (lambda a, b, p: (a != 0) | (b != 0), 1.0),
    "xor": (lambda a, b, p: (a != 0) ^ (b != 0), 1.0),
    "bitwise_and": (_bitwise(np.bitwise_and), 1.0), "bitwise_or": (_bitwise(np.bitwise_or), 1.0),
    "bitwise_xor": (_bitwise(np.bitwise_xor), 1.0), "bitshift": (_bitshift, 1.0),
    "prelu": (lambda a, b, p: np.where(a < 0, a * b, a), 2.0),
    "axpby": (lambda a, b, p: p.get("alpha", 1.0) * a + p.get("beta", 1.0) * b, 2.0),
    # gradients of unary ops (a: the incoming gradient, b: the op's output y or input x)
    "relu_grad": (lambda a, b, p: a * (b > 0), 1.5),
    "sigmoid_grad": (lambda a, b, p: a * b * (1 - b), 3.0),
    "tanh_grad": (lambda a, b, p: a * (1 - b * b), 3.0),
    "sqrt_grad": (lambda a, b, p: a / (2 * b), 5.0),
    "leakyrelu_grad": (lambda a, b, p: np.where(b >= 0, a, p.get("alpha", 0.01) * a), 2.0),
    "gelu_grad": (lambda a, b, p: a * _gelu_grad(np.asarray(b, np.float64), p), 12.0),
    "swish_grad": (lambda a, b, p: a * _swish_grad(np.asarray(b, np.float64), p.get("alpha", 1.0)), 8.0),
    "erf_grad": (lambda a, b, p: a * (2 / np.sqrt(np.pi)) * np.exp(-np.asarray(b, np.float64) ** 2), 6.0),
    "log_grad": (lambda a, b, p: a / b, 4.0),
    "neg_grad": (lambda a, b, p: -a, 1.0),
    "abs_grad": (lambda a, b, p: a * np.sign(b), 2.0),
    "reciprocal_grad": (lambda a, b, p: -a / (np.asarray(b, np.float64) ** 2), 5.0),
    "softplus_grad": (lambda a, b, p: a / (1 + np.exp(-np.asarray(b, np.float64))), 6.0),
    "elu_grad": (lambda a, b, p: np.where(b > 0, a, a * p.get("alpha", 1.0) * np.exp(np.minimum(b, 0))), 6.0),
}

#: ternary functions: name -> (f(a, b, c, params), issues)
TERNARY_FNS = {
    "where": (lambda a, b, c, p: np.where(a != 0, b, c), 1.0),
    "clip": (lambda a, b, c, p: np.minimum(np.maximum(a, b), c), 2.0),
}


def _fn_cost(table):
    return lambda s, d, p, c: vector_cycles(s["out"], d, c, table[p["fn"]][1])


def _rows(a, name, k):
    x = a[name]
    return x.reshape(x.shape[0], -1, k) if k else x.reshape(x.shape[0], -1, 0)


def _reduce_rows(a, p):
    """out[r] = reduce(in[r, :k]) for the vertex's rows (any reduction of ONNX's Reduce* /
    ArgMax / ArgMin; the rows were gathered with the reduced axes last)."""
    k, op = int(p["k"]), p["fn"]
    x = np.asarray(_rows(a, "in", k), np.float64)
    if op in ("argmax", "argmin"):
        if k == 0:
            raise ValueError("arg-reduction over an empty axis")
        y = x if op == "argmax" else -x
        if p.get("select_last_index"):
            r = k - 1 - np.argmax(y[:, :, ::-1], axis=2)
        else:
            r = np.argmax(y, axis=2)
        return {"out": r.reshape(x.shape[0], -1)}
    f = {"sum": lambda v: v.sum(axis=2), "mean": lambda v: v.mean(axis=2),
         "max": lambda v: v.max(axis=2, initial=-np.inf), "min": lambda v: v.min(axis=2, initial=np.inf),
         "prod": lambda v: v.prod(axis=2), "l1": lambda v: np.abs(v).sum(axis=2),
         "l2": lambda v: np.sqrt((v * v).sum(axis=2)), "logsum": lambda v: np.log(v.sum(axis=2)),
         "logsumexp": lambda v: _logsumexp(v), "sumsquare": lambda v: (v * v).sum(axis=2)}[op]
    return {"out": f(x).reshape(x.shape[0], -1)}


def _logsumexp(v):
    if v.shape[2] == 0:
        return np.full(v.shape[:2], -np.inf)
    m = v.max(axis=2, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return np.log(np.exp(v - m).sum(axis=2)) + m[:, :, 0]


def _softmax_rows(a, p):
    """Softmax / LogSoftmax / Hardmax over each row of ``k`` elements."""
    k = int(p["k"])
    x = np.asarray(_rows(a, "in", k), np.float64)
    fn = p.get("fn", "softmax")
    if fn == "hardmax":
        out = np.zeros_like(x)
        np.put_along_axis(out, np.argmax(x, axis=2)[:, :, None], 1.0, axis=2)
    else:
        z = x - x.max(axis=2, keepdims=True)
        if fn == "logsoftmax":
            out = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
        else:
            e = np.exp(z)
            out = e / e.sum(axis=2, keepdims=True)
    return {"out": out.reshape(x.shape[0], -1)}


def _scan_rows(a, p):
    """Cumulative sum / product along each row (ONNX CumSum's exclusive / reverse)."""
    k = int(p["k"])
    x = np.asarray(_rows(a, "in", k), np.float64)
    if p.get("reverse"):
        x = x[:, :, ::-1]
    prod = p.get("fn") == "cumprod"
    r = np.cumprod(x, axis=2) if prod else np.cumsum(x, axis=2)
    if p.get("exclusive"):
        r = np.concatenate([np.full(r.shape[:2] + (1,), 1.0 if prod else 0.0), r[:, :, :-1]], axis=2)
    if p.get("reverse"):
        r = r[:, :, ::-1]
    return {"out": r.reshape(x.shape[0], -1)}


def _pool_rows(a, p):
    """One output per row of ``k`` window elements (padding elements point at a constant:
    -inf for max, 0 otherwise); an average divides by ``count`` (one per output)."""
    k = int(p["k"])
    x = np.asarray(_rows(a, "in", k), np.float64)
    fn = p.get("fn", "max")
    if fn == "max":
        out = x.max(axis=2)
    elif fn == "lp":
        q = float(p.get("p", 2))
        out = (np.abs(x) ** q).sum(axis=2) ** (1.0 / q)
    else:
        out = x.sum(axis=2) / a["count"].reshape(x.shape[:2])
    return {"out": out.reshape(x.shape[0], -1)}


def _lrn_rows(a, p):
    """Local response normalisation: in[r] / (bias + alpha / size * sum(win[r, :]^2))^beta."""
    size = int(p["size"])
    w = np.asarray(_rows(a, "win", size), np.float64)
    x = a["in"].reshape(w.shape[:2])
    d = (p.get("bias", 1.0) + p.get("alpha", 1e-4) / size * (w * w).sum(axis=2)) ** p.get("beta", 0.75)
    return {"out": (x / d).reshape(x.shape[0], -1)}


def _norm_rows(a, p):
    """Normalise each row of ``k`` elements: (x - mean) / sqrt(var + eps) (``fn`` "layer"),
    x / sqrt(mean(x^2) + eps) ("rms") or x / ||x||_p ("lp"), then * scale + bias (gathered
    per element, broadcast); mean and 1 / std per row are outputs too (LayerNormalization)."""
    k = int(p["k"])
    x = np.asarray(_rows(a, "in", k), np.float64)
    fn, eps = p.get("fn", "layer"), p.get("epsilon", 1e-5)
    if fn == "lp":
        q = int(p.get("p", 2))
        nrm = np.abs(x).sum(axis=2, keepdims=True) if q == 1 else np.sqrt((x * x).sum(axis=2, keepdims=True))
        y = np.where(nrm == 0, 0, x / np.where(nrm == 0, 1, nrm))
        mean = np.zeros(x.shape[:2] + (1,))
        istd = np.ones(x.shape[:2] + (1,))
    else:
        mean = x.mean(axis=2, keepdims=True) if fn != "rms" else np.zeros(x.shape[:2] + (1,))
        var = ((x - mean) ** 2).mean(axis=2, keepdims=True)
        istd = 1.0 / np.sqrt(var + eps)
        y = (x - mean) * istd
    if p.get("scale", True):
        y = y * _rows(a, "scale", k)
    if p.get("bias"):
        y = y + _rows(a, "bias", k)
    nv = x.shape[0]
    return {"out": y.reshape(nv, -1), "mean": mean.reshape(nv, -1), "istd": istd.reshape(nv, -1)}


def _batchnorm_map(a, p):
    """Batch normalisation with the statistics given: (x - mean) / sqrt(var + eps) * scale + bias,
    every operand gathered per element."""
    x = np.asarray(a["in"], np.float64)
    return {"out": (x - a["mean"]) / np.sqrt(np.asarray(a["var"], np.float64) + p.get("epsilon", 1e-5))
            * a["scale"] + a["bias"]}


def _targets(a, p, shape, k):
    """(target class per row, 0 where ignored; whether each row counts) of a loss codelet:
    ``target`` reshaped to ``shape``, ``ignore_index`` honoured, a class outside [0, k) refused."""
    t = np.asarray(a["target"], np.float64).reshape(shape).astype(np.int64)
    ign = p.get("ignore_index")
    valid = np.ones(t.shape, bool) if ign is None else t != int(ign)
    tt = np.where(valid, t, 0)
    if np.any((tt < 0) | (tt >= k)):
        raise ValueError(f"a target class outside [0, {k})")
    return tt, valid


def _nll_rows(a, p):
    """Negative log-likelihood of each row of ``k`` log-probabilities at its target class:
    out = -in[target] * weight[target] (0 where target == ignore_index), wout = the weight
    counted (for the mean of ONNX's NegativeLogLikelihoodLoss)."""
    k = int(p["k"])
    x = np.asarray(_rows(a, "in", k), np.float64)
    w = np.asarray(_rows(a, "weight", k), np.float64)
    tt, valid = _targets(a, p, x.shape[:2], k)
    xi = np.take_along_axis(x, tt[:, :, None], axis=2)[:, :, 0]
    wi = np.take_along_axis(w, tt[:, :, None], axis=2)[:, :, 0] * valid
    return {"out": (-xi * wi).reshape(x.shape[0], -1), "wout": wi.reshape(x.shape[0], -1)}


def _xent_grad_rows(a, p):
    """d loss / d logits of a softmax cross-entropy from its log-probabilities: each row of
    ``k`` classes, (exp(in) - onehot(target)) * scale (0 where target == ignore_index)."""
    k = int(p["k"])
    x = np.asarray(_rows(a, "in", k), np.float64)
    tt, valid = _targets(a, p, x.shape[:2], k)
    g = np.exp(x)
    np.put_along_axis(g, tt[:, :, None], np.take_along_axis(g, tt[:, :, None], axis=2) - 1.0, axis=2)
    g = g * valid[:, :, None] * float(p.get("scale", 1.0))
    return {"out": g.reshape(x.shape[0], -1)}


def _adam_step(a, p):
    """Adam (Kingma & Ba 2015, PyTorch's ``torch.optim.Adam``): the moments, then
    w -= lr * m^ / (sqrt(v^) + eps) with the bias corrections of step ``step`` (a tensor the
    host writes before each step); LAMB's direction with ``lamb`` (r = m^ / (sqrt(v^) + eps) + wd w,
    written to ``r``, the weights left as they are)."""
    b1, b2, eps = p.get("beta1", 0.9), p.get("beta2", 0.999), p.get("epsilon", 1e-8)
    t = np.asarray(a["step"], np.float64)
    g = np.asarray(a["grad"], np.float64)
    m = b1 * np.asarray(a["m"], np.float64) + (1 - b1) * g
    v = b2 * np.asarray(a["v"], np.float64) + (1 - b2) * g * g
    d = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    if p.get("lamb"):
        return {"m": m, "v": v, "r": d + p.get("weight_decay", 0.01) * np.asarray(a["weights"], np.float64)}
    return {"m": m, "v": v, "weights": a["weights"] - p.get("lr", 1e-3) * d}


def _norm_grad_rows(a, p):
    """The gradient of a row normalisation (layer / batch norm over rows of ``k`` elements, or
    RMS norm with ``fn`` "rms") from the row's saved mean and 1 / std: with xhat the normalised
    row and g = dy * scale, dx = istd (g - mean(g) - xhat mean(g xhat)) (rms: without mean(g));
    ``xdy`` = dy xhat, which the scale's gradient sums."""
    k = int(p["k"])
    x = np.asarray(_rows(a, "in", k), np.float64)
    dy = np.asarray(_rows(a, "grad", k), np.float64)
    istd = np.asarray(a["istd"], np.float64).reshape(x.shape[0], -1, 1)
    rms = p.get("fn") == "rms"
    xhat = x * istd if rms else (x - np.asarray(a["mean"], np.float64).reshape(istd.shape)) * istd
    g = dy * _rows(a, "scale", k)
    dx = g - xhat * (g * xhat).mean(axis=2, keepdims=True)
    if not rms:
        dx = dx - g.mean(axis=2, keepdims=True)
    nv = x.shape[0]
    return {"out": (istd * dx).reshape(nv, -1), "xdy": (dy * xhat).reshape(nv, -1)}


def _softmax_grad_rows(a, p):
    """dx of y = softmax(x) over rows of ``k``: y (dy - sum(dy y)); of y = log softmax(x)
    (``fn`` "logsoftmax"): dy - exp(y) sum(dy)."""
    k = int(p["k"])
    y = np.asarray(_rows(a, "y", k), np.float64)
    dy = np.asarray(_rows(a, "grad", k), np.float64)
    if p.get("fn") == "logsoftmax":
        dx = dy - np.exp(y) * dy.sum(axis=2, keepdims=True)
    else:
        dx = y * (dy - (dy * y).sum(axis=2, keepdims=True))
    return {"out": dx.reshape(y.shape[0], -1)}


def _select_sum_rows(a, p):
    """out = sum_j grad[j] * (arg[j] == j) per row of ``k``: a max pool's gradient at one input
    element, from the ``k`` windows that may read it (``arg``: the index in each window of its
    first maximum, -1 where no window; ``grad``: that window's gradient)."""
    k = int(p["k"])
    g = np.asarray(_rows(a, "grad", k), np.float64)
    hit = np.asarray(_rows(a, "arg", k)) == np.arange(k)
    return {"out": (g * hit).sum(axis=2).reshape(g.shape[0], -1)}


def _scatter_add_cols(a, p):
    """out = zeros(rows, cols); out[index[i]] += grad[i] (an embedding's gradient for the block of
    ``cols`` columns the vertex holds; a negative index counts from the end, as ONNX's Gather)."""
    V, w = int(p["rows"]), int(p["cols"])
    nv = a["index"].shape[0]
    idx = np.asarray(a["index"], np.float64).astype(np.int64).reshape(nv, -1)
    idx = np.where(idx < 0, idx + V, idx)
    if np.any((idx < 0) | (idx >= V)):
        raise ValueError(f"an index outside [-{V}, {V})")
    g = np.asarray(a["grad"], np.float64).reshape(nv, -1, w)
    out = np.zeros((nv * V, w))
    np.add.at(out, (idx + np.arange(nv)[:, None] * V).ravel(), g.reshape(-1, w))
    return {"out": out.reshape(nv, V * w)}


def _topk_softmax(a, p):
    """A top-``k`` router per token row of ``k_in`` logits: the k largest (ties to the lower
    expert), and their softmax as the gates (Mixtral's softmax over all experts renormalised
    over the chosen ones)."""
    k, E = int(p["k"]), int(p["experts"])
    x = np.asarray(a["in"], np.float64).reshape(-1, E)
    idx = np.argsort(-x, axis=1, kind="stable")[:, :k]
    z = np.take_along_axis(x, idx, axis=1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    nv = a["in"].shape[0]
    return {"idx": idx.reshape(nv, -1).astype(np.float64), "gates": (e / e.sum(axis=1, keepdims=True)).reshape(nv, -1)}


def _moe_slots(a, p):
    """Each (token, choice) pair's slot in its expert's buffer of ``capacity``: pairs fill an
    expert's slots in token order, then choice order; a pair past the capacity is dropped (-1).
    out = expert * capacity + slot."""
    E, C = int(p["experts"]), int(p["capacity"])
    idx = np.asarray(a["idx"], np.float64).astype(np.int64)        # (nv, T * k)
    nv = idx.shape[0]
    if np.any((idx < 0) | (idx >= E)):
        raise ValueError(f"an expert index outside [0, {E})")
    onehot = idx[:, :, None] == np.arange(E)
    rank = np.take_along_axis(np.cumsum(onehot, axis=1) - 1, idx[:, :, None], axis=2)[:, :, 0]
    return {"out": np.where(rank < C, idx * C + rank, -1).reshape(nv, -1).astype(np.float64)}


def _moe_dispatch_rows(a, p):
    """Expert ``expert``'s buffer (capacity x row): slot c holds gate * x[t] of the pair (t, j)
    given slot c (zero where no pair is)."""
    C, row, k = int(p["capacity"]), int(p["row"]), int(p["k"])
    nv = a["pos"].shape[0]
    pos = np.asarray(a["pos"], np.float64).astype(np.int64).reshape(nv, -1)         # (nv, T k)
    x = np.asarray(a["in"], np.float64).reshape(nv, -1, row)                        # (nv, T, row)
    g = np.asarray(a["gate"], np.float64).reshape(nv, -1)
    out = np.zeros((nv, C, row))
    rel = pos - int(p["expert"]) * C
    v, q = np.nonzero((rel >= 0) & (rel < C) & (pos >= 0))
    out[v, rel[v, q]] = g[v, q, None] * x[v, q // k]
    return {"out": out.reshape(nv, -1)}


def _moe_combine_rows(a, p):
    """y[t] = sum_j gate[t, j] * buffers[pos[t, j]] for the vertex's tokens (dropped pairs add
    nothing); ``buffers`` is every expert's (experts x capacity x row)."""
    row, k = int(p["row"]), int(p["k"])
    nv = a["pos"].shape[0]
    pos = np.asarray(a["pos"], np.float64).astype(np.int64).reshape(nv, -1, k)
    g = np.asarray(a["gate"], np.float64).reshape(nv, -1, k)
    buf = np.asarray(a["buffers"], np.float64).reshape(nv, -1, row)
    rows = np.take_along_axis(buf, np.maximum(pos, 0).reshape(nv, -1)[:, :, None], axis=1)
    rows = rows.reshape(nv, pos.shape[1], k, row) * (pos >= 0)[..., None]
    if p.get("dot"):     # MoEGateGrad: dgate[t, j] = grad[t] . buffers[pos[t, j]]
        dy = np.asarray(a["grad"], np.float64).reshape(nv, -1, 1, row)
        return {"out": (rows * dy).sum(axis=3).reshape(nv, -1)}
    return {"out": (rows * g[..., None]).sum(axis=2).reshape(nv, -1)}


def _depthwise_rows(a, p):
    """One output row of a depthwise convolution for ``g`` channels: ``in`` holds the ``kh``
    input rows it reads ([kh][width][g], padding included), ``weights`` the channels' kernels
    ([g][kh][kw]); out[w, c] = sum_{i, j} in[i, w * stride + j * dilation, c] * weights[c, i, j]."""
    kh, kw, s, d, g, wo = (int(p[k]) for k in ("kh", "kw", "stride", "dilation", "g", "wout"))
    nv = a["in"].shape[0]
    x = np.asarray(a["in"], np.float64).reshape(nv, kh, -1, g)
    w = np.asarray(a["weights"], np.float64).reshape(-1, g, kh, kw)
    wr = a.get("weights__rows")
    if wr is not None:
        w = w[np.asarray(wr, np.int64)]
    out = np.zeros((nv, wo, g))
    for j in range(kw):       # one pass per kernel column, every vertex at once
        out += np.einsum("vikc,vci->vkc", x[:, :, j * d: j * d + (wo - 1) * s + 1: s, :], w[:, :, :, j])
    return {"out": out.reshape(nv, -1)}


def _select_rows(a, p):
    """out[r] = in[r, index[r]] for rows of ``k`` candidates, an index given at run time (a
    negative one counts from the end, as ONNX's Gather / GatherElements)."""
    k = int(p["k"])
    x = _rows(a, "in", k)
    i = np.asarray(a["index"], np.float64).reshape(x.shape[:2]).astype(np.int64)
    if np.any((i < -k) | (i >= k)):
        raise ValueError(f"an index outside [-{k}, {k})")
    i = np.where(i < 0, i + k, i)
    return {"out": np.take_along_axis(x, i[:, :, None], axis=2).reshape(x.shape[0], -1)}


_TABLE += [
    Codelet("NormGradRows", (Field("in", IN), Field("grad", IN, same_size_as="in"), Field("scale", IN, same_size_as="in"),
                             Field("mean", IN), Field("istd", IN), Field("out", OUT, same_size_as="in"),
                             Field("xdy", OUT, same_size_as="in")),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 8.0),
            compute=_norm_grad_rows, flops=_ew_flops("out", 10.0), code_bytes=512,
            doc="a layer / batch / RMS normalisation's input gradient per row, and dy * xhat"),
    Codelet("SoftmaxGradRows", (Field("y", IN), Field("grad", IN, same_size_as="y"), Field("out", OUT, same_size_as="y")),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 4.0),
            compute=_softmax_grad_rows, flops=_ew_flops("out", 4.0), code_bytes=256,
            doc="y (dy - sum(dy y)) per row (log softmax: dy - exp(y) sum(dy))"),
    Codelet("SelectSumRows", (Field("grad", IN), Field("arg", IN, same_size_as="grad"), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(s["grad"], d, c, 2.0),
            compute=_select_sum_rows, flops=_ew_flops("grad", 2.0), code_bytes=256,
            doc="sum_j grad[j] (arg[j] == j) per row: a max pool's input gradient"),
    Codelet("ScatterAddCols", (Field("index", IN), Field("grad", IN), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 1.0) + vector_cycles(s["grad"], d, c, 2.0)
            + 10 * np.asarray(s["index"], np.float64),
            compute=_scatter_add_cols, flops=_ew_flops("grad", 1.0), code_bytes=256,
            doc="out[index[i]] += grad[i] over the vertex's block of columns (zeroed first): a gather's gradient"),
    Codelet("TopKSoftmax", (Field("in", IN), Field("idx", OUT), Field("gates", OUT, same_size_as="idx")),
            cycles=lambda s, d, p, c: vector_cycles(np.asarray(s["in"], np.float64) * p["k"], d, c, 1.0)
            + vector_cycles(s["gates"], d, c, 6.0),
            compute=_topk_softmax, flops=_ew_flops("in", 1.0), code_bytes=256,
            doc="a top-k router per token: the k largest logits' experts and their softmax"),
    Codelet("MoESlots", (Field("idx", IN), Field("out", OUT, same_size_as="idx")),
            cycles=lambda s, d, p, c: vector_cycles(s["idx"], d, c, 3.0),
            compute=_moe_slots, flops=_ew_flops("idx", 2.0), code_bytes=256,
            doc="each (token, choice) pair's slot in its expert's buffer (token order; -1 past the capacity)"),
    Codelet("MoEDispatchRows", (Field("pos", IN), Field("gate", IN, same_size_as="pos"), Field("in", IN),
                                Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(s["pos"], d, c, 2.0) + vector_cycles(s["out"], d, c, 1.0),
            compute=_moe_dispatch_rows, flops=_ew_flops("out", 1.0), code_bytes=256,
            doc="one expert's buffer: gate x the token row each slot's pair routes there"),
    Codelet("MoECombineRows", (Field("pos", IN), Field("gate", IN, same_size_as="pos"), Field("buffers", IN),
                               Field("grad", IN), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(np.asarray(s["pos"], np.float64) * p["row"], d, c, 1.0),
            compute=_moe_combine_rows, flops=lambda s, d, p: 2.0 * np.asarray(s["pos"], np.float64) * p["row"],
            code_bytes=256, doc="tokens' rows as the gated sum of their experts' slots (dot: the gates' gradient)"),
    Codelet("XentGradRows", (Field("in", IN), Field("target", IN), Field("out", OUT, same_size_as="in")),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 5.0) + 20 * np.asarray(s["target"], np.float64),
            compute=_xent_grad_rows, flops=_ew_flops("out", 3.0), code_bytes=256,
            doc="(exp(in) - onehot(target)) * scale per row of k log-probabilities: the softmax "
                "cross-entropy's gradient"),
    Codelet("AdamStep", (Field("weights", INOUT), Field("grad", IN, same_size_as="weights"),
                         Field("m", INOUT, same_size_as="weights"), Field("v", INOUT, same_size_as="weights"),
                         Field("step", IN, vector=False)),
            cycles=lambda s, d, p, c: vector_cycles(s["weights"], d, c, 12.0),
            compute=_adam_step, flops=_ew_flops("weights", 12.0), code_bytes=512,
            doc="Adam with bias correction at the step held in ``step``"),
    Codelet("LambDirection", (Field("weights", IN), Field("grad", IN, same_size_as="weights"),
                              Field("m", INOUT, same_size_as="weights"), Field("v", INOUT, same_size_as="weights"),
                              Field("step", IN, vector=False), Field("r", OUT, same_size_as="weights")),
            cycles=lambda s, d, p, c: vector_cycles(s["weights"], d, c, 14.0),
            compute=lambda a, p: _adam_step(a, dict(p, lamb=True)), flops=_ew_flops("weights", 14.0),
            code_bytes=512, doc="LAMB's moments and direction r = m^ / (sqrt(v^) + eps) + wd w at step ``step``"),
    Codelet("DepthwiseRows", (Field("in", IN), Field("weights", IN), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(np.asarray(s["out"], np.float64) * p["kh"] * p["kw"], d, c, 1.0),
            compute=_depthwise_rows, shared=("weights",),
            flops=lambda s, d, p: 2.0 * np.asarray(s["out"], np.float64) * p["kh"] * p["kw"],
            code_bytes=512, doc="one output row of a depthwise convolution for g channels (vector MACs)"),
    Codelet("SelectRows", (Field("in", IN), Field("index", IN), Field("out", OUT, same_size_as="index")),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 1.0) + 20 * np.asarray(s["index"], np.float64),
            compute=_select_rows, flops=_zero_flops, code_bytes=192,
            doc="out[r] = in[r, index[r]]: a gather whose indices are known at run time"),
    Codelet("NLLRows", (Field("in", IN), Field("target", IN), Field("weight", IN, same_size_as="in"),
                        Field("out", OUT, same_size_as="target"), Field("wout", OUT, same_size_as="target")),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 4.0) + 20 * np.asarray(s["target"], np.float64),
            compute=_nll_rows, flops=_ew_flops("out", 2.0), code_bytes=256,
            doc="-in[target] * weight[target] per row of k classes (negative log-likelihood), and the weight"),
    Codelet("Map1", (Field("in", IN), Field("out", OUT, same_size_as="in")),
            cycles=_fn_cost(UNARY_FNS), compute=lambda a, p: {"out": UNARY_FNS[p["fn"]][0](a["in"], p)},
            flops=_ew_flops("out"), code_bytes=160,
            doc="out = fn(in), fn one of UNARY_FNS (params['fn'])"),
    Codelet("Map2", (Field("a", IN), Field("b", IN, same_size_as="a"), Field("out", OUT, same_size_as="a")),
            cycles=_fn_cost(BINARY_FNS), compute=lambda a, p: {"out": BINARY_FNS[p["fn"]][0](a["a"], a["b"], p)},
            flops=_ew_flops("out"), code_bytes=160,
            doc="out = fn(a, b), fn one of BINARY_FNS; broadcast operands are gathered element by element"),
    Codelet("Map3", (Field("a", IN), Field("b", IN, same_size_as="a"), Field("c", IN, same_size_as="a"),
                     Field("out", OUT, same_size_as="a")),
            cycles=_fn_cost(TERNARY_FNS),
            compute=lambda a, p: {"out": TERNARY_FNS[p["fn"]][0](a["a"], a["b"], a["c"], p)},
            flops=_ew_flops("out"), code_bytes=192, doc="out = fn(a, b, c): Where, Clip"),
    Codelet("BatchNormMap", (Field("in", IN), Field("scale", IN, same_size_as="in"),
                             Field("bias", IN, same_size_as="in"), Field("mean", IN, same_size_as="in"),
                             Field("var", IN, same_size_as="in"), Field("out", OUT, same_size_as="in")),
            cycles=lambda s, d, p, c: vector_cycles(s["out"], d, c, 6.0), compute=_batchnorm_map,
            flops=_ew_flops("out", 5.0), code_bytes=256,
            doc="out = (in - mean) / sqrt(var + eps) * scale + bias (statistics given at run time)"),
    Codelet("ReduceRows", (Field("in", IN), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(s["in"], d, c, 2.0 if p["fn"] in ("logsumexp", "l2") else 1.0),
            compute=_reduce_rows, flops=_ew_flops("in"), code_bytes=256,
            doc="out[r] = reduce(in[r, :k]): sum, mean, max, min, prod, l1, l2, logsum, logsumexp, "
                "sumsquare, argmax, argmin"),
    Codelet("SoftmaxRows", (Field("in", IN), Field("out", OUT, same_size_as="in")),
            cycles=lambda s, d, p, c: vector_cycles(s["in"], d, c, 8.0), compute=_softmax_rows,
            flops=_ew_flops("in", 5.0), code_bytes=384,
            doc="softmax / logsoftmax / hardmax of each row of k elements (max, subtract, exp, sum, divide)"),
    Codelet("ScanRows", (Field("in", IN), Field("out", OUT, same_size_as="in")),
            cycles=lambda s, d, p, c: vector_cycles(s["in"], d, c, 2.0), compute=_scan_rows,
            flops=_ew_flops("in"), code_bytes=256, doc="cumulative sum / product of each row"),
    Codelet("PoolRows", (Field("in", IN), Field("count", IN), Field("out", OUT)),
            cycles=lambda s, d, p, c: vector_cycles(s["in"], d, c, 1.0), compute=_pool_rows,
            flops=_ew_flops("in"), code_bytes=384,
            doc="max / average / Lp pooling: one output per gathered window of k elements"),
    Codelet("LRNRows", (Field("in", IN), Field("win", IN), Field("out", OUT, same_size_as="in")),
            cycles=lambda s, d, p, c: vector_cycles(s["win"], d, c, 2.0) + vector_cycles(s["out"], d, c, 8.0, 0),
            compute=_lrn_rows, flops=_ew_flops("win", 2.0), code_bytes=384,
            doc="local response normalisation of each element over its window of size channels"),
    Codelet("NormRows", (Field("in", IN), Field("scale", IN), Field("bias", IN), Field("out", OUT, same_size_as="in"),
                         Field("mean", OUT), Field("istd", OUT, same_size_as="mean")),
            cycles=lambda s, d, p, c: vector_cycles(s["in"], d, c, 7.0), compute=_norm_rows,
            flops=_ew_flops("in", 7.0), code_bytes=512,
            doc="layer / RMS / Lp normalisation of each row of k elements, times scale plus bias"),
]

CODELETS: dict[str, Codelet] = {c.name: c for c in _TABLE}
CODELET_IDS: dict[str, int] = {name: i for i, name in enumerate(CODELETS)}
CODELET_LIST: list[Codelet] = list(CODELETS.values())


# -- fusion: element-wise epilogues applied by the producing vertex ------------------

POST_OPS = {"relu": lambda x: np.maximum(x, 0), "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
            "tanh": np.tanh, "exp": np.exp}
POST_COST = {"relu": 1.0, "sigmoid": 6.0, "tanh": 6.0, "exp": 4.0}   # vector issues per element


def post_cycles(codelet, sizes, dtype, params, chip):
    """Extra cycles of the fused epilogue ops (``params["post"]``) of a vertex batch."""
    post = params.get("post")
    if not post:
        return 0.0
    out = next(f.name for f in codelet.fields if f.writes)
    return sum(vector_cycles(sizes[out], dtype, chip, POST_COST[o], overhead=0) for o in post)


def apply_post(codelet, outs, params):
    """Apply the fused epilogue ops to the first output field."""
    post = params.get("post")
    if post:
        out = next(f.name for f in codelet.fields if f.writes)
        for o in post:
            outs[out] = POST_OPS[o](outs[out])
    if params.get("half"):    # a half-precision tensor of an fp32 graph: every result rounded, as numpy's float16
        outs = {k: np.asarray(v, np.float32).astype(np.float16).astype(np.float32) for k, v in outs.items()}
    return outs


def field_dtype(f: Field, dtype: str, params: dict) -> str:
    """The dtype a field of a vertex of ``dtype`` with ``params`` must be connected to."""
    if f.dtype == "T":
        # an index-mapped vertex may read tensors of several dtypes (a comparison's bool output,
        # Where's condition, Cast): params["dtypes"] names them per field
        return params.get("dtypes", {}).get(f.name, dtype)
    if f.dtype == "P":
        return params.get("partials", dtype)
    return f.dtype


def get_codelet(name: str) -> Codelet:
    try:
        return CODELETS[name]
    except KeyError:
        raise KeyError(f"unknown codelet {name!r} (known: {', '.join(CODELETS)})") from None
