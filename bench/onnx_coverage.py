"""ONNX's whole CPU node test suite through simulator.onnx_backend: what passes, per op.

    .venv/bin/python bench/onnx_coverage.py [--timeout 20] [--match REGEX] [--no-write]

Runs every node test that onnx ships (``onnx.backend.test.loader.load_model_tests
(kind="node")``: 1,884 cases in onnx 1.23, each a small model with inputs and the
outputs onnx's reference implementation computed) the way onnx's backend test
runner does (``prepare``, ``run`` on each data set, ``BackendTest.assert_similar_outputs``
with the case's tolerances), and classifies each test as

* **passed**: every output has the expected shape, dtype and values;
* **failed**: it ran and an output differs (wrong values, shape or dtype);
* **refused**: the backend refused it with its own clear message
  (``BackendError``: an op, attribute or dtype it does not compute exactly,
  named with the node);
* **error**: any other exception, or a run longer than ``--timeout`` seconds:
  a bug to fix.

It writes ``docs/onnx-coverage.md`` (totals, then one row per op: passed /
failed / refused / error) and ``tests/onnx_node_passing.txt`` (the passing
tests' names, which ``tests/test_onnx_backend_runner.py`` runs through onnx's
own runner in ``make test``), and prints the totals.  ``--match`` runs a subset
and writes nothing.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx.backend.test.loader import load_model_tests  # noqa: E402
from onnx.backend.test.runner import Runner  # noqa: E402

import simulator.onnx_backend as backend  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "onnx-coverage.md")
PASSING = os.path.join(ROOT, "tests", "onnx_node_passing.txt")


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _snake(op):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", op).lower()


#: test-name prefixes that are not their op's name
_ALIASES = {"sce": "SoftmaxCrossEntropyLoss", "nllloss": "NegativeLogLikelihoodLoss",
            "mvn": "MeanVarianceNormalization", "basic_conv": "Conv", "conv": "Conv",
            "convtranspose": "ConvTranspose", "dynamicquantizelinear": "DynamicQuantizeLinear",
            "lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "simple_rnn": "RNN", "logsoftmax": "LogSoftmax",
            "tfidfvectorizer": "TfIdfVectorizer", "strnorm": "StringNormalizer", "batchnorm": "BatchNormalization",
            "instancenorm": "InstanceNormalization", "layer_normalization": "LayerNormalization",
            "group_normalization": "GroupNormalization", "reduce_log_sum": "ReduceLogSum",
            "reversesequence": "ReverseSequence", "maxunpool": "MaxUnpool", "globalmaxpool": "GlobalMaxPool",
            "globalaveragepool": "GlobalAveragePool", "thresholdedrelu": "ThresholdedRelu",
            "leakyrelu": "LeakyRelu", "hardsigmoid": "HardSigmoid", "hardswish": "HardSwish",
            "hardmax": "Hardmax", "scatternd": "ScatterND", "gathernd": "GatherND", "eyelike": "EyeLike",
            "depthtospace": "DepthToSpace", "spacetodepth": "SpaceToDepth", "onehot": "OneHot",
            "nonzero": "NonZero", "bitshift": "BitShift", "quantizelinear": "QuantizeLinear",
            "dequantizelinear": "DequantizeLinear", "isinf": "IsInf", "isnan": "IsNaN", "argmax": "ArgMax",
            "argmin": "ArgMin", "cumsum": "CumSum", "cumprod": "CumProd", "topk": "TopK", "lrn": "LRN",
            "prelu": "PRelu", "selu": "Selu", "elu": "Elu", "celu": "Celu", "mish": "Mish", "lppool": "LpPool",
            "matmulinteger": "MatMulInteger", "qlinearmatmul": "QLinearMatMul", "qlinearconv": "QLinearConv",
            "convinteger": "ConvInteger", "roialign": "RoiAlign", "averagepool": "AveragePool",
            "maxpool": "MaxPool", "castlike": "CastLike", "affine_grid": "AffineGrid", "flexattention": "FlexAttention",
            "constant_pad": "Pad", "edge_pad": "Pad", "reflect_pad": "Pad", "wrap_pad": "Pad"}
_ALL_OPS = None


def op_of(case):
    """The op a node test tests: the longest op name (of onnx's schemas) that the test's name
    starts with, as snake case or run together (``test_reduce_sum_...``, ``test_averagepool_...``);
    else the first node's op that is not a constant or shape computation."""
    global _ALL_OPS
    if _ALL_OPS is None:
        _ALL_OPS = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx")}
    name = case.name[len("test_"):]
    best, blen = None, 0
    for key, op in _ALIASES.items():
        if (name == key or name.startswith(key + "_")) and len(key) > blen:
            best, blen = op, len(key)
    for op in _ALL_OPS:
        for key in (_snake(op), op.lower()):
            if (name == key or name.startswith(key + "_")) and len(key) > blen:
                best, blen = op, len(key)
    if best:
        return best
    types = [n.op_type for n in case.model.graph.node]
    rest = [t for t in types if t not in ("Constant", "Shape", "Identity", "Cast", "CastLike")]
    return (rest or types or ["?"])[0]


def run_case(case):
    """(status, reason) of one node test."""
    try:
        rep = backend.prepare(case.model, "CPU")
        for inputs, ref_outputs in case.data_sets:
            ins = [onnx.numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x for x in inputs]
            refs = [onnx.numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x for x in ref_outputs]
            outs = rep.run(ins)
            try:
                Runner.assert_similar_outputs(refs, list(outs), rtol=case.rtol, atol=case.atol)
            except AssertionError as e:
                return "failed", (str(e).strip().splitlines() or ["?"])[0][:160]
        return "passed", ""
    except backend.BackendError as e:
        return "refused", str(e).splitlines()[0][:200]
    except _Timeout:
        return "error", "timeout"
    except Exception as e:   # a bug: name it
        return "error", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per test (default 20)")
    ap.add_argument("--match", help="only tests whose name matches this regex (writes nothing)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every test's status")
    a = ap.parse_args()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = sorted(load_model_tests(kind="node"), key=lambda c: c.name)
    total_cases = len(cases)
    if a.match:
        cases = [c for c in cases if re.search(a.match, c.name)]
    signal.signal(signal.SIGALRM, _alarm)
    results = []
    for case in cases:
        t = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, a.timeout)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                status, why = run_case(case)
        except _Timeout:
            status, why = "error", "timeout"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        results.append((case.name, op_of(case), status, why, time.perf_counter() - t))
        if a.verbose or (a.match and status != "passed"):
            print(f"{status:8s} {case.name}  {why}", flush=True)
    elapsed = time.perf_counter() - t0
    counts = collections.Counter(r[2] for r in results)
    line = (f"{len(results)} node tests in {elapsed:.0f} s: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['refused']} refused, {counts['error']} error")
    print(line)
    for name, op, status, why, sec in results:
        if status == "error":
            print(f"  error  {name}: {why}")
    if a.match or a.no_write:
        return
    write_doc(results, total_cases, elapsed)
    with open(PASSING, "w") as f:
        f.write("# node tests of onnx's backend suite that pass on simulator.onnx_backend; written by\n"
                "# bench/onnx_coverage.py, run by tests/test_onnx_backend_runner.py\n")
        for name, op, status, why, sec in results:
            if status == "passed":
                f.write(name + "\n")
    print(f"wrote {os.path.relpath(DOC, ROOT)} and {os.path.relpath(PASSING, ROOT)}")


