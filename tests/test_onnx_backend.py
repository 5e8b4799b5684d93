"""simulator.onnx_backend: ONNX models run functionally on the simulated chip."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import models
from compiler.lower import lower
from hardware.chips import get_chip
import simulator.onnx_backend as backend


def _tiny_model(opset=15):
    rng = np.random.default_rng(0)

    def init(name, shape, scale=0.05, offset=0.0):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale + offset).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s1", "bb1", "m1", "v1"], ["n1"], epsilon=1e-5),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Add", ["r2", "c2"], ["a2"]),
        helper.make_node("Flatten", ["a2"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
        helper.make_node("Softmax", ["y"], ["prob"], axis=1),
    ]
    inits = [init("w1", (32, 3, 3, 3)), init("b1", (32,)), init("s1", (32,), 0.1, 1.0), init("bb1", (32,)),
             init("m1", (32,)), numpy_helper.from_array((rng.random(32) + 0.5).astype(np.float32), "v1"),
             init("w2", (64, 32, 3, 3)), init("wf", (10, 64 * 4 * 4)), init("bf", (10,))]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 16, 16])],
                          [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [2, 10]),
                           helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ref(m, x):
    return ReferenceEvaluator(m).run(None, {m.graph.input[0].name: x})


@pytest.fixture(scope="module")
def tiny():
    m = _tiny_model()
    return m, backend.prepare(m, chip="gc2")


def test_outputs_equal_onnx_reference_evaluator(tiny):
    m, rep = tiny
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    for got, want in zip(rep.run([x]), _ref(m, x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_convolution_split_into_partial_sums_over_tiles_is_exact(tiny):
    m, rep = tiny
    # the second convolution's input channels are split over several tiles and reduced
    conv2 = [name for name, d in ((n, rep.opgraph.op(n)) for n in rep.opgraph.ops())
             if d["op"] == "Conv" and d["inputs"][1] == "w2"][0]
    assert rep.lowered.plans[conv2]["parts"] > 1
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(rep.run([x])[1], _ref(m, x)[1], rtol=1e-4, atol=1e-5)


def test_run_reports_simulated_cycles(tiny):
    m, rep = tiny
    rep.run([np.zeros((2, 3, 16, 16), np.float32)])
    assert rep.report.cycles > 0 and rep.report.vertices_executed > 0


def test_report_is_the_timing_of_the_same_program_planned_when_first_read():
    """``run`` computes the values without the compute costs and exchange plans; ``report``
    then computes them and simulates: the same report as an eagerly compiled program run functionally by the Engine."""
    from compiler.executable import compile_program
    from simulator.engine import Engine
    m = _tiny_model()
    rep = backend.prepare(m, chip="gc2")
    x = np.random.default_rng(4).standard_normal((2, 3, 16, 16)).astype(np.float32)
    got = rep.run([x])
    assert not rep.exe.timing_planned
    lazy = rep.report
    assert rep.exe.timing_planned
    low = rep.lowered
    exe = compile_program(low.graph, low.program)
    eng = Engine(exe, rep.chip, functional=True,
                 inputs={"x": [backend._grouped(x, low.acts["x"])]})
    for n, flat in rep._weights.items():
        eng.write(low.acts[n].tensor, flat)
    eager = eng.run()
    assert lazy.cycles == eager.cycles and lazy.vertices_executed == eager.vertices_executed
    assert lazy.exchange_cycles == eager.exchange_cycles and lazy.compute_cycles == eager.compute_cycles
    want = backend._ungrouped(np.asarray(eng.outputs["prob"][0], np.float64), low.acts["prob"])
    np.testing.assert_array_equal(got[0], want.astype(np.float32))


def test_outputs_computed_in_place_equal_the_copied_ones(monkeypatch):
    """Convolutions write their results straight into the tiles' memory where the executor
    offers it (a contiguous output no other field reads): the same values, bit for bit, as
    computed into a temporary and copied."""
    import simulator.functional as functional
    m = _tiny_model()
    rep = backend.prepare(m, chip="gc2")
    plans = rep.exe.functional_cache["plans"]
    assert any(grp.dests for groups in plans.values() for grp in groups)
    x = np.random.default_rng(6).standard_normal((2, 3, 16, 16)).astype(np.float32)
    in_place = rep.run([x])
    monkeypatch.setattr(functional._Args, "dest", lambda self, name: None)
    copied = rep.run([x])
    for a, b in zip(in_place, copied):
        np.testing.assert_array_equal(a, b)


def test_prepare_on_one_thread_and_on_several_gives_the_same_plans_and_values(monkeypatch):
    """prepare builds the gather plans while other threads check the graph and lay out the
    host weights (where threads() > 1): the same plans, weights and outputs as one thread."""
    m = _tiny_model()
    x = np.random.default_rng(7).standard_normal((2, 3, 16, 16)).astype(np.float32)
    reps = {}
    for n in ("1", "3"):
        monkeypatch.setenv("IPUSIM_THREADS", n)
        reps[n] = backend.prepare(m, chip="gc2")
        assert reps[n].exe.arrays.extra.get("field_columns") is not None     # checked
    one, many = reps["1"], reps["3"]
    assert one.exe.functional_cache["plans"].keys() == many.exe.functional_cache["plans"].keys()
    assert one._weights.keys() == many._weights.keys()
    for k in one._weights:
        np.testing.assert_array_equal(one._weights[k], many._weights[k])
    for a, b in zip(one.run([x]), many.run([x])):
        np.testing.assert_array_equal(a, b)


def test_timings_name_each_phase_of_prepare_and_run(monkeypatch):
    """``rep.timings``: the import, lowering and compile make up prepare; the first run's memory
    is made on another thread only where there is a second core."""
    import time
    m = _tiny_model()
    x = np.zeros((2, 3, 16, 16), np.float32)
    for n in ("1", "2"):
        monkeypatch.setenv("IPUSIM_THREADS", n)
        t = time.perf_counter()
        rep = backend.SimBackendRep(m, chip="gc2")
        wall = time.perf_counter() - t
        tm = rep.timings
        assert tuple(tm) == backend.SimBackendRep.PHASES and tm["run"] is None
        parts = tm["import"] + tm["lower"] + tm["compile"]
        assert min(tm["import"], tm["lower"], tm["compile"]) > 0 and 0.9 * wall <= parts <= wall
        if n == "1":
            assert tm["first_memory"] is None and tm["first_memory_waited"] is None
        else:
            assert 0 < tm["first_memory"] and 0 <= tm["first_memory_waited"] <= tm["compile"]
        rep.run([x])
        assert tm["run"] > 0


def test_run_model_and_supports_device():
    m = _tiny_model()
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(backend.run_model(m, [x], chip="gc2")[0], _ref(m, x)[0], rtol=1e-4, atol=1e-6)
    assert backend.supports_device("CPU") and not backend.supports_device("CUDA")


def test_run_node_runs_one_node():
    node = helper.make_node("Relu", ["a"], ["b"])
    a = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    np.testing.assert_array_equal(backend.run_node(node, [a], chip="gc2")[0], np.maximum(a, 0))


def test_repeated_blocks_run_as_graph_functions_with_correct_values():
    path = "/tmp/_ipusim_small_resnet50.onnx"
    models.to_onnx(models.get_model("resnet50", image_size=32, num_classes=10), path, opset=15)
    m = onnx.load(path)
    rep = backend.prepare(m, chip="gc2")
    assert sum(rep.lowered.calls.values()) > len(rep.lowered.functions)   # placed once, called repeatedly
    x = np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got, want = rep.run([x])[0], _ref(m, x)[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def _one_node(node, ins, outs, opset=13, inits=()):
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in ins],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outs], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_unsupported_op_is_refused_naming_the_node():
    node = helper.make_node("ConvTranspose", ["a", "w"], ["b"], name="my_deconv")
    w = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")
    m = _one_node(node, [("a", TensorProto.FLOAT, [1, 4, 5, 5])], [("b", TensorProto.FLOAT, [1, 2, 7, 7])],
                  inits=[w])
    with pytest.raises(backend.BackendError, match="my_deconv"):
        backend.prepare(m)


def test_double_precision_is_refused_naming_the_tensor():
    m = _one_node(helper.make_node("Relu", ["a"], ["b"]), [("a", TensorProto.DOUBLE, [3])],
                  [("b", TensorProto.DOUBLE, [3])])
    with pytest.raises(backend.BackendError, match="'a'.*DOUBLE"):
        backend.prepare(m)


@pytest.mark.parametrize("op,axis,opset", [("Softmax", 1, 13), ("LogSoftmax", 0, 13), ("Softmax", 1, 11),
                                           ("Hardmax", 2, 13)])
def test_softmax_over_any_axis_equals_the_reference(op, axis, opset):
    m = _one_node(helper.make_node(op, ["a"], ["b"], axis=axis), [("a", TensorProto.FLOAT, [3, 4, 5])],
                  [("b", TensorProto.FLOAT, [3, 4, 5])], opset=opset)
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    if opset < 13:   # before opset 13 the input is coerced to 2-D at axis (onnx's reference evaluator does not)
        e = np.exp(x.reshape(3, 20) - x.reshape(3, 20).max(axis=1, keepdims=True))
        want = (e / e.sum(axis=1, keepdims=True)).reshape(3, 4, 5)
    else:
        want = _ref(m, x)[0]
    np.testing.assert_allclose(backend.prepare(m).run([x])[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,perm", [((2, 5, 3, 7), (0, 2, 3, 1)), ((2, 37, 3, 70), (0, 2, 3, 1)),
                                        ((2, 5, 3, 7), (3, 2, 1, 0)), ((33, 40), (1, 0)), ((4, 6, 5), (2, 0, 1)),
                                        ((2, 3, 4, 5, 6), (0, 4, 2, 1, 3)), ((2, 5, 3, 7), (0, 2, 1, 3))])
def test_transpose_moving_the_last_axis_runs_transpose_vertices_and_equals_numpy(shape, perm):
    """A Transpose that moves the last axis is blocks transposed on the tile (``Transpose``
    vertices, as PopLibs' rearrangement does), one that keeps it a copy of runs (``Map1``);
    either gives numpy's transpose exactly."""
    out = [shape[p] for p in perm]
    m = _one_node(helper.make_node("Transpose", ["a"], ["b"], perm=list(perm)),
                  [("a", TensorProto.FLOAT, list(shape))], [("b", TensorProto.FLOAT, out)])
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    rep = backend.prepare(m, chip="gc2")
    np.testing.assert_array_equal(rep.run([x])[0], x.transpose(perm))
    codelets = {b.codelet for b in rep.lowered.graph.batches}
    assert codelets == ({"Map1"} if perm[-1] == len(shape) - 1 else {"Transpose"})


def test_grouped_padded_convolution_on_channel_grouped_images_equals_the_reference():
    # index-mapped lowering: a grouped, dilated, strided convolution between channel-grouped
    # images (a padded, ceil-mode average pool after it), every element read from its place
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=4, pads=[1, 2, 1, 0], strides=[2, 1],
                              dilations=[1, 2]),
             helper.make_node("AveragePool", ["c"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1,
                              strides=[2, 2])]
    inits = [numpy_helper.from_array(rng.standard_normal((16, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 9, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16, 3, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.standard_normal((2, 8, 9, 10)).astype(np.float32)
    rep = backend.prepare(m, chip="gc2")
    assert any(b.codelet == "MatMulPartial" for b in rep.lowered.graph.batches)
    np.testing.assert_allclose(rep.run([x])[0], _ref(m, x)[0], rtol=1e-4, atol=1e-5)


def test_lrn_sums_squares_over_neighbouring_channels():
    # onnx's reference evaluator loops over the batch instead of the channels (onnx 1.23), so
    # the formula of the operator's specification is written out here
    m = _one_node(helper.make_node("LRN", ["a"], ["b"], size=3, alpha=0.01, beta=0.75, bias=1.0),
                  [("a", TensorProto.FLOAT, [2, 16, 3, 4])], [("b", TensorProto.FLOAT, [2, 16, 3, 4])])
    x = np.random.default_rng(3).standard_normal((2, 16, 3, 4)).astype(np.float32)
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), (1, 1), (0, 0), (0, 0)])
    want = x / (1.0 + 0.01 / 3 * (sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:])) ** 0.75
    np.testing.assert_allclose(backend.prepare(m).run([x])[0], want, rtol=1e-5, atol=1e-6)


