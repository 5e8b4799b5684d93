"""The explorer's LLM mode (viz/explorer/llm.py): the controls make a generate setting, a point
is generate's figures, the status card and the two charts draw them."""
import pytest

from viz.explorer.jobs import Jobs
from viz.explorer.llm import (decoder_models, llm_chart, llm_params, llm_point, llm_status_card, make_llm_app,
                              sweep_values)


def _text(node) -> str:
    if isinstance(node, str):
        return node
    kids = getattr(node, "children", None)
    if kids is None:
        return ""
    if not isinstance(kids, (list, tuple)):
        kids = [kids]
    return " ".join(_text(k) for k in kids)


def _ids(node, out=None) -> set:
    out = set() if out is None else out
    if getattr(node, "id", None):
        out.add(node.id)
    kids = getattr(node, "children", None)
    for k in (kids if isinstance(kids, (list, tuple)) else [kids] if kids is not None else []):
        _ids(k, out)
    return out


def test_the_controls_are_a_generate_setting():
    p = llm_params("llama-tiny", "gc200", "fp16", 2, 16, 6, 4, "pipeline+tensor", 2, "streaming")
    assert p["ipus"] == 4 and p["mode"] == "pipeline+tensor" and p["tensor_parallel"] == 2
    assert p["kv_cache"] == "streaming" and p["prompt_len"] == 16 and p["new_tokens"] == 6
    one = llm_params("llama-tiny", "gc200", "fp16", 2, 16, 6, 1, "tensor", uneven_heads=True)
    assert one["mode"] == "shard" and one["tensor_parallel"] is None and not one["uneven_heads"]
    with pytest.raises(ValueError, match="batch: a whole number >= 1, got 0"):
        llm_params("llama-tiny", "gc200", "fp16", 0, 16, 6, 1, "tensor")
    with pytest.raises(ValueError, match="tensor_parallel: 4 chips per group do not divide --ipus 6"):
        llm_params("llama-tiny", "gc200", "fp16", 2, 16, 6, 6, "pipeline+tensor", 4)
    assert ("gpt2", "gpt2") in decoder_models() and any(v.endswith("llama-7b.json") for _, v in decoder_models())


def test_a_point_is_generates_figures_and_the_card_shows_them():
    res = llm_point(llm_params("llama-tiny", "gc200", "fp16", 2, 16, 6, 2, "tensor"))
    rep = res["report"]
    assert rep["fits"] and rep["tensor_parallel"] == 2 and rep["tokens_per_s"] > 0
    assert rep["tokens_per_s_per_chip"] == pytest.approx(rep["tokens_per_s"] / 2)
    assert "estimated_from" not in rep            # 2 layers: compiled whole
    card = llm_status_card(rep, res["wall_s"], False)
    assert {"fit-badge", "kpi-ttft", "kpi-tpot", "kpi-tokens"} <= _ids(card)
    assert "FITS" in _text(card) and "x physical bound" in _text(card)


def test_a_big_model_is_estimated_and_out_of_memory_says_by_how_much():
    res = llm_point(llm_params("llama-tiny", "gc200", "fp16", 1, 8, 4, 1, "tensor"))
    rep = dict(res["report"], fits=False, prefill_peak_tile_bytes=700_000)
    card = llm_status_card(rep, 1.0, True)
    assert "oom-message" in _ids(card) and "prefill by 59.6 KiB" in _text(card)
    # gpt2 has 12 layers: estimated from 2 and 3 (outlined layers: a lone layer would be inlined)
    g = llm_point(llm_params("gpt2", "gc200", "fp16", 1, 8, 4, 1, "tensor", estimate=True))["report"]
    assert g["estimated_from"] == [2, 3] and g["layers"] == 12
    assert "estimate-note" in _ids(llm_status_card(g, 1.0, False))


def test_chart_values_and_drawing():
    p = llm_params("llama-tiny", "gc200", "fp16", 2, 16, 6, 4, "pipeline+tensor", 2)
    chips = [v for v, _ in sweep_values("chips", p)]
    assert chips == [1, 2, 4, 8, 16, 32, 64]          # 1: one chip; the others multiples of the group of 2
    one = dict(sweep_values("chips", p))[1]
    assert one["mode"] == "shard" and one["ipus"] == 1
    assert [v for v, _ in sweep_values("batch", p)][:3] == [1, 2, 4]
    ok = llm_point(llm_params("llama-tiny", "gc200", "fp16", 2, 16, 6, 1, "tensor"))
    fig = llm_chart("chips", 4, [(1, ok), (8, {"error": "ValueError: too many stages"})], 7)
    assert "1 refused: too many stages" in fig.layout.title.text and list(fig.data[0].x) == [1]


