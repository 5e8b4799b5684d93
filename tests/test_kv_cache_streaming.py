"""The KV cache in streaming memory (compiler/kvcache.py, ipusim generate --kv-cache streaming):
each program loads the cached positions its attention reads and stores the ones it writes,
over the chip's streaming-memory link; the cache is out of SRAM but for one layer's buffer
while it is in use."""
import pytest

from hardware.chips import gc200
from models import ModelError, get_model
from simulator.config import RunConfig
from simulator.generate import GenerateError, generate
from simulator.run import build

CHIP16 = gc200.replace(tiles=16)
# llama-tiny: 2 layers, 2 key-value heads of 32 features, fp16
LAYERS, KV, HD, EB = 2, 2, 32, 2


def _step(place, batch, C, past=None, chip=CHIP16, **kw):
    mk = dict(seq_len=1 if past is not None else C - 4, cache_len=C, last_logits=True, kv_cache=place)
    if past is not None:
        mk["past"] = past
    return build(RunConfig(model="llama-tiny", batch=batch, dtype="fp16", chip=chip, functions=False,
                           model_kw=mk, suggest=False, **kw), simulate=True)


def test_decode_step_streams_the_cached_positions_and_the_new_one():
    B, C, past = 4, 40, 30
    c = _step("streaming", B, C, past)
    per_pos = LAYERS * 2 * B * KV * HD * EB        # keys and values of one position, all layers
    kv = c.report["memory"]["kv_cache"]
    assert kv["bytes_loaded"] == past * per_pos and kv["bytes_stored"] == per_pos
    assert kv["cache_bytes"] == C * per_pos and kv["copies"] == 2 * 2 * LAYERS
    assert c.report["sim"]["remote_bytes"] == (past + 1) * per_pos
    # out of the always-live bytes: the whole cache, the unread rest included
    s = _step("sram", B, C, past)
    assert s.report["memory"]["always_live_bytes"] - c.report["memory"]["always_live_bytes"] == C * per_pos
    # the program waits for its cache: at least its bytes over the streaming-memory rate
    extra = c.report["sim"]["seconds"] - s.report["sim"]["seconds"]
    assert extra >= (past + 1) * per_pos / CHIP16.streaming_memory_bytes_per_s


def test_prefill_stores_the_prompt_and_loads_nothing():
    B, C = 2, 24
    c = _step("streaming", B, C)        # a prefill of C - 4 tokens
    kv = c.report["memory"]["kv_cache"]
    assert kv["bytes_loaded"] == 0 and kv["bytes_stored"] == LAYERS * 2 * B * KV * HD * EB * (C - 4)


def test_a_cache_too_big_for_sram_fits_in_streaming_memory():
    s, c = _step("sram", 96, 256, 255), _step("streaming", 96, 256, 255)
    assert not s.report["memory"]["fits"] and c.report["memory"]["fits"]
    assert c.report["memory"]["peak_tile_bytes"] < s.report["memory"]["peak_tile_bytes"]


@pytest.mark.parametrize("ipus, mode", [(1, "shard"), (2, "tensor")])
def test_generate_reports_the_streamed_bytes_and_respects_the_streaming_bound(ipus, mode):
    cfg = RunConfig(model="llama-tiny", batch=2, dtype="fp16", ipus=ipus, mode=mode)
    sram = generate(cfg, 16, 4, samples=2)
    rep = generate(cfg, 16, 4, samples=2, kv_cache="streaming")
    kv = rep["kv_cache"]
    assert kv["placement"] == "streaming" and kv["bytes"] == sram["kv_cache"]["bytes"]
    assert kv["bytes_per_tile_max"] == 0
    per_pos = LAYERS * 2 * 2 * KV * HD * EB
    last = rep["decode"]["sampled"][-1]
    assert last["streamed_bytes"] == (last["past"] + 1) * per_pos == kv["streamed_bytes_per_step_max"]
    for p in [rep["prefill"]] + rep["decode"]["sampled"]:
        assert p["seconds"] >= p["bound_seconds"] >= p["streamed_bytes"] / ipus / gc200.streaming_memory_bytes_per_s
    assert rep["time_per_output_token_s"] > sram["time_per_output_token_s"]
    if ipus > 1:
        assert all(h["kv_cache_bytes"] == 0 for h in rep["chips"]["per_chip"])


def test_refused_by_name():
    with pytest.raises(GenerateError, match="^--kv-cache: 'dram' is not one of sram, streaming"):
        generate(RunConfig(model="llama-tiny"), 4, 2, kv_cache="dram")
    with pytest.raises(ModelError, match="kv_cache must be one of sram, streaming, got 'hbm'"):
        get_model("llama-tiny", seq_len=8, cache_len=8, kv_cache="hbm")
    with pytest.raises(ModelError, match="kv_cache streaming needs a KV cache"):
        get_model("llama-tiny", kv_cache="streaming")
