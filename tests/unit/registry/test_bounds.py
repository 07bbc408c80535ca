"""registry/bounds.py: what a record may hold, checked before anything is stored (G12)."""

from __future__ import annotations

import math

import pytest

from callboard.errors import InvalidValueError
from callboard.registry.bounds import (
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    MAX_TIMESTAMP,
    check_json_object,
    check_timestamp,
    is_timestamp,
)


@pytest.mark.parametrize("value", [0, 0.0, 1_700_000_000.5, MAX_TIMESTAMP, int(MAX_TIMESTAMP)])
def test_g12_finite_unix_times_in_range_are_timestamps(value: float) -> None:
    assert is_timestamp(value)
    assert check_timestamp(value, "started_at") == float(value)


@pytest.mark.parametrize(
    "value",
    [-1, -0.5, MAX_TIMESTAMP + 1, math.nan, math.inf, -math.inf, 10**400, True, False, "1", None, [1]],
)
def test_g12_anything_else_is_no_timestamp_and_refused_by_name(value: object) -> None:
    assert not is_timestamp(value)
    with pytest.raises(InvalidValueError, match="started_at must be a finite Unix time"):
        check_timestamp(value, "started_at")


def test_g12_a_json_object_comes_back_as_a_copy_the_caller_cannot_change() -> None:
    metrics = {"latency": [1.5, 2], "ok": True, "name": "x", "none": None, "nested": {"n": MAX_JSON_INT}}
    copy = check_json_object(metrics, "metrics", 1024)
    assert copy == metrics
    metrics["nested"]["n"] = 0  # type: ignore[index]
    assert copy["nested"]["n"] == MAX_JSON_INT


def test_g12_tuples_are_stored_as_lists() -> None:
    assert check_json_object({"pair": (1, 2)}, "params", 1024) == {"pair": [1, 2]}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([1], "must be a JSON object, got list"),
        ({"x": math.nan}, "non-finite number"),
        ({"x": [math.inf]}, "non-finite number"),
        ({"x": MAX_JSON_INT + 1}, "integer beyond"),
        ({"x": -(MAX_JSON_INT + 1)}, "integer beyond"),
        ({1: "x"}, "non-string key 1"),
        ({"x": {"y": {1, 2}}}, "holds a set, which is not JSON"),
        ({"x": b"bytes"}, "holds a bytes"),
    ],
)
def test_g12_what_is_not_plain_json_is_refused_saying_why(value: object, why: str) -> None:
    with pytest.raises(InvalidValueError, match=why):
        check_json_object(value, "metrics", 1024)


def test_g12_nesting_is_allowed_to_the_depth_limit_and_no_further() -> None:
    def nested(depth: int) -> dict[str, object]:
        value: dict[str, object] = {}
        for _ in range(depth):
            value = {"d": value}
        return value

    check_json_object(nested(MAX_JSON_DEPTH), "params", 10_000)
    with pytest.raises(InvalidValueError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        check_json_object(nested(MAX_JSON_DEPTH + 1), "params", 10_000)


def test_g12_the_size_limit_is_that_of_the_compact_json_encoding() -> None:
    # {"k":"aaaaaaaaaa"} is 18 bytes without spaces: at the limit, not over it.
    text = check_json_object({"k": "a" * 10}, "metrics", 18)
    assert text == {"k": "a" * 10}
    with pytest.raises(InvalidValueError, match="is 19 bytes as JSON; the limit is 18"):
        check_json_object({"k": "a" * 11}, "metrics", 18)
