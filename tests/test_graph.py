"""Tests for the graph API (compiler/graph.py, tensor.py, checks.py, executable.py):
variables and views give the right element indices, tile mappings, and every
build / compile error names the tensor, vertex and tile involved."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.executable import compile_program
from compiler.graph import Graph, GraphError
from compiler.program import Copy, Execute, Sequence
from compiler.tensor import concat
from hardware.chips import gc2
from simulator.engine import Engine
from simulator.functional import FunctionalError

CHIP = gc2.replace(tiles=4)


@pytest.fixture
def g():
    return Graph(CHIP)


def mapped(g, dtype, shape, name, tile=0):
    t = g.add_variable(dtype, shape, name)
    g.set_tile_mapping(t, tile)
    return t


# --- variables and constants -------------------------------------------------------
def test_variables_own_consecutive_element_ranges(g):
    a = g.add_variable("fp32", (2, 3), "a")
    b = g.add_variable("fp16", (4,), "b")
    assert a.elements().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert b.elements().tolist() == [6, 7, 8, 9]
    assert g.num_elements == 10


def test_add_variable_accepts_poplar_dtype_alias(g):
    assert g.add_variable("half", (2,), "h").dtype == "fp16"


def test_add_variable_scalar_shape_is_one_dimensional(g):
    assert g.add_variable("fp32", 5, "v").shape == (5,)


def test_add_variable_negative_dimension_names_variable(g):
    with pytest.raises(GraphError, match="'bad'.*negative"):
        g.add_variable("fp32", (2, -1), "bad")


def test_add_constant_broadcasts_value_and_is_kind_constant(g):
    c = g.add_constant("fp32", (2, 2), 3.0, "three")
    var = g.variable(c)
    assert var.kind == "constant" and var.constant.tolist() == [[3.0, 3.0], [3.0, 3.0]]


def test_variable_lookup_by_name_and_by_view(g):
    g.add_variable("fp32", (4,), "a")
    b = g.add_variable("fp32", (4,), "b")
    assert g.variable("b").id == 1
    assert g.variable(b[2:]).name == "b"


# --- tensor views ------------------------------------------------------------------------
def test_slice_first_dim_is_contiguous_view(g):
    v = g.add_variable("fp32", (4, 3), "v")
    s = v[1:3]
    assert s.shape == (2, 3) and s._idx is None
    assert s.elements().ravel().tolist() == list(range(3, 9))


def test_slice_along_dim1_gives_strided_indices(g):
    v = g.add_variable("fp32", (3, 4), "v")
    assert v.slice(1, 3, dim=1).elements().tolist() == [[1, 2], [5, 6], [9, 10]]


def test_index_drops_first_dimension(g):
    v = g.add_variable("fp32", (3, 4), "v")
    assert v.index(2).elements().tolist() == [8, 9, 10, 11]
    assert v[-1].elements().tolist() == [8, 9, 10, 11]


def test_index_out_of_range_names_tensor(g):
    v = g.add_variable("fp32", (3,), "vec")
    with pytest.raises(IndexError, match="'vec'"):
        v[3]


def test_reshape_keeps_row_major_order(g):
    v = g.add_variable("fp32", (2, 6), "v")
    assert v.reshape(3, -1).elements().tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_reshape_of_transposed_view_follows_view_order(g):
    v = g.add_variable("fp32", (2, 3), "v")
    assert v.T.reshape(6).elements().tolist() == [0, 3, 1, 4, 2, 5]


def test_reshape_wrong_size_names_tensor(g):
    v = g.add_variable("fp32", (2, 3), "v")
    with pytest.raises(ValueError, match="'v'.*\\(2, 3\\)"):
        v.reshape(4, 2)


def test_transpose_permutes_indices(g):
    v = g.add_variable("fp32", (2, 3, 4), "v")
    t = v.transpose(2, 0, 1)
    assert t.shape == (4, 2, 3)
    assert t.elements().tolist() == np.arange(24).reshape(2, 3, 4).transpose(2, 0, 1).tolist()


def test_flatten_of_view_keeps_view_order(g):
    v = g.add_variable("fp32", (3, 2), "v")
    assert v.T.flatten().elements().tolist() == [0, 2, 4, 1, 3, 5]


def test_concat_dim0_of_two_variables(g):
    a = g.add_variable("fp32", (2,), "a")
    b = g.add_variable("fp32", (3,), "b")
    assert concat([b, a]).elements().tolist() == [2, 3, 4, 0, 1]


def test_concat_dim1(g):
    a = g.add_variable("fp32", (2, 2), "a")
    b = g.add_variable("fp32", (2, 1), "b")
    assert concat([a, b], dim=1).elements().tolist() == [[0, 1, 4], [2, 3, 5]]


def test_concat_mixed_dtypes_names_both_tensors(g):
    a = g.add_variable("fp32", (2,), "a")
    b = g.add_variable("fp16", (2,), "b")
    with pytest.raises(ValueError, match="'a'.*fp32.*'b'.*fp16"):
        concat([a, b])


def test_intervals_of_strided_view_are_runs(g):
    v = g.add_variable("fp32", (3, 4), "v")
    s, l = v.slice(0, 2, dim=1).intervals()
    assert s.tolist() == [0, 4, 8] and l.tolist() == [2, 2, 2]


# --- tile mapping ----------------------------------------------------------------------------
def test_map_linearly_grain_keeps_chunks_whole(g):
    t = g.add_variable("fp32", (10,), "t")
    g.map_linearly(t, grain=3)
    # 4 chunks of 3 (last one short) over 4 tiles: one chunk per tile
    assert g.get_tile_mapping(t) == [[(0, 3)], [(3, 6)], [(6, 9)], [(9, 10)]]


def test_map_linearly_gives_first_tiles_the_larger_shares(g):
    t = g.add_variable("fp32", (10,), "t")
    g.map_linearly(t, grain=1)
    assert g.get_tile_mapping(t) == [[(0, 3)], [(3, 6)], [(6, 9)], [(9, 10)]]


def test_map_linearly_on_chosen_tiles(g):
    t = g.add_variable("fp32", (4,), "t")
    g.map_linearly(t, tiles=[3, 1])
    assert g.tile_of_elements(t.elements()).tolist() == [3, 3, 1, 1]


def test_map_linearly_of_strided_view_maps_those_elements(g):
    v = g.add_variable("fp32", (2, 4), "v")
    g.set_tile_mapping(v, 0)
    g.map_linearly(v.slice(2, 4, dim=1), tiles=[3])
    assert g.tile_of_elements(v.elements()).tolist() == [[0, 0, 3, 3], [0, 0, 3, 3]]


def test_get_tile_mapping_lists_intervals_of_a_view(g):
    v = g.add_variable("fp32", (6,), "v")
    g.set_tile_mapping(v[0:2], 1)
    g.set_tile_mapping(v[2:4], 2)
    g.set_tile_mapping(v[4:6], 1)
    assert g.get_tile_mapping(v) == [[], [(0, 2), (4, 6)], [(2, 4)], []]
    # in the view's own (flattened) coordinates
    assert g.get_tile_mapping(v[3:6]) == [[], [(1, 3)], [(0, 1)], []]


def test_get_tile_mapping_leaves_unmapped_elements_out(g):
    v = g.add_variable("fp32", (4,), "v")
    g.set_tile_mapping(v[1:3], 2)
    assert g.get_tile_mapping(v) == [[], [], [(1, 3)], []]


def test_set_tile_mapping_of_tensor_out_of_range_names_tensor_and_tile(g):
    v = g.add_variable("fp32", (4,), "weights")
    with pytest.raises(GraphError, match="'weights'.*tile 4 out of range"):
        g.set_tile_mapping(v, 4)


# --- compile-time errors -------------------------------------------------------------------------
def test_unmapped_element_is_error_at_compile_naming_tensor(g):
    v = g.add_variable("fp32", (4,), "partly")
    g.set_tile_mapping(v[0:3], 0)
    with pytest.raises(GraphError, match="tensor 'partly': element 3 .* not mapped"):
        compile_program(g, Sequence())


def test_never_mapped_tensor_is_error_naming_tensor(g):
    g.add_variable("fp16", (2, 2), "lost")
    with pytest.raises(GraphError, match="tensor 'lost'.*no tile mapping"):
        compile_program(g, Sequence())


def test_vertex_without_tile_is_error_naming_vertex_and_compute_set(g):
    a, b = mapped(g, "fp32", (2,), "a"), mapped(g, "fp32", (2,), "b")
    cs = g.add_compute_set("relu-cs")
    g.add_vertex(cs, "Relu", {"in": a, "out": b})
    with pytest.raises(GraphError, match="vertex 0 \\(Relu in compute set 'relu-cs'\\) has no tile mapping"):
        compile_program(g, Execute(cs))


def test_vertex_tile_out_of_range_names_vertex_and_tile(g):
    a, b = mapped(g, "fp32", (2,), "a"), mapped(g, "fp32", (2,), "b")
    cs = g.add_compute_set("cs")
    with pytest.raises(GraphError, match="vertex 0 \\(Relu.*tile 7 out of range.*4 tiles"):
        g.add_vertex(cs, "Relu", {"in": a, "out": b}, tile=7)


def test_vertex_tile_out_of_range_leaves_graph_unchanged(g):
    a, b = mapped(g, "fp32", (2,), "a"), mapped(g, "fp32", (2,), "b")
    cs = g.add_compute_set("cs")
    with pytest.raises(GraphError):
        g.add_vertex(cs, "Relu", {"in": a, "out": b}, tile=7)
    assert (g.num_vertices, g.num_edges, len(g.batches)) == (0, 0, 0)


def test_set_tile_mapping_of_vertex_out_of_range(g):
    a, b = mapped(g, "fp32", (2,), "a"), mapped(g, "fp32", (2,), "b")
    v = g.add_vertex(g.add_compute_set("cs"), "Relu", {"in": a, "out": b})
    with pytest.raises(GraphError, match="vertex 0: tile -1 out of range"):
        g.set_tile_mapping(v, -1)


def test_field_connected_to_wrong_dtype_names_field_and_tensor(g):
    a = mapped(g, "fp32", (2,), "a")
    h = mapped(g, "fp16", (2,), "halfs")
    cs = g.add_compute_set("mix")
    with pytest.raises(GraphError, match="vertex 0 \\(Add in compute set 'mix'\\): field 'b' expects fp32 "
                                         "but tensor 'halfs' is fp16"):
        g.add_vertex(cs, "Add", {"a": a, "b": h, "out": a}, tile=0)


def test_concrete_dtype_field_rejects_other_dtype(g):
    table = mapped(g, "fp32", (8,), "table")
    idx = mapped(g, "fp32", (2,), "fidx")
    cs = g.add_compute_set("gather")
    v = g.add_vertex(cs, "DynamicSlice", tile=0)
    with pytest.raises(GraphError, match="field 'index' expects int32 but tensor 'fidx' is fp32"):
        g.connect(v["index"], idx)
    g.connect(v["table"], table)


def test_wrong_size_same_size_as_names_vertex_tile_and_fields(g):
    a, b = mapped(g, "fp32", (4,), "a", 1), mapped(g, "fp32", (3,), "b", 1)
    out = mapped(g, "fp32", (4,), "out", 1)
    cs = g.add_compute_set("add")
    g.add_vertex(cs, "Add", {"a": a, "b": b, "out": out}, tile=1)
    with pytest.raises(GraphError, match="vertex 0 \\(Add in compute set 'add', tile 1\\): field 'b' has 3 "
                                         "elements but must match field 'a' \\(4 elements\\)"):
        compile_program(g, Execute(cs))


def test_scalar_field_with_two_elements_names_field_and_tensor(g):
    x, s = mapped(g, "fp32", (4,), "x"), mapped(g, "fp32", (2,), "sums")
    cs = g.add_compute_set("red")
    with pytest.raises(GraphError, match="scalar field 'out' connected to tensor 'sums' of 2 elements"):
        g.add_vertex(cs, "Reduce", {"in": x, "out": s}, tile=0)


def test_scalar_field_connected_twice_is_error_at_compile(g):
    x, s = mapped(g, "fp32", (4,), "x"), mapped(g, "fp32", (2,), "sums")
    cs = g.add_compute_set("red")
    v = g.add_vertex(cs, "Reduce", {"in": x, "out": s[0:1]}, tile=2)
    g.connect(v["out"], s[1:2])
    with pytest.raises(GraphError, match="tile 2\\): scalar field 'out' connected to 2 elements"):
        compile_program(g, Execute(cs))


def test_unconnected_field_is_error_naming_field(g):
    x = mapped(g, "fp32", (4,), "x")
    cs = g.add_compute_set("cs")
    g.add_vertex(cs, "Relu", {"in": x}, tile=0)
    with pytest.raises(GraphError, match="vertex 0 \\(Relu.*tile 0\\): field 'out' is not connected"):
        compile_program(g, Execute(cs))


def test_two_vertices_writing_same_element_names_tensor_vertices_and_tiles(g):
    x = mapped(g, "fp32", (4,), "x")
    y = mapped(g, "fp32", (4,), "shared_out", 3)
    cs = g.add_compute_set("clash")
    g.add_vertex(cs, "Relu", {"in": x[0:2], "out": y[0:2]}, tile=0)
    g.add_vertex(cs, "Relu", {"in": x[2:4], "out": y[1:3]}, tile=2)
    with pytest.raises(GraphError) as e:
        compile_program(g, Execute(cs))
    msg = str(e.value)
    for part in ("compute set 'clash'", "vertex 0 (Relu", "tile 0", "vertex 1 (Relu", "tile 2",
                 "tensor 'shared_out' (element 1)"):
        assert part in msg


def test_writes_of_one_element_in_different_compute_sets_are_allowed(g):
    x = mapped(g, "fp32", (2,), "x")
    y = mapped(g, "fp32", (2,), "y")
    cs1, cs2 = g.add_compute_set("one"), g.add_compute_set("two")
    g.add_vertex(cs1, "Relu", {"in": x, "out": y}, tile=0)
    g.add_vertex(cs2, "Relu", {"in": x, "out": y}, tile=1)
    compile_program(g, Sequence(Execute(cs1), Execute(cs2)))


def test_unknown_codelet_lists_known_codelets(g):
    cs = g.add_compute_set("cs")
    with pytest.raises(KeyError, match="unknown codelet 'Addd'.*Add, Sub"):
        g.add_vertex(cs, "Addd", {}, tile=0)


def test_unknown_field_names_vertex_and_lists_fields(g):
    x = mapped(g, "fp32", (2,), "x")
    cs = g.add_compute_set("cs")
    with pytest.raises(GraphError, match="vertex 0 \\(Relu in compute set 'cs'\\): codelet Relu has no field "
                                         "'input' \\(fields: in, out\\)"):
        g.add_vertex(cs, "Relu", {"input": x}, tile=0)


def test_add_vertices_unknown_field_names_codelet_and_field(g):
    cs = g.add_compute_set("bulk")
    with pytest.raises(GraphError, match="codelet Relu has no field 'x'"):
        g.add_vertices(cs, "Relu", [0], {"x": ([0], [0], [1])})


def test_execute_of_compute_set_from_other_graph_names_it(g):
    other = Graph(CHIP)
    cs = other.add_compute_set("foreign")
    with pytest.raises(GraphError, match="'foreign'.*not in this graph"):
        compile_program(g, Execute(cs))


# --- copies and streams -------------------------------------------------------------------------
def test_copy_size_mismatch_names_both_tensors(g):
    a, b = mapped(g, "fp32", (4,), "src4"), mapped(g, "fp32", (3,), "dst3")
    with pytest.raises(GraphError, match="'src4' \\(4 elements\\) to 'dst3' \\(3 elements\\)"):
        compile_program(g, Copy(a, b))


def test_copy_dtype_mismatch_names_both_tensors(g):
    a, b = mapped(g, "fp32", (4,), "f32"), mapped(g, "fp16", (4,), "f16")
    with pytest.raises(GraphError, match="'f32' \\(fp32\\) to 'f16' \\(fp16\\): dtypes differ"):
        compile_program(g, Copy(a, b))


def test_h2d_stream_as_copy_destination_is_error(g):
    x = mapped(g, "fp32", (4,), "x")
    s = g.add_host_to_device_fifo("in", "fp32", 4)
    with pytest.raises(GraphError, match="stream 'in' is h2d, cannot be used as destination"):
        compile_program(g, Copy(x, s))


def test_d2h_stream_as_copy_source_is_error(g):
    x = mapped(g, "fp32", (4,), "x")
    s = g.add_device_to_host_fifo("out", "fp32", 4)
    with pytest.raises(GraphError, match="stream 'out' is d2h, cannot be used as source"):
        compile_program(g, Copy(s, x))


def test_stream_copy_size_mismatch_names_stream_and_tensor(g):
    x = mapped(g, "fp32", (3,), "x3")
    s = g.add_host_to_device_fifo("in", "fp32", 4)
    with pytest.raises(GraphError, match="stream 'in' \\(4 x fp32\\) and tensor 'x3' \\(3 x fp32\\)"):
        compile_program(g, Copy(s, x))


def test_stream_defined_twice_is_error(g):
    g.add_host_to_device_fifo("s", "fp32", 4)
    with pytest.raises(GraphError, match="stream 's' defined twice"):
        g.add_device_to_host_fifo("s", "fp32", 4)


def test_functional_reading_more_stream_data_than_given_names_stream(g):
    x = mapped(g, "fp32", (2,), "x")
    s = g.add_host_to_device_fifo("feed", "fp32", 2)
    exe = compile_program(g, Sequence(Copy(s, x), Copy(s, x)))
    eng = Engine(exe, functional=True, inputs={"feed": [np.ones(2)]})
    with pytest.raises(FunctionalError, match="stream 'feed': the program reads more data than was given"):
        eng.run()


def test_functional_input_for_unknown_stream_is_error(g):
    mapped(g, "fp32", (2,), "x")
    exe = compile_program(g, Sequence())
    with pytest.raises(FunctionalError, match="unknown stream 'nope'"):
        Engine(exe, functional=True, inputs={"nope": [np.ones(2)]})


def test_timing_engine_refuses_read(g):
    x = mapped(g, "fp32", (2,), "x")
    eng = Engine(compile_program(g, Sequence()))
    with pytest.raises(RuntimeError, match="functional=True"):
        eng.read(x)


# --- graph arrays -------------------------------------------------------------------------------
def test_connect_splits_view_spanning_two_variables_into_edges(g):
    a, b = mapped(g, "fp32", (2,), "a"), mapped(g, "fp32", (2,), "b")
    out = mapped(g, "fp32", (4,), "out")
    cs = g.add_compute_set("cs")
    g.add_vertex(cs, "Relu", {"in": concat([a, b]), "out": out}, tile=0)
    # a and b are adjacent in the element space, but an edge never spans variables
    assert g.num_edges == 3
    compile_program(g, Execute(cs))


def test_view_spanning_empty_variable_compiles(g):
    a = mapped(g, "fp32", (2,), "a")
    g.add_variable("fp32", (0,), "empty")
    b = mapped(g, "fp32", (2,), "b")
    out = mapped(g, "fp32", (4,), "out")
    cs = g.add_compute_set("cs")
    g.add_vertex(cs, "Relu", {"in": concat([a, b]), "out": out}, tile=0)
    compile_program(g, Execute(cs))


def test_finalize_sorts_edges_by_vertex_into_csr(g):
    x = mapped(g, "fp32", (4,), "x")
    y = mapped(g, "fp32", (4,), "y")
    cs = g.add_compute_set("cs")
    v0 = g.add_vertex(cs, "Relu", tile=0)
    v1 = g.add_vertex(cs, "Relu", tile=1)
    g.connect(v1["in"], x[2:])
    g.connect(v0["in"], x[:2])
    g.connect(v1["out"], y[2:])
    g.connect(v0["out"], y[:2])
    arr = g.finalize()
    assert arr.edge_vertex.tolist() == [0, 0, 1, 1]
    assert arr.vertex_edge_offsets.tolist() == [0, 2, 4]
    assert arr.edge_start.tolist() == [0, 4, 2, 6]


def test_set_tile_mapping_of_unknown_vertex_is_error(g):
    with pytest.raises(GraphError, match="vertex 3 does not exist"):
        g.set_tile_mapping(3, 0)


def test_remapping_vertex_after_finalize_is_seen_by_next_compile(g):
    x, y = mapped(g, "fp32", (2,), "x", 0), mapped(g, "fp32", (2,), "y", 0)
    cs = g.add_compute_set("cs")
    v = g.add_vertex(cs, "Relu", {"in": x, "out": y}, tile=0)
    assert compile_program(g, Execute(cs)).exchange_in.get(cs.id) is None
    g.set_tile_mapping(v, 1)
    assert compile_program(g, Execute(cs)).exchange_in[cs.id].total_bytes == 8


@pytest.mark.parametrize("threads", ["1", "2"])
def test_write_conflicts_checked_beside_the_other_checks_raise_after_theirs(g, monkeypatch, threads):
    import compiler.checks as checks
    monkeypatch.setattr(checks, "PARALLEL_CHECK_EDGES", 0)     # the threaded path on a small graph
    monkeypatch.setenv("IPUSIM_THREADS", threads)
    x = mapped(g, "fp32", (4,), "x")
    y = mapped(g, "fp32", (4,), "shared_out", 3)
    cs = g.add_compute_set("clash")
    g.add_vertex(cs, "Relu", {"in": x[0:2], "out": y[0:2]}, tile=0)
    g.add_vertex(cs, "Relu", {"in": x[2:4], "out": y[1:3]}, tile=2)
    with pytest.raises(GraphError, match="both write tensor 'shared_out'"):
        compile_program(g, Execute(cs))
    g.add_vertex(cs, "Relu", {"in": x}, tile=1)                  # and an unconnected field: named first
    with pytest.raises(GraphError, match="field 'out' is not connected"):
        compile_program(g, Execute(cs))


def test_write_conflicts_found_where_a_compute_sets_written_regions_descend(g):
    """Compute sets whose written regions do not ascend are sorted alone (checks.py): regions
    written in descending order, by batches of two compute sets taken in turn, are no clash;
    an overlap among them is, named at its first element."""
    x = mapped(g, "fp32", (6,), "x")
    y, z = mapped(g, "fp32", (6,), "y", 1), mapped(g, "fp32", (4,), "z", 2)
    down, other = g.add_compute_set("down"), g.add_compute_set("other")
    g.add_vertex(down, "Relu", {"in": x[4:6], "out": y[4:6]}, tile=0)
    g.add_vertex(other, "Relu", {"in": x[2:4], "out": z[2:4]}, tile=0)
    g.add_vertex(down, "Relu", {"in": x[0:2], "out": y[0:2]}, tile=1)
    g.add_vertex(other, "Relu", {"in": x[0:2], "out": z[0:2]}, tile=1)
    g.add_vertex(down, "Relu", {"in": x[2:4], "out": y[2:4]}, tile=2)
    compile_program(g, Sequence([Execute(down), Execute(other)]))
    g.add_vertex(down, "Relu", {"in": x[1:3], "out": y[1:3]}, tile=3)
    with pytest.raises(GraphError, match=r"compute set 'down': .* both write tensor 'y' \(element 1\)"):
        compile_program(g, Sequence([Execute(down), Execute(other)]))


def test_arrays_finalized_without_checks_are_checked_when_finalized_again(g):
    x = mapped(g, "fp32", (4,), "x")
    cs = g.add_compute_set("cs")
    g.add_vertex(cs, "Relu", {"in": x}, tile=0)                 # "out" not connected
    arrays = g.finalize(check=False)                             # what a transform reads
    assert arrays.edge_start.size == 1
    with pytest.raises(GraphError, match="field 'out' is not connected"):
        g.finalize()                                             # the same arrays, checked now
    with pytest.raises(GraphError, match="field 'out' is not connected"):
        compile_program(g, Execute(cs))
