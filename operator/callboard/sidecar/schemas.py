"""Request and response bodies of the local API (they make its OpenAPI schema).

Ids are checked with the registry's own :func:`~callboard.registry.validate_id`, so an id the
registry would refuse is a 422 at the door, with the reason, and never reaches the store.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from callboard.registry import MAX_ID_LENGTH, validate_id
from callboard.sidecar.status import NodeStatus, SessionView

__all__ = [
    "APP_INSTANCE_HEADER",
    "AppInstance",
    "CallId",
    "Error",
    "MetricsBody",
    "NodeOut",
    "Probe",
    "Reason",
    "RegisterBody",
    "RejectBody",
    "RequestId",
    "SessionId",
    "SessionOut",
    "StartRequestOut",
]

#: The registry's id rule as JSON Schema, so the OpenAPI document says what an id may be (a
#: client or a fuzzer that follows the document is never refused); the validator below gives
#: the registry's own message. Same rule as :func:`~callboard.registry.validate_id`.
_ID_SCHEMA = {"minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"}
CallId = Annotated[
    str,
    AfterValidator(partial(validate_id, kind="call_id")),
    WithJsonSchema({"type": "string", **_ID_SCHEMA}),
]
SessionId = Annotated[
    str,
    AfterValidator(partial(validate_id, kind="session_id")),
    WithJsonSchema({"type": "string", **_ID_SCHEMA}),
]
RequestId = Annotated[
    str,
    AfterValidator(partial(validate_id, kind="request_id")),
    WithJsonSchema({"type": "string", **_ID_SCHEMA}),
]
#: The request header that names the app instance (one id per app process): a new one tells
#: the sidecar that its app restarted (:meth:`~callboard.sidecar.service.SidecarService.app_instance`).
APP_INSTANCE_HEADER = "Callboard-App-Instance"
AppInstance = Annotated[
    str,
    AfterValidator(partial(validate_id, kind="app instance")),
    WithJsonSchema({"type": "string", **_ID_SCHEMA}),
]
#: Why a session ended or a start was rejected; kept short, it is stored in a tombstone.
Reason = Annotated[str, Field(min_length=1, max_length=200)]


class RegisterBody(BaseModel):
    """Register a session of this node (or re-assert one after a sidecar restart)."""

    # session_id, or a start request that names it: said in the schema too. Strict: a JSON
    # `false` is not a start time nor `1` a flag (the schema says so, the fuzz checks it).
    model_config = ConfigDict(
        strict=True,
        json_schema_extra={"anyOf": [{"required": ["session_id"]}, {"required": ["start_request_id"]}]},
    )

    call_id: CallId
    session_id: SessionId | None = Field(
        default=None, description="Required, unless start_request_id names the session to start."
    )
    metrics: dict[str, Any] | None = Field(
        default=None, description="Initial metrics (free-form JSON object)."
    )
    start_request_id: RequestId | None = Field(
        default=None, description="Accept this start request (from a start_requested event)."
    )
    restore: bool = Field(
        default=False,
        description="Re-assert a session the app already runs: accepted even when draining or full.",
    )
    started_at: float | None = Field(
        default=None, description="With restore: the original start, Unix seconds."
    )
    max_sessions_per_call: int | None = Field(
        default=None,
        ge=1,
        description="Refuse (409) if the call already has this many sessions cluster-wide.",
    )


class MetricsBody(BaseModel):
    metrics: dict[str, Any] = Field(description="Replaces the session's metrics (free-form JSON object).")


class RejectBody(BaseModel):
    reason: Reason


class SessionOut(BaseModel):
    session_id: str
    call_id: str
    node_id: str
    started_at: float
    metrics_updated_at: float | None
    metrics: dict[str, Any]
    close_requested: bool = Field(description="A close was requested and the session has not ended yet.")

    @classmethod
    def of(cls, view: SessionView) -> SessionOut:
        return cls(**view.info.to_dict(), close_requested=view.close_requested)


class StartRequestOut(BaseModel):
    request_id: str
    call_id: str
    session_id: str
    call_type: str
    params: dict[str, Any]
    requested_at: float
    expires_at: float | None = Field(
        default=None, description="Unix time after which the start request can no longer be accepted."
    )


class NodeOut(BaseModel):
    node_id: str
    pod_name: str | None
    namespace: str | None
    pool: str | None
    capacity: int
    active: int
    draining: bool
    drain_deadline: float | None = Field(description="Unix time the drain ends, once draining.")
    connected: bool = Field(description="Connected to the registry store.")
    last_heartbeat_at: float | None
    app_healthy: bool
    event_consumers: int
    last_event_id: int
    pending_start_requests: int
    version: str

    @classmethod
    def of(cls, status: NodeStatus) -> NodeOut:
        return cls(**{name: getattr(status, name) for name in cls.model_fields})


class Probe(BaseModel):
    status: Literal["ok", "unavailable"]
    reason: str | None = None


class Error(BaseModel):
    error: str = Field(description="The callboard error class, e.g. MaxConcurrentSessionsExceeded.")
    detail: str