def test_integer_broadcasting_and_comparison_keep_onnx_dtypes():
    nodes = [helper.make_node("Div", ["a", "b"], ["q"]), helper.make_node("Less", ["q", "a"], ["lt"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.INT32, [2, 3]),
                                       helper.make_tensor_value_info("b", TensorProto.INT32, [3])],
                          [helper.make_tensor_value_info("q", TensorProto.INT32, [2, 3]),
                           helper.make_tensor_value_info("lt", TensorProto.BOOL, [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    a = np.array([[-7, 7, 9], [10, -3, 0]], np.int32)
    b = np.array([2, -2, 4], np.int32)
    q, lt = backend.prepare(m).run([a, b])
    assert q.dtype == np.int32 and lt.dtype == np.bool_
    np.testing.assert_array_equal(q, np.trunc(a / b).astype(np.int32))      # C-style truncation
    np.testing.assert_array_equal(lt, q < a)


def test_integer_beyond_float32s_exact_range_is_refused_naming_the_input():
    m = _one_node(helper.make_node("Neg", ["a"], ["b"]), [("a", TensorProto.INT64, [2])],
                  [("b", TensorProto.INT64, [2])])
    with pytest.raises(backend.BackendError, match="input 'a'.*2\\^24"):
        backend.prepare(m).run([np.array([1, 1 << 40], np.int64)])


def test_axes_given_as_an_input_compile_with_their_value():
    m = _one_node(helper.make_node("ReduceMax", ["a", "axes"], ["b"], keepdims=0),
                  [("a", TensorProto.FLOAT, [2, 3, 4]), ("axes", TensorProto.INT64, [1])],
                  [("b", TensorProto.FLOAT, ["d0", "d1"])], opset=18)
    rep = backend.prepare(m)
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    for ax in (1, -1):
        np.testing.assert_array_equal(rep.run([x, np.array([ax], np.int64)])[0], x.max(axis=ax))


def test_wrong_input_shape_is_a_clear_error(tiny):
    m, rep = tiny
    with pytest.raises(backend.BackendError, match="expected shape"):
        rep.run([np.zeros((1, 3, 16, 16), np.float32)])


def test_vector_mac_vertices_give_the_same_values():
    # a chip whose matrix unit is no faster than its vector unit: the planners choose
    # ConvPartialMAC / MatMulPartialMAC vertices, whose values must be as exact
    from hardware.chips import gc2
    weak = gc2.replace(flops_per_cycle_per_tile={"fp32": 2.0, "fp16": 4.0})
    m = _tiny_model()
    rep = backend.prepare(m, chip=weak)
    codelets = {b.codelet for b in rep.lowered.graph.batches}
    assert {"ConvPartialMAC", "MatMulPartialMAC"} <= codelets and "ConvPartial" not in codelets
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    for got, want in zip(rep.run([x]), _ref(m, x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_serial_split_convolutions_give_the_same_values(monkeypatch):
    # PopLibs meets a tight memory proportion with serial splits: the (image, channel
    # group) blocks in several compute sets one after another; the values must not change
    from compiler.planners.conv import ConvPlanner
    real = ConvPlanner.options

    def serial_only(self, op, ctx):
        opts = [o for o in real(self, op, ctx) if o.get("serial", 1) > 1]
        return opts or real(self, op, ctx)

    monkeypatch.setattr(ConvPlanner, "options", serial_only)
    m = _tiny_model()
    rep = backend.prepare(m, chip="gc2")
    convs = [n for n in rep.opgraph.ops() if rep.opgraph.op(n)["op"] == "Conv"]
    assert all(rep.lowered.plans[c].get("serial", 1) > 1 for c in convs)
    names = [rep.lowered.graph.compute_sets[c].name for c in rep.lowered.op_compute_sets[convs[0]]]
    assert sum("/conv/s" in n for n in names) == rep.lowered.plans[convs[0]]["serial"]
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    for got, want in zip(rep.run([x]), _ref(m, x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_runtime_indices_into_a_weight_table_equal_the_reference():
    # timed by the gather planner (its vertices read the part of the table on their tile), run
    # for values through the exact SelectRows lowering (an embedding, rotary cos / sin at position ids)
    rng = np.random.default_rng(4)
    table = numpy_helper.from_array(rng.standard_normal((50, 4)).astype(np.float32), "t")
    m = _one_node(helper.make_node("Gather", ["t", "i"], ["y"], name="emb"), [("i", TensorProto.INT64, [2, 3])],
                  [("y", TensorProto.FLOAT, [2, 3, 4])], inits=[table])
    rep = backend.prepare(m)
    i = rng.integers(-50, 50, (2, 3)).astype(np.int64)
    np.testing.assert_array_equal(rep.run([i])[0], ReferenceEvaluator(m).run(None, {"i": i})[0])
    og = models.load_onnx_model(m)
    codelets = {f: {b.codelet for b in lower(og, get_chip("gc200"), functional=f).graph.batches} for f in (False, True)}
    assert "DynamicSlice" in codelets[False] and "DynamicSlice" not in codelets[True]


def test_softmax_cross_entropy_with_ignored_targets_equals_the_reference():
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["x", "t"], ["loss", "logp"], ignore_index=2)
    m = _one_node(node, [("x", TensorProto.FLOAT, [4, 5, 3]), ("t", TensorProto.INT64, [4, 3])],
                  [("loss", TensorProto.FLOAT, []), ("logp", TensorProto.FLOAT, [4, 5, 3])])
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    t = rng.integers(0, 5, (4, 3)).astype(np.int64)
    got = backend.prepare(m).run([x, t])
    want = ReferenceEvaluator(m).run(None, {"x": x, "t": t})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_float16_tensors_are_rounded_as_numpys_half_and_half_sums_are_refused():
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16), helper.make_node("Mul", ["h", "h"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3, 5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    x = np.random.default_rng(6).standard_normal((3, 5)).astype(np.float32) * 100
    (y,) = backend.prepare(m).run([x])
    h = x.astype(np.float16)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, h * h)          # each result rounded to half, as numpy does
    mm = _one_node(helper.make_node("MatMul", ["a", "b"], ["c"], name="mm16"),
                   [("a", TensorProto.FLOAT16, [2, 3]), ("b", TensorProto.FLOAT16, [3, 2])],
                   [("c", TensorProto.FLOAT16, [2, 2])])
    with pytest.raises(backend.BackendError, match="mm16.*float16"):
        backend.prepare(mm)


@pytest.mark.parametrize("stride,pads,dilation", [(1, [1, 1, 1, 1], 1), (2, [1, 0, 1, 2], 1), (1, [2, 2, 2, 2], 2)])
def test_depthwise_convolution_reads_whole_rows_and_equals_the_reference(stride, pads, dilation):
    rng = np.random.default_rng(7)
    C, H, W = 24, 9, 10
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=C, pads=pads, strides=[stride, stride],
                            dilations=[dilation, dilation])
    Ho = (H + pads[0] + pads[2] - 2 * dilation - 1) // stride + 1
    Wo = (W + pads[1] + pads[3] - 2 * dilation - 1) // stride + 1
    inits = [numpy_helper.from_array(rng.standard_normal((C, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(C).astype(np.float32), "b")]
    m = _one_node(node, [("x", TensorProto.FLOAT, [2, C, H, W])], [("y", TensorProto.FLOAT, [2, C, Ho, Wo])],
                  inits=inits)
    rep = backend.prepare(m, chip="gc2")
    batches = [b for b in rep.lowered.graph.batches if b.codelet == "DepthwiseRows"]
    assert batches
    # one vertex per (image, channel group, output row), each reading its rows in a few regions
    assert sum(b.v1 - b.v0 for b in batches) == 2 * (C // 8) * Ho
    off = rep.exe.arrays.vertex_edge_offsets
    edges = sum(int(off[b.v1] - off[b.v0]) for b in batches)
    assert edges <= sum(b.v1 - b.v0 for b in batches) * (3 * 3 + 2)     # not one per element read
    x = rng.standard_normal((2, C, H, W)).astype(np.float32)
    np.testing.assert_allclose(rep.run([x])[0], _ref(m, x)[0], rtol=1e-5, atol=1e-5)
