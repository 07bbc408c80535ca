"""The sync loop's decisions for one object against a registry snapshot."""

from __future__ import annotations

from typing import Any

from callboard.kube.mirroring.policy import decide_mirror, gone_transition, refresh_fields
from callboard.kube.resource.constants import ADOPTED_LABEL, FINALIZER, SESSION_ANNOTATION
from callboard.kube.resource.fields import format_time
from callboard.kube.resource.objects import AgentSessionObject, LostPolicy
from callboard.kube.resource.phases import Phase, Reason
from callboard.kube.views.registry_snapshot import Snapshot
from callboard.registry import EndedInfo, NodeInfo, SessionInfo, SessionStatus

NOW = 1_700_000_000.0
SID = "ags.ns.uid-1.1"


def obj(
    phase: str | None = "Running", *, spec: dict[str, Any] | None = None, **status: Any
) -> AgentSessionObject:
    # observedGeneration 1: the operator wrote this status after seeing generation 1.
    st = (
        {
            "phase": phase,
            "sessionId": SID,
            "nodeId": "n1",
            "podName": "pod-1",
            "observedGeneration": 1,
            **status,
        }
        if phase
        else status
    )
    return AgentSessionObject.from_body(
        {
            "metadata": {"namespace": "ns", "name": "o", "uid": "uid-1", "finalizers": [FINALIZER]},
            "spec": {"callId": "c1", **(spec or {})},
            "status": st,
        }
    )


def snap(*, live: bool = True, started: float = NOW - 10, heartbeat: float = NOW - 1) -> Snapshot:
    sessions = [SessionInfo(session_id=SID, call_id="c1", node_id="n1", started_at=started)] if live else []
    nodes = [NodeInfo(node_id="n1", pod_name="pod-1", namespace="agents", heartbeat_at=heartbeat)]
    return Snapshot.build(nodes, sessions, now=NOW)


def test_running_and_live_writes_no_liveness_into_the_status() -> None:
    # Heartbeats and metrics stay in the registry and Prometheus: no status write per beat.
    running = obj(startedAt=format_time(NOW - 10))
    assert decide_mirror(running, snap(heartbeat=NOW - 1), now=NOW).empty
    assert decide_mirror(running, snap(heartbeat=NOW + 500), now=NOW + 500).empty
    # What an older operator wrote is dropped once, so the status does not show a stale beat.
    legacy = obj(
        startedAt=format_time(NOW - 10),
        lastHeartbeatAt=format_time(NOW - 200),
        metrics={"tokens": 1},
        metricsUpdatedAt=format_time(NOW - 200),
    )
    d = decide_mirror(legacy, snap(), now=NOW)
    assert d.transition is None
    assert d.fields == {"lastHeartbeatAt": None, "metrics": None, "metricsUpdatedAt": None}


def test_refresh_moves_node_fields_but_carries_no_metrics() -> None:
    session = SessionInfo(
        session_id=SID,
        call_id="c1",
        node_id="n2",
        started_at=NOW,
        metrics={"tokens": 3},
        metrics_updated_at=NOW,
    )
    node = NodeInfo(node_id="n2", pod_name="pod-2", heartbeat_at=NOW)
    fields = refresh_fields(obj(startedAt=format_time(NOW)), session, node)
    assert fields["nodeId"] == "n2" and fields["podName"] == "pod-2"
    assert "metrics" not in fields and "metricsUpdatedAt" not in fields and "lastHeartbeatAt" not in fields


def test_missing_session_is_a_question_for_the_registry() -> None:
    assert decide_mirror(obj(), snap(live=False), now=NOW).check_gone
    assert decide_mirror(obj("Closing"), snap(live=False), now=NOW).check_gone
    assert decide_mirror(obj("Succeeded"), snap(live=False), now=NOW).empty


def test_lost_comes_back_with_the_recover_policy() -> None:
    lost = obj("Lost", spec={"lostPolicy": "Recover"}, endedAt=format_time(NOW - 5))
    d = decide_mirror(lost, snap(), now=NOW)
    assert d.transition is not None and d.transition.phase is Phase.RUNNING
    assert d.transition.reason == Reason.RECOVERED and d.transition.fields["endedAt"] is None
    assert not d.close


def test_a_lost_session_that_comes_back_is_closed_and_the_object_stays_lost() -> None:
    # Default policy Close: an agent back after the TTL may double-talk with a replacement.
    lost = obj("Lost", endedAt=format_time(NOW - 5))
    assert lost.spec.lost_policy is LostPolicy.CLOSE
    d = decide_mirror(lost, snap(), now=NOW)
    assert d.close and not d.delete
    assert d.transition is not None and d.transition.phase is Phase.LOST
    assert d.transition.reason == Reason.STALE_SESSION_CLOSED and "n1" in d.transition.message
    explicit = obj("Lost", spec={"lostPolicy": "Close"}, endedAt=format_time(NOW - 5))
    assert decide_mirror(explicit, snap(), now=NOW) == d


