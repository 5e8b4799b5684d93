"""The BSP engine: runs an executable's program on a chip with SimPy.

Time is in chip clock cycles.  SimPy events are per superstep, per host
stream transfer and per chip-to-chip transfer, never per vertex: each phase's
length comes from numpy over the tiles.

A superstep for ``Execute(cs)``:

1. exchange in: remote inputs of the compute set's vertices arrive;
2. compute: each tile runs its vertices on its worker threads; the tile's time
   is ``max(longest vertex, ceil(sum of vertex cycles / workers))``;
3. sync: all tiles (all chips) synchronise;
4. exchange out: outputs written on one tile but mapped on another move.

``Copy`` between tensors is an exchange phase; ``Copy`` with a host stream
waits for the stream's SimPy process, which moves data over the host link and
may run ahead of the program by the stream's buffer depth (prefetch), so host
transfers overlap compute.

    >>> from hardware.chips import gc2
    >>> from compiler.graph import Graph
    >>> from compiler.program import Execute, Repeat
    >>> from compiler.executable import compile_program
    >>> g = Graph(gc2)
    >>> x = g.add_variable("fp32", (1216 * 4,), "x"); g.map_linearly(x)
    >>> cs = g.add_compute_set("relu")
    >>> for t in range(1216):
    ...     _ = g.add_vertex(cs, "Relu", {"in": x[4*t:4*t+4], "out": x[4*t:4*t+4]}, tile=t)
    >>> rep = simulate(compile_program(g, Repeat(3, Execute(cs))))
    >>> rep.supersteps, rep.compute_cycles == 3 * rep.steps[0]["compute"]
    (3, True)
"""
from __future__ import annotations

import numpy as np
import simpy

from compiler.exchange import ExchangePlan, StreamCopy, merge_plans
from compiler.executable import Executable
from compiler.program import Call, Copy, Execute, Repeat, Sequence, Sync, leaves

from .functional import FunctionalState
from .report import SimReport

REPEAT_CONTROL_CYCLES = 10   # loop counter + branch on the supervisor per iteration
CALL_CONTROL_CYCLES = 5      # call + return of a graph function


