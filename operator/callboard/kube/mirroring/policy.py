"""What the sync loop should do about one object, given a registry snapshot (pure).

The placer owns objects until they run; from then on :func:`decide_mirror` compares each object
with the registry and returns a :class:`MirrorDecision`: a phase change, a status refresh, a
close request (``maxDurationSeconds``, a session that runs although its object is Succeeded
or Failed, or one that came back after its object went Lost, see ``spec.lostPolicy``), a
delete (``ttlSecondsAfterFinished``), or a question the snapshot cannot answer (the session
vanished: ended or lost?).

Liveness stays out of the status: heartbeat times and metrics change every few seconds and
live in the registry and in Prometheus. Writing them into every object would cost one etcd
revision and one watch event per object and refresh (~150 writes/s at 10,000 objects), so
the status changes only when something a reader acts on changes (phase, node, pod).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from callboard.kube.resource.fields import format_time
from callboard.kube.resource.objects import AgentSessionObject, LostPolicy
from callboard.kube.resource.phases import FINISHED, TERMINAL, Phase, Reason, Transition
from callboard.kube.views.registry_snapshot import Snapshot
from callboard.registry import EndedInfo, NodeInfo, SessionInfo, SessionStatus

__all__ = ["MirrorDecision", "decide_mirror", "gone_transition", "refresh_fields"]

#: Status fields older operators refreshed with every heartbeat: removed once (a stale beat
#: in the status would look like liveness), never written again.
LEGACY_LIVENESS_FIELDS = ("lastHeartbeatAt", "metrics", "metricsUpdatedAt")


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


def refresh_fields(obj: AgentSessionObject, session: SessionInfo, node: NodeInfo | None) -> dict[str, Any]:
    """Status fields that mirror where the session runs, when they changed (no liveness)."""
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
    for name in LEGACY_LIVENESS_FIELDS:
        if name in obj.status.raw:
            fields[name] = None
    return fields


def decide_mirror(obj: AgentSessionObject, snap: Snapshot, *, now: float) -> MirrorDecision:
    """The sync loop's decision for an object the placer does not own and nobody deletes.

    A spec edit that changes nothing else still gets its ``observedGeneration`` written.
    """
    decision = _decide(obj, snap, now=now)
    if decision.empty and obj.status.phase is not None and obj.status.observed_generation != obj.generation:
        return MirrorDecision(fields={"observedGeneration": obj.generation})
    return decision


def _decide(obj: AgentSessionObject, snap: Snapshot, *, now: float) -> MirrorDecision:
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
                fields=refresh_fields(obj, session, node) | {"endedAt": None},
            )
        )
    if phase is Phase.LOST:
        return _back_from_lost(obj, session, node, snap)
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
        return MirrorDecision(fields=refresh_fields(obj, session, node), close=phase is Phase.CLOSING)
    if phase in TERMINAL:
        # A Succeeded or Failed object has no live session (G1): one that shows up (a node
        # that committed the start as the last attempt timed out) is closed.
        return MirrorDecision(close=True)
    return MirrorDecision()


def _back_from_lost(
    obj: AgentSessionObject, session: SessionInfo, node: NodeInfo | None, snap: Snapshot
) -> MirrorDecision:
    """The session of a Lost object is live again (its node reconnected after the TTL).

    The phase never moves backwards unless ``spec.lostPolicy`` is ``Recover``; a session of
    the same call that started after the loss is a replacement, and then the stale copy is
    closed whatever the policy (two agents would talk over each other). The conditions say
    which happened.
    """
    replacement = _replacement(obj, session, snap)
    if obj.spec.lost_policy is LostPolicy.RECOVER and replacement is None:
        return MirrorDecision(
            transition=Transition(
                Phase.RUNNING,
                Reason.RECOVERED,
                f"session is back on node {session.node_id}",
                fields=refresh_fields(obj, session, node) | {"endedAt": None},
            )
        )
    if replacement is not None:
        why = f"session {replacement.session_id} of the call started after the loss"
    else:
        why = f"lostPolicy {obj.spec.lost_policy.value}"
    return MirrorDecision(
        transition=Transition(
            Phase.LOST,
            Reason.STALE_SESSION_CLOSED,
            f"session came back on node {session.node_id} after it was lost: close requested ({why})",
        ),
        close=True,
    )


def _replacement(obj: AgentSessionObject, session: SessionInfo, snap: Snapshot) -> SessionInfo | None:
    """Another live session of the same call that started after ``obj`` went Lost, if any."""
    lost_at = obj.status.ended_at
    if lost_at is None:
        return None
    later = [
        s
        for s in snap.of_call(session.call_id)
        if s.session_id != session.session_id and s.started_at > lost_at
    ]
    return min(later, key=lambda s: (s.started_at, s.session_id)) if later else None


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
