"""Calibration guard: every fast validation row stays within its tolerance (docs/validation.md)."""
import pytest

from simulator.validation import markdown, rows

ROWS = rows(slow=False)


@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_prediction_within_tolerance(row):
    assert abs(row["error"]) <= row["tolerance"], (
        f"{row['name']}: simulator {row['predicted']:.4g} vs published {row['published']:.4g} "
        f"({row['error'] * 100:+.1f}%, tolerance ±{row['tolerance'] * 100:.0f}%)")


def test_known_gaps_stay_visible():
    by = {r["name"]: r for r in ROWS}
    # the supertile rule halves the all-tiles exchange aggregate: documented, not hidden
    assert by["GC2 exchange, all tiles sending (aggregate)"]["error"] < -0.4


def test_markdown_has_every_row():
    md = markdown(ROWS)
    assert all(r["name"] in md for r in ROWS)
