"""Session ids of placed sessions and names of adopted objects."""

from __future__ import annotations

import re

import pytest

from callboard.kube.resource.naming import PlacedSessionId, adopted_name, parse_session_id, session_id_for
from callboard.registry import validate_id

UID = "0b4f6c2e-5f7d-4c1e-9d0a-3f2b1a0c9e8d"


def test_session_ids_round_trip_and_are_valid_registry_ids() -> None:
    sid = session_id_for("team-a", UID, 2)
    assert sid == f"ags.team-a.{UID}.2"
    assert validate_id(sid) == sid
    assert parse_session_id(sid) == PlacedSessionId("team-a", UID, 2)


@pytest.mark.parametrize(
    "other",
    ["3f2b1a0c", "ags.ns.uid", "ags.ns.uid.x", "ags.ns.uid.0", "ags.ns.uid.01", "xyz.ns.uid.1", "ags..uid.1"],
)
def test_other_ids_are_not_taken_for_placed_ones(other: str) -> None:
    assert parse_session_id(other) is None


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        session_id_for("ns", UID, 0)


@pytest.mark.parametrize(
    ("call_id", "session_id"),
    [("Call_1:room.7", "s1"), ("x" * 128, "s2"), ("___", "s3"), ("demo-call", "0b4f")],
)
def test_adopted_names_are_stable_dns_labels(call_id: str, session_id: str) -> None:
    name = adopted_name(call_id, session_id)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    assert len(name) <= 63
    assert name == adopted_name(call_id, session_id)
    assert name != adopted_name(call_id, session_id + "x")
