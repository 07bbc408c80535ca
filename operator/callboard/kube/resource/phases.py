"""Phases, conditions, the typed status and the status patch of one phase change (pure).

Phases (``status.phase``)::

    Pending ──► Scheduled ──► Running ──► Closing ──► Succeeded
       ▲            │            │  ▲                     ▲
       └────────────┘            ▼  │ (node back, only    │ (ended by itself)
     (rejected/timeout,        Lost ┘  lostPolicy Recover)│
      no capacity left)        Running ───────────────────┘
    Scheduled ──► Failed (every attempt rejected or unconfirmed, or an invalid spec)

With the default ``lostPolicy: Close`` a Lost object stays Lost: a session that comes back
is closed, and the ``Ready`` condition records it (``StaleSessionClosed``).

Two conditions follow the phase: ``Placed`` (a node took, or was asked to take, the
session) and ``Ready`` (the session runs). A condition's ``lastTransitionTime`` moves only
when its status changes, as the Kubernetes API conventions require.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from callboard.kube.resource.fields import int_or_none, parse_time, str_or_none

__all__ = [
    "FINISHED",
    "PLACING",
    "TERMINAL",
    "Condition",
    "ConditionType",
    "EventSpec",
    "Phase",
    "Reason",
    "Status",
    "Transition",
    "apply_transition",
    "is_noop",
]


@dataclass(frozen=True, slots=True)
class Condition:
    """A ``metav1.Condition``."""

    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }
        if self.observed_generation is not None:
            data["observedGeneration"] = self.observed_generation
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        generation = data.get("observedGeneration")
        return cls(
            type=str(data.get("type", "")),
            status=str(data.get("status", "Unknown")),
            reason=str(data.get("reason", "")),
            message=str(data.get("message", "")),
            last_transition_time=str(data.get("lastTransitionTime", "")),
            observed_generation=generation if isinstance(generation, int) else None,
        )


class Phase(StrEnum):
    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    CLOSING = "Closing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    LOST = "Lost"


#: Phases in which the placement worker owns the object (no phase yet counts too).
PLACING = frozenset({Phase.PENDING, Phase.SCHEDULED})
#: Phases after which the session never runs again: the object is kept for reading only.
TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED})
#: Phases ``ttlSecondsAfterFinished`` counts from (a Lost session may still come back
#: until the object is deleted: closed, or Running again with ``lostPolicy: Recover``).
FINISHED = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.LOST})


class ConditionType(StrEnum):
    PLACED = "Placed"
    READY = "Ready"


class Reason(StrEnum):
    """CamelCase reasons shared by Events, conditions and ``status.reason``."""

    NO_CAPACITY = "NoCapacity"
    START_REQUESTED = "StartRequested"
    STARTED = "Started"
    NODE_REJECTED = "NodeRejected"
    START_TIMEOUT = "StartTimeout"
    START_FAILED = "StartFailed"
    INVALID_SPEC = "InvalidSpec"
    ADOPTED = "Adopted"
    SESSION_ENDED = "SessionEnded"
    NODE_LOST = "NodeLost"
    RECOVERED = "Recovered"
    STALE_SESSION_CLOSED = "StaleSessionClosed"
    CLOSE_REQUESTED = "CloseRequested"
    MAX_DURATION_EXCEEDED = "MaxDurationExceeded"
    CLOSED = "Closed"
    CLOSE_TIMED_OUT = "CloseTimedOut"
    ORPHAN_CLOSED = "OrphanClosed"


@dataclass(frozen=True, slots=True)
class Status:
    """The ``status`` of an AgentSession, typed; ``raw`` keeps what the server sent."""

    phase: Phase | None = None
    session_id: str | None = None
    node_id: str | None = None
    pod_name: str | None = None
    started_at: float | None = None
    last_heartbeat_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None
    message: str | None = None
    attempts: int = 0
    attempt_started_at: float | None = None
    """When the current attempt's start request was sent: its timeout counts from here (a
    restarted operator resumes the attempt with what is left of it)."""
    request_id: str | None = None
    """The current attempt's start request, so a restarted operator can still withdraw it."""
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Status:
        try:
            phase = Phase(data["phase"]) if data.get("phase") else None
        except ValueError:
            phase = None
        conditions = data.get("conditions")
        return cls(
            phase=phase,
            session_id=str_or_none(data.get("sessionId")),
            node_id=str_or_none(data.get("nodeId")),
            pod_name=str_or_none(data.get("podName")),
            started_at=parse_time(data.get("startedAt")),
            last_heartbeat_at=parse_time(data.get("lastHeartbeatAt")),
            ended_at=parse_time(data.get("endedAt")),
            reason=str_or_none(data.get("reason")),
            message=str_or_none(data.get("message")),
            attempts=int_or_none(data.get("attempts")) or 0,
            attempt_started_at=parse_time(data.get("attemptStartedAt")),
            request_id=str_or_none(data.get("requestId")),
            observed_generation=int_or_none(data.get("observedGeneration")),
            conditions=tuple(Condition.from_dict(c) for c in conditions or () if isinstance(c, Mapping))
            if isinstance(conditions, list)
            else (),
            raw=dict(data),
        )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


