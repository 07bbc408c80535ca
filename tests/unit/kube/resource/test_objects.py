"""The typed view of an AgentSession object and resource-version order."""

from __future__ import annotations

from callboard.kube.resource.constants import (
    ADOPTED_LABEL,
    DEFAULT_OPERATOR_CLASS,
    FINALIZER,
    SESSION_ANNOTATION,
)
from callboard.kube.resource.objects import AgentSessionObject, Spec, owned_by, resource_version_newer
from callboard.kube.resource.phases import Phase

UID = "0b4f6c2e-5f7d-4c1e-9d0a-3f2b1a0c9e8d"


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


def test_an_object_without_an_operator_class_is_the_default_operators() -> None:
    assert DEFAULT_OPERATOR_CLASS == "default"
    assert Spec.from_dict({"callId": "c"}).operator_class == "default"
    assert Spec.from_dict({"callId": "c", "operatorClass": "b"}).operator_class == "b"
    assert owned_by({"spec": {"callId": "c"}}, "default")
    assert not owned_by({"spec": {"callId": "c"}}, "b")
    assert owned_by({"spec": {"callId": "c", "operatorClass": "b"}}, "b")
    assert not owned_by({"spec": {"callId": "c", "operatorClass": "b"}}, "default")
    assert not owned_by({}, "b") and owned_by({}, "default")
