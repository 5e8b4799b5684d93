"""End to end: a model name or ONNX file -> op graph -> vertices -> simulation -> report.

    >>> rep = compile_model("mnist-mlp", chip="gc200", simulate=True)
    >>> rep["model"]["name"], rep["memory"]["fits"], rep["sim"]["cycles"] > 0
    ('mnist-mlp', True, True)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from compiler.executable import compile_program
from compiler.lower import lower
from compiler.memory import memory_report, oom_message

from .chips import get_chip
from .engine import Engine


@dataclass
class Compiled:
    opgraph: object
    lowered: object
    exe: object
    chip: object
    memory: dict
    report: dict
    sim: object = None


def load_model(model, *, batch=1, train=False, optimizer="sgd", dtype="fp32"):
    import models
    if isinstance(model, str) and (model.endswith(".onnx") or "/" in model):
        og = models.load_onnx(model, batch=batch)
        if train:
            og = models.make_training_graph(og, optimizer=optimizer)
        return og
    if not isinstance(model, str):
        return model
    return models.get_model(model, batch=batch, train=train, optimizer=optimizer)


def compile_model(model, *, chip="gc200", batch=1, train=False, optimizer="sgd", dtype="fp32",
                  partials=None, ipus=1, available_memory_proportion=0.6, simulate=False,
                  use_functions=True) -> dict:
    """Compile (and optionally simulate) a model; return the report as nested dicts."""
    return build(model, chip=chip, batch=batch, train=train, optimizer=optimizer, dtype=dtype,
                 partials=partials, ipus=ipus, available_memory_proportion=available_memory_proportion,
                 simulate=simulate, use_functions=use_functions).report


def build(model, *, chip="gc200", batch=1, train=False, optimizer="sgd", dtype="fp32", partials=None,
          ipus=1, available_memory_proportion=0.6, simulate=False, use_functions=True) -> Compiled:
    t0 = time.perf_counter()
    chip = get_chip(chip)
    og = load_model(model, batch=batch, train=train, optimizer=optimizer, dtype=dtype)
    t1 = time.perf_counter()
    low = lower(og, chip, dtype=dtype, partials=partials, ipus=ipus,
                available_memory_proportion=available_memory_proportion, use_functions=use_functions)
    exe = compile_program(low.graph, low.program)
    mem = memory_report(exe)
    t2 = time.perf_counter()
    executed = static_vertices_executed(exe)
    report = {
        "model": {"name": og.name, "params": int(og.params()), "flops": int(og.flops()), "ops": len(og),
                  "batch": batch, "train": bool(train), "dtype": dtype, "partials": low.partials},
        "chip": {"name": chip.name, "ipus": ipus, "tiles": low.graph.num_tiles,
                 "sram_bytes_per_tile": chip.sram_bytes_per_tile, "clock_hz": chip.clock_hz},
        "graph": {"vertices": low.graph.num_vertices, "vertices_executed": executed,
                  "edges": low.graph.num_edges, "compute_sets": len(low.graph.compute_sets),
                  "variables": len(low.graph.variables), "functions": len(low.graph.functions),
                  "function_calls": sum(low.calls.values()),
                  "tiles_used": int(len(set(exe.arrays.vertex_tile.tolist()))) if low.graph.num_vertices < 5_000_000
                  else int((__import__("numpy").bincount(exe.arrays.vertex_tile) > 0).sum()),
                  "arrays_bytes": exe.arrays.nbytes},
        "memory": {k: v for k, v in mem.items() if k not in ("per_tile", "liveness_curve")},
        "timing": {"load_s": t1 - t0, "compile_s": t2 - t1},
    }
    msg = oom_message(mem)
    if msg:
        report["memory"]["message"] = msg
    c = Compiled(og, low, exe, chip, mem, report)
    if simulate:
        t3 = time.perf_counter()
        eng = Engine(exe, chip, ipus=ipus)
        rep = eng.run()
        rep.samples = batch
        c.sim = rep
        report["sim"] = rep.to_dict()
        report["timing"]["simulate_s"] = time.perf_counter() - t3
    return c


def static_vertices_executed(exe) -> int:
    """Vertices run by one execution of the program (Repeat and Call multiply)."""
    from compiler.program import Call, Execute, Repeat, Sequence
    total = 0

    def visit(p, mult):
        nonlocal total
        if isinstance(p, Sequence):
            for ch in p.children:
                visit(ch, mult)
        elif isinstance(p, Repeat):
            visit(p.body, mult * int(p.count))
        elif isinstance(p, Call):
            visit(p.function.program, mult)
        elif isinstance(p, Execute):
            total += mult * exe.compute[p.compute_set.id].vertices

    visit(exe.program, 1)
    return total