#: Phases entered without an Event: Scheduled is a step, not an outcome. One placement posts
#: one Event, its outcome (Started, or a Warning per failed attempt, Failed, NoCapacity).
_SILENT_PHASES = frozenset({Phase.SCHEDULED})
#: Phases whose Event is a Warning.
_WARNING_PHASES = frozenset({Phase.FAILED, Phase.LOST})


@dataclass(frozen=True, slots=True)
class EventSpec:
    """A Kubernetes Event to post about an object."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Transition:
    """Enter (or stay in) ``phase`` for ``reason``; ``fields`` are extra status fields (camelCase)."""

    phase: Phase
    reason: str
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)


def _ready(phase: Phase) -> str:
    return "True" if phase is Phase.RUNNING else "False"


def _placed(phase: Phase) -> str | None:
    """Placed's status implied by ``phase``; None leaves the condition as it is."""
    if phase in (Phase.SCHEDULED, Phase.RUNNING):
        return "True"
    if phase in (Phase.PENDING, Phase.FAILED):
        return "False"
    return None


def _set_condition(
    conditions: list[Condition],
    *,
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: str,
    generation: int,
) -> None:
    for i, old in enumerate(conditions):
        if old.type == type_:
            since = old.last_transition_time if old.status == status and old.last_transition_time else now
            conditions[i] = Condition(type_, status, reason, message, since, generation)
            return
    conditions.append(Condition(type_, status, reason, message, now, generation))


def apply_transition(
    current: Status, transition: Transition, *, now: str, generation: int
) -> tuple[dict[str, Any], EventSpec | None]:
    """The status merge patch for ``transition`` and the Event to post (None if not a phase change,
    or the change to Scheduled).

    ``now`` is the RFC 3339 time of the change; ``generation`` the object's
    ``metadata.generation`` the decision was based on.
    """
    conditions = list(current.conditions)
    phase = transition.phase
    _set_condition(
        conditions,
        type_=ConditionType.READY,
        status=_ready(phase),
        reason=transition.reason,
        message=transition.message,
        now=now,
        generation=generation,
    )
    placed = _placed(phase)
    if placed is not None:
        _set_condition(
            conditions,
            type_=ConditionType.PLACED,
            status=placed,
            reason=transition.reason,
            message=transition.message,
            now=now,
            generation=generation,
        )
    patch: dict[str, Any] = {
        "phase": phase.value,
        "reason": transition.reason,
        "message": transition.message,
        "observedGeneration": generation,
        "conditions": [c.to_dict() for c in _ordered(conditions)],
        **transition.fields,
    }
    event = None
    if current.phase is not phase and phase not in _SILENT_PHASES:
        event = EventSpec(
            type="Warning" if phase in _WARNING_PHASES else "Normal",
            reason=transition.reason,
            message=f"{phase.value}: {transition.message}",
        )
    return patch, event


def _ordered(conditions: Sequence[Condition]) -> list[Condition]:
    order = {ConditionType.PLACED.value: 0, ConditionType.READY.value: 1}
    return sorted(conditions, key=lambda c: (order.get(c.type, 2), c.type))


def is_noop(current: Status, patch: Mapping[str, Any]) -> bool:
    """Whether applying ``patch`` would leave ``current`` as it is (nothing to send)."""
    raw = current.raw
    return all(raw.get(key) == value for key, value in patch.items())
