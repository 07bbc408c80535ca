"""Session ids of placed sessions, adopted names, and the typed view of an object."""

from __future__ import annotations

import re

import pytest

from callboard.kube.resource.constants import ADOPTED_LABEL, FINALIZER, SESSION_ANNOTATION
from callboard.kube.resource.fields import format_time, parse_time
from callboard.kube.resource.naming import PlacedSessionId, adopted_name, parse_session_id, session_id_for
from callboard.kube.resource.objects import AgentSessionObject, resource_version_newer
from callboard.kube.resource.phases import Phase
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


def test_times() -> None:
    assert parse_time("2024-01-02T03:04:05Z") == 1704164645.0
    assert parse_time("2024-01-02T03:04:05.5+00:00") == 1704164645.5
    assert parse_time("nonsense") is None
    assert parse_time(None) is None
    assert format_time(1704164645.9) == "2024-01-02T03:04:05Z"


def test_resource_versions_compare_as_integers_when_they_are() -> None:
    assert resource_version_newer("10", "9")
    assert resource_version_newer("10", "10")
    assert not resource_version_newer("9", "10")
    assert resource_version_newer("opaque", "10")
    assert resource_version_newer(None, "10")


def body(**status: object) -> dict[str, object]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": "s1",
            "uid": UID,
            "generation": 3,
            "resourceVersion": "42",
            "creationTimestamp": "2024-01-02T03:04:05Z",
            "finalizers": [FINALIZER],
        },
        "spec": {"callId": "c1", "pool": "gpu", "params": {"a": 1}, "maxDurationSeconds": 60},
        "status": status,
    }


def test_agent_session_view() -> None:
    obj = AgentSessionObject.from_body(
        body(phase="Running", sessionId="s-1", attempts=2, conditions=[{"type": "Ready", "status": "True"}])
    )
    assert obj.key == ("ns", "s1")
    assert obj.has_finalizer and not obj.deleting
    assert obj.spec.call_type == "default"
    assert obj.spec.pool == "gpu" and obj.spec.params == {"a": 1} and obj.spec.max_duration_seconds == 60
    assert obj.status.phase is Phase.RUNNING and obj.status.attempts == 2
    assert obj.session == ("c1", "s-1")
    assert obj.status.condition("Ready") is not None
    assert obj.reference()["uid"] == UID and obj.reference()["kind"] == "AgentSession"


def test_unknown_phase_and_missing_status_read_as_none() -> None:
    assert AgentSessionObject.from_body(body(phase="Bogus")).status.phase is None
    obj = AgentSessionObject.from_body({"metadata": {"name": "x"}, "spec": {}})
    assert obj.status.phase is None and obj.session is None and obj.spec.call_id == ""


def test_adopted_marker_needs_label_and_annotation() -> None:
    raw = body()
    raw["metadata"]["annotations"] = {SESSION_ANNOTATION: "call-9/sess-9"}  # type: ignore[index]
    assert AgentSessionObject.from_body(raw).adopted_session is None
    raw["metadata"]["labels"] = {ADOPTED_LABEL: "true"}  # type: ignore[index]
    obj = AgentSessionObject.from_body(raw)
    assert obj.adopted_session == ("call-9", "sess-9")
    assert obj.session == ("call-9", "sess-9")
