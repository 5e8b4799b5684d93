"""Compile a graph and a program into an :class:`Executable`.

The executable is what the simulator runs: the finalized graph arrays, the
program tree, and, per compute set, the work of each tile (from the codelet
table's cycle estimates) and the exchange the tile mappings imply (which tile
sends which bytes to which, planned by compiler/exchange.py).  Everything is
computed once with numpy over all vertices and edges; ``Repeat`` and ``Call``
reuse it.

    >>> from types import SimpleNamespace
    >>> from compiler.graph import Graph
    >>> from compiler.program import Execute
    >>> chip = SimpleNamespace(tiles=2, sram_bytes_per_tile=4096, workers_per_tile=6,
    ...     vector_bytes_per_cycle=8, vertex_overhead_cycles=10,
    ...     flops_per_cycle_per_tile={"fp32": 32, "fp16": 128})
    >>> g = Graph(chip)
    >>> x = g.add_variable("fp32", (4,), "x"); y = g.add_variable("fp32", (4,), "y")
    >>> g.map_linearly(x); g.map_linearly(y)
    >>> cs = g.add_compute_set("relu")
    >>> g.add_vertex(cs, "Relu", {"in": x, "out": y}, tile=0)
    0
    >>> exe = compile_program(g, Execute(cs))
    >>> exe.compute[cs.id].vertices, int(exe.exchange_in[cs.id].recv_bytes.sum())
    (1, 8)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .codelets import CODELETS, post_cycles, tile_pass_cycles
from .exchange import plan_compute_exchange, plan_copies, runs_of_mapping
from .graph import Graph, GraphError
from .program import Execute, walk


@dataclass
class ComputeWork:
    """Per tile work of one compute set (sparse over the tiles it uses)."""
    tiles: np.ndarray        # tile ids
    sum_cycles: np.ndarray   # sum of vertex cycle estimates on the tile
    max_cycles: np.ndarray   # longest single vertex on the tile
    count: np.ndarray        # vertices on the tile
    vertices: int
    flops: float


@dataclass
class Executable:
    graph: Graph
    arrays: object
    program: object
    # compute, vertex_cycles, exchange_in, exchange_out (properties): the timing's part,
    # computed by ``plan_timing`` (a callable returning the four) at first use when
    # compile_program(timing="lazy"):
    #   compute: cs id -> ComputeWork
    #   vertex_cycles: per batch, (n,) cycle estimates
    #   exchange_in / exchange_out: cs id -> exchange.ExchangePlan of the remote inputs
    #   (before compute) and outputs (after compute)
    plan_timing: object = field(repr=False, compare=False)
    copies: dict                  # id(Copy node) -> exchange.ExchangePlan | exchange.StreamCopy
    tiles_per_chip: int
    # what functional runs derive from the graph alone (gather plans), kept between runs
    functional_cache: dict = field(default_factory=dict, repr=False, compare=False)
    _timing: tuple = field(default=None, repr=False, compare=False)

    def _planned(self):
        if self._timing is None:
            self._timing = self.plan_timing()
        return self._timing

    @property
    def compute(self) -> dict:
        return self._planned()[0]

    @property
    def vertex_cycles(self) -> list:
        return self._planned()[1]

    @property
    def exchange_in(self) -> dict:
        return self._planned()[2]

    @property
    def exchange_out(self) -> dict:
        return self._planned()[3]

    @property
    def timing_planned(self) -> bool:
        """Whether the compute costs and exchange plans are computed (see compile_program's
        ``timing``)."""
        return self._timing is not None

    @property
    def num_vertices(self):
        return self.graph.num_vertices

    @property
    def num_edges(self):
        return self.graph.num_edges


def compile_program(graph: Graph, program, *, check_exchange=True, timing="eager") -> Executable:
    """Finalize the graph, cost every compute set and plan every exchange.

    ``timing="lazy"`` costs the compute sets (cycles per tile) and plans their exchange
    (which tile sends which bytes) when ``exe.compute``, ``vertex_cycles``, ``exchange_in``
    or ``exchange_out`` is first read: the timing's work, not the values', so a functional
    run that reads no timing does not pay for it (simulator/onnx_backend.py); the results
    are the same either way.  The graph is finalized and checked, and copies are planned
    (and checked), at once."""
    if timing not in ("eager", "lazy"):
        raise ValueError(f"compile_program: timing must be 'eager' or 'lazy', not {timing!r}")
    arrays = graph.finalize()
    chip = graph.target
    tiles_per_chip = int(chip.tiles)
    sizes_all = arrays.extra["sizes"]
    ncs = len(graph.compute_sets)
    used_cs = set()
    for p in walk(program):
        if isinstance(p, Execute):
            cs = p.compute_set
            if cs.id >= ncs or graph.compute_sets[cs.id] is not cs:
                raise GraphError(f"program executes compute set {cs.name!r}, which is not in this graph")
            used_cs.add(cs.id)

    def costs():
        # -- vertex cycles and per tile work --------------------------------------
        vertex_cycles = []
        vt = arrays.vertex_tile
        cyc = np.zeros(graph.num_vertices, np.float64)
        # the part of a vertex no worker can share: all of it, except for supervisor codelets,
        # whose partitions the tile's workers share (PopLibs' worklists, one per worker context)
        whole = np.zeros(graph.num_vertices, np.float64)
        # matrix-unit passes: what a pass costs the whole tile (codelets.tile_pass_cycles), once
        # per tile for the tile's vertex with the most passes (a tile's vertices of one op are
        # consecutive rows that share their passes, as one PopLibs supervisor vertex's worklists)
        pass_cyc = np.zeros(graph.num_vertices, np.float64)
        flops = np.zeros(ncs, np.float64)
        for b, sizes in zip(graph.batches, sizes_all):
            c = CODELETS[b.codelet]
            cy = np.broadcast_to(np.asarray(c.cycles(sizes, b.dtype, b.params, chip), np.float64)
                                 + post_cycles(c, sizes, b.dtype, b.params, chip), (b.v1 - b.v0,))
            cyc[b.v0:b.v1] = cy
            if not c.supervisor:
                whole[b.v0:b.v1] = cy
            if c.passes is not None:
                pass_cyc[b.v0:b.v1] = tile_pass_cycles(c.passes(sizes, b.dtype, b.params), chip)
            vertex_cycles.append(cy)
            if c.flops is not None:
                flops[b.cs] += float(np.sum(c.flops(sizes, b.dtype, b.params)))
        vcs = np.repeat(np.array([b.cs for b in graph.batches], np.int64),
                        [b.v1 - b.v0 for b in graph.batches]) if graph.batches else np.zeros(0, np.int64)
        compute = {}
        if vcs.size:
            key = vcs * (1 << 32) + vt
            o = np.argsort(key, kind="stable")
            k, cy_sorted = key[o], cyc[o]
            u, first = np.unique(k, return_index=True)
            sums = np.add.reduceat(cy_sorted, first)
            # the tile's pass cost, as if every worker spent it (the phase is sum / workers)
            sums += np.maximum.reduceat(pass_cyc[o], first) * chip.workers_per_tile
            maxs = np.maximum.reduceat(whole[o], first)
            counts = np.diff(np.append(first, k.size))
            ucs = u >> 32
            bounds = np.searchsorted(ucs, np.arange(ncs + 1))
            for csid in range(ncs):
                a, bnd = bounds[csid], bounds[csid + 1]
                compute[csid] = ComputeWork((u[a:bnd] & 0xFFFFFFFF).astype(np.int64), sums[a:bnd], maxs[a:bnd],
                                            counts[a:bnd], int(counts[a:bnd].sum()), float(flops[csid]))
        for csid in range(ncs):
            compute.setdefault(csid, ComputeWork(*(np.zeros(0),) * 4, 0, 0.0))
        return compute, vertex_cycles

    # -- exchange implied by the mappings, and the copies (compiler/exchange.py) -------
    run_starts, run_tiles = runs_of_mapping(graph)
    copies = plan_copies(graph, program, run_starts, run_tiles, tiles_per_chip)

    def plan_timing():
        compute, vertex_cycles = costs()
        return (compute, vertex_cycles) + plan_compute_exchange(graph, arrays, run_starts, run_tiles, tiles_per_chip)

    exe = Executable(graph, arrays, program, plan_timing, copies, tiles_per_chip)
    if timing == "eager":
        exe._planned()
    return exe