def write_doc(results, total_cases, elapsed):
    counts = collections.Counter(r[2] for r in results)
    by_op = collections.defaultdict(collections.Counter)
    reasons = collections.defaultdict(collections.Counter)
    for name, op, status, why, sec in results:
        by_op[op][status] += 1
        if status != "passed":
            # the reason without node names and numbers, so that like reasons group
            r = re.sub(r"node '[^']*'", "node", why)
            reasons[op][f"{status}: {r[:110]}"] += 1
    lines = [
        "# ONNX node tests on the simulated chip",
        "",
        f"Written by `.venv/bin/python bench/onnx_coverage.py` (onnx {onnx.__version__}; {elapsed:.0f} s on this "
        "2-core machine). Every node test that onnx ships runs through `simulator.onnx_backend` as onnx's "
        "backend test runner runs it (`prepare`, `run`, outputs compared with the case's tolerances, dtypes "
        "and shapes included). The passing ones are listed in `tests/onnx_node_passing.txt` and run by "
        "`make test` (`tests/test_onnx_backend_runner.py`).",
        "",
        "* **passed**: every output right in shape, dtype and value;",
        "* **failed**: ran, and an output is wrong;",
        "* **refused**: the backend refused it at `prepare` (or an input at `run`) naming the node and "
        "what it does not compute exactly: an op, an attribute value or a dtype;",
        "* **error**: any other exception (a bug).",
        "",
        "| | tests |",
        "|---|---:|",
        f"| passed | {counts['passed']} |",
        f"| failed | {counts['failed']} |",
        f"| refused | {counts['refused']} |",
        f"| error | {counts['error']} |",
        f"| total | {len(results)} of {total_cases} |",
        "",
        "## Per op",
        "",
        "The op a test belongs to is the op its name starts with (an `_expanded` test runs the op's function "
        "body, other ops). The last column is the commonest reason a test of that op did not pass.",
        "",
        "| op | passed | failed | refused | error | commonest reason |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for op in sorted(by_op):
        c = by_op[op]
        why = reasons[op].most_common(1)[0][0].replace("|", "\\|") if reasons[op] else ""
        lines.append(f"| {op} | {c['passed']} | {c['failed']} | {c['refused']} | {c['error']} | {why} |")
    lines.append("")
    with open(DOC, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
