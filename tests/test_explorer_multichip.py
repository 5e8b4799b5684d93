"""The explorer's chip-mode control: settings -> parameters, and one compile per way of using the chips.

mnist-mlp keeps every point well under a second; no browser here (tests/test_explorer_browser.py).
"""
import json

import pytest

from simulator.sweep import point_config
from viz.explorer import CHIP_MODES, Jobs, compute_point, multichip_status_card, settings_to_params, tradeoff_values
from viz.explorer.settings import layout_note, mode_uses
from viz.views import merge_events

FIELDS = {"tiles": 1472, "sram": 624, "clock": 1.325, "exch": 4}


def params(ipus=2, batch=8, chip_mode="spread", train=True, fields=FIELDS, **kw):
    return settings_to_params("mnist-mlp", "train" if train else "infer", "gc200", dict(fields), ipus, batch,
                              "fp32", "none", 0.6, chip_mode=chip_mode, **kw)


def test_chip_mode_is_ignored_for_one_chip_and_spread_is_one_graph():
    one = params(ipus=1, chip_mode="pipeline", replicas=2)
    assert "mode" not in one and "replicas" not in one and one["ipus"] == 1
    assert params(ipus=1, chip_mode="shard") == params(ipus=1, chip_mode="spread")    # same cache entry
    spread = params(ipus=2, chip_mode="spread")
    assert spread["mode"] == "spread" and spread["ipus"] == 2
    assert not point_config(spread).multichip and point_config(params(chip_mode="shard")).multichip
    assert {m for m, _, _ in CHIP_MODES} == {"spread", "shard", "pipeline", "replicate", "pipeline+replicate"}


def test_the_controls_are_a_run_configuration():
    """The parameters are RunConfig's fields (chip fields override the preset): no other list of options."""
    p = params(ipus=2, batch=8.0, chip_mode="pipeline", micro_batches=4, fields=dict(FIELDS, tiles=736))
    cfg = point_config(p)
    assert (cfg.model, cfg.batch, cfg.ipus, cfg.mode, cfg.micro_batches, cfg.train) == \
        ("mnist-mlp", 8, 2, "pipeline", 4, True)
    assert p["batch"] == 8 and isinstance(p["batch"], int)           # 8.0 and 8: one cache entry
    assert cfg.get_chip().tiles == 736 and "sram_bytes_per_tile" not in p    # only what differs from gc200
    # which counts a mode reads comes from RunConfig.layout
    assert [m for m, _, _ in CHIP_MODES if mode_uses(m, "replicas")] == ["replicate", "pipeline+replicate"]
    assert [m for m, _, _ in CHIP_MODES if mode_uses(m, "micro_batches")] == \
        ["pipeline", "replicate", "pipeline+replicate"]
    assert "2 stages × 1 replica, 4 micro-batches" in layout_note(2, "pipeline", 8)


def test_multichip_modes_carry_their_options():
    assert params(chip_mode="shard", replicas=2, micro_batches=2)["mode"] == "shard"
    assert "replicas" not in params(chip_mode="shard", replicas=2) and \
        "micro_batches" not in params(chip_mode="shard", micro_batches=2)      # shard uses neither
    p = params(chip_mode="pipeline", micro_batches=4, replicas=2)
    assert (p["mode"], p["micro_batches"], "replicas" in p) == ("pipeline", 4, False)
    p = params(ipus=4, chip_mode="pipeline+replicate", replicas=2, micro_batches=2)
    assert (p["replicas"], p["micro_batches"]) == (2, 2)
    assert "replicas" not in params(chip_mode="replicate", replicas="")       # blank: automatic
    # recomputation applies to one graph: not carried into a multichip point
    p = settings_to_params("mnist-mlp", "train", "gc200", dict(FIELDS), 2, 8, "fp32", "blocks", 0.6,
                           chip_mode="pipeline")
    assert "recompute" not in p
    p = settings_to_params("mnist-mlp", "train", "gc200", dict(FIELDS), 1, 8, "fp32", "blocks", 0.6)
    assert point_config(p).recompute == "blocks"
    # the cache key tells the modes apart
    keys = {Jobs.key(params(chip_mode=m), True) for m, _, _ in CHIP_MODES}
    assert len(keys) == len(CHIP_MODES)


@pytest.mark.parametrize("kw, words", [
    (dict(ipus=3, chip_mode="replicate", replicas=2), "replicas must divide the 3 chips"),
    (dict(ipus=4, chip_mode="pipeline+replicate", replicas=3), "3 replicas"),
    (dict(ipus=2, batch=6, chip_mode="pipeline", micro_batches=4), "cannot be split into 4 micro-batches"),
    (dict(ipus=2, batch=6, chip_mode="replicate", micro_batches=4), "cannot be split into 4 micro-batches"),
    (dict(ipus=2, chip_mode="pipeline", micro_batches=1.5), "micro_batches: must be an integer"),
    (dict(ipus=2, chip_mode="warp"), "mode: 'warp' is not one of"),
    (dict(ipus=0), "ipus: must be an integer"),
    (dict(batch=None), "batch: must be an integer"),
])
def test_impossible_settings_say_why(kw, words):
    with pytest.raises(ValueError, match=words):
        params(**kw)


