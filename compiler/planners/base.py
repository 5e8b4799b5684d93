"""The planner interface and the helpers every family shares.

A planner turns one op of the op graph into vertices over the tiles:

* ``options(op, ctx)`` lists the ways to split the op (dicts of split sizes);
* ``estimate(op, opt, ctx)`` costs one option: (cycles, temporary bytes per
  tile), from the codelet table's cycle functions and the shared exchange
  estimate (compiler/planners/cost.py);
* ``lower(op, opt, ctx)`` adds the compute sets and vertices and returns the
  compute sets in execution order.

``ctx`` is the :class:`compiler.lower.Lowering` in progress.  :func:`choose`
picks the option as PopLibs' planner does (see its docstring).
"""
from __future__ import annotations

import numpy as np

from ..intervals import expand


class LoweringError(ValueError):
    pass


class Planner:
    family = None

    def options(self, op, ctx):
        return [{}]

    def estimate(self, op, opt, ctx):
        return 0.0, 0.0

    def estimates(self, op, opts, ctx):
        """:meth:`estimate` of every option in ``opts`` (a planner whose options share work,
        e.g. the op's dimensions, overrides this to do that work once per op)."""
        return [self.estimate(op, opt, ctx) for opt in opts]

    def choice_key(self, op, ctx):
        """A hashable key such that two ops of one lowering with equal keys have the same
        options and estimates (so :func:`choose` picks the same option for both, once), or
        None: chosen op by op."""
        return None

    def lower(self, op, opt, ctx):
        raise NotImplementedError


#: the families whose plans ``available_memory_proportion`` bounds (Poplar's option is one
#: of convolutions and matmuls only)
BOUNDED_FAMILIES = ("conv", "matmul")


def choose(planner, op, ctx):
    """The option to lower ``op`` with, as PopLibs' convolution planner picks a plan
    (``lib/poplin/ConvPlan.cpp``): the fewest cycles among the options whose temporary
    bytes per tile fit ``available_memory_proportion`` of the tile; when none fits, the
    bound is doubled (up to twice the tile's bytes) and tried again; when still none
    fits, the fewest cycles.  Ties go to the least memory.  Only convolutions and
    matmuls are bounded; other families take their fewest-cycles option."""
    key = planner.choice_key(op, ctx)
    if key is not None:
        cache = ctx.__dict__.setdefault("_choices", {})
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = _choose(planner, op, ctx)
        return dict(hit)
    return _choose(planner, op, ctx)


def _choose(planner, op, ctx):
    opts = planner.options(op, ctx)
    costed = [(cyc, mem, opt) for (cyc, mem), opt in zip(planner.estimates(op, opts, ctx), opts)]
    if not costed:
        raise LoweringError(f"op {op['name']!r} ({op['op']}): no way to split it over the tiles")
    sram = ctx.chip.sram_bytes_per_tile
    limit = ctx.available_memory_proportion * sram if planner.family in BOUNDED_FAMILIES else float("inf")
    best = None
    while best is None:
        fit = [c for c in costed if c[1] <= limit]
        if fit:
            best = min(fit, key=lambda c: (c[0], c[1]))
        elif limit >= 2 * sram:
            best = min(costed, key=lambda c: (c[0], c[1]))
        else:
            limit = min(2 * limit, 2 * sram)
    cyc, mem, opt = best
    opt = dict(opt)
    opt["est_cycles"], opt["est_temp_bytes"] = cyc, mem
    opt["fits_temp"] = bool(mem <= ctx.available_memory_proportion * sram)
    return opt


def spread(n: int, tiles: int) -> np.ndarray:
    """Tile of each of ``n`` items dealt in contiguous blocks over ``tiles`` tiles."""
    return ((np.arange(n, dtype=np.int64) * tiles) // max(n, 1)).astype(np.int32)


def pow2_upto(n, cap=64):
    """1, 2, 4, ... up to ``min(n, cap)``."""
    out, k = [], 1
    while k <= min(n, cap):
        out.append(k)
        k *= 2
    return out


def unique_rows(rows):
    """``np.unique(rows, axis=0, return_inverse=True)`` for small non-negative ints,
    packed into one int64 key per row (much faster than the row-wise unique)."""
    rows = np.asarray(rows, np.int64)
    if rows.size and rows.min() >= 0:
        span = rows.max(axis=0) + 1
        if float(np.prod(span.astype(np.float64))) < 2.0**62:
            key = np.zeros(rows.shape[0], np.int64)
            for j in range(rows.shape[1]):
                key = key * int(span[j]) + rows[:, j]
            uk, first, inv = np.unique(key, return_index=True, return_inverse=True)
            return rows[first], inv.ravel()
    u, inv = np.unique(rows, axis=0, return_inverse=True)
    return u, inv.ravel()


def add_by_signature(ctx, cs, codelet, tiles, sig, fields, params_of, dtype=None):
    """Add vertices in one batch per distinct signature row, so that vertices whose
    windows differ (image borders, last segments) get their own parameters.

    ``fields``: name -> (vertex index, starts, lengths) with vertex index 0..V-1.
    """
    sig = np.asarray(sig, np.int64).reshape(len(tiles), -1)
    u, inv = unique_rows(sig)
    if len(u) == 1:     # one signature (no borders): one batch, the fields as they are
        ctx.graph.add_vertices(cs, codelet, tiles, {name: (np.asarray(vi, np.int64), st, ln)
                                                    for name, (vi, st, ln) in fields.items()},
                               dtype=dtype or ctx.dtype, params=params_of(u[0]))
        return
    order_v = np.argsort(inv, kind="stable")
    bounds_v = np.searchsorted(inv[order_v], np.arange(len(u) + 1))
    local = np.empty(len(tiles), np.int64)
    sorted_fields = {}
    for name, (vi, st, ln) in fields.items():
        vi = np.asarray(vi)
        if vi.size > 1 and vi.ndim == 1 and np.all(vi[1:] >= vi[:-1]):
            # edges in vertex order (as the planners make them): a stable sort by signature is
            # each vertex's run of edges, vertices in signature order (no sort of the edges)
            cnt = np.bincount(vi, minlength=len(tiles))
            o = expand((np.cumsum(cnt) - cnt)[order_v], cnt[order_v])
            b = np.concatenate(([0], np.cumsum(cnt[order_v])))[bounds_v]
        else:
            o = np.argsort(inv[vi], kind="stable")
            b = np.searchsorted(inv[vi][o], np.arange(len(u) + 1))
        sorted_fields[name] = (vi[o], st[o], ln[o], b)
    for gi in range(len(u)):
        sel = order_v[bounds_v[gi]:bounds_v[gi + 1]]
        local[sel] = np.arange(sel.size)
        f2 = {}
        for name, (vi, st, ln, b) in sorted_fields.items():
            a, z = b[gi], b[gi + 1]
            f2[name] = (local[vi[a:z]], st[a:z], ln[a:z])
        ctx.graph.add_vertices(cs, codelet, tiles[sel], f2, dtype=dtype or ctx.dtype,
                               params=params_of(u[gi]))
