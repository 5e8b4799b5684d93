"""Functional mode (simulator/functional.py): programs built by hand compute
what numpy computes -- Poplar's tutorial, each codelet's semantics, a small
convolution split over tiles with partial sums, host streams, fp16 rounding."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from compiler.executable import compile_program
from compiler.graph import Graph
from compiler.program import Copy, Execute, Repeat, Sequence
from compiler.tensor import concat
from hardware.chips import gc2
from simulator.engine import Engine

CHIP = gc2.replace(tiles=4)
ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(1234)


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def var(g, shape, name, tile=0, dtype="fp32"):
    t = g.add_variable(dtype, shape, name)
    g.set_tile_mapping(t, tile)
    return t


def run(g, prog, values, **kw):
    eng = Engine(compile_program(g, prog), functional=True, **kw)
    for t, v in values.items():
        eng.write(t, v)
    eng.run()
    return eng


# --- Poplar's tutorial -------------------------------------------------------------------
def test_tutorial_add_reduce_build_sums_like_numpy():
    tut = load_example("tutorial_add_reduce")
    chip = gc2.replace(tiles=16)
    g, prog = tut.build(chip, 1000)
    xa, xb = RNG.random(1000, np.float32), RNG.random(1000, np.float32)
    eng = Engine(compile_program(g, prog), functional=True, inputs={"a": [xa], "b": [xb]})
    eng.run()
    assert eng.outputs["total"][0][0] == pytest.approx(np.sum(xa.astype(np.float64) + xb), rel=1e-5)
    assert eng.read(_tensor(g, "c")) == pytest.approx(xa + xb)


def _tensor(g, name):
    v = g.variable(name)
    from compiler.tensor import Tensor
    return Tensor(g, v.dtype, v.shape, start=v.start, name=v.name)


def test_tutorial_add_reduce_main_matches_numpy(capsys):
    got, want, rep = load_example("tutorial_add_reduce").main(["--n", "3000"])
    assert got == pytest.approx(want, rel=1e-5)
    assert "sum on chip" in capsys.readouterr().out
    assert rep.cycles > 0


# --- element-wise codelets --------------------------------------------------------------------
@pytest.mark.parametrize("codelet, fn", [
    ("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Max", np.maximum), ("Div", np.divide)])
def test_binary_codelet_matches_numpy(codelet, fn):
    g = Graph(CHIP)
    a, b, out = var(g, (12,), "a", 0), var(g, (12,), "b", 1), var(g, (12,), "out", 2)
    cs = g.add_compute_set(codelet)
    for t in range(3):       # three vertices on three tiles, remote inputs
        sl = slice(4 * t, 4 * t + 4)
        g.add_vertex(cs, codelet, {"a": a[sl], "b": b[sl], "out": out[sl]}, tile=t + 1)
    xa, xb = RNG.standard_normal(12), RNG.random(12) + 0.5
    eng = run(g, Execute(cs), {a: xa, b: xb})
    assert eng.read(out) == pytest.approx(fn(xa, xb).astype(np.float32), rel=1e-6)


@pytest.mark.parametrize("codelet, fn", [
    ("Relu", lambda x: np.maximum(x, 0)), ("Exp", np.exp), ("Tanh", np.tanh),
    ("Sigmoid", lambda x: 1 / (1 + np.exp(-x))), ("Copy", lambda x: x)])
def test_unary_codelet_matches_numpy(codelet, fn):
    g = Graph(CHIP)
    x, y = var(g, (10,), "x"), var(g, (10,), "y", 3)
    cs = g.add_compute_set(codelet)
    g.add_vertex(cs, codelet, {"in": x[:6], "out": y[:6]}, tile=3)
    g.add_vertex(cs, codelet, {"in": x[6:], "out": y[6:]}, tile=0)    # other size: other group
    v = RNG.standard_normal(10)
    eng = run(g, Execute(cs), {x: v})
    assert eng.read(y) == pytest.approx(fn(v).astype(np.float32), rel=1e-6)


def test_relu_in_place_on_strided_view():
    g = Graph(CHIP)
    x = var(g, (3, 4), "x")
    cs = g.add_compute_set("relu")
    col = x.slice(1, 3, dim=1)
    g.add_vertex(cs, "Relu", {"in": col, "out": col}, tile=0)
    v = RNG.standard_normal((3, 4))
    want = v.copy()
    want[:, 1:3] = np.maximum(want[:, 1:3], 0)
    assert run(g, Execute(cs), {x: v}).read(x) == pytest.approx(want.astype(np.float32))


# --- reductions -----------------------------------------------------------------------------
@pytest.mark.parametrize("op, fn", [("add", np.sum), ("max", np.max)])
def test_reduce_matches_numpy_with_scale(op, fn):
    g = Graph(CHIP)
    x, s = var(g, (2, 7), "x"), var(g, (2,), "s", 1)
    cs = g.add_compute_set("reduce")
    for i in range(2):
        g.add_vertex(cs, "Reduce", {"in": x[i], "out": s[i:i + 1]}, tile=i, params={"op": op, "scale": 0.5})
    v = RNG.standard_normal((2, 7))
    assert run(g, Execute(cs), {x: v}).read(s) == pytest.approx(0.5 * fn(v, axis=1), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("op, fn", [("add", np.sum), ("mean", np.mean), ("max", np.max)])
def test_reduce_partials_matches_numpy(op, fn):
    g = Graph(CHIP)
    p, out = var(g, (3, 8), "partials"), var(g, (8,), "out", 2)
    cs = g.add_compute_set("rp")
    for h in range(2):     # each vertex reduces 3 partials of 4 outputs
        g.add_vertex(cs, "ReducePartials", {"in": p.slice(4 * h, 4 * h + 4, dim=1), "out": out[4 * h:4 * h + 4]},
                     tile=h, params={"op": op, "k": 3})
    v = RNG.standard_normal((3, 8))
    assert run(g, Execute(cs), {p: v}).read(out) == pytest.approx(fn(v, axis=0), rel=1e-5)


# --- matrix unit ------------------------------------------------------------------------------
def test_matmul_partials_over_k_reduced_equal_numpy():
    m, k, n = 3, 8, 5
    g = Graph(CHIP)
    A, B = var(g, (m, k), "A", 0), var(g, (k, n), "B", 1)
    P, C = var(g, (2, m, n), "P", 2), var(g, (m, n), "C", 3)
    cs1, cs2 = g.add_compute_set("mm"), g.add_compute_set("reduce")
    for h in range(2):      # split k in halves on tiles 0 and 1
        g.add_vertex(cs1, "MatMulPartial", {"a": A.slice(4 * h, 4 * h + 4, dim=1), "b": B[4 * h:4 * h + 4],
                                            "out": P[h]}, tile=h, params={"m": m, "k": 4, "n": n})
    g.add_vertex(cs2, "ReducePartials", {"in": P, "out": C}, tile=3, params={"k": 2})
    a, b = RNG.standard_normal((m, k)), RNG.standard_normal((k, n))
    eng = run(g, Sequence(Execute(cs1), Execute(cs2)), {A: a, B: b})
    assert eng.read(C) == pytest.approx(a @ b, rel=1e-5, abs=1e-5)


def test_matmul_partial_accumulate_adds_to_out():
    g = Graph(CHIP)
    A, B, C = var(g, (2, 3), "A"), var(g, (3, 2), "B"), var(g, (2, 2), "C")
    cs = g.add_compute_set("mm")
    g.add_vertex(cs, "MatMulPartial", {"a": A, "b": B, "out": C}, tile=0,
                 params={"m": 2, "k": 3, "n": 2, "accumulate": True})
    a, b, c = RNG.standard_normal((2, 3)), RNG.standard_normal((3, 2)), RNG.standard_normal((2, 2))
    # abs: an element of c + a @ b near zero keeps only the float32 rounding of its terms
    assert run(g, Execute(cs), {A: a, B: b, C: c}).read(C) == pytest.approx(c + a @ b, rel=1e-5, abs=1e-6)


def numpy_conv(xpad, w, stride=1):
    kh, kw, _, co = w.shape
    ho = (xpad.shape[0] - kh) // stride + 1
    wo = (xpad.shape[1] - kw) // stride + 1
    y = np.zeros((ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            patch = xpad[i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            y[i, j] = np.einsum("hwc,hwcd->d", patch, w)
    return y


def test_conv_split_over_four_tiles_with_channel_group_partials_equals_numpy():
    """3x3 conv, pad 1, 4x5x4 -> 4x5x2: tile = (row half, input-channel group);
    each ConvPartial makes one output row of one channel group; ReducePartials
    sums the two groups."""
    H, W, CI, CO, K = 4, 5, 4, 2, 3
    G, CIG = 2, 2
    g = Graph(CHIP)
    X = g.add_variable("fp32", (H + 2, W + 2, CI), "xpad")
    Wt = g.add_variable("fp32", (K, K, CI, CO), "w")
    P = g.add_variable("fp32", (G, H, W, CO), "partials")
    Y = g.add_variable("fp32", (H, W, CO), "y")
    for grp in range(G):
        g.set_tile_mapping(Wt.slice(grp * CIG, (grp + 1) * CIG, dim=2), 2 * grp)
        for oh in range(H):
            g.set_tile_mapping(P[grp, oh], 2 * grp + oh // 2)
    g.map_linearly(X)
    g.map_linearly(Y)
    conv, red = g.add_compute_set("conv"), g.add_compute_set("reduce")
    params = {"kh": K, "kw": K, "stride": 1, "groups": 1, "cig": CIG, "cog": CO, "wout": W}
    for grp in range(G):
        c0, c1 = grp * CIG, (grp + 1) * CIG
        for oh in range(H):
            rows = concat([X[oh + r].slice(c0, c1, dim=1).flatten() for r in range(K)])
            g.add_vertex(conv, "ConvPartial", {"in": rows, "weights": Wt.slice(c0, c1, dim=2).flatten(),
                                               "out": P[grp, oh].flatten()},
                         tile=2 * grp + oh // 2, params=params)
    for oh in range(H):
        g.add_vertex(red, "ReducePartials", {"in": concat([P[0, oh].flatten(), P[1, oh].flatten()]),
                                             "out": Y[oh].flatten()}, tile=oh, params={"k": G})
    x = np.zeros((H + 2, W + 2, CI))
    x[1:-1, 1:-1] = RNG.standard_normal((H, W, CI))
    w = RNG.standard_normal((K, K, CI, CO))
    exe = compile_program(g, Sequence(Execute(conv), Execute(red)))
    assert sorted(set(exe.compute[conv.id].tiles.tolist())) == [0, 1, 2, 3]
    eng = Engine(exe, functional=True)
    eng.write(X, x)
    eng.write(Wt, w)
    eng.run()
    assert eng.read(Y) == pytest.approx(numpy_conv(x, w), rel=1e-4, abs=1e-5)


def test_conv_partial_stride_two_two_groups_in_one_vertex():
    H, W, CI, CO, K, S = 5, 7, 4, 3, 3, 2
    wout = (W - K) // S + 1
    g = Graph(CHIP)
    X, Wt = var(g, (H, W, CI), "x"), var(g, (K, K, CI, CO), "w")
    Y = var(g, (H - K + 1, wout, CO), "y")
    cs = g.add_compute_set("conv")
    params = {"kh": K, "kw": K, "stride": S, "groups": 2, "cig": 2, "cog": CO, "wout": wout}
    # in: [groups, kh, win, cig]; weights: [groups, kh, kw, cig, cog]
    ins = concat([X[r].slice(2 * grp, 2 * grp + 2, dim=1).flatten() for grp in range(2) for r in range(K)])
    ws = concat([Wt.slice(2 * grp, 2 * grp + 2, dim=2).flatten() for grp in range(2)])
    g.add_vertex(cs, "ConvPartial", {"in": ins, "weights": ws, "out": Y[0].flatten()}, tile=0, params=params)
    x, w = RNG.standard_normal((H, W, CI)), RNG.standard_normal((K, K, CI, CO))
    got = run(g, Execute(cs), {X: x, Wt: w}).read(Y)[0]
    assert got == pytest.approx(numpy_conv(x[:K], w, stride=S)[0], rel=1e-4, abs=1e-5)


# --- pooling, affine, optimisers --------------------------------------------------------------------
@pytest.mark.parametrize("op", ["max", "avg"])
def test_pool_matches_numpy(op):
    H, W, C, K, S = 2, 6, 3, 2, 2
    wout = (W - K) // S + 1
    g = Graph(CHIP)
    X, Y = var(g, (H, W, C), "x"), var(g, (wout, C), "y", 1)
    cs = g.add_compute_set("pool")
    g.add_vertex(cs, "Pool", {"in": X, "out": Y}, tile=1,
                 params={"kh": K, "kw": K, "stride": S, "wout": wout, "c": C, "op": op})
    x = RNG.standard_normal((H, W, C))
    wins = np.stack([x[:, j * S:j * S + K, :] for j in range(wout)])   # wout, kh, kw, c
    want = wins.max(axis=(1, 2)) if op == "max" else wins.mean(axis=(1, 2))
    assert run(g, Execute(cs), {X: x}).read(Y) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("relu", [False, True])
def test_affine_matches_numpy(relu):
    g = Graph(CHIP)
    X, sc, sh, Y = var(g, (6, 4), "x"), var(g, (4,), "scale", 1), var(g, (4,), "shift", 2), var(g, (6, 4), "y")
    cs = g.add_compute_set("bn")
    for h in range(2):
        g.add_vertex(cs, "Affine", {"in": X[3 * h:3 * h + 3], "scale": sc, "shift": sh, "out": Y[3 * h:3 * h + 3]},
                     tile=h, params={"relu": relu})
    x, a, b = RNG.standard_normal((6, 4)), RNG.standard_normal(4), RNG.standard_normal(4)
    want = x * a + b
    if relu:
        want = np.maximum(want, 0)
    assert run(g, Execute(cs), {X: x, sc: a, sh: b}).read(Y) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_sgd_momentum_matches_numpy_over_steps():
    g = Graph(CHIP)
    Wv, G, M = var(g, (8,), "w"), var(g, (8,), "g", 1), var(g, (8,), "m")
    cs = g.add_compute_set("sgd")
    g.add_vertex(cs, "SGDMomentum", {"weights": Wv, "grad": G, "momentum": M}, tile=0,
                 params={"lr": 0.1, "momentum": 0.8})
    w, grad, m = RNG.standard_normal(8), RNG.standard_normal(8), RNG.standard_normal(8)
    eng = run(g, Repeat(3, Execute(cs)), {Wv: w, G: grad, M: m})
    for _ in range(3):
        m = 0.8 * m + grad
        w = w - 0.1 * m
    assert eng.read(M) == pytest.approx(m, rel=1e-5)
    assert eng.read(Wv) == pytest.approx(w, rel=1e-5)


def test_scaled_add_in_place():
    g = Graph(CHIP)
    D, E = var(g, (5,), "data"), var(g, (5,), "delta", 2)
    cs = g.add_compute_set("axpy")
    g.add_vertex(cs, "ScaledAdd", {"data": D, "delta": E}, tile=0, params={"scale": -2.0})
    d, e = RNG.standard_normal(5), RNG.standard_normal(5)
    assert run(g, Execute(cs), {D: d, E: e}).read(D) == pytest.approx(d - 2 * e, rel=1e-6)


# --- fp16 ----------------------------------------------------------------------------------
def test_fp16_vertex_rounds_its_output_to_half():
    g = Graph(CHIP)
    a, b, c = (var(g, (4,), n, dtype="fp16") for n in "abc")
    cs = g.add_compute_set("add16")
    g.add_vertex(cs, "Add", {"a": a, "b": b, "out": c}, tile=0)
    x = np.array([1.0, 2.0, 1000.0, 0.1], np.float16)
    y = np.array([1e-4, 3e-3, 0.3, 0.2], np.float16)
    got = run(g, Execute(cs), {a: x, b: y}).read(c)
    want = (x.astype(np.float64) + y.astype(np.float64)).astype(np.float16)
    assert got.tolist() == want.astype(np.float32).tolist()
    assert got[0] == 1.0          # 1 + 1e-4 is 1 in half precision


def test_fp32_vertex_keeps_single_precision():
    g = Graph(CHIP)
    a, b, c = (var(g, (1,), n) for n in "abc")
    cs = g.add_compute_set("add32")
    g.add_vertex(cs, "Add", {"a": a, "b": b, "out": c}, tile=0)
    assert run(g, Execute(cs), {a: [1.0], b: [1e-3]}).read(c)[0] == np.float32(1.001)


def test_host_write_to_fp16_tensor_rounds_to_half():
    g = Graph(CHIP)
    h = var(g, (2,), "h", dtype="fp16")
    eng = run(g, Sequence(), {h: [1.0001, 3.14159]})
    assert eng.read(h).tolist() == np.array([1.0001, 3.14159], np.float16).astype(np.float32).tolist()


def test_fp16_constant_and_stream_input_are_rounded_to_half():
    g = Graph(CHIP)
    k = g.add_constant("fp16", (2,), [0.1, 0.2], "k")
    g.set_tile_mapping(k, 0)
    x = var(g, (2,), "x", dtype="fp16")
    s = g.add_host_to_device_fifo("in", "fp16", 2)
    eng = run(g, Copy(s, x), {}, inputs={"in": [[1.0001, 2.0002]]})
    assert eng.read(k).tolist() == np.array([0.1, 0.2], np.float16).astype(np.float32).tolist()
    assert eng.read(x).tolist() == np.array([1.0001, 2.0002], np.float16).astype(np.float32).tolist()


# --- copies and streams ---------------------------------------------------------------------------
def test_copy_between_tensors_moves_values_through_views():
    g = Graph(CHIP)
    a, b = var(g, (2, 3), "a", 0), var(g, (3, 2), "b", 3)
    v = RNG.standard_normal((2, 3))
    assert run(g, Copy(a.T, b), {a: v}).read(b) == pytest.approx(v.T)


def test_streams_feed_each_iteration_and_collect_outputs():
    g = Graph(CHIP)
    x, y = var(g, (4,), "x"), var(g, (4,), "y", 1)
    cs = g.add_compute_set("relu")
    g.add_vertex(cs, "Relu", {"in": x, "out": y}, tile=1)
    sin = g.add_host_to_device_fifo("in", "fp32", 4, buffers=2)
    sout = g.add_device_to_host_fifo("out", "fp32", 4)
    batches = RNG.standard_normal((3, 4))
    eng = run(g, Repeat(3, Sequence(Copy(sin, x), Execute(cs), Copy(y, sout))), {}, inputs={"in": batches})
    got = np.stack(eng.outputs["out"])
    assert got == pytest.approx(np.maximum(batches, 0).astype(np.float32))


def test_constant_value_is_visible_to_vertices():
    g = Graph(CHIP)
    k = g.add_constant("fp32", (3,), 2.5, "k")
    g.set_tile_mapping(k, 2)
    x, y = var(g, (3,), "x"), var(g, (3,), "y")
    cs = g.add_compute_set("mul")
    g.add_vertex(cs, "Mul", {"a": x, "b": k, "out": y}, tile=0)
    assert run(g, Execute(cs), {x: [1, 2, 3]}).read(y).tolist() == [2.5, 5.0, 7.5]


def test_softmax_cross_entropy_matches_numpy():
    g = Graph(CHIP)
    L, lab = var(g, (5,), "logits"), var(g, (1,), "label", dtype="int32")
    loss, grad = var(g, (1,), "loss"), var(g, (5,), "grad")
    cs = g.add_compute_set("xent")
    g.add_vertex(cs, "SoftmaxCrossEntropy", {"logits": L, "label": lab, "loss": loss, "grad": grad}, tile=0)
    z = RNG.standard_normal(5)
    eng = run(g, Execute(cs), {L: z, lab: [3]})
    p = np.exp(z - z.max()); p /= p.sum()
    assert eng.read(loss)[0] == pytest.approx(-np.log(p[3]), rel=1e-5)
    want = p.copy(); want[3] -= 1
    assert eng.read(grad) == pytest.approx(want, rel=1e-5, abs=1e-7)


# --- the tutorial examples run ------------------------------------------------------------------
def test_example_tut1_variables_and_mapping_runs(capsys):
    g, error = load_example("tut1_variables_and_mapping").main(["--tiles", "8"])
    assert "tensor 'v4': element 2" in error
    out = capsys.readouterr().out
    assert "tile mapping of v3" in out and "concat([v1, v3[0]]) elements: [0, 1, 2, 3, 20, 21, 22, 23]" in out


def test_example_tut2_compute_set_matches_numpy(capsys):
    got, want, rep = load_example("tut2_compute_set").main(["--tiles", "8", "--n", "256"])
    assert got == pytest.approx(want, rel=1e-6, abs=1e-6)
    assert rep.supersteps == 9 and rep.exchange_cycles > 0
    assert "matches numpy: True" in capsys.readouterr().out


def test_example_tut3_host_streams_values_and_prefetch(capsys):
    ok, reports = load_example("tut3_host_streams").main(["--tiles", "8", "--n", "512", "--iterations", "3"])
    assert ok
    assert reports[2].hidden_transfer_fraction > reports[1].hidden_transfer_fraction
    assert reports[2].cycles < reports[1].cycles
    assert "values match numpy: True" in capsys.readouterr().out


# --- lowered matmuls: transposed activation operands, serial steps ---------------------------
@pytest.mark.parametrize("opt", [None,
                                 {"mseg": 2, "nb": 16, "parts": 2, "method": "amp", "serial": 2},
                                 {"mseg": 8, "nb": 32, "parts": 1, "method": "mac", "serial": 2}])
def test_lowered_matmul_with_transposed_activation_operand_equals_numpy(opt, monkeypatch):
    """Attention's Q x K^T (MatMul with transB, both operands activations): the planner
    rearranges K with Transpose vertices into a temporary, then reads contiguous rows of
    it; values exact, edges O(rows) (one per element would be 2 x 32 x 64 = 4,096)."""
    from compiler.lower import Lowering
    from compiler.planners.matmul import MatMulPlanner
    from models.opgraph import OpGraph
    if opt is not None:
        monkeypatch.setattr(MatMulPlanner, "options", lambda self, op, ctx: [dict(opt)])
    batch, M, K, N = 2, 8, 64, 32
    og = OpGraph("t")
    og.add_tensor("a", (batch, M, K), kind="input")
    og.add_tensor("b", (batch, N, K), kind="input")
    og.add_tensor("y", (batch, M, N), kind="output")
    og.add_op("mm", "MatMul", ["a", "b"], ["y"], family="matmul", flops=2 * batch * M * K * N, attrs={"transB": 1})
    og.outputs.append("y")
    low = Lowering(og, gc2.replace(tiles=16)).run()
    assert "Transpose" in {b.codelet for b in low.graph.batches}
    assert low.graph.num_edges < batch * N * K // 2
    a, b = RNG.standard_normal((batch, M, K)), RNG.standard_normal((batch, N, K))
    eng = Engine(compile_program(low.graph, low.program), functional=True,
                 inputs={"a": [a.ravel()], "b": [b.ravel()]})
    eng.run()
    y = np.asarray(eng.outputs["y"][0]).reshape(batch, M, N)
    assert y == pytest.approx(a @ b.transpose(0, 2, 1), rel=1e-5, abs=1e-5)


def test_transpose_codelet_matches_numpy():
    g = Graph(CHIP)
    X, Y = var(g, (3, 5), "X"), var(g, (5, 3), "Y")
    cs = g.add_compute_set("t")
    g.add_vertex(cs, "Transpose", {"in": X, "out": Y}, tile=0, params={"rows": 3, "cols": 5})
    x = RNG.standard_normal((3, 5))
    assert run(g, Execute(cs), {X: x}).read(Y) == pytest.approx(x.T)


def test_conv_row_unique_is_exact_and_falls_back_when_hashes_collide(monkeypatch):
    """The weight sets a conv's windows meet are told apart by one hash per row, checked
    exactly: rows that collide fall back to numpy's row-wise unique."""
    from compiler import codelets
    rows = np.random.default_rng(5).integers(0, 4, (500, 6))
    for table in (codelets._ROW_HASH, np.zeros_like(codelets._ROW_HASH)):   # the second: every row collides
        monkeypatch.setattr(codelets, "_ROW_HASH", table)
        u, inv = codelets._unique_rows(rows)
        np.testing.assert_array_equal(u[inv], rows)
        assert len(u) == len(np.unique(rows, axis=0))


def test_written_regions_on_a_grid_are_written_as_rows():
    """Output regions of one length on a grid (not contiguous) are written through a strided
    view, one index per region; the values land where element-by-element writes put them."""
    from simulator.functional import _Grid, _index
    starts, lens = np.array([40, 8, 24, 72]), np.array([5, 5, 5, 5])
    idx = _index(starts, lens, 2, 10, np.int64, write=True)
    assert isinstance(idx, _Grid) and idx.step == 16
    mem = np.zeros(100, np.float32)
    val = np.arange(20, dtype=np.float32).reshape(2, 10)
    idx.view(mem)[idx.rows] = val.reshape(-1, idx.L)
    want = np.zeros(100, np.float32)
    want[np.concatenate([np.arange(s, s + 5) for s in starts])] = val.ravel()
    np.testing.assert_array_equal(mem, want)
    np.testing.assert_array_equal(idx.view(mem)[idx.rows].reshape(idx.shape), val)