class Engine:
    """Run an :class:`~compiler.executable.Executable` on a chip.

    ``functional=True`` also executes the codelets' numpy semantics, so the
    program computes real values (read them with :meth:`read`).
    """

    def __init__(self, exe: Executable, chip=None, *, ipus: int = 1, functional: bool = False,
                 inputs: dict | None = None):
        self.exe = exe
        self.chip = chip or exe.graph.target
        self.ipus = max(int(ipus), exe.graph.num_tiles // int(self.chip.tiles))
        self.num_tiles = exe.graph.num_tiles
        self.functional = FunctionalState(exe, inputs) if functional else None
        self._compute_cache = {}
        self._exchange_cache = {}
        self._merged = {}          # ids of copies run as one exchange phase -> their merged plan

    # -- host access in functional mode ---------------------------------------------------
    def write(self, tensor, value):
        """Set a tensor's initial value (functional mode)."""
        self._need_functional().write(tensor, value)

    def read(self, tensor) -> np.ndarray:
        """A tensor's current value (functional mode)."""
        return self._need_functional().read(tensor)

    @property
    def outputs(self) -> dict:
        """Device-to-host stream data: stream name -> list of arrays, one per Copy."""
        return self._need_functional().outputs

    def _need_functional(self):
        if self.functional is None:
            raise RuntimeError("this engine runs timing only; create it with functional=True")
        return self.functional

    # -- cost of one phase (pure functions of the chip) -----------------------------
    def compute_cycles(self, csid):
        hit = self._compute_cache.get(csid)
        if hit is not None:
            return hit
        w = self.exe.compute[csid]
        W = self.chip.workers_per_tile
        tile_cycles = np.maximum(w.max_cycles, np.ceil(w.sum_cycles / W)) if w.tiles.size else np.zeros(0)
        res = (float(tile_cycles.max()) if tile_cycles.size else 0.0, w.tiles, tile_cycles)
        self._compute_cache[csid] = res
        return res

    def exchange_cycles(self, plan: ExchangePlan):
        """Cycles of an exchange phase: the slowest tile's send or receive.

        Every tile sends and receives at ``exchange_bytes_per_cycle_per_tile`` (PopLibs'
        estimators charge each tile its own rate; the two tiles of a supertile only gain,
        receiving the same data in the same cycle, which a per-tile receive already
        allows); every message costs ``exchange_message_cycles``; bytes between chips
        cross the chip-to-chip links (all of a chip's links shared) and pay their latency.
        """
        key = id(plan)
        hit = self._exchange_cache.get(key)
        if hit is not None:
            return hit
        chip = self.chip
        rate = chip.exchange_bytes_per_cycle_per_tile
        cyc = 0.0
        if plan.send_tiles.size:
            send = plan.send_bytes / rate + plan.send_messages * chip.exchange_message_cycles
            cyc = max(cyc, float(send.max()))
        if plan.recv_tiles.size:
            cyc = max(cyc, float((plan.recv_bytes / rate).max()))
        link = 0.0
        if plan.chip_bytes and chip.links_per_chip and chip.link_bytes_per_s:
            out_per_chip = {}
            for (a, b), nb in plan.chip_bytes.items():
                out_per_chip[a] = out_per_chip.get(a, 0) + nb
            worst = max(out_per_chip.values())
            link = chip.cycles(chip.link_latency_s + worst / (chip.links_per_chip * chip.link_bytes_per_s))
        res = (max(cyc, link), link)
        self._exchange_cache[key] = res
        return res

    # -- the run ------------------------------------------------------------------------
    def run(self) -> SimReport:
        env = simpy.Environment()
        self.env = env
        self.report = SimReport(chip=self.chip, num_tiles=self.num_tiles,
                                tiles_per_chip=int(self.chip.tiles), ipus=self.ipus)
        self.host_link = simpy.Resource(env, capacity=1)
        self.remote_link = simpy.Resource(env, capacity=1)
        self.streams = {}
        self._stop = env.event()
        # host-to-device streams start at time 0: the host has its data ready and
        # runs ahead of the program by each stream's buffer depth
        for name, n in stream_copy_counts(self.exe).items():
            s = self.exe.graph.streams[name]
            if s.direction == "h2d":
                self._stream_state(s, n)
        main = env.process(self._run_program(self.exe.program, 1))
        env.process(self._finish(main))
        env.run()
        self.report.finish(env.now)
        return self.report

    def _finish(self, main):
        yield main
        # device-to-host data must reach the host before the run ends; that wait
        # is host time like any other stream wait, so the report records it
        start = self.env.now
        for st in self.streams.values():
            if st["dir"] == "d2h":
                yield st["done_all"]
        waited = self.env.now - start
        if waited > 0:
            self.report.stream_wait_cycles += waited
            self.report.add_step("host drain", start, 0.0, 0.0, 0.0, host_wait=waited)
        self._stop.succeed()

    def _run_program(self, p, mult):
        env, rep = self.env, self.report
        if isinstance(p, Sequence):
            kids = p.children
            i = 0
            while i < len(kids):
                c = kids[i]
                if isinstance(c, Copy) and c.merge and not isinstance(self.exe.copies[id(c)], StreamCopy):
                    j = i
                    while (j < len(kids) and isinstance(kids[j], Copy) and kids[j].merge
                           and kids[j].call_result == c.call_result
                           and not isinstance(self.exe.copies[id(kids[j])], StreamCopy)):
                        j += 1
                    yield from self._copies(kids[i:j])
                    i = j
                    continue
                yield from self._run_program(c, mult)
                i += 1
        elif isinstance(p, Repeat):
            for _ in range(int(p.count)):
                yield env.timeout(REPEAT_CONTROL_CYCLES)
                rep.control_cycles += REPEAT_CONTROL_CYCLES
                yield from self._run_program(p.body, mult)
        elif isinstance(p, Call):
            yield env.timeout(CALL_CONTROL_CYCLES)
            rep.control_cycles += CALL_CONTROL_CYCLES
            yield from self._run_program(p.function.program, mult)
        elif isinstance(p, Execute):
            yield from self._superstep(p.compute_set)
        elif isinstance(p, Sync):
            yield from self._sync("sync")
        elif isinstance(p, Copy):
            plan = self.exe.copies[id(p)]
            if isinstance(plan, StreamCopy):
                yield from self._stream_copy(p, plan)
            else:
                start = env.now
                cyc, link = self.exchange_cycles(plan)
                yield env.timeout(cyc)
                rep.add_step("copy", start, 0.0, 0.0, cyc, plan=plan, link_cycles=link)
                if self.functional:
                    self.functional.copy(p.src, p.dst)
                yield from self._sync("copy")
        else:
            raise TypeError(f"unknown program node {p!r}")

    def _copies(self, copies):
        """Device copies that run as one exchange phase and one sync."""
        env = self.env
        key = tuple(id(c) for c in copies)
        plan = self._merged.get(key)
        if plan is None:
            plan = self._merged[key] = merge_plans([self.exe.copies[id(c)] for c in copies])
        start = env.now
        cyc, link = self.exchange_cycles(plan)
        yield env.timeout(cyc)
        self.report.add_step("copy", start, 0.0, 0.0, cyc, plan=plan, link_cycles=link)
        if self.functional:
            for c in copies:
                self.functional.copy(c.src, c.dst)
        yield from self._sync("copy")

    def _sync(self, name):
        cyc = self.chip.sync_cycles_multi_chip if self.ipus > 1 else self.chip.sync_cycles
        start = self.env.now
        yield self.env.timeout(cyc)
        self.report.add_step(name, start, 0.0, cyc, 0.0)

    def _superstep(self, cs):
        env, rep = self.env, self.report
        start = env.now
        xin = self.exe.exchange_in.get(cs.id)
        xout = self.exe.exchange_out.get(cs.id)
        ein, lin = self.exchange_cycles(xin) if xin is not None else (0.0, 0.0)
        comp, tiles, tile_cycles = self.compute_cycles(cs.id)
        eout, lout = self.exchange_cycles(xout) if xout is not None else (0.0, 0.0)
        sync = self.chip.sync_cycles_multi_chip if self.ipus > 1 else self.chip.sync_cycles
        yield env.timeout(ein + comp + sync + eout)
        rep.add_step(cs.name, start, comp, sync, ein + eout, csid=cs.id, tiles=tiles,
                     tile_cycles=tile_cycles, vertices=self.exe.compute[cs.id].vertices,
                     flops=self.exe.compute[cs.id].flops, plan=xin, plan2=xout, link_cycles=lin + lout)
        if self.functional:
            self.functional.execute(cs.id)

    # -- host streams ---------------------------------------------------------------------
    def _host_transfer(self, nbytes):
        """Move bytes over the host link (one transfer at a time); returns its cycles."""
        chip = self.chip
        with self.host_link.request() as req:
            yield req
            t = chip.host_transfer_cycles(nbytes)
            yield self.env.timeout(t)
        return t

    def _stream_state(self, s, count=0):
        if s.remote:              # streaming memory: copied synchronously, no host buffers
            return None
        st = self.streams.get(s.name)
        if st is None:
            st = {"dir": s.direction, "store": simpy.Store(self.env, capacity=max(s.buffers, 1))}
            if s.direction == "h2d":
                st["slots"] = simpy.Container(self.env, capacity=max(s.buffers, 1), init=max(s.buffers, 1))
                self.env.process(self._feeder(s, st, count))
            else:
                st["pending"] = 0
                st["done_all"] = self.env.event().succeed()
                self.env.process(self._drainer(s, st))
            self.streams[s.name] = st
        return st

    def _feeder(self, s, st, count):
        for _ in range(count):
            yield st["slots"].get(1)          # a free buffer on the device side
            t = yield from self._host_transfer(s.nbytes)
            yield st["store"].put(t)

    def _drainer(self, s, st):
        while True:
            get = st["store"].get()
            res = yield get | self._stop
            if get not in res:
                return
            t = yield from self._host_transfer(s.nbytes)
            self.report.host_bytes += s.nbytes
            self.report.host_transfer_cycles += t
            st["pending"] -= 1
            if st["pending"] == 0:
                st["done_all"].succeed()

    def _stream_copy(self, p, plan: StreamCopy):
        if plan.stream.remote:
            yield from self._remote_copy(plan)
            return
        env, rep = self.env, self.report
        st = self._stream_state(plan.stream)
        start = env.now
        if plan.direction == "h2d":
            t = yield st["store"].get()
            st["slots"].put(1)
            rep.host_bytes += plan.stream.nbytes
            rep.host_transfer_cycles += t
        else:
            if st["pending"] == 0:
                st["done_all"] = env.event()
            st["pending"] += 1
            yield st["store"].put(plan.stream.nbytes)
        waited = env.now - start
        # spread to / gather from the tiles at the exchange rate
        dist = float(plan.bytes_per_tile.max()) / self.chip.exchange_bytes_per_cycle_per_tile if plan.bytes_per_tile.size else 0.0
        yield env.timeout(dist)
        rep.stream_wait_cycles += waited
        rep.add_step(f"stream {plan.stream.name}", start, 0.0, 0.0, dist, host_wait=waited)
        if self.functional:
            self.functional.stream_copy(plan)

    def _remote_copy(self, plan: StreamCopy):
        """A copy to or from streaming memory (:func:`compiler.transforms.offload`): synchronous,
        the program waits while the bytes move (one transfer at a time, at the streaming-memory
        rate), then they are spread over / gathered from the tiles at the exchange rate."""
        env, chip, rep = self.env, self.chip, self.report
        start = env.now
        nbytes = plan.stream.nbytes
        with self.remote_link.request() as req:
            yield req
            t = chip.host_transfer_cycles(nbytes, streaming=True)
            yield env.timeout(t)
        waited = env.now - start
        dist = float(plan.bytes_per_tile.max()) / chip.exchange_bytes_per_cycle_per_tile if plan.bytes_per_tile.size else 0.0
        yield env.timeout(dist)
        rep.remote_bytes += nbytes
        rep.remote_cycles += t
        rep.add_step(f"remote {plan.stream.name}", start, 0.0, 0.0, dist, host_wait=waited)
        if self.functional:
            self.functional.stream_copy(plan)


def stream_copy_counts(exe) -> dict:
    """How many times each host stream is copied when the program runs."""
    counts = {}
    for p, mult in leaves(exe.program):
        if isinstance(p, Copy):
            plan = exe.copies[id(p)]
            if isinstance(plan, StreamCopy):
                counts[plan.stream.name] = counts.get(plan.stream.name, 0) + mult
    return counts


def simulate(exe: Executable, chip=None, **kw) -> SimReport:
    """Run ``exe`` and return its report (see :class:`Engine`)."""
    return Engine(exe, chip, **kw).run()