@pytest.fixture(scope="module")
def points():
    out = {}
    for mode, ipus, batch in (("shard", 2, 4), ("pipeline", 2, 8), ("replicate", 2, 4),
                              ("pipeline+replicate", 4, 8)):
        out[mode] = compute_point(params(ipus=ipus, batch=batch, chip_mode=mode))
    return out


def _fig_text(fig):
    return json.dumps(fig["layout"].get("title", {})) + json.dumps(fig["layout"].get("annotations", []))


def test_every_mode_gives_a_report_and_four_views(points):
    for mode, res in points.items():
        assert "error" not in res, (mode, res.get("error"))
        rep, figs = res["report"], res["figures"]
        mc = rep["multichip"]
        assert mc["mode"] == mode
        json.dumps(res["report"])                    # plain data: travels back from the worker process
        S, R = mc["stages"], mc["replicas"]
        assert rep["sim"]["samples_per_second"] > 0 and rep["memory"]["sram_bytes_per_tile"] == 624 * 1024
        assert set(figs) == {"memory", "liveness", "trace", "layers"}
        heat = [t for t in figs["memory"]["data"] if t["type"] == "heatmap"]
        assert len(heat) == S                        # one tile grid per stage
        assert "Tile memory per stage" in _fig_text(figs["memory"])
        lines = [t for t in figs["liveness"]["data"] if t.get("mode") == "lines"]
        assert len(lines) == S
        rows = {y for t in figs["trace"]["data"] for y in t["y"]}
        assert len(rows) == S * R                    # one row per chip
        kinds = {t["name"] for t in figs["trace"]["data"]}
        assert {"compute", "sync", "exchange"} <= kinds
        if S > 1:
            assert "link" in kinds
        assert len(figs["layers"]["data"][0]["x"]) == S
    assert points["pipeline"]["report"]["sim"]["bubble_fraction"] > 0
    assert points["replicate"]["report"]["sim"]["allreduce_bytes"] > 0
    assert points["shard"]["report"]["multichip"]["micro_batches"] == 1


def test_status_card_for_several_chips(points):
    text = str(multichip_status_card(points["pipeline"]["report"], 0.5, False))
    for words in ("FITS", "pipeline bubble", "chip-to-chip links", "host traffic", "stage-table", "kpi-throughput"):
        assert words in text
    assert "pipeline bubble" not in str(multichip_status_card(points["shard"]["report"], 0.5, True))
    # graph size: vertices and edges, summed over the stages and per stage in the table
    for mode in ("pipeline", "replicate"):
        rows = points[mode]["report"]["multichip"]["per_stage"]
        assert all(r["vertices"] > 0 and r["edges"] > 0 for r in rows), mode
        text = str(multichip_status_card(points[mode]["report"], 0.5, False))
        assert "kpi-graph" in text and f"{sum(r['vertices'] for r in rows):,} vertices" in text
        assert f"{sum(r['edges'] for r in rows):,} edges" in text
        assert all(f"{r['edges']:,}" in text for r in rows)


def test_memory_and_liveness_row_align_and_one_stage_bar_is_narrow(points):
    for mode, res in points.items():
        figs = res["figures"]
        assert figs["memory"]["layout"]["height"] == figs["liveness"]["layout"]["height"] >= 380, mode
    bars = [t for t in points["replicate"]["figures"]["layers"]["data"] if t["type"] == "bar"]
    assert bars and all(t["width"] <= 0.25 for t in bars)        # one stage: not one wide wall


def test_out_of_memory_per_stage_and_too_many_stages():
    small = dict(FIELDS, sram=2)
    res = compute_point(params(ipus=2, batch=4, chip_mode="shard", fields=small))
    assert "error" not in res, res.get("error")
    assert res["report"]["memory"]["fits"] is False
    text = str(multichip_status_card(res["report"], 0.1, False))
    assert "OUT OF MEMORY" in text and "out of memory on tile" in text
    assert "tiles out of memory" in _fig_text(res["figures"]["memory"])
    # mnist-mlp has 4 layers: 8 stages is an impossible setting, said before any stage compiles
    res = compute_point(params(ipus=8, batch=8, chip_mode="pipeline"), figures=False)
    assert "error" in res and "stages" in res["error"]


def test_tradeoff_points_of_a_multichip_setting():
    p = params(ipus=2, batch=8, chip_mode="pipeline", micro_batches=4)
    assert all(v % 4 == 0 for v in tradeoff_values("batch", p))       # only batches the micro-batches divide
    assert 8 in tradeoff_values("batch", p)
    assert len(tradeoff_values("tiles", p)) >= 5
    r = compute_point(dict(p, tiles=736), figures=False)
    assert "figures" not in r and r["report"]["multichip"]["mode"] == "pipeline"


def test_trace_bars_are_bounded():
    evs = [(float(i), 1.0, f"e{i}", "compute" if i % 3 else "sync") for i in range(10_000)]
    bars = merge_events(evs, 500)
    assert 400 <= len(bars) <= 510
    assert sum(b[1] for b in bars) == pytest.approx(10_000, rel=1e-3)
    assert {b[3] for b in bars} == {"compute"}
    assert merge_events(evs[:10], 500)[3][:4] == evs[3]
