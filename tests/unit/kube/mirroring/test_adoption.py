"""Unclaimed sessions (adopt or close) and the adopted object."""

from __future__ import annotations

from callboard.kube.mirroring.adoption import adopted_manifest, classify
from callboard.kube.resource.constants import ADOPTED_LABEL, SESSION_ANNOTATION
from callboard.kube.resource.objects import AgentSessionObject
from callboard.registry import NodeInfo, SessionInfo


def session(sid: str, call: str = "c") -> SessionInfo:
    return SessionInfo(session_id=sid, call_id=call, node_id="n", started_at=0.0)


def test_classify() -> None:
    sessions = [
        session("claimed"),
        session("from-http-api"),
        session("ags.mine.uid-gone.1"),
        session("ags.theirs.uid-x.1"),
    ]
    found = classify(sessions, claimed=lambda c, s: s == "claimed", watched=lambda ns: ns == "mine")
    assert [s.session_id for s in found.adopt] == ["from-http-api"]
    assert [s.session_id for s in found.close] == ["ags.mine.uid-gone.1"]


def test_adopted_manifest() -> None:
    m = adopted_manifest(
        session("s1", "Call:1"),
        NodeInfo(node_id="n", pool="gpu"),
        namespace="adopted",
        ttl_seconds_after_finished=60,
    )
    assert m["metadata"]["namespace"] == "adopted"
    assert m["metadata"]["labels"][ADOPTED_LABEL] == "true"
    assert m["metadata"]["annotations"][SESSION_ANNOTATION] == "Call:1/s1"
    assert m["spec"] == {
        "callId": "Call:1",
        "ttlSecondsAfterFinished": 60,
        "pool": "gpu",
        "lostPolicy": "Recover",
    }
    assert AgentSessionObject.from_body(m).adopted_session == ("Call:1", "s1")
    # Adopted by the operator of another class: the object names it, so that operator owns it.
    other = adopted_manifest(
        session("s1", "Call:1"),
        None,
        namespace="adopted",
        ttl_seconds_after_finished=60,
        operator_class="tenant-b",
    )
    assert other["spec"] == {
        "callId": "Call:1",
        "ttlSecondsAfterFinished": 60,
        "lostPolicy": "Recover",
        "operatorClass": "tenant-b",
    }
    assert AgentSessionObject.from_body(other).spec.operator_class == "tenant-b"