def test_a_lost_session_is_closed_even_with_recover_when_a_replacement_runs() -> None:
    lost = obj("Lost", spec={"lostPolicy": "Recover"}, endedAt=format_time(NOW - 5))
    old = SessionInfo(session_id=SID, call_id="c1", node_id="n1", started_at=NOW - 100)
    replacement = SessionInfo(session_id="other", call_id="c1", node_id="n2", started_at=NOW - 3)
    nodes = [NodeInfo(node_id="n1", heartbeat_at=NOW - 1), NodeInfo(node_id="n2", heartbeat_at=NOW - 1)]
    d = decide_mirror(lost, Snapshot.build(nodes, [old, replacement], now=NOW), now=NOW)
    assert d.close and d.transition is not None and d.transition.phase is Phase.LOST
    assert d.transition.reason == Reason.STALE_SESSION_CLOSED and "other" in d.transition.message
    # A session of the same call that ran before the object went Lost is no replacement.
    earlier = SessionInfo(session_id="other", call_id="c1", node_id="n2", started_at=NOW - 50)
    back = decide_mirror(lost, Snapshot.build(nodes, [old, earlier], now=NOW), now=NOW)
    assert back.transition is not None and back.transition.phase is Phase.RUNNING and not back.close


def test_max_duration_closes() -> None:
    o = obj(spec={"maxDurationSeconds": 5})
    d = decide_mirror(o, snap(started=NOW - 6), now=NOW)
    assert d.close and d.transition is not None and d.transition.phase is Phase.CLOSING
    assert not decide_mirror(o, snap(started=NOW - 4), now=NOW).close


def test_ttl_after_finished_deletes() -> None:
    done = obj("Succeeded", spec={"ttlSecondsAfterFinished": 10}, endedAt=format_time(NOW - 11))
    assert decide_mirror(done, snap(live=False), now=NOW).delete
    young = obj("Succeeded", spec={"ttlSecondsAfterFinished": 10}, endedAt=format_time(NOW - 9))
    assert not decide_mirror(young, snap(live=False), now=NOW).delete
    no_ttl = obj("Failed", endedAt=format_time(NOW - 1000))
    assert not decide_mirror(no_ttl, snap(live=False), now=NOW).delete
    # A Lost object whose session came back is not deleted: the session is closed first.
    lost = obj("Lost", spec={"ttlSecondsAfterFinished": 1}, endedAt=format_time(NOW - 11))
    assert not decide_mirror(lost, snap(), now=NOW).delete
    assert decide_mirror(lost, snap(live=False), now=NOW).delete


def test_adopted_object_enters_running() -> None:
    adopted = AgentSessionObject.from_body(
        {
            "metadata": {
                "namespace": "adopted",
                "name": "c1-x",
                "uid": "u",
                "labels": {ADOPTED_LABEL: "true"},
                "annotations": {SESSION_ANNOTATION: f"c1/{SID}"},
            },
            "spec": {"callId": "c1"},
        }
    )
    d = decide_mirror(adopted, snap(), now=NOW)
    assert (
        d.transition is not None
        and d.transition.phase is Phase.RUNNING
        and d.transition.reason == Reason.ADOPTED
    )
    assert d.transition.fields["sessionId"] == SID and d.transition.fields["podName"] == "pod-1"
    assert decide_mirror(adopted, snap(live=False), now=NOW).check_gone


def test_gone_transitions() -> None:
    o = obj()
    assert gone_transition(o, SessionStatus.LIVE, None, now=NOW) is None
    ended = gone_transition(
        o, SessionStatus.ENDED, EndedInfo(SID, "c1", "n1", NOW - 2, reason="idle"), now=NOW
    )
    assert ended is not None and ended.phase is Phase.SUCCEEDED and "idle" in ended.message
    assert ended.fields["endedAt"] == format_time(NOW - 2)
    lost = gone_transition(o, SessionStatus.LOST, None, now=NOW)
    assert lost is not None and lost.phase is Phase.LOST and lost.reason == Reason.NODE_LOST
    unknown = gone_transition(o, SessionStatus.UNKNOWN, None, now=NOW)
    assert unknown is not None and unknown.phase is Phase.LOST


def test_g1_a_session_of_a_failed_or_succeeded_object_is_closed() -> None:
    for phase in ("Failed", "Succeeded"):
        decision = decide_mirror(obj(phase, endedAt=format_time(NOW - 5)), snap(), now=NOW)
        assert decision.close and decision.transition is None and not decision.delete
        assert decide_mirror(obj(phase), snap(live=False), now=NOW).empty


def test_g4_a_spec_edit_alone_writes_observed_generation() -> None:
    edited = AgentSessionObject.from_body(
        {
            "metadata": {"namespace": "ns", "name": "o", "uid": "uid-1", "generation": 2},
            "spec": {"callId": "c1"},
            "status": {
                "phase": "Running",
                "sessionId": SID,
                "nodeId": "n1",
                "podName": "pod-1",
                "observedGeneration": 1,
                "startedAt": format_time(NOW - 10),
            },
        }
    )
    assert decide_mirror(edited, snap(), now=NOW).fields == {"observedGeneration": 2}
