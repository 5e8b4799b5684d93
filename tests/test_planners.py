"""The planners, one family at a time: each lowers a small op on a small chip.

What every test checks is a property that a wrong planner would break: outputs
written exactly once, reads kept on the tile that holds the data, the estimate
charging the codelet table's cost, the registry finding each family's planner.
"""
import numpy as np
import pytest

from compiler.codelets import CODELETS
from compiler.executable import compile_program
from compiler.lower import Lowering
from compiler.planners import (PLANNERS, ConvPlanner, GatherDispatch, LoweringError, Planner, choose,
                               codelet_cycles, contraction_cycles, exchange_cycles)
from compiler.planners.sparse import LSHHashPlanner
from hardware.chips import gc200
from models.opgraph import OpGraph

CHIP = gc200.replace(tiles=16)


def lowered(build):
    """Lower a one-op graph made by ``build(g)``; the lowering is the planners' context."""
    g = OpGraph("t")
    build(g)
    ctx = Lowering(g, CHIP)
    return ctx, ctx.run()


def writes(low, op, tensor):
    """How many times the vertices of ``op``'s compute sets write each element of ``tensor``."""
    graph = low.graph
    arrays = graph.finalize()
    act = low.acts[tensor]
    count = np.zeros(act.numel, np.int64)
    css = set(low.op_compute_sets[op])
    off = arrays.vertex_edge_offsets
    for b in graph.batches:
        if b.cs not in css:
            continue
        e0, e1 = off[b.v0], off[b.v1]
        w = np.array([f.writes for f in CODELETS[b.codelet].fields])[arrays.edge_field[e0:e1]]
        for s, n in zip(arrays.edge_start[e0:e1][w], arrays.edge_len[e0:e1][w]):
            rel = np.arange(s, s + n) - act.start
            rel = rel[(rel >= 0) & (rel < act.numel)]
            np.add.at(count, rel, 1)
    return count


def codelets_of(low, op):
    css = set(low.op_compute_sets[op])
    return [b.codelet for b in low.graph.batches if b.cs in css]


def image_conv(g, kernel=3, pads=1, cin=16, cout=16):
    g.add_tensor("x", (1, cin, 8, 8), kind="input")
    g.add_tensor("w", (cout, cin, kernel, kernel), kind="param")
    g.add_tensor("y", (1, cout, 8, 8), kind="output")
    g.add_op("conv", "Conv", ["x", "w"], ["y"], family="conv",
             attrs=dict(kernel_shape=[kernel, kernel], strides=[1, 1], pads=[pads] * 4),
             flops=2 * 64 * cin * cout * kernel * kernel)
    g.outputs.append("y")


def matmul(g):
    g.add_tensor("a", (8, 64), kind="input")
    g.add_tensor("b", (64, 32), kind="param")
    g.add_tensor("y", (8, 32), kind="output")
    g.add_op("mm", "MatMul", ["a", "b"], ["y"], family="matmul", flops=2 * 8 * 64 * 32)
    g.outputs.append("y")


# -- the interface and the registry ------------------------------------------------------------
def test_registry_has_one_planner_per_family_under_its_own_name():
    assert {"conv", "matmul", "elementwise", "pool", "reduce", "norm", "softmax", "loss", "optimizer",
            "gather", "reshape", "concat"} <= set(PLANNERS)
    assert all(p.family == fam for fam, p in PLANNERS.items())


def test_registry_sends_sparse_op_types_to_their_own_planner():
    gather = PLANNERS["gather"]
    assert isinstance(gather, GatherDispatch)
    assert isinstance(gather._p({"op": "LSHHash"}), LSHHashPlanner)
    assert gather._p({"op": "Gather"}) is gather.base


class _Fixed(Planner):
    family = "matmul"     # bounded by the memory proportion

    def __init__(self, costs):
        self.costs = costs

    def options(self, op, ctx):
        return [{"i": i} for i in range(len(self.costs))]

    def estimate(self, op, opt, ctx):
        return self.costs[opt["i"]]


