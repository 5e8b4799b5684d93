"""Sparse and conditional layers (models/sparse.py): their cost follows the active part.

The comparison with the dense equivalent is bench/sparse_compare.py's ``compare``
(compile and simulate both), loaded here from its file.
"""
import importlib.util
import pathlib

from models.sparse import moe_layer_model, slide_mlp

_spec = importlib.util.spec_from_file_location(
    "sparse_compare", pathlib.Path(__file__).resolve().parents[1] / "bench" / "sparse_compare.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
compare = _mod.compare


def test_slide_layer_cost_scales_with_active_fraction():
    kw = dict(batch=4, n_in=64, hidden=64, n_out=16384, tables=4, bits=6)
    small = compare(slide_mlp, active=64, **kw)
    big = compare(slide_mlp, active=1024, **kw)
    assert small["sparse"]["compute_cycles"] < big["sparse"]["compute_cycles"]
    # the sparse layer does a fraction of the dense work; at this small size the chip's dense
    # matrix unit is still faster overall (hashing and gathers cost supersteps), as measured
    assert big["sparse"]["flops"] < big["dense"]["flops"]
    assert small["sparse"]["memory"].get("total_bytes", 1) > 0


def test_moe_cost_scales_with_k():
    # big enough that the routing supersteps do not dominate (at toy sizes MoE loses to dense)
    kw = dict(batch=2, tokens_per_sample=128, d_model=256, hidden=512, experts=16)
    k1 = compare(moe_layer_model, k=1, **kw)
    k4 = compare(moe_layer_model, k=4, **kw)
    assert k1["sparse"]["cycles"] < k4["sparse"]["cycles"]
    assert k1["sparse"]["flops"] < k1["dense"]["flops"]
    assert k1["sparse"]["cycles"] < k1["dense"]["cycles"]


def _per_tile(low, prefix):
    """{variable name: {tile: bytes}} of the lowered graph's variables named ``prefix...``."""
    from compiler.memory import variable_tile_bytes
    g = low.graph
    out = {}
    for v, t, b in zip(*variable_tile_bytes(g)):
        if g.variables[v].name.startswith(prefix):
            out.setdefault(g.variables[v].name, {})[int(t)] = int(b)
    return out


def test_moe_combine_spreads_its_temporary_and_bounds_it_in_passes():
    """MoECombine's (k, T, d) temporary and output over the tiles: fewer tokens than tiles, one
    token's d / nf features per tile (not 8 whole tokens on each of T / 8 tiles); a tile's share
    over available_memory_proportion of it, several passes each with its own temporary."""
    from compiler.lower import lower
    from hardware.chips import gc200
    from models import get_model
    from simulator.config import RunConfig
    from simulator.run import run
    T, d, k = 32, 128, 2                      # mixtral-tiny, 2 sequences of 16 tokens
    low = lower(get_model("mixtral-tiny", batch=2, seq_len=16, dtype="fp16"), gc200, dtype="fp16")
    tmp = _per_tile(low, "layers.0.block_sparse_moe.combine/choices")
    (name, tiles), = tmp.items()
    assert sum(tiles.values()) == k * T * d * 2
    assert len(tiles) == T * (d // 64) and max(tiles.values()) == k * 64 * 2      # was 4 tiles of 4 KiB
    out = _per_tile(low, "layers.0.block_sparse_moe.combine.out")["layers.0.block_sparse_moe.combine.out"]
    assert len(out) == T * (d // 64) and max(out.values()) == 64 * 2

    # 16 tiles, 64 tokens: 2 KiB of the temporary per tile; a bound of 0.002 x 624 KiB (1,278 B)
    # takes two passes of 32 tokens, 1 KiB per tile each
    chip = gc200.replace(tiles=16)
    og = get_model("mixtral-tiny", batch=4, seq_len=16, dtype="fp16")
    one = _per_tile(lower(og, chip, dtype="fp16"), "layers.0.block_sparse_moe.combine/choices")
    assert [max(v.values()) for v in one.values()] == [2048]
    amp = 0.002
    two = _per_tile(lower(og, chip, dtype="fp16", available_memory_proportion=amp),
                    "layers.0.block_sparse_moe.combine/choices")
    assert len(two) == 2 and all(max(v.values()) <= amp * chip.sram_bytes_per_tile for v in two.values())
    assert sum(sum(v.values()) for v in two.values()) == k * 64 * d * 2
    r = run(RunConfig(model="mixtral-tiny", batch=4, seq_len=16, dtype="fp16", chip=chip,
                      available_memory_proportion=amp)).report
    assert r["sim"]["cycles"] > 0
