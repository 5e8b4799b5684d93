"""Calibration guard: every fast validation row stays within its tolerance (docs/validation.md)."""
import pytest

from simulator.validation import markdown, rows

ROWS = rows(slow=False)


@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_prediction_within_tolerance(row):
    assert abs(row["error"]) <= row["tolerance"], (
        f"{row['name']}: simulator {row['predicted']:.4g} vs published {row['published']:.4g} "
        f"({row['error'] * 100:+.1f}%, tolerance ±{row['tolerance'] * 100:.0f}%)")


def test_a_row_outside_its_tolerance_is_flagged_in_the_table():
    inside, outside = ROWS[0], dict(ROWS[0], name="made-up row", error=9.0, ok=False)
    lines = {line.split(" |")[0].lstrip("| "): line for line in markdown([inside, outside]).splitlines()}
    assert "**(outside)**" in lines["made-up row"]
    assert "**(outside)**" not in lines[inside["name"]]


def test_markdown_has_every_row():
    md = markdown(ROWS)
    assert all(r["name"] in md for r in ROWS)
