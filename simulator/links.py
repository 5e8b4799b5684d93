"""Chip-to-chip links and host links as SimPy resources.

A :class:`Link` is one direction of the connection between two chips: it
carries ``lanes`` IPU-Links (``chip.link_bytes_per_s`` each).  A transfer holds
the link for ``bytes / (lanes x link_bytes_per_s)`` and then pays
``chip.link_latency_s`` in flight (the link is free again during the flight),
so two transfers on one link queue behind each other -- contention shows up
as waiting time -- while transfers on different links overlap.

:class:`Network` builds the links of a topology: every pair of chips that
exchange data gets a link each way, and a chip's ``links_per_chip`` are shared
equally by its neighbours (``lanes = links_per_chip // degree``, at least 1).
Its :meth:`Network.allreduce` is a ring all-reduce: ``2 (R - 1)`` rounds, in
each of which every chip sends ``bytes / R`` to the next chip of the ring, all
links at once; every round ends with a cross-chip sync and the reduce-scatter
rounds add the received chunk on the vector units.  Its two halves run alone
for replicated tensor sharding: :meth:`Network.reduce_scatter` (the first
``R - 1`` rounds: each chip ends with the sum of its ``1/R`` of the gradients)
and :meth:`Network.all_gather` (the last ``R - 1``: each chip's updated ``1/R``
of the weights reaches every chip).  :meth:`Network.all_to_all` is the exchange of expert
parallelism (a mixture of experts' token dispatch and combine): every chip sends ``1/K`` of
its buffer to each of the other ``K - 1`` chips of its group, all at once over the direct
links between them.

:class:`HostLink` is one chip's connection to the host (one transfer at a time:
``host_link_latency_s + bytes / host_link_bytes_per_s``, as in the engine).

Times are cycles of the chip clock; every transfer is recorded (``events``) so
the Chrome trace can show each link on its own track.

    >>> import simpy
    >>> from hardware.chips import gc200
    >>> env = simpy.Environment()
    >>> net = Network(env, gc200, [(0, 1)])
    >>> net.link(0, 1).lanes, net.link(1, 0).lanes
    (10, 10)
    >>> p = env.process(net.link(0, 1).transfer(160e6 / 1000)); _ = env.run()
    >>> round(gc200.seconds(env.now) * 1e6, 2)     # 160 KB at 136 GB/s = 1.18 us, + 0.2 us latency
    1.38
"""
from __future__ import annotations

import simpy


class Link:
    """One direction between two chips (``lanes`` IPU-Links)."""

    def __init__(self, env, src, dst, lanes, chip):
        self.env, self.src, self.dst, self.lanes, self.chip = env, src, dst, int(lanes), chip
        self.res = simpy.Resource(env, capacity=1)
        self.bytes_per_s = self.lanes * chip.link_bytes_per_s
        self.latency = chip.cycles(chip.link_latency_s)
        self.bytes = 0
        self.busy_cycles = 0.0
        self.wait_cycles = 0.0
        self.events = []          # (start, duration, label, bytes)

    @property
    def name(self):
        return f"link {self.src}->{self.dst}"

    def transfer(self, nbytes, label=""):
        """SimPy generator: move ``nbytes``; returns the cycles from request to arrival."""
        env = self.env
        t0 = env.now
        with self.res.request() as req:
            yield req
            start = env.now
            dur = self.chip.cycles(nbytes / self.bytes_per_s) if nbytes else 0.0
            yield env.timeout(dur)
        self.wait_cycles += start - t0
        self.busy_cycles += dur
        self.bytes += int(nbytes)
        self.events.append((start, dur, label, int(nbytes)))
        yield env.timeout(self.latency)
        return env.now - t0


class HostLink:
    """One chip's share of the host connection (one transfer at a time)."""

    def __init__(self, env, chip, ipu):
        self.env, self.chip, self.ipu = env, chip, ipu
        self.res = simpy.Resource(env, capacity=1)
        self.bytes = 0
        self.busy_cycles = 0.0
        self.events = []

    @property
    def name(self):
        return f"host link {self.ipu}"

    def transfer(self, nbytes, label=""):
        env, chip = self.env, self.chip
        with self.res.request() as req:
            yield req
            start = env.now
            t = chip.host_transfer_cycles(nbytes)
            yield env.timeout(t)
        self.bytes += int(nbytes)
        self.busy_cycles += t
        self.events.append((start, t, label, int(nbytes)))
        return t


