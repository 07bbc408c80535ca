"""Records stored in the registry: what a session and a node look like on the wire.

``SessionInfo`` is the documented Vision Agents record; its JSON must stay readable by
Vision Agents nodes, so it carries exactly the documented fields. Readers here ignore
unknown fields (a newer writer may add some) and raise ``TypeError`` when a required one is
missing, like a dataclass constructor does.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from callboard.errors import MalformedRecordError
from callboard.registry.bounds import is_timestamp

__all__ = [
    "EndReason",
    "EndedInfo",
    "FleetMode",
    "NodeInfo",
    "SessionInfo",
    "SessionStatus",
    "StartClaim",
    "StartRejection",
    "StartRequest",
    "StartResult",
    "decode_or_none",
]

_T = TypeVar("_T")
_R = TypeVar("_R")


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _decode(data: bytes | str | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if isinstance(data, Mapping):
        return data
    try:
        decoded = json.loads(data, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRecordError(f"{what} record is not valid JSON: {exc}") from exc
    if not isinstance(decoded, dict):
        raise MalformedRecordError(f"{what} record is a JSON {type(decoded).__name__}, not an object")
    return decoded


def _known_fields(cls: type[_T], data: Mapping[str, Any]) -> _T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


def _encode(obj: object) -> bytes:
    return json.dumps(dataclasses.asdict(obj), separators=(",", ":")).encode()  # type: ignore[call-overload]


def decode_or_none(
    decode: Callable[[bytes], _R],
    raw: bytes | None,
    *,
    on_error: Callable[[Exception], None] | None = None,
) -> _R | None:
    """``decode(raw)``, or None when ``raw`` is None or malformed (``on_error`` hears why).

    A record another writer garbled must never crash a reader (G12): it reads as absent.
    """
    if raw is None:
        return None
    try:
        return decode(raw)
    except (TypeError, ValueError, LookupError) as exc:  # MalformedRecordError is a ValueError
        if on_error is not None:
            on_error(exc)
        return None


@dataclass(slots=True)
class SessionInfo:
    """One agent session as the registry knows it (the documented Vision Agents record)."""

    session_id: str
    call_id: str
    node_id: str
    started_at: float
    """Unix time, seconds."""
    metrics_updated_at: float | None = None
    """Unix time of the last :meth:`SessionRegistry.update_metrics`, seconds."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON metrics reported by the agent (latency, tokens...)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> bytes:
        return _encode(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionInfo:
        """Build from a mapping, ignoring unknown keys; ``TypeError`` if a required one is missing."""
        return _known_fields(cls, data)

    @classmethod
    def from_json(cls, data: bytes | str) -> SessionInfo:
        """Decode a stored record; ``MalformedRecordError`` or ``TypeError`` when it is bad."""
        info = cls.from_dict(_decode(data, "session"))
        if not isinstance(info.session_id, str) or not isinstance(info.call_id, str):
            raise MalformedRecordError("session record has non-string ids")
        if not isinstance(info.metrics, dict):
            raise MalformedRecordError("session record has non-object metrics")
        if not is_timestamp(info.started_at):
            raise MalformedRecordError(f"session record has a bad started_at: {info.started_at!r}")
        if info.metrics_updated_at is not None and not is_timestamp(info.metrics_updated_at):
            raise MalformedRecordError(
                f"session record has a bad metrics_updated_at: {info.metrics_updated_at!r}"
            )
        return info


@dataclass(slots=True)
class NodeInfo:
    """A node (agent server process or pod) as published by its heartbeat. callboard only."""

    node_id: str
    capacity: int | None = None
    """Maximum concurrent sessions, None when unlimited."""
    active: int = 0
    """Live sessions at the last heartbeat."""
    draining: bool = False
    address: str | None = None
    """Where the node's HTTP API (or sidecar) answers, e.g. ``http://10.0.0.7:8080``."""
    pool: str | None = None
    pod_name: str | None = None
    namespace: str | None = None
    version: str | None = None
    started_at: float = field(default_factory=time.time)
    heartbeat_at: float = field(default_factory=time.time)

    @property
    def free_slots(self) -> int | None:
        """Sessions the node can still take; None when unlimited, 0 when draining."""
        if self.draining:
            return 0
        if self.capacity is None:
            return None
        return max(self.capacity - self.active, 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> bytes:
        return _encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> NodeInfo:
        """Decode a stored record; ``MalformedRecordError`` or ``TypeError`` when it is bad."""
        node = _known_fields(cls, _decode(data, "node"))
        if not (is_timestamp(node.started_at) and is_timestamp(node.heartbeat_at)):
            raise MalformedRecordError("node record has a bad started_at or heartbeat_at")
        return node


@dataclass(slots=True)
class EndedInfo:
    """Tombstone left for a while when a session ends, so "ended" is not taken for "lost"."""

    session_id: str
    call_id: str
    node_id: str
    ended_at: float
    reason: str = "closed"
    """Normally an :class:`EndReason`; an app's own words when it ended the session itself."""

    def to_json(self) -> bytes:
        return _encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> EndedInfo:
        return _known_fields(cls, _decode(data, "ended"))


@dataclass(slots=True)
class StartRequest:
    """A request, sent through the registry (by the operator), that a node start a session.

    The requester chooses ``session_id`` so it can follow the session before it exists.
    A node claims the request (:meth:`SessionRegistry.claim_start`), commits it just before
    it registers the session (:meth:`SessionRegistry.commit_start`), and answers with
    :meth:`SessionRegistry.answer_start`. The request expires ``expires_at``: the store drops
    it then, and neither a claim nor a commit succeeds after that or after the requester
    withdrew it (:meth:`SessionRegistry.withdraw_start`).
    """

    request_id: str
    node_id: str
    call_id: str
    session_id: str
    call_type: str = "default"
    params: dict[str, Any] = field(default_factory=dict)
    requested_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    """Unix time after which no node may accept it (the requester's start timeout). The
    store's key expiry enforces it; this copy tells an app how long it has. None on
    requests from older requesters (they live one registry TTL)."""
    fencing_token: int | None = None
    """Reserved for the requester's fencing token (the leader's lease transitions), so a
    node can refuse a deposed leader's request. Not sent or checked yet."""

    def to_json(self) -> bytes:
        return _encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> StartRequest:
        return _known_fields(cls, _decode(data, "start request"))


@dataclass(slots=True)
class StartResult:
    """A node's answer to a :class:`StartRequest`."""

    request_id: str
    node_id: str
    accepted: bool
    session_id: str | None = None
    reason: str | None = None
    """Why not, when rejected: a :class:`StartRejection`, optionally followed by ``": detail"``
    (``"invalid: call_id must not be empty"``), or an app's own words (sidecar)."""
    answered_at: float = field(default_factory=time.time)

    def to_json(self) -> bytes:
        return _encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> StartResult:
        return _known_fields(cls, _decode(data, "start result"))


class StartClaim(StrEnum):
    """Where a start request stands for the node (or requester) that asks.

    The answer of :meth:`SessionRegistry.claim_start`, :meth:`~SessionRegistry.commit_start`
    and :meth:`~SessionRegistry.withdraw_start`. A node starts a session only after a commit
    answered :attr:`STARTED`.
    """

    CLAIMED = "claimed"
    """This node holds the claim: it may prepare the session, then commit."""
    STARTED = "started"
    """Committed (by this node, for claim and commit; by some node, for a withdrawal): the
    session starts and the request can no longer be withdrawn."""
    TAKEN = "taken"
    """Another node (or another process with this node id) claimed it first."""
    WITHDRAWN = "withdrawn"
    """The requester cancelled it: nobody may start it."""
    EXPIRED = "expired"
    """It passed its expiry (or was answered and removed): nobody may start it."""


class SessionStatus(StrEnum):
    """What became of a session, as far as the registry can tell."""

    LIVE = "live"
    """Its record is in the registry."""
    ENDED = "ended"
    """Its node said it ended: a tombstone says so (and why). Nothing else means ended."""
    LOST = "lost"
    """Its record is gone and so is its node record: the node died or was cut off."""
    UNKNOWN = "unknown"
    """Its record is gone, with no tombstone, and its node is alive or not known: the store
    may have lost it (flush, failover, eviction) and the node's next heartbeat writes it
    back, or it was a foreign node's session. Not an end: ask again later."""


class FleetMode(StrEnum):
    """Who writes sessions to the store, as far as per-call reads and limits need to know.

    Sessions written by Vision Agents nodes with their own Redis client are in no index, so
    finding them by call takes a scan of the call's keys (O(key space), as Vision Agents
    does it). The mode says when to pay that.
    """

    AUTO = "auto"
    """Scan unless the cluster's one foreign scan found no foreign session (its marker)."""
    CALLBOARD_ONLY = "callboard_only"
    """Declared: only callboard nodes (or Vision Agents on callboard's store) write; never
    scan, and no foreign scan runs."""
    MIXED = "mixed"
    """Declared: Vision Agents nodes write with their own client; always scan (G5 at once)."""


class EndReason(StrEnum):
    """Why a session ended: the ``reason`` of its tombstone, the same from every runtime.

    The launcher and the sidecar write these; a sidecar app that ends a session itself may
    give its own words instead. The sidecar's ``close_requested`` event carries the reason
    the session is about to end with.
    """

    FINISHED = "finished"
    """The agent's work returned: the call is over (launcher: ``join_call`` returned)."""
    FAILED = "failed"
    """The agent's work raised."""
    CLOSED = "closed"
    """Closed on its own node (API, CLI, or the sidecar app's ``DELETE``)."""
    CLOSE_REQUESTED = "close_requested"
    """A close request from another node (pushed, or polled as the fallback)."""
    IDLE = "idle"
    """The agent was alone on the call for the idle timeout."""
    MAX_DURATION = "max_duration"
    """The session ran for its maximum duration."""
    DRAIN_TIMEOUT = "drain_timeout"
    """The node drained and the session outlived the grace period."""
    DRAIN = "drain_timeout"
    """Alias of :attr:`DRAIN_TIMEOUT` (the launcher's former name)."""
    STOPPED = "stopped"
    """The runtime stopped."""
    CANCELLED = "cancelled"
    """Someone cancelled the session's task directly."""
    APP_UNHEALTHY = "app_unhealthy"
    """The sidecar found its app dead (health probes, or no stream consumer) and removed it."""
    APP_RESTARTED = "app_restarted"
    """The sidecar saw a new instance of its app (``Callboard-App-Instance``): the sessions of
    the previous instance died with it and were removed."""


class StartRejection(StrEnum):
    """Why a node rejected a start request: the ``reason`` of its :class:`StartResult`.

    The operator reads these (and places the session elsewhere); both node runtimes give
    them, from the one admission check in :mod:`callboard.registry.admission`.
    """

    CAPACITY = "capacity"
    """The node runs as many sessions as it may (``max_concurrent_sessions`` / capacity)."""
    AT_CAPACITY = "capacity"
    """Alias of :attr:`CAPACITY` (the launcher's former name)."""
    CALL_LIMIT = "call_limit"
    """The call has ``max_sessions_per_call`` sessions across all nodes."""
    DRAINING = "draining"
    """The node is draining and takes no new sessions."""
    INVALID = "invalid"
    """The request cannot be served as given (a bad id); followed by ``": detail"``."""
    FAILED = "start_failed"
    """The agent failed to start; followed by ``": detail"``."""
