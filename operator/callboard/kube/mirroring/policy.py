"""What the sync loop should do about one object, given a registry snapshot (pure).

The placer owns objects until they run; from then on :func:`decide_mirror` compares each object
with the registry and returns a :class:`MirrorDecision`: a phase change, a status refresh, a
close request (``maxDurationSeconds``, or a session that runs although its object is
Succeeded or Failed), a delete (``ttlSecondsAfterFinished``), or a question the snapshot
cannot answer (the session vanished: ended or lost?).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from callboard.kube.resource.fields import format_time
from callboard.kube.resource.objects import AgentSessionObject
from callboard.kube.resource.phases import FINISHED, TERMINAL, Phase, Reason, Transition
from callboard.kube.views.registry_snapshot import Snapshot
from callboard.registry import EndedInfo, NodeInfo, SessionInfo, SessionStatus

__all__ = ["MirrorDecision", "decide_mirror", "gone_transition", "refresh_fields"]

#: Largest extra share of ``heartbeat_refresh`` an object waits, so 1,000 objects that
#: started together do not refresh in the same second.
REFRESH_JITTER = 0.25


@dataclass(frozen=True, slots=True)
class MirrorDecision:
    transition: Transition | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    """Status fields to merge without a phase change."""
    check_gone: bool = False
    """The session is missing from the snapshot: ask the registry whether it ended or was lost."""
    close: bool = False
    delete: bool = False

    @property
    def empty(self) -> bool:
        return (
            self.transition is None and not self.fields and not (self.check_gone or self.close or self.delete)
        )


def _jitter(uid: str) -> float:
    return 1.0 + REFRESH_JITTER * (int(hashlib.sha256(uid.encode()).hexdigest()[:4], 16) / 0xFFFF)


def refresh_fields(
    obj: AgentSessionObject,
    session: SessionInfo,
    node: NodeInfo | None,
    *,
    refresh: float,
    force: bool = False,
) -> dict[str, Any]:
    """Status fields that mirror the registry, when they changed enough to be written."""
    fields: dict[str, Any] = {}
    if obj.status.node_id != session.node_id:
        fields["nodeId"] = session.node_id
    pod = node.pod_name if node is not None else None
    if pod is not None and obj.status.pod_name != pod:
        fields["podName"] = pod
    if obj.status.session_id != session.session_id:
        fields["sessionId"] = session.session_id
    if obj.status.started_at is None:
        fields["startedAt"] = format_time(session.started_at)
    if node is not None:
        last = obj.status.last_heartbeat_at
        if force or fields or last is None or node.heartbeat_at - last >= refresh * _jitter(obj.uid):
            fields["lastHeartbeatAt"] = format_time(node.heartbeat_at)
            if session.metrics or obj.status.raw.get("metrics"):
                fields["metrics"] = dict(session.metrics)
            if session.metrics_updated_at is not None:
                fields["metricsUpdatedAt"] = format_time(session.metrics_updated_at)
    return fields


def decide_mirror(obj: AgentSessionObject, snap: Snapshot, *, now: float, refresh: float) -> MirrorDecision:
    """The sync loop's decision for an object the placer does not own and nobody deletes.

    A spec edit that changes nothing else still gets its ``observedGeneration`` written.
    """
    decision = _decide(obj, snap, now=now, refresh=refresh)
    if decision.empty and obj.status.phase is not None and obj.status.observed_generation != obj.generation:
        return MirrorDecision(fields={"observedGeneration": obj.generation})
    return decision


def _decide(obj: AgentSessionObject, snap: Snapshot, *, now: float, refresh: float) -> MirrorDecision:
    phase = obj.status.phase
    ref = obj.session
    session = snap.sessions.get(ref) if ref is not None else None
    node = snap.nodes.get(session.node_id) if session is not None else None

    ttl = obj.spec.ttl_seconds_after_finished
    ended = obj.status.ended_at
    expired = phase in FINISHED and ttl is not None and ended is not None and now >= ended + ttl
    if expired and (phase is not Phase.LOST or session is None):
        return MirrorDecision(delete=True)

    if ref is None:
        return MirrorDecision()  # nothing was ever placed (Failed before an attempt)

    if session is None:
        if phase in (Phase.RUNNING, Phase.CLOSING) or (phase is None and obj.adopted_session is not None):
            return MirrorDecision(check_gone=True)
        return MirrorDecision()

    # The session is live.
    if phase is None and obj.adopted_session is not None:
        return MirrorDecision(
            transition=Transition(
                Phase.RUNNING,
                Reason.ADOPTED,
                f"session started outside Kubernetes, runs on node {session.node_id}",
                fields=refresh_fields(obj, session, node, refresh=refresh, force=True) | {"endedAt": None},
            )
        )
    if phase is Phase.LOST:
        return MirrorDecision(
            transition=Transition(
                Phase.RUNNING,
                Reason.RECOVERED,
                f"session is back on node {session.node_id}",
                fields=refresh_fields(obj, session, node, refresh=refresh, force=True) | {"endedAt": None},
            )
        )
    if phase in (Phase.RUNNING, Phase.CLOSING):
        limit = obj.spec.max_duration_seconds
        if phase is Phase.RUNNING and limit is not None and now - session.started_at >= limit:
            return MirrorDecision(
                transition=Transition(
                    Phase.CLOSING,
                    Reason.MAX_DURATION_EXCEEDED,
                    f"session ran {limit}s (maxDurationSeconds): close requested",
                ),
                close=True,
            )
        # Closing and still live: ask again (the sync loop paces repeats, see ``Syncer``).
        return MirrorDecision(
            fields=refresh_fields(obj, session, node, refresh=refresh), close=phase is Phase.CLOSING
        )
    if phase in TERMINAL:
        # A Succeeded or Failed object has no live session (G1): one that shows up (a node
        # that committed the start as the last attempt timed out) is closed.
        return MirrorDecision(close=True)
    return MirrorDecision()


def gone_transition(
    obj: AgentSessionObject, status: SessionStatus, ended: EndedInfo | None, *, now: float
) -> Transition | None:
    """Succeeded when the session ended (a tombstone), Lost when its node went with it or, for
    UNKNOWN, never wrote it back within the grace; None while live."""
    if status is SessionStatus.LIVE:
        return None
    node = obj.status.node_id or "?"
    if status is SessionStatus.ENDED:
        why = ended.reason if ended is not None else "ended"
        at = ended.ended_at if ended is not None else now
        return Transition(
            Phase.SUCCEEDED,
            Reason.SESSION_ENDED,
            f"session ended on node {node}: {why}",
            fields={"endedAt": format_time(at)},
        )
    if status is SessionStatus.UNKNOWN:
        message = (
            f"the session is gone from the registry without a tombstone and node {node} never wrote it back"
        )
    else:
        message = f"node {node} stopped heartbeating and its session expired from the registry"
    return Transition(Phase.LOST, Reason.NODE_LOST, message, fields={"endedAt": format_time(now)})