class Network:
    """The links of a topology given as chip pairs (each pair gets a link each way)."""

    def __init__(self, env, chip, pairs):
        if chip.links_per_chip <= 0 or chip.link_bytes_per_s <= 0:
            raise ValueError(f"chip {chip.name!r} has no chip-to-chip links (links_per_chip = "
                             f"{chip.links_per_chip}); several chips need them")
        self.env, self.chip = env, chip
        nb = {}
        for a, b in pairs:
            if a == b:
                continue
            nb.setdefault(a, set()).add(b)
            nb.setdefault(b, set()).add(a)
        self.neighbours = nb
        self.links = {}
        for a in nb:
            for b in nb[a]:
                lanes = max(1, chip.links_per_chip // max(len(nb[a]), len(nb[b])))
                self.links[(a, b)] = Link(env, a, b, lanes, chip)

    def link(self, a, b) -> Link:
        return self.links[(a, b)]

    def send(self, a, b, nbytes, label=""):
        """SimPy generator: a transfer from chip ``a`` to chip ``b``."""
        return (yield from self.link(a, b).transfer(nbytes, label))

    def allreduce(self, ring, nbytes, label="allreduce", elem_bytes=4):
        """SimPy generator: ring all-reduce of ``nbytes`` on every chip of ``ring``.

        Returns (link cycles, sync cycles, reduce cycles) spent.
        """
        return (yield from self._ring(ring, nbytes, label, elem_bytes, gather=True, reduce=True))

    def reduce_scatter(self, ring, nbytes, label="reduce-scatter", elem_bytes=4):
        """SimPy generator: the reduce-scatter half of :meth:`allreduce` (``R - 1`` rounds)."""
        return (yield from self._ring(ring, nbytes, label, elem_bytes, gather=False, reduce=True))

    def all_gather(self, ring, nbytes, label="all-gather", elem_bytes=4):
        """SimPy generator: the all-gather half of :meth:`allreduce` (``R - 1`` rounds, no additions)."""
        return (yield from self._ring(ring, nbytes, label, elem_bytes, gather=True, reduce=False))

    def _ring(self, ring, nbytes, label, elem_bytes, *, gather, reduce):
        env, chip = self.env, self.chip
        R = len(ring)
        if R < 2 or nbytes <= 0:
            return 0.0, 0.0, 0.0
        chunk = nbytes / R
        sync = chip.sync_cycles_multi_chip
        # adding a received chunk: elements spread over all tiles, one vector pass
        per_tile_elems = chunk / elem_bytes / chip.tiles
        per_cycle = max(chip.vector_bytes_per_cycle // elem_bytes, 1)
        add = per_tile_elems / per_cycle + chip.vertex_overhead_cycles
        link_c = sync_c = red_c = 0.0
        rounds = ([True] * (R - 1) if reduce else []) + ([False] * (R - 1) if gather else [])
        for rnd, adds in enumerate(rounds):
            t0 = env.now
            procs = [env.process(self.send(ring[i], ring[(i + 1) % R], chunk, f"{label} round {rnd}"))
                     for i in range(R)]
            yield env.all_of(procs)
            link_c += env.now - t0
            if adds:
                yield env.timeout(add)
                red_c += add
            yield env.timeout(sync)
            sync_c += sync
        return link_c, sync_c, red_c

    def all_to_all(self, group, nbytes, label="all-to-all"):
        """SimPy generator: all-to-all of ``nbytes`` on every chip of ``group`` (``K`` chips): block
        ``j`` of chip ``i``'s buffer (``nbytes / K``) goes to chip ``j``; each chip keeps its own block.

        The pairwise exchange of MPICH's ``MPI_Alltoall`` for long messages (Thakur, Rabenseifner
        and Gropp, "Optimization of Collective Communication Operations in MPICH", IJHPCA 19(1),
        2005: each process sends ``n / p`` to each of the ``p - 1`` others), with
        the ``K - 1`` sends of a chip at once rather than one partner per step, since each pair
        of the group has its own links here (every pair exchanges data, so the topology is the
        group's full mesh and a chip's ``links_per_chip`` are shared by its ``K - 1`` peers; the
        caller refuses a group larger than ``links_per_chip + 1``).  So it takes
        ``nbytes / K / (lanes x link_bytes_per_s)`` on every link at once, then the link latency,
        then one cross-chip sync: with ``lanes = links_per_chip // (K - 1)``, about
        ``nbytes (K - 1) / K / (links_per_chip x link_bytes_per_s)``, the time to push the
        ``(K - 1) / K`` of the buffer that leaves the chip through all its links.

        Returns (link cycles, sync cycles)."""
        env = self.env
        K = len(group)
        if K < 2 or nbytes <= 0:
            return 0.0, 0.0
        chunk = nbytes / K
        t0 = env.now
        yield env.all_of([env.process(self.send(a, b, chunk, label)) for a in group for b in group if a != b])
        link_c = env.now - t0
        sync = self.chip.sync_cycles_multi_chip
        yield env.timeout(sync)
        return link_c, sync

    @staticmethod
    def all_to_all_bytes_per_chip(nbytes, K) -> float:
        """Bytes each chip sends in an all-to-all of ``nbytes`` per chip over ``K`` chips:
        ``(K - 1) / K x nbytes`` (its own block stays)."""
        return (K - 1) / K * nbytes if K > 1 else 0.0

    @staticmethod
    def allreduce_bytes_per_chip(nbytes, R) -> float:
        """Bytes each chip sends in a ring all-reduce: 2 (R - 1) / R x nbytes (half of it in each
        of the reduce-scatter and the all-gather)."""
        return 2.0 * (R - 1) / R * nbytes if R > 1 else 0.0
