"""The interactive trade-off explorer: a local Dash app over :func:`simulator.run.run`.

    ipusim explore [--port 8050] [--host 127.0.0.1]

Controls (left): model (built-in or an uploaded ``.onnx``), training or inference,
chip preset or custom fields (tiles, SRAM per tile, clock, exchange rate), number
of chips and how they are used (spread: one graph over all their tiles; shard,
pipeline, replicate, pipeline+replicate: :mod:`simulator.multichip`, with optional
replicas and micro-batches), batch size, precision, recomputation, available memory
proportion, and the axis of the trade-off chart.  The controls make a
:class:`simulator.config.RunConfig` (:mod:`.settings`).

Views (right): fits / out of memory with the worst tiles, throughput and latency,
the trade-off chart (throughput and peak tile memory against tiles, SRAM per tile
or batch, fit boundary drawn; a mini-sweep of 7 points around the current
setting), and the figures of :mod:`viz.views`: the tile memory map, the liveness
curve, the execution trace and the cycles per layer; for several chips, a tile
memory map and a liveness curve per stage, a trace with one row per chip and the
cycles per stage, with fits / out of memory per stage, step time, pipeline bubble,
link and host traffic in the status card (:mod:`.cards`).

How it stays responsive: every compile runs in a small pool of worker processes
(:class:`Jobs`, :mod:`.jobs`); a callback that finds its setting still compiling shows a
progress line and polls (``dcc.Interval``) until the result is there. Results are
cached by setting (least recently used, 256 entries), so a setting seen before
comes back at once. Any error (an impossible chip, a broken ONNX file, a
compile failure) is shown in the page; the app keeps running.

Modules: :mod:`.settings` (controls -> run configuration, trade-off axes), :mod:`.jobs`
(one point run and drawn, the worker pool and its cache), :mod:`.cards` (status cards,
error boxes, CSS), :mod:`.app` (the page, its callbacks, :func:`serve`), :mod:`.llm` (the
LLM mode, ``ipusim explore --llm``: generate's prefill, decode and KV cache, tokens/s
against batch and chips).
"""
from .app import make_app, serve, tradeoff_figure
from .cards import empty_figure, multichip_status_card, status_card
from .jobs import Jobs, compute_point, point_figures
from .settings import CHIP_FIELDS, CHIP_MODES, settings_to_params, tradeoff_values

__all__ = ["make_app", "serve", "compute_point", "point_figures", "Jobs", "tradeoff_values", "tradeoff_figure",
           "CHIP_FIELDS", "CHIP_MODES", "settings_to_params", "status_card", "multichip_status_card",
           "empty_figure"]
