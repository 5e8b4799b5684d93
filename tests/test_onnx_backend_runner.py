"""ONNX's own backend test runner drives simulator.onnx_backend.

* Node tests: every node test that passes, as listed in ``tests/onnx_node_passing.txt``
  (written by ``bench/onnx_coverage.py``, which runs the whole suite and writes
  docs/onnx-coverage.md): a regression in any of them fails here.
* Real models: the nine model-zoo graphs that ship inside the onnx package
  (``onnx/backend/test/data/light/light_*.onnx``: AlexNet, DenseNet-121, Inception v1 and
  v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512), compiled for a GC200 and run
  functionally by onnx's runner against the outputs it ships (about 55 s for the nine on
  this 2-core machine; VGG-19 the longest, about 12 s).
"""
import os
import re

import onnx.backend.test

import simulator.onnx_backend as backend

_LIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onnx_node_passing.txt")


def _passing():
    with open(_LIST) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


_runner = onnx.backend.test.BackendTest(backend, __name__)
_runner.include("^(" + "|".join(re.escape(n) for n in _passing()) + ")_cpu$")
LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                "squeezenet", "vgg19", "zfnet512")
_runner.include("^test_(" + "|".join(LIGHT_MODELS) + ")_cpu$")


def _only_included(cases: dict) -> dict:
    """The runner generates a test for every case it knows and skips those not included; keep only the
    included ones, so the summary counts what ran (and a test that stops being included disappears)."""
    for cls in cases.values():
        for name in [n for n in vars(cls) if n.startswith("test_")]:
            if getattr(getattr(cls, name), "__unittest_skip__", False):
                delattr(cls, name)
    return {n: c for n, c in cases.items() if any(a.startswith("test_") for a in vars(c))}


globals().update(_only_included(_runner.test_cases))


def test_every_listed_node_test_and_real_model_runs():
    """The list names tests that exist: a renamed or vanished one is not silently dropped."""
    ran = {n[:-len("_cpu")] for c in _only_included(_runner.test_cases).values()
           for n in vars(c) if n.startswith("test_")}
    assert set(_passing()) <= ran, sorted(set(_passing()) - ran)[:10]
    assert {f"test_{m}" for m in LIGHT_MODELS} <= ran