def test_choose_prefers_a_slower_option_that_fits_the_memory_proportion():
    ctx, _ = lowered(matmul)
    limit = ctx.available_memory_proportion * CHIP.sram_bytes_per_tile
    opt = choose(_Fixed([(10.0, limit + 1), (20.0, limit)]), {"name": "op", "op": "X"}, ctx)
    assert opt["i"] == 1 and opt["fits_temp"]


def test_choose_doubles_the_bound_when_no_option_fits_then_takes_the_fastest():
    # PopLibs' ConvPlan.cpp: no plan under the bound -> the bound doubles, up to twice the
    # tile; none even then -> the fewest cycles
    ctx, _ = lowered(matmul)
    sram = CHIP.sram_bytes_per_tile
    limit = ctx.available_memory_proportion * sram
    opt = choose(_Fixed([(10.0, 3 * sram), (20.0, 1.5 * limit), (30.0, 1.9 * limit)]), {"name": "op", "op": "X"}, ctx)
    assert opt["i"] == 1 and not opt["fits_temp"]
    opt = choose(_Fixed([(10.0, 3 * sram), (20.0, 2.5 * sram)]), {"name": "op", "op": "X"}, ctx)
    assert opt["i"] == 0


def test_choose_bounds_only_convolutions_and_matmuls():
    ctx, _ = lowered(matmul)
    limit = ctx.available_memory_proportion * CHIP.sram_bytes_per_tile
    p = _Fixed([(10.0, limit + 1), (20.0, limit)])
    p.family = "elementwise"
    assert choose(p, {"name": "op", "op": "X"}, ctx)["i"] == 0


def test_choose_names_the_op_when_there_is_no_option():
    ctx, _ = lowered(matmul)
    with pytest.raises(LoweringError, match="'op'"):
        choose(_Fixed([]), {"name": "op", "op": "X"}, ctx)


# -- conv --------------------------------------------------------------------------------------
def test_conv_writes_every_output_element_exactly_once():
    _, low = lowered(image_conv)
    assert np.all(writes(low, "conv", "y") == 1)


def test_conv_estimate_charges_the_codelet_tables_cost_of_its_vertices():
    ctx, low = lowered(lambda g: image_conv(g, kernel=1, pads=0))
    op = dict(ctx.opg.op("conv"), name="conv")
    opt = low.plans["conv"]
    planner = ConvPlanner()
    exe = compile_program(low.graph, low.program)
    css = set(low.op_compute_sets["conv"])
    cyc = [c for b, c in zip(low.graph.batches, exe.vertex_cycles)
           if b.cs in css and b.codelet.startswith("ConvPartial")]
    assert np.all(np.concatenate(cyc) == planner.vertex_cycles(planner.shape(op, ctx, opt), opt, ctx))


def test_conv_shape_names_the_split_it_describes():
    ctx, low = lowered(image_conv)
    op = dict(ctx.opg.op("conv"), name="conv")
    sh = ConvPlanner().shape(op, ctx, {"wseg": 4, "parts": 2})
    assert (sh.N, sh.Co, sh.Ho, sh.Wo, sh.kh, sh.stride, sh.pad_top) == (1, 16, 8, 8, 3, 1, 1)
    assert sh.segments == 2 and sh.cipp == 8
    assert sh.vertices == 2 * 1 * sh.Cog * 8 * 2


# -- matmul ------------------------------------------------------------------------------------
def test_matmul_writes_every_output_element_exactly_once():
    _, low = lowered(matmul)
    assert np.all(writes(low, "mm", "y") == 1)


def test_contraction_cost_is_the_matmul_codelets_cost():
    for method, name in (("amp", "MatMulPartial"), ("mac", "MatMulPartialMAC")):
        want = CODELETS[name].cycles({"out": np.array([12.0])}, "fp16", {"k": 5}, CHIP)
        assert contraction_cycles({"method": method}, 12, 5, "fp16", CHIP) == float(want[0])


def test_exchange_estimate_is_bytes_over_the_tile_rate_plus_message_overheads():
    x = CHIP.exchange_bytes_per_cycle_per_tile
    assert exchange_cycles(8 * x, CHIP) == 8
    assert exchange_cycles(0, CHIP, messages_per_tile=3) == 3 * CHIP.exchange_message_cycles


