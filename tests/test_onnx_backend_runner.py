"""ONNX's own backend test runner drives simulator.onnx_backend (node tests shipped with onnx)."""
import onnx.backend.test

import simulator.onnx_backend as backend

_runner = onnx.backend.test.BackendTest(backend, __name__)
_runner.include(r"^test_(relu|add|sub|mul|div|sigmoid|tanh|exp|sqrt|flatten_axis1|gemm_default_no_bias"
                r"|gemm_transposeB|gemm_default_single_elem_vector_bias|matmul_2d|maxpool_2d_default"
                r"|maxpool_2d_pads|maxpool_2d_strides|globalaveragepool|averagepool_2d_default"
                r"|basic_conv_with_padding|basic_conv_without_padding|conv_with_strides_padding"
                r"|identity|dropout_default)_cpu$")


def _only_included(cases: dict) -> dict:
    """The runner generates a test for every case it knows and skips those not included; keep only the
    included ones, so the summary counts what ran (and a test that stops being included disappears)."""
    for cls in cases.values():
        for name in [n for n in vars(cls) if n.startswith("test_")]:
            if getattr(getattr(cls, name), "__unittest_skip__", False):
                delattr(cls, name)
    return {n: c for n, c in cases.items() if any(a.startswith("test_") for a in vars(c))}


globals().update(_only_included(_runner.test_cases))