def test_the_app_builds_with_its_own_work():
    jobs = Jobs(workers=1, kind="thread", fn=llm_point)
    app = make_llm_app(jobs)
    try:
        assert app.jobs.fn is llm_point and "llm-fig-batch" in str(app.layout)
        state, _ = jobs.get(llm_params("llama-tiny", "gc200", "fp16", 1, 8, 3, 1, "tensor"), False)
        assert state == "running"
    finally:
        # let the point finish: two compiles on threads of one process corrupt each other
        # (a known race; the explorer's default workers are processes)
        if jobs._pool is not None:
            jobs._pool.shutdown(wait=True)
        jobs.shutdown()
    app = make_llm_app(Jobs(workers=1, kind="thread", fn=llm_point), defaults={"batch": 8, "chips": 4})
    assert "'value': 8" in str(app.layout) or "value=8" in str(app.layout)
    with pytest.raises(ValueError, match="defaults: unknown control 'layers'"):
        make_llm_app(Jobs(workers=1, kind="thread", fn=llm_point), defaults={"layers": 2})


def test_expert_parallel_modes_are_controls_with_their_own_errors():
    p = llm_params("mixtral-tiny", "gc200", "fp16", 4, 16, 6, 4, "pipeline+expert", expert_parallel=2)
    assert p["mode"] == "pipeline+expert" and p["expert_parallel"] == 2 and p["tensor_parallel"] is None
    e = llm_params("mixtral-tiny", "gc200", "fp16", 4, 16, 6, 2, "expert", tensor_parallel=2, expert_parallel=8)
    assert e["mode"] == "expert" and e["expert_parallel"] is None      # expert: the group is all the chips
    with pytest.raises(ValueError, match="expert_parallel: 4 chips per group do not divide --ipus 6"):
        llm_params("mixtral-tiny", "gc200", "fp16", 4, 16, 6, 6, "pipeline+expert", expert_parallel=4)
    with pytest.raises(ValueError, match="batch: --mode expert gives each of its 4 chips per group its own"):
        llm_params("mixtral-tiny", "gc200", "fp16", 2, 16, 6, 4, "expert")
    # the chips chart keeps to the settings the batch allows: 4 sequences, at most 4 chips
    assert [v for v, _ in sweep_values("chips", e)] == [1, 2, 4]
    # a dense model refuses expert parallelism by name, in the point (the page shows it)
    res = llm_point(llm_params("llama-tiny", "gc200", "fp16", 2, 8, 3, 2, "expert"))
    assert "the model has no experts" in res["error"]


def test_an_expert_parallel_point_shows_its_experts_and_all_to_alls():
    one = llm_point(llm_params("mixtral-tiny", "gc200", "fp16", 4, 16, 6, 1, "expert"))
    assert "report" in one, one.get("error")
    one = one["report"]
    res = llm_point(llm_params("mixtral-tiny", "gc200", "fp16", 4, 16, 6, 2, "expert"))
    assert "report" in res, res.get("error")
    rep = res["report"]
    assert (rep["expert_parallel"], rep["experts"], rep["chips"]) == (2, 4, 2) and rep["fits"]
    # each chip caches its own batch / 2 sequences: the cache in all is the one chip's
    assert rep["kv_cache_bytes"] == one["kv_cache_bytes"]
    assert one["decode_all_to_all_s"] == 0 and one["decode_allreduce_s"] == 0
    assert 0 < rep["decode_all_to_all_s"] < rep["time_per_output_token_s"] and rep["decode_allreduce_s"] == 0
    card = llm_status_card(rep, res["wall_s"], False)
    assert "kpi-all-to-all" in _ids(card) and "kpi-allreduce" not in _ids(card)
    assert "expert-parallel 2: 2 of 4 experts and batch / 2 sequences per chip" in _text(card)
    assert "of a decode step" in _text(card)
    # the chips chart draws the all-to-alls' part of a token beside the time per token
    fig = llm_chart("chips", 2, [(1, {"report": one}), (2, res)], 3)
    names = [t.name for t in fig.data]
    assert "all-to-alls per token (ms)" in names
    link = fig.data[names.index("all-to-alls per token (ms)")]
    assert list(link.x) == [1, 2] and link.y[0] == 0 and link.y[1] == pytest.approx(rep["decode_all_to_all_s"] * 1e3)
    # tensor parallelism: its all-reduces instead
    tp = llm_point(llm_params("mixtral-tiny", "gc200", "fp16", 4, 16, 6, 2, "tensor"))["report"]
    assert tp["decode_allreduce_s"] > 0 and tp["decode_all_to_all_s"] == 0
    assert "kpi-allreduce" in _ids(llm_status_card(tp, 1.0, False))
