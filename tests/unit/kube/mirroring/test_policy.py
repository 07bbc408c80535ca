"""The sync loop's decisions for one object against a registry snapshot."""

from __future__ import annotations

from typing import Any

from callboard.kube.mirroring.policy import decide_mirror, gone_transition, refresh_fields
from callboard.kube.resource.constants import ADOPTED_LABEL, FINALIZER, SESSION_ANNOTATION
from callboard.kube.resource.fields import format_time
from callboard.kube.resource.objects import AgentSessionObject
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


def test_running_and_live_refreshes_only_when_the_heartbeat_is_old() -> None:
    fresh = obj(lastHeartbeatAt=format_time(NOW - 5), startedAt=format_time(NOW - 10))
    assert decide_mirror(fresh, snap(), now=NOW, refresh=60).empty
    stale = obj(lastHeartbeatAt=format_time(NOW - 200), startedAt=format_time(NOW - 10))
    d = decide_mirror(stale, snap(), now=NOW, refresh=60)
    assert d.transition is None and d.fields == {"lastHeartbeatAt": format_time(NOW - 1)}


def test_refresh_carries_metrics_and_moves_node_fields() -> None:
    session = SessionInfo(
        session_id=SID,
        call_id="c1",
        node_id="n2",
        started_at=NOW,
        metrics={"tokens": 3},
        metrics_updated_at=NOW,
    )
    node = NodeInfo(node_id="n2", pod_name="pod-2", heartbeat_at=NOW)
    fields = refresh_fields(obj(startedAt=format_time(NOW)), session, node, refresh=60)
    assert fields["nodeId"] == "n2" and fields["podName"] == "pod-2"
    assert fields["metrics"] == {"tokens": 3} and fields["metricsUpdatedAt"] == format_time(NOW)


def test_missing_session_is_a_question_for_the_registry() -> None:
    assert decide_mirror(obj(), snap(live=False), now=NOW, refresh=60).check_gone
    assert decide_mirror(obj("Closing"), snap(live=False), now=NOW, refresh=60).check_gone
    assert decide_mirror(obj("Succeeded"), snap(live=False), now=NOW, refresh=60).empty


def test_lost_comes_back() -> None:
    d = decide_mirror(obj("Lost", endedAt=format_time(NOW - 5)), snap(), now=NOW, refresh=60)
    assert d.transition is not None and d.transition.phase is Phase.RUNNING
    assert d.transition.reason == Reason.RECOVERED and d.transition.fields["endedAt"] is None


def test_max_duration_closes() -> None:
    o = obj(spec={"maxDurationSeconds": 5}, lastHeartbeatAt=format_time(NOW))
    d = decide_mirror(o, snap(started=NOW - 6), now=NOW, refresh=60)
    assert d.close and d.transition is not None and d.transition.phase is Phase.CLOSING
    assert not decide_mirror(o, snap(started=NOW - 4), now=NOW, refresh=60).close


def test_ttl_after_finished_deletes() -> None:
    done = obj("Succeeded", spec={"ttlSecondsAfterFinished": 10}, endedAt=format_time(NOW - 11))
    assert decide_mirror(done, snap(live=False), now=NOW, refresh=60).delete
    young = obj("Succeeded", spec={"ttlSecondsAfterFinished": 10}, endedAt=format_time(NOW - 9))
    assert not decide_mirror(young, snap(live=False), now=NOW, refresh=60).delete
    no_ttl = obj("Failed", endedAt=format_time(NOW - 1000))
    assert not decide_mirror(no_ttl, snap(live=False), now=NOW, refresh=60).delete
    # A Lost object whose session came back is not deleted, it recovers.
    lost = obj("Lost", spec={"ttlSecondsAfterFinished": 1}, endedAt=format_time(NOW - 11))
    assert not decide_mirror(lost, snap(), now=NOW, refresh=60).delete
    assert decide_mirror(lost, snap(live=False), now=NOW, refresh=60).delete


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
    d = decide_mirror(adopted, snap(), now=NOW, refresh=60)
    assert (
        d.transition is not None
        and d.transition.phase is Phase.RUNNING
        and d.transition.reason == Reason.ADOPTED
    )
    assert d.transition.fields["sessionId"] == SID and d.transition.fields["podName"] == "pod-1"
    assert decide_mirror(adopted, snap(live=False), now=NOW, refresh=60).check_gone


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
        decision = decide_mirror(obj(phase, endedAt=format_time(NOW - 5)), snap(), now=NOW, refresh=60)
        assert decision.close and decision.transition is None and not decision.delete
        assert decide_mirror(obj(phase), snap(live=False), now=NOW, refresh=60).empty


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
                "lastHeartbeatAt": format_time(NOW - 5),
                "startedAt": format_time(NOW - 10),
            },
        }
    )
    assert decide_mirror(edited, snap(), now=NOW, refresh=60).fields == {"observedGeneration": 2}
