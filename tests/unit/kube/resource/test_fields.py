"""Reading fields of API bodies: RFC 3339 times."""

from __future__ import annotations

from callboard.kube.resource.fields import format_time, parse_time


def test_times() -> None:
    assert parse_time("2024-01-02T03:04:05Z") == 1704164645.0
    assert parse_time("2024-01-02T03:04:05.5+00:00") == 1704164645.5
    assert parse_time("nonsense") is None
    assert parse_time(None) is None
    assert format_time(1704164645.9) == "2024-01-02T03:04:05Z"
