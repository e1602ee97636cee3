"""How numbers, durations and timestamps read in the report."""

from __future__ import annotations

import pytest

from fedpharma.report.formatting import format_duration, format_score, format_timestamp


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "—"),
        (0.6667, "0.667"),
        (-0.05, "-0.050"),
        (3.14159, "3.14"),
        (42.42, "42.4"),
        (1234.5, "1,234"),
    ],
)
def test_format_score(value: float | None, shown: str) -> None:
    assert format_score(value) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "—"), (42.0, "42.0 s"), (192.4, "3 min 12 s"), (3725, "1 h 02 min")],
)
def test_format_duration(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_format_timestamp() -> None:
    assert format_timestamp("2026-11-27T20:30:00Z") == "2026-11-27 20:30 UTC"
    assert format_timestamp("yesterday") == "yesterday"
