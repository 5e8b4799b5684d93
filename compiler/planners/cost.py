"""What the planners' estimates are made of: the codelet table's cycle functions and
one exchange estimate.

A planner never writes a codelet's cost formula itself: it asks the table
(:func:`codelet_cycles`) for the cycles of the vertices it would create, with the
sizes and params it would give them, and adds the exchange those vertices imply
through :func:`exchange_cycles`.  docs/timing-model.md ("Planner estimates") lists
which function each family calls.
"""
from __future__ import annotations

import numpy as np

from ..codelets import CODELETS, tile_pass_cycles

#: how a contraction runs: on the matrix unit (AMP, contraction padded to its width) or
#: with plain vector MACs (no padding, a fraction of the rate); chosen per op by the cost
METHODS = ("amp", "mac")
CONV_CODELET = {"amp": "ConvPartial", "mac": "ConvPartialMAC"}
MATMUL_CODELET = {"amp": "MatMulPartial", "mac": "MatMulPartialMAC"}


def codelet_cycles(name, sizes, dtype, params, chip) -> float:
    """Cycles of one vertex of codelet ``name`` with field sizes ``sizes`` (field name ->
    elements), as the codelet table (and so the engine) charges it."""
    return float(CODELETS[name].cycles({k: np.asarray(v, np.float64) for k, v in sizes.items()},
                                       dtype, params, chip))


def codelet_passes(name, sizes, dtype, params) -> float:
    """Matrix-unit passes of one vertex of codelet ``name`` (0 for codelets without)."""
    c = CODELETS[name]
    if c.passes is None:
        return 0.0
    return float(c.passes({k: np.asarray(v, np.float64) for k, v in sizes.items()}, dtype, params))


def contraction_cycles(opt, outer, k, dtype, chip, n=None):
    """One matrix-product vertex's cycles for ``outer`` outputs (``n`` of them columns) x
    ``k``-element contractions (``k`` is what the AMP pads) by the option's method: the
    ``MatMulPartial`` / ``MatMulPartialMAC`` codelet's cost."""
    params = {"k": k} if n is None else {"k": k, "n": n}
    return codelet_cycles(MATMUL_CODELET[opt.get("method", "amp")], {"out": outer}, dtype, params, chip)


def compute_phase_cycles(vertices_per_tile, vertex_cycles, chip):
    """A compute phase of ``vertices_per_tile`` equal vertices: whole rounds of the tile's
    workers, each as long as one vertex."""
    return -(-vertices_per_tile // chip.workers_per_tile) * vertex_cycles


def supervisor_phase_cycles(vertices_per_tile, vertex_cycles, chip, passes=0.0):
    """A compute phase of ``vertices_per_tile`` equal partitions of a supervisor codelet
    (convolutions, matmuls): the tile's workers share the partitions (worklists), so the
    tile takes their total over the worker count, plus what the partitions' ``passes``
    matrix-unit passes cost the tile (``codelets.tile_pass_cycles``), as the engine
    charges it."""
    return vertices_per_tile * vertex_cycles / chip.workers_per_tile + float(tile_pass_cycles(passes, chip))


def exchange_cycles(bytes_per_tile, chip, messages_per_tile=0.0):
    """The one exchange estimate of the planners: a tile receiving ``bytes_per_tile`` at
    ``exchange_bytes_per_cycle_per_tile``, plus ``exchange_message_cycles`` per message."""
    return bytes_per_tile / chip.exchange_bytes_per_cycle_per_tile + messages_per_tile * chip.exchange_message_cycles
