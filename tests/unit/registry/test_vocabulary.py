"""The wire vocabulary: the exact strings every runtime writes and the operator reads.

A change here is a wire change (tombstones, start answers, sidecar events, metrics labels):
the README's vocabulary table must change with it.
"""

from __future__ import annotations

from callboard import CloseReason
from callboard.launcher import StartRejection as LauncherStartRejection
from callboard.registry import EndReason, StartRejection


def test_end_reason_wire_values() -> None:
    assert {r.name: r.value for r in EndReason} == {
        "FINISHED": "finished",
        "FAILED": "failed",
        "CLOSED": "closed",
        "CLOSE_REQUESTED": "close_requested",
        "IDLE": "idle",
        "MAX_DURATION": "max_duration",
        "DRAIN_TIMEOUT": "drain_timeout",
        "STOPPED": "stopped",
        "CANCELLED": "cancelled",
        "APP_UNHEALTHY": "app_unhealthy",
        "APP_RESTARTED": "app_restarted",
    }


def test_start_rejection_wire_values() -> None:
    assert {r.name: r.value for r in StartRejection} == {
        "CAPACITY": "capacity",
        "CALL_LIMIT": "call_limit",
        "DRAINING": "draining",
        "INVALID": "invalid",
        "FAILED": "start_failed",
    }


def test_former_names_are_aliases_of_the_one_vocabulary() -> None:
    assert CloseReason is EndReason
    assert LauncherStartRejection is StartRejection
    assert EndReason.DRAIN is EndReason.DRAIN_TIMEOUT
    assert StartRejection.AT_CAPACITY is StartRejection.CAPACITY