# -- element-wise, pool, reduce, norm, softmax ---------------------------------------------------
def test_elementwise_reads_where_its_input_lives():
    def relu(g):
        g.add_tensor("x", (4, 256), kind="input")
        g.add_tensor("y", (4, 256), kind="output")
        g.add_op("relu", "Relu", ["x"], ["y"], family="elementwise", flops=1024)
        g.outputs.append("y")
    _, low = lowered(relu)
    exe = compile_program(low.graph, low.program)
    assert np.all(writes(low, "relu", "y") == 1)
    assert all(exe.exchange_in.get(cs) is None or exe.exchange_in[cs].total_bytes == 0
               for cs in low.op_compute_sets["relu"])


def test_elementwise_estimate_is_its_codelets_cost_per_worker():
    def exp(g):
        g.add_tensor("x", (4, 256), kind="input")
        g.add_tensor("y", (4, 256), kind="output")
        g.add_op("exp", "Exp", ["x"], ["y"], family="elementwise", flops=1024)
    ctx, _ = lowered(exp)
    per_worker = -(-1024 // CHIP.tiles) / CHIP.workers_per_tile
    want = codelet_cycles("Exp", {"out": per_worker}, "fp32", {}, CHIP)
    assert PLANNERS["elementwise"].estimate(dict(ctx.opg.op("exp"), name="exp"), {}, ctx) == (want, 0.0)


def test_pool_writes_every_output_element_once_with_one_vertex_per_output_row():
    def pool(g):
        g.add_tensor("x", (1, 16, 8, 8), kind="input")
        g.add_tensor("y", (1, 16, 4, 4), kind="output")
        g.add_op("pool", "MaxPool", ["x"], ["y"], family="pool",
                 attrs=dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0]))
        g.outputs.append("y")
    _, low = lowered(pool)
    assert np.all(writes(low, "pool", "y") == 1)
    css = set(low.op_compute_sets["pool"])
    assert sum(b.v1 - b.v0 for b in low.graph.batches if b.cs in css) == 1 * (16 // 8) * 4


def test_reduce_sums_partials_into_each_output_element_once():
    def reduce(g):
        g.add_tensor("x", (16, 64), kind="input")
        g.add_tensor("y", (1,), kind="output")
        g.add_op("sum", "ReduceSum", ["x"], ["y"], family="reduce")
        g.outputs.append("y")
    _, low = lowered(reduce)
    assert codelets_of(low, "sum") == ["Reduce", "ReducePartials"]
    assert np.all(writes(low, "sum", "y") == 1)


def test_inference_batch_norm_is_one_folded_affine_map():
    def bn(g):
        g.add_tensor("x", (1, 16, 4, 4), kind="input")
        for p in ("s", "b", "m", "v"):
            g.add_tensor(p, (16,), kind="param")
        g.add_tensor("y", (1, 16, 4, 4), kind="output")
        g.add_op("bn", "BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], family="norm")
        g.outputs.append("y")
    _, low = lowered(bn)
    assert codelets_of(low, "bn") == ["Affine"]
    assert np.all(writes(low, "bn", "y") == 1)


def test_softmax_is_max_subtract_exp_sum_divide():
    def softmax(g):
        g.add_tensor("x", (4, 10), kind="input")
        g.add_tensor("y", (4, 10), kind="output")
        g.add_op("sm", "Softmax", ["x"], ["y"], family="softmax")
        g.outputs.append("y")
    _, low = lowered(softmax)
    names = [low.graph.compute_sets[c].name.rsplit("/", 1)[1] for c in low.op_compute_sets["sm"]]
    assert names == ["max", "sub", "exp", "sum", "div"]


# -- loss, optimizer, gather, reshape, concat ----------------------------------------------------
def test_loss_has_one_vertex_per_sample():
    def loss(g):
        g.add_tensor("x", (4, 10), kind="input")
        g.add_tensor("label", (4,), "int32", kind="input")
        g.add_tensor("l", (4,), kind="output")
        g.add_op("loss", "SoftmaxCrossEntropyLoss", ["x", "label"], ["l"], family="loss")
        g.outputs.append("l")
    _, low = lowered(loss)
    css = set(low.op_compute_sets["loss"])
    assert [(b.codelet, b.v1 - b.v0) for b in low.graph.batches if b.cs in css] == [("SoftmaxCrossEntropy", 4)]


def test_optimizer_updates_every_weight_once_where_it_lives():
    def sgd(g):
        g.add_tensor("w", (64, 32), kind="param")
        g.add_tensor("dw", (64, 32), kind="input")
        g.add_tensor("w2", (64, 32), kind="output")
        g.add_op("upd", "SGDMomentum", ["w", "dw"], ["w2"], family="optimizer", phase="update")
    _, low = lowered(sgd)
    assert np.all(writes(low, "upd", "w") == 1)
    css = set(low.op_compute_sets["upd"])
    for b in low.graph.batches:
        if b.cs in css:
            arrays = low.graph.finalize()
            off = arrays.vertex_edge_offsets
            field = arrays.edge_field[off[b.v0]:off[b.v1]]
            starts = arrays.edge_start[off[b.v0]:off[b.v1]][field == 0]     # the weights field
            vt = arrays.vertex_tile[b.v0:b.v1]
            assert np.all(low.graph.tile_of_elements(starts) == vt)


def test_gather_reads_the_table_on_the_tile_that_holds_it():
    def gather(g):
        g.add_tensor("table", (100, 16), kind="param")
        g.add_tensor("idx", (8,), "int32", kind="input")
        g.add_tensor("y", (8, 16), kind="output")
        g.add_op("emb", "Gather", ["table", "idx"], ["y"], family="gather")
        g.outputs.append("y")
    _, low = lowered(gather)
    arrays = low.graph.finalize()
    off = arrays.vertex_edge_offsets
    (b,) = [b for b in low.graph.batches if b.cs in set(low.op_compute_sets["emb"])]
    field = arrays.edge_field[off[b.v0]:off[b.v1]]
    starts = arrays.edge_start[off[b.v0]:off[b.v1]][field == 0]
    assert np.all(low.graph.tile_of_elements(starts) == arrays.vertex_tile[b.v0:b.v1])


def test_reshape_adds_no_vertices_and_shares_the_input_storage():
    def reshape(g):
        g.add_tensor("x", (4, 64), kind="input")
        g.add_tensor("y", (4, 8, 8), kind="output")
        g.add_op("r", "Reshape", ["x"], ["y"], family="reshape")
        g.outputs.append("y")
    _, low = lowered(reshape)
    assert low.op_compute_sets["r"] == []
    assert low.acts["y"].var == low.acts["x"].var


def test_concat_writes_every_output_element_exactly_once():
    def concat(g):
        g.add_tensor("a", (4, 16), kind="input")
        g.add_tensor("b", (4, 48), kind="input")
        g.add_tensor("y", (4, 64), kind="output")
        g.add_op("cat", "Concat", ["a", "b"], ["y"], family="concat", attrs={"axis": 1})
        g.outputs.append("y")
    _, low = lowered(concat)
    assert np.all(writes(low, "cat", "y") == 1)


def test_lsh_hash_estimate_is_the_lsh_hash_codelets_cost():
    def lsh(g):
        g.add_tensor("p", (4, 24), kind="input")
        g.add_tensor("c", (4, 4), "int32", kind="output")
        g.add_op("h", "LSHHash", ["p"], ["c"], family="gather", attrs={"bits": 6, "tables": 4})
        g.outputs.append("c")
    ctx, low = lowered(lsh)
    want = codelet_cycles("LSHHash", {"in": -(-4 * 24 // CHIP.tiles)}, "fp32", {}, CHIP)
    assert PLANNERS["gather"].estimate(dict(ctx.opg.op("h"), name="h"), {}, ctx) == (want, 0.0)
    assert codelets_of(low, "h") == ["LSHHash"]


def matmul_trans_b(g, batch=2, M=8, K=64, N=32):
    """Attention's Q x K^T: both operands activations, the second one transposed."""
    g.add_tensor("a", (batch, M, K), kind="input")
    g.add_tensor("b", (batch, N, K), kind="input")
    g.add_tensor("y", (batch, M, N), kind="output")
    g.add_op("mm", "MatMul", ["a", "b"], ["y"], family="matmul", flops=2 * batch * M * K * N, attrs={"transB": 1})
    g.outputs.append("y")


def lowered_with(build, opt, monkeypatch):
    """Lower with the matmul planner's only option ``opt``."""
    from compiler.planners.matmul import MatMulPlanner
    monkeypatch.setattr(MatMulPlanner, "options", lambda self, op, ctx: [dict(opt)])
    return lowered(build)


def test_matmul_options_offer_serial_splits_that_divide_the_blocks():
    ctx, _ = lowered(matmul)
    op = dict(ctx.opg.op("mm"), name="mm")
    planner = PLANNERS["matmul"]
    opts = planner.options(op, ctx)
    assert {o.get("serial", 1) for o in opts} == {1, 2, 4, 8}
    for o in opts:
        q = -(-8 // o["mseg"]) * -(-32 // o["nb"])
        assert q % o.get("serial", 1) == 0


@pytest.mark.parametrize("serial", [1, 2, 4])
def test_matmul_serial_steps_write_every_output_once_in_their_own_compute_sets(serial, monkeypatch):
    opt = {"mseg": 2, "nb": 16, "parts": 2, "method": "amp", "serial": serial}
    _, low = lowered_with(matmul, opt, monkeypatch)
    assert np.all(writes(low, "mm", "y") == 1)
    names = [low.graph.compute_sets[c].name for c in low.op_compute_sets["mm"]]
    assert len(names) == 2 * serial
    if serial > 1:
        assert sum("/matmul/s" in n for n in names) == serial


@pytest.mark.parametrize("serial", [1, 2, 4])
def test_matmul_estimate_charges_the_codelet_tables_cost_of_its_vertices(serial, monkeypatch):
    # even blocks (8 x 64 x 32 in 2-row, 16-column blocks, k in halves): every vertex of a
    # kind costs what the estimate charges, and the estimate is k steps plus k - 1 syncs
    from compiler.planners.matmul import MatMulPlanner
    opt = {"mseg": 2, "nb": 16, "parts": 2, "method": "amp", "serial": serial}
    ctx, low = lowered_with(matmul, opt, monkeypatch)
    op = dict(ctx.opg.op("mm"), name="mm")
    exe = compile_program(low.graph, low.program)
    css = set(low.op_compute_sets["mm"])
    cyc = {}
    for b, c in zip(low.graph.batches, exe.vertex_cycles):
        if b.cs in css:
            cyc.setdefault(b.codelet, []).append(c)
    assert np.all(np.concatenate(cyc["MatMulPartial"]) == contraction_cycles(opt, 2 * 16, 32, ctx.dtype, CHIP, n=16))
    # the reduction runs where the partials are: each 2 x 16 block is cut in halves of 16
    # outputs, one per part's tile, and cut again in grains of 8 for the tile's workers (one
    # matmul vertex per tile here); each piece reads its piece of both parts
    red = codelet_cycles("ReducePartials", {"in": 2 * 8}, ctx.dtype, {"k": 2, "partials": ctx.partials}, CHIP)
    assert np.all(np.concatenate(cyc["ReducePartials"]) == red)
    planner = MatMulPlanner()
    step, step_mem = planner.step_estimate(op, opt, ctx)
    assert planner.estimate(op, opt, ctx) == (serial * step + (serial - 1) * CHIP.sync_cycles, step_mem)


def test_matmul_serial_steps_need_a_fraction_of_the_temporaries():
    def square(g):
        g.add_tensor("a", (64, 64), kind="input")
        g.add_tensor("b", (64, 64), kind="param")
        g.add_tensor("y", (64, 64), kind="output")
        g.add_op("mm", "MatMul", ["a", "b"], ["y"], family="matmul", flops=2 * 64 ** 3)
        g.outputs.append("y")
    ctx, _ = lowered(square)
    op = dict(ctx.opg.op("mm"), name="mm")
    planner = PLANNERS["matmul"]
    opt = {"mseg": 2, "nb": 16, "parts": 2, "method": "amp"}
    mem = [planner.estimate(op, dict(opt, serial=k), ctx)[1] for k in (1, 2, 4, 8)]
    assert all(x > y for x, y in zip(mem, mem[1:])) and mem[-1] < mem[0] / 2


def test_transposed_activation_operand_is_rearranged_with_transpose_vertices(monkeypatch):
    opt = {"mseg": 2, "nb": 16, "parts": 1, "method": "amp"}
    ctx, low = lowered_with(matmul_trans_b, opt, monkeypatch)
    assert np.all(writes(low, "mm", "y") == 1)
    assert codelets_of(low, "mm")[0] == "Transpose"
    tmp = [v for v in low.graph.variables if v.name.startswith("mm/transposed")]
    assert len(tmp) == 1 and tmp[0].kind == "temporary" and tmp[0].size == 2 * 64 * 32
    # edges O(rows): each matmul vertex reads one region of the rearranged operand, each
    # Transpose vertex one per source row of its piece; never one per element (32 K here)
    assert low.graph.num_edges < 2 * (2 * 8 + 2 * 32) * 4 + 2 * 4 * 2 * 4
    from compiler.planners.matmul import MatMulPlanner
    exe = compile_program(low.graph, low.program)
    css = set(low.op_compute_sets["mm"])
    tcyc = np.concatenate([c for b, c in zip(low.graph.batches, exe.vertex_cycles)
                           if b.cs in css and b.codelet == "Transpose"])
    sk = MatMulPlanner.transpose_pieces(64, 2 * 2, CHIP, CHIP.tiles)
    assert np.all(tcyc == codelet_cycles("Transpose", {"in": (64 // sk) * 16}, ctx.dtype, {}, CHIP))


@pytest.mark.parametrize("opt", [{"mseg": 2, "nb": 16, "parts": 2, "method": "amp"},
                                 {"mseg": 4, "nb": 8, "parts": 1, "method": "amp"},
                                 {"mseg": 2, "nb": 8, "parts": 4, "method": "amp", "serial": 2},
                                 {"mseg": 1, "nb": 8, "parts": 2, "method": "mac"}])
def test_matmul_estimate_bounds_the_worst_tiles_temporaries(opt, monkeypatch):
    # 12 x 64 x 24 over 16 tiles: the grid does not divide the tiles, so a tile's vertices
    # straddle row blocks of a; the estimate (what available_memory_proportion bounds) must
    # cover the worst tile's received operands and partials, and be reached within one block
    from compiler.memory import _exchange_temp, variable_tile_bytes

    def odd(g):
        g.add_tensor("a0", (12, 64), kind="input")
        g.add_tensor("a", (12, 64), kind="activation")
        g.add_op("relu", "Relu", ["a0"], ["a"], family="elementwise", flops=12 * 64)
        g.add_tensor("b", (64, 24), kind="param")
        g.add_tensor("y", (12, 24), kind="output")
        g.add_op("mm", "MatMul", ["a", "b"], ["y"], family="matmul", flops=2 * 12 * 64 * 24)
        g.outputs.append("y")
    ctx, low = lowered_with(odd, opt, monkeypatch)
    op = dict(ctx.opg.op("mm"), name="mm")
    _, est = PLANNERS["matmul"].step_estimate(op, opt, ctx)
    exe = compile_program(low.graph, low.program)
    graph = low.graph
    pv, pt, pb = variable_tile_bytes(graph)
    worst = 0
    for cs in low.op_compute_sets["mm"]:
        name = graph.compute_sets[cs].name.split("/")
        if name[-1 if "serial" not in opt else -2] != "matmul":
            continue
        held = np.zeros(CHIP.tiles)
        t, b = _exchange_temp(exe, cs)
        held[t] += b
        step = "partials" + ("_" + name[-1] if "serial" in opt else "")
        part = [v.id for v in graph.variables if v.name == f"mm/{step}"]
        sel = np.isin(pv, part)
        np.add.at(held, pt[sel], pb[sel])
        worst = max(worst, int(held.max()))
    assert worst <= est
    # reached within one block of a and one of b
    assert est - worst <= (opt["mseg"] * (64 // opt["parts"]) + (64 // opt["parts"]) * opt["nb"]) * 4


@pytest.mark.parametrize("V,T,run,section", [(24, 16, 2, 12), (8192, 1472, 64, 512), (700, 64, 8, 7 * 8 * 5),
                                             (64, 64, 4, 16), (10, 16, 3, 10), (4096, 100, 16, 64)])
def test_worst_tile_blocks_counts_what_spread_deals_to_each_tile(V, T, run, section):
    # brute force over spread's dealing: per tile, the row blocks (runs of ``run`` points)
    # and the distinct (section, column block) pairs (a point's column block = its index in
    # the section mod ``run``) its points touch
    from compiler.planners.base import spread
    from compiler.planners.matmul import worst_tile_blocks
    tiles = spread(V, T)
    i = np.arange(V)
    a = [np.unique(i[tiles == t] // run).size for t in np.unique(tiles)]
    b = [np.unique((i[tiles == t] // section) * run + (i[tiles == t] % section) % run).size
         for t in np.unique(tiles)]
    n = [int((tiles == t).sum()) for t in np.unique(tiles)]
    wa, wb, wn = worst_tile_blocks(V, T, run, section, run)
    assert wa.tolist() == a and wb.tolist() == b and wn.tolist() == n


@pytest.mark.parametrize("tiles", [2, 4, 16])
def test_matmul_partials_are_reduced_on_the_tiles_that_hold_them(tiles, monkeypatch):
    # reduced where the partials are (PopLibs' ConvReduce): every output element is summed
    # once, by a vertex on a tile that holds one of its parts (read in place), reading one
    # region per part: one message per piece and part, not one per output row
    from compiler.planners.matmul import MatMulPlanner
    monkeypatch.setattr(MatMulPlanner, "options", lambda self, op, ctx: [{"mseg": 2, "nb": 8, "parts": 4,
                                                                          "method": "amp"}])
    og = OpGraph("t")
    matmul(og)
    low = Lowering(og, gc200.replace(tiles=tiles)).run()
    g, arr = low.graph, low.graph.finalize()
    css = set(low.op_compute_sets["mm"])
    red = [b for b in g.batches if b.cs in css and b.codelet == "ReducePartials"]
    mm = [b for b in g.batches if b.cs in css and b.codelet == "MatMulPartial"]
    assert len(red) == 1 and len(mm) == 1
    y = low.acts["y"]
    out_f, in_f = (CODELETS["ReducePartials"].field_index[f] for f in ("out", "in"))
    written = np.zeros(y.numel, np.int64)
    part_tile = {}
    me = np.arange(arr.vertex_edge_offsets[mm[0].v0], arr.vertex_edge_offsets[mm[0].v1])
    for e in me[arr.edge_field[me] == CODELETS["MatMulPartial"].field_index["out"]]:
        part_tile[int(arr.edge_start[e])] = (int(arr.edge_len[e]), int(arr.vertex_tile[arr.edge_vertex[e]]))
    starts = np.array(sorted(part_tile))
    b = red[0]
    for v in range(b.v0, b.v1):
        es = np.arange(arr.vertex_edge_offsets[v], arr.vertex_edge_offsets[v + 1])
        t = int(arr.vertex_tile[v])
        ins = es[arr.edge_field[es] == in_f]
        assert ins.size == 4
        holders = set()
        for e in ins:   # each region lies in part blocks that one tile holds: that tile's
            a, z = int(arr.edge_start[e]), int(arr.edge_start[e] + arr.edge_len[e])
            blocks = starts[(starts < z) & (starts + np.array([part_tile[x][0] for x in starts]) > a)]
            assert blocks[0] <= a and blocks[-1] + part_tile[int(blocks[-1])][0] >= z
            assert len({part_tile[int(x)][1] for x in blocks}) == 1
            holders.add(part_tile[int(blocks[0])][1])
        assert t in holders
        for e in es[arr.edge_field[es] == out_f]:
            o = int(arr.edge_start[e]) - y.start
            written[o:o + int(arr.edge_len[e])] += 1
    assert np.all(written == 1)


# -- dX of a strided convolution ------------------------------------------------------------------
def strided_grad_input(kernel, pads, stride=2, cin=16, cout=16, size=8):
    def build(g):
        o = (size + 2 * pads - kernel) // stride + 1
        g.add_tensor("dy", (1, cout, o, o), kind="input")
        g.add_tensor("w", (cout, cin, kernel, kernel), kind="param")
        g.add_tensor("dx", (1, cin, size, size), kind="output")
        g.add_op("gi", "ConvGradInput", ["dy", "w"], ["dx"], family="conv", phase="bwd",
                 attrs=dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pads] * 4),
                 flops=2 * o * o * cout * cin * kernel * kernel)
        g.outputs.append("dx")
    return build


def test_conv_estimates_of_all_options_at_once_equal_each_options_estimate():
    """ConvPlanner.estimates (numpy over the options) gives, number for number and type for
    type, what estimate gives option by option: the choice, and the plan's est_cycles, are
    the same."""
    def grouped(g):
        g.add_tensor("x", (2, 32, 9, 9), kind="input")
        g.add_tensor("w", (32, 8, 3, 3), kind="param")
        g.add_tensor("y", (2, 32, 5, 5), kind="output")
        g.add_op("conv", "Conv", ["x", "w"], ["y"], family="conv",
                 attrs=dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4, group=4), flops=1)
        g.outputs.append("y")
    builds = [(lambda g: image_conv(g, kernel=1, pads=0), "conv"), (image_conv, "conv"),
              (lambda g: image_conv(g, cin=64, cout=32), "conv"), (grouped, "conv"),
              (strided_grad_input(3, 1), "gi"), (strided_grad_input(1, 0), "gi"), (strided_grad_input(3, 1, 1), "gi")]
    for build, name in builds:
        ctx, _ = lowered(build)
        op = dict(ctx.opg.op(name), name=name)
        planner = ConvPlanner()
        opts = planner.options(op, ctx)
        assert len(opts) > 10
        got = planner.estimates(op, opts, ctx)
        want = [planner.estimate(op, o, ctx) for o in opts]
        assert got == want
        assert [tuple(map(type, g)) for g in got] == [tuple(map(type, w)) for w in want]


def op_vertex_flops(low, op):
    exe = compile_program(low.graph, low.program)
    return sum(exe.compute[cs].flops for cs in low.op_compute_sets[op])


def test_strided_grad_input_skips_the_zeros_of_the_dilated_gradient():
    # a 3x3 stride-2 convolution's dX: PopLibs' worklists skip the dilation's zeros, so the
    # AMP does the useful MACs (each dY pixel meets each kernel tap once), not the 4x of a
    # dense convolution over the dilated dY; every element of dX is still written once
    ctx, low = lowered(strided_grad_input(3, 1))
    useful = ctx.opg.op("gi")["flops"]
    got = op_vertex_flops(low, "gi")
    assert 0.9 * useful <= got <= 1.5 * useful, (got, useful)
    assert (writes(low, "gi", "dx") == 1).all()


def test_strided_1x1_grad_input_defers_its_dilation_as_poplibs_does():
    # 1x1, unpadded: the convolution runs on dY's grid, then ZeroInsert / Fill vertices write dX
    from compiler.lower import lower
    from compiler.partition import legalise
    g = OpGraph("t")
    strided_grad_input(1, 0)(g)
    og = legalise(g)
    assert [og.op(n)["op"] for n in og.ops()] == ["ConvGradInput", "ZeroInsert"]
    assert og.tensors["gi.undilated_dx"].shape == (1, 16, 4, 4)
    assert legalise(og) is og                    # idempotent
    low = lower(g, CHIP)
    assert abs(op_vertex_flops(low, "gi") - g.op("gi")["flops"]) < 1e-6 * g.op("gi")["flops"]
    assert {"ZeroInsert", "Fill"} <= set(codelets_of(low, "gi.dilate"))
    assert (writes(low, "gi.dilate", "dx") == 1).all()


def test_zero_insert_codelet_puts_the_row_on_every_stride_th_pixel():
    g, s = 4, 2
    row = np.arange(3 * g, dtype=np.float64).reshape(1, -1)
    out = CODELETS["ZeroInsert"].compute({"in": row, "out": np.full((1, 6 * g), 7.0)}, {"stride": s, "g": g})["out"]
    want = np.zeros((6, g))
    want[::s] = row.reshape(3, g)
    np.testing.assert_array_equal(out.reshape(6, g), want)
