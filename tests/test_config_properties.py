"""Property tests (hypothesis) for the run options' validation (simulator.config.RunConfig, issue 15).

Whatever values a user, a sweep file or the explorer gives, a configuration is either built and
consistent, or refused with ConfigError (ChipError for a chip field) whose message starts with
the option's name; never another exception, never a value silently turned into another."""
from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware.chips import ChipError
from simulator.config import _NAMES, MAX_CHIPS, MAX_MICRO_BATCHES, MODES, ConfigError, RunConfig

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTILE = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["", "1", "0.5", "nan", "inf", "-1", "1,2", "pipeline",
                                                           "fp16", "all", "optimizer", "1e400"]),
                    st.lists(st.integers(-3, 9), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                              max_size=2))
COUNTS = st.one_of(st.integers(-5, 40), st.sampled_from([MAX_CHIPS, MAX_CHIPS + 1, MAX_MICRO_BATCHES + 1, 2**63]))


def _build(**kw):
    """The configuration, or the ConfigError / ChipError's message (anything else fails the test)."""
    try:
        return RunConfig(model="mnist-mlp", **kw)
    except (ConfigError, ChipError) as e:
        msg = e.args[0]
        assert isinstance(msg, str) and msg.strip()
        return msg


@SETTINGS
@given(name=st.sampled_from([n for n in _NAMES if n not in ("model", "model_kw")]), value=HOSTILE)
def test_any_value_of_any_option_is_built_or_refused_by_name(name, value):
    out = _build(**{name: value})
    if isinstance(out, str):
        assert out.split(":", 1)[0] in _NAMES or out.startswith("chip"), out
        # the message names this option, or the option another one conflicts with
    else:
        out.layout()


@SETTINGS
@given(p=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3),
                   st.text(max_size=6), st.lists(st.floats(-1, 2), min_size=1, max_size=3)))
def test_the_memory_proportion_is_a_number_in_0_1(p):
    out = _build(available_memory_proportion=p)
    vals = p if isinstance(p, list) else [p]
    def ok(x):
        try:
            f = float(x)
        except (TypeError, ValueError):
            return False
        return not isinstance(x, bool) and 0 < f <= 1 and not math.isnan(f)
    if all(ok(x) for x in vals) and (len(vals) == 1):
        assert not isinstance(out, str), out
        assert out.proportion_of_stage(0) == float(vals[0])
    elif not all(ok(x) for x in vals):
        assert isinstance(out, str) and out.startswith("available_memory_proportion: "), out


@SETTINGS
@given(ipus=COUNTS, batch=COUNTS, micro_batches=st.one_of(st.none(), COUNTS), replicas=st.one_of(st.none(), COUNTS),
       mode=st.sampled_from(MODES), train=st.booleans(), accumulate=st.integers(1, 4))
def test_a_built_layout_uses_every_chip_and_splits_the_batch_exactly(ipus, batch, micro_batches, replicas, mode,
                                                                     train, accumulate):
    out = _build(ipus=ipus, batch=batch, micro_batches=micro_batches, replicas=replicas, mode=mode, train=train,
                 accumulate=accumulate)
    if isinstance(out, str):
        return
    S, R, M = out.layout()
    assert 1 <= out.ipus <= MAX_CHIPS and 1 <= M <= MAX_MICRO_BATCHES
    assert out.batch % M == 0 and out.micro_batch * M == out.batch
    if out.multichip:
        assert S * R * out.tensor_degree * out.expert_degree == out.ipus
        if mode == "shard":
            assert M == 1 and (micro_batches in (None, 1)) and accumulate == 1    # never dropped silently
    else:
        assert (S, R) == (1, 1)
    if micro_batches is not None:
        assert M == micro_batches       # what was asked is what runs
    if accumulate > 1 and micro_batches is None:
        assert M == accumulate and out.batch == batch * accumulate


@SETTINGS
@given(d=st.dictionaries(st.sampled_from(list(_NAMES) + ["tiles", "clock_hz", "sram_bytes_per_tile", "junk"]),
                         HOSTILE, max_size=4))
def test_from_dict_raises_only_our_errors(d):
    try:
        RunConfig.from_dict({"model": "mnist-mlp"} | d).layout()
    except (ConfigError, ChipError) as e:
        assert e.args[0].strip()
