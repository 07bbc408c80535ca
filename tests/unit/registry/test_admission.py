"""The admission check both node runtimes share (:mod:`callboard.registry.admission`)."""

from __future__ import annotations

import pytest

from callboard.errors import (
    CapacityError,
    InvalidIdError,
    MaxConcurrentSessionsExceeded,
    MaxSessionsPerCallExceeded,
    NodeDrainingError,
    StoreError,
)
from callboard.registry import StartRejection, admission_error, check_admission, rejection_for


@pytest.mark.parametrize(
    ("draining", "active", "capacity", "expected"),
    [
        (False, 0, None, None),
        (False, 10_000, None, None),
        (False, 1, 2, None),
        (False, 2, 2, StartRejection.CAPACITY),
        (False, 3, 2, StartRejection.CAPACITY),
        (False, 0, 0, StartRejection.CAPACITY),
        (True, 0, None, StartRejection.DRAINING),
        (True, 5, 2, StartRejection.DRAINING),  # draining wins over capacity
    ],
)
def test_check_admission(
    draining: bool, active: int, capacity: int | None, expected: StartRejection | None
) -> None:
    assert check_admission(draining=draining, active=active, capacity=capacity) is expected


@pytest.mark.parametrize(("active", "capacity"), [(0, None), (0, 5), (7, 5)])
def test_g9_operator_drain_mark_refuses_like_draining(active: int, capacity: int | None) -> None:
    assert check_admission(draining=False, active=active, capacity=capacity, marked=True) is (
        StartRejection.DRAINING
    )


@pytest.mark.parametrize(
    ("rejection", "error"),
    [
        (StartRejection.DRAINING, NodeDrainingError),
        (StartRejection.CAPACITY, MaxConcurrentSessionsExceeded),
        (StartRejection.CALL_LIMIT, MaxSessionsPerCallExceeded),
    ],
)
def test_admission_error_and_rejection_for_are_inverse(
    rejection: StartRejection, error: type[CapacityError]
) -> None:
    exc = admission_error(rejection, node_id="node-a", active=2, capacity=2)
    assert type(exc) is error and "node-a" in str(exc)
    assert rejection_for(exc) is rejection


def test_capacity_error_says_how_full_the_node_is() -> None:
    exc = admission_error(StartRejection.CAPACITY, node_id="node-a", active=3, capacity=2)
    assert str(exc) == "node node-a runs 3 sessions, its capacity is 2"


def test_rejection_for_other_errors() -> None:
    assert rejection_for(InvalidIdError("bad")) is StartRejection.INVALID
    assert rejection_for(StoreError("down")) is None
    assert rejection_for(RuntimeError("x")) is None


@pytest.mark.parametrize("rejection", [StartRejection.INVALID, StartRejection.FAILED])
def test_admission_error_refuses_what_is_not_an_admission_refusal(rejection: StartRejection) -> None:
    with pytest.raises(ValueError, match="not an admission refusal"):
        admission_error(rejection, node_id="node-a")
