"""Bounds on what the registry stores: every entry point checks its values here (G12).

A value that is not finite JSON of a sane size breaks whoever reads the record later: NaN
or inf in ``started_at`` fails ``datetime.fromtimestamp`` in every listing (a 500), a
non-JSON metric fails every heartbeat that serialises the session, and a megabyte of
metrics per session multiplies into every heartbeat and listing. So writers are refused
with :class:`~callboard.errors.InvalidValueError` before anything is stored, and readers
treat a record outside these bounds as malformed (skipped, never a crash).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from callboard.errors import InvalidValueError

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_JSON_INT",
    "MAX_METRICS_BYTES",
    "MAX_PARAMS_BYTES",
    "MAX_TIMESTAMP",
    "check_json_object",
    "check_timestamp",
    "is_timestamp",
]

#: The last Unix second ``datetime`` can represent (9999-12-31T23:59:59Z): later values
#: cannot be shown by any listing.
MAX_TIMESTAMP = 253_402_300_799.0
#: Largest integer magnitude in metrics and params: 2**53 is what every JSON reader (Lua's
#: cjson, JavaScript, Go's float64) keeps exactly.
MAX_JSON_INT = 2**53
#: Encoded size limits, bytes. Metrics are a few counters and latencies (well under 1 KiB in
#: practice); 64 KiB leaves room and still keeps 10,000 sessions' records far below Redis'
#: limits. Params are a start request's free-form arguments: the same bound.
MAX_METRICS_BYTES = 64 * 1024
MAX_PARAMS_BYTES = 64 * 1024
#: Nesting depth allowed in metrics and params: deep enough for any real document, shallow
#: enough that no reader recurses out of its stack.
MAX_JSON_DEPTH = 32


def is_timestamp(value: object) -> bool:
    """True for a finite Unix time in seconds between 0 and :data:`MAX_TIMESTAMP`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):  # exact: math.isfinite() overflows on a huge int
        return 0 <= value <= MAX_TIMESTAMP
    return math.isfinite(value) and 0 <= value <= MAX_TIMESTAMP


def check_timestamp(value: object, what: str) -> float:
    """``value`` as a float if it is a valid Unix time, else :class:`InvalidValueError`."""
    if not is_timestamp(value):
        raise InvalidValueError(
            f"{what} must be a finite Unix time in seconds between 0 and {MAX_TIMESTAMP:.0f}, got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


def _check_values(value: object, what: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise InvalidValueError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_JSON_INT:
            raise InvalidValueError(f"{what} holds an integer beyond ±2**53 ({value.bit_length()} bits)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValueError(f"{what} holds a non-finite number ({value}): JSON has no NaN or inf")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidValueError(f"{what} has a non-string key {key!r}")
            _check_values(item, what, depth + 1)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_values(item, what, depth + 1)
        return
    raise InvalidValueError(f"{what} holds a {type(value).__name__}, which is not JSON")


def check_json_object(value: object, what: str, limit: int) -> dict[str, Any]:
    """A plain-JSON copy of the mapping ``value``, or :class:`InvalidValueError` saying why not.

    Refuses non-JSON values, NaN/inf, integers beyond :data:`MAX_JSON_INT`, nesting beyond
    :data:`MAX_JSON_DEPTH` and an encoding longer than ``limit`` bytes. The copy is what
    gets stored, so a caller that later mutates its own mapping changes nothing here.
    """
    if not isinstance(value, Mapping):
        raise InvalidValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    _check_values(value, what, 0)
    encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    if len(encoded.encode()) > limit:
        raise InvalidValueError(f"{what} is {len(encoded.encode()):,} bytes as JSON; the limit is {limit:,}")
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded
