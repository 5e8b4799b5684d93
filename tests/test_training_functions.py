"""Training graphs outline repeated blocks as graph functions (compiler/lower.py,
``_training_block``): a block's forward, and its recomputation + backward, lowered once per
kind of block and called per instance, with arguments and results copied in and out.

The outlined program must do the same work as the inline one (the same vertices executed,
the same weight updates), cost less vertex state and exchange code, and keep the schemes
that work on the top-level program (gradient accumulation, optimizer offload) working."""
from __future__ import annotations

import pytest

from compiler.memory import execute_order, step_names
from compiler.program import Call, Copy
from hardware.chips import gc200
from simulator.run import build
from tests.test_memory import mini_resnet

CHIP = gc200.replace(tiles=64)


def resnet_3x3(batch=1):
    """Two stages of three bottlenecks: the second and third of each are alike."""
    return mini_resnet(batch=batch, blocks=(3, 3))


OPTS = dict(train=True, batch=2, chip=CHIP, recompute="blocks", simulate=True)


@pytest.fixture(scope="module")
def pair():
    return (build(resnet_3x3, functions=True, **OPTS), build(resnet_3x3, functions=False, **OPTS))


def _calls(c):
    return [p for p in c.exe.program.children if isinstance(p, Call)]


def test_repeated_blocks_become_functions_called_per_instance(pair):
    fn, inline = pair
    # stage 1's three bottlenecks are alike (16 channels in and out), stage 2's last two
    # (its first projects 16 -> 32): per kind, a function for the forward and one for the
    # recomputation + backward; the block that occurs once stays inline
    blocks = [f for f in fn.exe.graph.functions if f.name.startswith("bottleneck")]
    assert len(blocks) == 4 and len(inline.exe.graph.functions) == 0
    calls = sorted(sum(1 for p in _calls(fn) if p.function is f) for f in blocks)
    assert calls == [2, 2, 3, 3]
    # the convolutions of the block that occurs once: one function per kind of convolution
    # that occurs again (its forward and its recomputation, say), as TensorFlow caches them
    ops = [f for f in fn.exe.graph.functions if f not in blocks]
    assert ops and all(f.name.split(":")[0] in ("Conv", "ConvGradInput", "ConvGradWeight", "MatMul", "Gemm")
                       for f in ops)
    assert all(sum(1 for p in _calls(fn) if p.function is f) >= 2 for f in ops)


def test_outlined_program_does_the_same_work(pair):
    fn, inline = pair
    g = fn.report["graph"]
    assert g["vertices_executed"] == inline.report["graph"]["vertices_executed"]
    assert g["vertices"] < inline.report["graph"]["vertices"]
    assert fn.report["sim"]["flops_executed"] == inline.report["sim"]["flops_executed"]
    # the same update vertices run after every call, on the caller's weights
    upd = [cs.name for cs in fn.exe.graph.compute_sets if cs.phase == "update"]
    assert sorted(upd) == sorted(cs.name for cs in inline.exe.graph.compute_sets if cs.phase == "update")


def test_outlining_saves_vertex_state_and_exchange_code(pair):
    fn, inline = pair
    a, b = fn.memory["by_category"], inline.memory["by_category"]
    assert a["vertex_state"] < 0.8 * b["vertex_state"]
    assert a["exchange_code"] < b["exchange_code"]
    # the copies of one call are one exchange phase and one sync each way: a few percent
    assert fn.report["sim"]["cycles"] < 1.1 * inline.report["sim"]["cycles"]


def test_call_copies_are_merged_steps_of_their_own(pair):
    fn, _ = pair
    prog = fn.exe.program.children
    k = next(i for i, p in enumerate(prog) if isinstance(p, Call))
    before = [p for p in prog[:k][::-1]]
    args = []
    for p in before:
        if not isinstance(p, Copy):
            break
        args.append(p)
    assert args and all(c.merge and not c.call_result for c in args)
    results = []
    for p in prog[k + 1:]:
        if not (isinstance(p, Copy) and p.call_result):
            break
        results.append(p)
    assert results and all(c.merge for c in results)
    order = execute_order(fn.exe.program)
    names = step_names(fn.exe.program, fn.exe.graph.compute_sets)
    assert -1 in order and len(names) == len(order) == fn.memory["liveness"].nsteps
    assert all(n.startswith("copy") for n, s in zip(names, order) if s < 0)


def test_accumulation_and_offload_work_on_outlined_training():
    c = build(resnet_3x3, functions=True, micro_batches=2, offload=("optimizer",), **dict(OPTS, batch=4))
    assert sum(f.name.startswith("bottleneck") for f in c.exe.graph.functions) == 4
    info = c.report["memory"].get("offload") or {}
    assert c.report["sim"]["cycles"] > 0 and c.memory["offloaded_variables"] > 0, info
