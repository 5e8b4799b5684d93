"""Tests for hardware/chips.py: presets match the published figures, TOML
loading (complete and base + override), and every validation error names its key."""
from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest

from hardware.chips import (
    PRESET_DIR, PRESETS, VALUE_FIELDS, Chip, ChipError, bow, chip_from_toml, gc2, gc200,
    get_chip, list_chips, multi_chip_sync_cycles,
)

EXAMPLE = PRESET_DIR / "example_custom.toml"


def write(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def full_toml(chip: Chip, **changes) -> str:
    """A complete TOML description of ``chip`` (without sources), with changes."""
    d = chip.to_dict()
    d.pop("derived")
    d.pop("sources")
    d.update(changes)
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append(f"[{k}]\n" + "".join(f"{a} = {b!r}\n" for a, b in v.items()))
        elif isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        else:
            lines.append(f"{k} = {v!r}")
    return "\n".join(lines) + "\n" + "\n".join(tables)


# --- presets against published figures -------------------------------------------
@pytest.mark.parametrize("chip, published_tflops", [(gc2, 124.5), (gc200, 249.7), (bow, 350.0)])
def test_preset_peak_fp16_within_2_percent_of_published(chip, published_tflops):
    assert chip.peak_flops("fp16") == pytest.approx(published_tflops * 1e12, rel=0.02)


@pytest.mark.parametrize("chip, published_tflops", [(gc2, 31.1), (gc200, 62.4), (bow, 87.0)])
def test_preset_peak_fp32_within_2_percent_of_published(chip, published_tflops):
    assert chip.peak_flops("fp32") == pytest.approx(published_tflops * 1e12, rel=0.02)


@pytest.mark.parametrize("chip, tiles, sram", [
    (gc2, 1216, 262_144), (gc200, 1472, 638_976), (bow, 1472, 638_976)])
def test_preset_tiles_and_sram_per_tile_match_published(chip, tiles, sram):
    assert (chip.tiles, chip.sram_bytes_per_tile) == (tiles, sram)


def test_gc2_total_sram_is_304_mib():
    assert gc2.total_sram_bytes == 304 * 2**20


def test_gc200_total_sram_is_about_900_mb():
    assert gc200.total_sram_bytes == pytest.approx(897 * 2**20, rel=0.001)


@pytest.mark.parametrize("chip, ghz", [(gc2, 1.6), (gc200, 1.325), (bow, 1.85)])
def test_preset_clock_matches_published(chip, ghz):
    assert chip.clock_hz == pytest.approx(ghz * 1e9)


def test_gc2_exchange_total_is_7_8_tb_per_s():
    assert gc2.exchange_bytes_per_s_total == pytest.approx(7.8e12, rel=0.01)


def test_gc200_ipu_links_carry_320_gb_per_s_raw_at_0_85_payload_efficiency():
    # datasheet: 320 GB/s per chip, raw; PopLibs test utilities: 128 Gbit/s x 0.85 per link
    assert 2 * gc200.link_bytes_per_s_total == pytest.approx(320e9 * 0.85)


@pytest.mark.parametrize("chip", list(PRESETS.values()), ids=list(PRESETS))
def test_preset_has_six_workers_and_supertiles_of_two(chip):
    assert (chip.workers_per_tile, chip.tiles_per_supertile) == (6, 2)


@pytest.mark.parametrize("chip", list(PRESETS.values()), ids=list(PRESETS))
def test_preset_cites_a_source_for_every_value_field(chip):
    missing = [k for k in VALUE_FIELDS if not chip.sources.get(k)]
    assert missing == []


@pytest.mark.parametrize("chip", list(PRESETS.values()), ids=list(PRESETS))
def test_multi_chip_sync_exceeds_on_chip_sync(chip):
    assert chip.sync_cycles_multi_chip > chip.sync_cycles


def test_multi_chip_sync_adds_round_trip_of_15ns_hops():
    assert multi_chip_sync_cycles(600, 1e9, hops=8) == 600 + 240


def test_gc2_has_no_streaming_memory():
    assert gc2.streaming_memory_bytes == 0


# --- derived values -------------------------------------------------------------
def test_seconds_divides_cycles_by_clock():
    assert gc2.seconds(1.6e9) == pytest.approx(1.0)


def test_peak_flops_accepts_poplar_alias_half():
    assert gc200.peak_flops("half") == gc200.peak_flops("fp16")


def test_peak_flops_of_dtype_without_rate_names_the_dtype():
    with pytest.raises(ChipError, match="'int32'"):
        gc200.peak_flops("int32")


def test_total_sram_is_tiles_times_sram_per_tile():
    assert bow.total_sram_bytes == bow.tiles * bow.sram_bytes_per_tile


# --- lookup -------------------------------------------------------------------------
def test_list_chips_names_the_three_presets():
    assert list_chips() == ["bow", "gc2", "gc200"]


def test_get_chip_by_name_is_case_insensitive():
    assert get_chip("GC200") is gc200


def test_get_chip_unknown_name_lists_known_presets():
    with pytest.raises(ChipError, match="gc300.*bow, gc2, gc200"):
        get_chip("gc300")


def test_get_chip_accepts_a_toml_path():
    assert get_chip(str(EXAMPLE)).name == "gc200-2048"


def test_get_chip_passes_a_chip_through():
    assert get_chip(bow) is bow


# --- TOML ---------------------------------------------------------------------------
def test_example_custom_toml_overrides_tiles():
    assert chip_from_toml(EXAMPLE).tiles == 2048


def test_example_custom_toml_keeps_base_values_it_does_not_override():
    assert chip_from_toml(EXAMPLE).links_per_chip == gc200.links_per_chip


def test_example_custom_toml_merges_flops_table_with_base():
    assert chip_from_toml(EXAMPLE).flops_per_cycle_per_tile["fp32"] == 32


def test_toml_base_override_records_source_of_overridden_value(tmp_path):
    c = chip_from_toml(write(tmp_path, 'base = "gc200"\ntiles = 2048\n'))
    assert "custom.toml" in c.sources["tiles"]


def test_toml_base_override_keeps_base_source_of_other_values(tmp_path):
    c = chip_from_toml(write(tmp_path, 'base = "gc200"\ntiles = 2048\n'))
    assert c.sources["clock_hz"] == gc200.sources["clock_hz"]


def test_toml_name_defaults_to_file_stem(tmp_path):
    assert chip_from_toml(write(tmp_path, 'base = "bow"\n', "mybow.toml")).name == "mybow"


def test_toml_base_may_be_another_toml_file(tmp_path):
    write(tmp_path, 'base = "gc200"\ntiles = 2048\n', "big.toml")
    c = chip_from_toml(write(tmp_path, 'base = "big.toml"\nclock_hz = 2e9\n'))
    assert (c.tiles, c.clock_hz) == (2048, 2e9)


def test_toml_base_cycle_is_reported(tmp_path):
    write(tmp_path, 'base = "b.toml"\n', "a.toml")
    write(tmp_path, 'base = "a.toml"\n', "b.toml")
    with pytest.raises(ChipError, match="'base'"):
        chip_from_toml(tmp_path / "a.toml")


def test_complete_toml_without_base_equals_preset(tmp_path):
    assert chip_from_toml(write(tmp_path, full_toml(gc2))) == gc2


def test_complete_toml_integer_clock_becomes_float(tmp_path):
    c = chip_from_toml(write(tmp_path, full_toml(gc2, clock_hz=1_600_000_000)))
    assert isinstance(c.clock_hz, float)


# --- validation: each error names the file and the key ---------------------------------
def test_zero_tiles_error_names_file_and_key(tmp_path):
    p = write(tmp_path, 'base = "gc200"\ntiles = 0\n')
    with pytest.raises(ChipError, match=r"custom\.toml: key 'tiles' must be a positive integer, got 0"):
        chip_from_toml(p)


def test_negative_tiles_error_names_key(tmp_path):
    with pytest.raises(ChipError, match="key 'tiles'"):
        chip_from_toml(write(tmp_path, 'base = "gc200"\ntiles = -4\n'))


def test_zero_sram_error_names_key(tmp_path):
    with pytest.raises(ChipError, match="custom.toml: key 'sram_bytes_per_tile'"):
        chip_from_toml(write(tmp_path, 'base = "gc200"\nsram_bytes_per_tile = 0\n'))


def test_negative_streaming_memory_error_names_key(tmp_path):
    with pytest.raises(ChipError, match="key 'streaming_memory_bytes'"):
        chip_from_toml(write(tmp_path, 'base = "gc200"\nstreaming_memory_bytes = -1\n'))


def test_unknown_key_error_lists_known_keys(tmp_path):
    p = write(tmp_path, 'base = "gc200"\ntile_count = 2048\n')
    with pytest.raises(ChipError, match=r"custom\.toml: unknown key 'tile_count' \(known keys: .*tiles"):
        chip_from_toml(p)


def test_string_for_integer_error_names_key_and_type(tmp_path):
    with pytest.raises(ChipError, match=r"key 'tiles' must be a positive integer, got '2048' \(str\)"):
        chip_from_toml(write(tmp_path, 'base = "gc200"\ntiles = "2048"\n'))


def test_float_for_integer_error_names_key(tmp_path):
    with pytest.raises(ChipError, match="key 'tiles'.*float"):
        chip_from_toml(write(tmp_path, 'base = "gc200"\ntiles = 2048.0\n'))


def test_boolean_for_number_error_names_key(tmp_path):
    with pytest.raises(ChipError, match="key 'clock_hz'.*boolean"):
        chip_from_toml(write(tmp_path, 'base = "gc200"\nclock_hz = true\n'))


def test_unknown_flops_dtype_error_names_dotted_key(tmp_path):
    p = write(tmp_path, 'base = "gc200"\n[flops_per_cycle_per_tile]\nfp64 = 8\n')
    with pytest.raises(ChipError, match="key 'flops_per_cycle_per_tile.fp64'"):
        chip_from_toml(p)


def test_flops_not_a_table_error_names_key(tmp_path):
    with pytest.raises(ChipError, match="key 'flops_per_cycle_per_tile' must be a table"):
        chip_from_toml(write(tmp_path, 'base = "gc200"\nflops_per_cycle_per_tile = 5\n'))


def test_unknown_base_error_lists_known_presets(tmp_path):
    with pytest.raises(ChipError, match=r"custom\.toml: key 'base' names unknown chip 'gc300' "
                                        r"\(known presets: bow, gc2, gc200\)"):
        chip_from_toml(write(tmp_path, 'base = "gc300"\n'))


def test_missing_key_in_complete_toml_names_key(tmp_path):
    with pytest.raises(ChipError, match="custom.toml: missing key 'sram_bytes_per_tile'"):
        chip_from_toml(write(tmp_path, 'name = "x"\ntiles = 4\n'))


def test_missing_file_error_names_file(tmp_path):
    with pytest.raises(ChipError, match="nope.toml: no such chip file"):
        chip_from_toml(tmp_path / "nope.toml")


def test_malformed_toml_error_names_file(tmp_path):
    with pytest.raises(ChipError, match="custom.toml: malformed TOML"):
        chip_from_toml(write(tmp_path, "tiles = = 3\n"))


def test_source_for_unknown_field_error_names_key(tmp_path):
    with pytest.raises(ChipError, match="key 'sources.tile_count'"):
        chip_from_toml(write(tmp_path, 'base = "gc200"\n[sources]\ntile_count = "x"\n'))


def test_tiles_not_multiple_of_supertile_error_names_key(tmp_path):
    with pytest.raises(ChipError, match="key 'tiles' must be a multiple of tiles_per_supertile"):
        chip_from_toml(write(tmp_path, 'base = "gc200"\ntiles = 1471\n'))


def test_multi_chip_sync_below_on_chip_sync_error_names_key():
    with pytest.raises(ChipError, match="key 'sync_cycles_multi_chip'"):
        gc200.replace(sync_cycles_multi_chip=10)


def test_streaming_bytes_without_bandwidth_error_names_key():
    with pytest.raises(ChipError, match="key 'streaming_memory_bytes_per_s'"):
        gc2.replace(streaming_memory_bytes=1 << 30)


def test_chip_is_a_value_error():
    assert issubclass(ChipError, ValueError)


# --- replace, immutability, reports ------------------------------------------------
def test_replace_changes_only_the_given_field():
    c = gc200.replace(tiles=2048)
    assert (c.tiles, c.clock_hz) == (2048, gc200.clock_hz)


def test_replace_validates_values():
    with pytest.raises(ChipError, match="chip 'gc200': key 'tiles' must be a positive integer, got 0"):
        gc200.replace(tiles=0)


def test_replace_rejects_unknown_key():
    with pytest.raises(ChipError, match="unknown key 'tile_count'"):
        gc200.replace(tile_count=3)


def test_replace_merges_partial_flops_table():
    assert gc200.replace(flops_per_cycle_per_tile={"int8": 256}).flops_per_cycle_per_tile == {
        "fp32": 32, "fp16": 128, "int8": 256}


def test_direct_construction_is_validated():
    d = gc2.to_dict()
    d.pop("derived")
    d["tiles"] = 0
    with pytest.raises(ChipError, match="key 'tiles'"):
        Chip(**d)


def test_chip_is_frozen():
    with pytest.raises(AttributeError):
        gc200.tiles = 1  # type: ignore[misc]


def test_preset_tables_are_read_only():
    with pytest.raises(TypeError):
        gc200.flops_per_cycle_per_tile["fp16"] = 1


def test_chip_is_hashable():
    assert {gc200: 1}[gc200.replace()] == 1


def test_to_dict_is_json_serialisable():
    assert json.loads(json.dumps(bow.to_dict()))["tiles"] == 1472


def test_to_dict_includes_derived_peak_flops():
    assert gc200.to_dict()["derived"]["peak_flops"]["fp16"] == gc200.peak_flops("fp16")


def test_from_dict_round_trips_to_dict():
    assert Chip.from_dict(gc2.to_dict()) == gc2


def test_chip_pickles_and_deep_copies():
    assert pickle.loads(pickle.dumps(bow)) == copy.deepcopy(bow) == bow


@pytest.mark.parametrize("key, value", [("tiles", 1_000_000_000), ("tiles", 9223372036854775806),
                                        ("sram_bytes_per_tile", 2**40), ("workers_per_tile", 10**6)])
def test_toml_sizes_beyond_what_the_simulator_holds_are_refused_by_key(tmp_path, key, value):
    # tiles = 1e9 died with MemoryError at np.arange(tiles); 2^63-2 with ZeroDivisionError
    with pytest.raises(ChipError, match=rf"custom.toml: key '{key}' must be at most"):
        chip_from_toml(write(tmp_path, f'base = "gc200"\n{key} = {value}\n'))
