"""Reading fields of API bodies: RFC 3339 times, optional ints and strings (pure).

The object view (:mod:`~callboard.kube.resource.objects`) and the status view
(:mod:`~callboard.kube.resource.phases`) both read loosely typed JSON from the API server;
these helpers are the one place a missing or odd field becomes None.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["format_time", "int_or_none", "parse_time", "str_or_none"]


def parse_time(value: object) -> float | None:
    """Unix time of an RFC 3339 timestamp (``2024-01-01T00:00:00Z``), None if absent or bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def format_time(timestamp: float) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes ``metav1.Time``."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def int_or_none(value: object) -> int | None:
    """An int field, None when absent or of another type (``bool`` is not an int here)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def str_or_none(value: object) -> str | None:
    """A non-empty string field, None when absent, empty or of another type."""
    return value if isinstance(value, str) and value else None
