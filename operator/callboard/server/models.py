"""Request and response bodies of the node HTTP API (pydantic, published in the OpenAPI).

The session shapes are a superset of the documented Vision Agents ones: same field names
(``session_id``, ``call_id``, ``session_started_at``...), plus ``node_id`` (which node runs
the session) and a few more. Times are ISO 8601 in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from callboard.registry import MAX_ID_LENGTH, NodeInfo, SessionInfo

__all__ = [
    "ID_PATTERN",
    "CloseSessionResponse",
    "ErrorResponse",
    "HealthResponse",
    "Id",
    "NodeList",
    "NodeResponse",
    "ReadyResponse",
    "SessionList",
    "SessionMetricsResponse",
    "SessionResponse",
    "StartSessionRequest",
    "StartSessionResponse",
    "utc",
]

#: The registry's id rule (see :mod:`callboard.registry.ids`), so bad ids are a 422 at the door.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]


def utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


class ErrorResponse(BaseModel):
    """Every error except request validation (422), which has FastAPI's list shape."""

    detail: str


class StartSessionRequest(BaseModel):
    """Body of ``POST /calls/{call_id}/sessions`` (optional: every field has a default)."""

    call_type: Id = Field(default="default", description="Type of the call to join")


class StartSessionResponse(BaseModel):
    session_id: str = Field(description="The id of the new agent session")
    call_id: str
    call_type: str
    node_id: str = Field(description="The node that runs the session (this one)")
    session_started_at: datetime


class SessionResponse(BaseModel):
    """A session of any node, as the registry knows it."""

    session_id: str
    call_id: str
    node_id: str = Field(description="The node that runs the session")
    session_started_at: datetime
    metrics_updated_at: datetime | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    local: bool = Field(description="Whether the answering node runs it")

    @classmethod
    def of(cls, info: SessionInfo, *, this_node: str) -> SessionResponse:
        return cls(
            session_id=info.session_id,
            call_id=info.call_id,
            node_id=info.node_id,
            session_started_at=datetime.fromtimestamp(info.started_at, tz=UTC),
            metrics_updated_at=utc(info.metrics_updated_at),
            metrics=info.metrics,
            local=info.node_id == this_node,
        )


class SessionList(BaseModel):
    items: list[SessionResponse]
    total: int = Field(description="Sessions matching the filter, on every page")
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last one")


class SessionPageResponse(BaseModel):
    """A page of ``GET /sessions``: bounded in cost, walked with ``next`` (see the README)."""

    items: list[SessionResponse]
    limit: int
    next: str | None = Field(
        description="Cursor of the next page (pass it as `cursor`); null on the last page. "
        "A page may hold fewer than `limit` sessions and still have a next one."
    )


class SessionMetricsResponse(BaseModel):
    """Documented Vision Agents metrics shape, plus ``node_id``."""

    session_id: str
    call_id: str
    node_id: str
    metrics: dict[str, Any]
    session_started_at: datetime
    metrics_generated_at: datetime | None = Field(
        description="When the metrics were produced; null if the agent reported none yet"
    )


class CloseSessionResponse(BaseModel):
    session_id: str
    call_id: str
    node_id: str = Field(description="The node that runs (ran) the session")
    status: Literal["closing", "close_requested"] = Field(
        description="closing: this node is closing it now; close_requested: its node was told"
    )


class NodeResponse(BaseModel):
    node_id: str
    address: str | None
    capacity: int | None = Field(description="Max concurrent sessions; null is unlimited")
    active: int
    free_slots: int | None = Field(description="Sessions it can still take; null is unlimited")
    draining: bool
    pool: str | None
    pod_name: str | None
    namespace: str | None
    version: str | None
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_seconds: float

    @classmethod
    def of(cls, node: NodeInfo, *, now: float) -> NodeResponse:
        return cls(
            node_id=node.node_id,
            address=node.address,
            capacity=node.capacity,
            active=node.active,
            free_slots=node.free_slots,
            draining=node.draining,
            pool=node.pool,
            pod_name=node.pod_name,
            namespace=node.namespace,
            version=node.version,
            started_at=datetime.fromtimestamp(node.started_at, tz=UTC),
            heartbeat_at=datetime.fromtimestamp(node.heartbeat_at, tz=UTC),
            heartbeat_age_seconds=round(max(now - node.heartbeat_at, 0.0), 3),
        )


class NodeList(BaseModel):
    items: list[NodeResponse]
    total: int


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    node_id: str
    version: str


class ReadyResponse(BaseModel):
    status: Literal["ready", "draining", "registry unreachable", "not running"]
    node_id: str
    active_sessions: int
    capacity: int | None
