"""Numbers written for people (common/html.py): examples and properties."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.html import (
    LineChart,
    Series,
    format_bytes,
    format_count,
    format_duration,
    format_number,
    format_percent,
    page,
    short_digest,
    table,
)

pytestmark = pytest.mark.unit

_IEC = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


@pytest.mark.parametrize(("value", "text"), [
    (1_971_200, "1.97 M"), (8.92404e08, "892 M"), (12_345, "12,345"), (0.0123, "0.0123"),
    (3.2, "3.2"), (2.0, "2"), (0.0003, "0.0003"), (999.7, "1,000"), (-1234.5, "-1,234"),
    (None, "–"), (float("nan"), "n/a"), (0, "0"), (True, "yes"),
])
def test_format_number_examples(value: float | None, text: str) -> None:
    assert format_number(value) == text


def test_units_read_like_the_issue_asks() -> None:
    assert format_count(1_971_200, "parameters") == "1.97 M parameters"
    assert format_bytes(8.92404e08) == "851 MiB"
    assert format_duration(3.21) == "3.2 s"
    assert format_duration(0.35) == "350 ms"
    assert format_duration(245) == "4 min 05 s"
    assert format_duration(7400) == "2 h 03 min"
    assert format_percent(0.125) == "12.5%"
    assert short_digest("ab" * 32) == "sha256:abababababab…"


@given(st.floats(min_value=-1e15, max_value=1e15, allow_nan=False))
def test_no_exponent_notation_from_a_ten_thousandth_up(value: float) -> None:
    text = format_number(value)
    if value == 0 or abs(value) >= 1e-4:
        assert "e" not in text, text


@given(st.integers(min_value=0, max_value=10**14))
def test_format_bytes_is_close_to_the_value(num_bytes: int) -> None:
    match = re.fullmatch(r"([0-9.]+) ((?:[KMGT]i)?)B", format_bytes(num_bytes))
    assert match, format_bytes(num_bytes)
    shown = float(match[1]) * _IEC[match[2]]
    assert math.isclose(shown, num_bytes, rel_tol=0.006, abs_tol=0.5)
    # three significant digits, or a whole 1000-1023 of a unit (as `ls -h` shows it)
    assert len(match[1].replace(".", "")) <= 3 or 1000 <= float(match[1]) < 1024


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_durations_have_a_unit_and_no_exponent(seconds: float) -> None:
    text = format_duration(seconds)
    assert re.search(r"(ms|s|min)$", text), text
    assert "e" not in text


@given(st.floats(min_value=1e6, max_value=1e14, allow_nan=False))
def test_large_counts_use_a_suffix_and_three_digits(value: float) -> None:
    match = re.fullmatch(r"([0-9.]+) ([MBT])", format_count(value))
    assert match, format_count(value)
    assert float(match[1]) < 1000


def test_an_empty_chart_is_not_drawn() -> None:
    assert LineChart("loss", "step", "loss", []).to_svg() == ""
    assert LineChart("loss", "step", "loss", [Series("a", [(1.0, float("nan"))])]).to_svg() == ""
    svg = LineChart("loss", "step", "loss", [Series("train", [(1.0, 2.0)])]).to_svg()
    assert svg.startswith("<svg") and "<circle" in svg  # one point is still shown


def test_values_are_escaped_and_pages_carry_the_stylesheet_and_no_script() -> None:
    out = page("<t>", table(["h"], [["<script>x</script>"]]))
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "<style>" in out and out.count("<h1>") == 1
