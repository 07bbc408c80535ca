"""The sidecar's HTTP APIs: the session API the agent app calls, and the probe API.

Two apps, on two listeners (G11):

- :func:`create_app`, the **session API**, versioned under ``/v1`` (OpenAPI at
  ``/openapi.json``, ``/docs`` to browse): register, end, metrics, start requests and the
  event stream. It listens on loopback only (the settings refuse anything else), so only the
  containers of the pod reach it; an optional bearer token guards it against the rest of the
  pod's network namespace (``kubectl port-forward``, debug containers).
- :func:`create_probe_app`, the **probe API**: ``/healthz``, ``/readyz`` and ``/metrics``,
  read-only, with no session data beyond counts, on a port that is safe to expose to the
  kubelet and Prometheus. The session API answers the same three paths for local use.

Every session route reads the ``Callboard-App-Instance`` header (one id per app process): a new
instance replaces the previous one, whose sessions are removed first (the app restarted).

Errors are JSON ``{"error", "detail"}`` with: 409 capacity, a session another node owns or a
replaced app instance,
410 a start request withdrawn, expired or taken, 503 draining or store unreachable, 422 bad
input (ids, values out of the registry's bounds, oversized bodies, non-finite numbers), 404
unknown session, 401 a missing or wrong token.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException

from callboard import __version__
from callboard._bearer import bearer_auth
from callboard._http import RequestLimits
from callboard.errors import (
    CallboardError,
    CapacityError,
    InvalidIdError,
    InvalidValueError,
    NodeDrainingError,
    SessionConflictError,
    SessionNotFoundError,
    StartRequestGoneError,
    StoreError,
)
from callboard.registry import EndReason
from callboard.sidecar.errors import (
    AppInstanceReplacedError,
    StartRequestMismatchError,
    UnknownStartRequestError,
)
from callboard.sidecar.metrics import metrics_registry
from callboard.sidecar.schemas import (
    APP_INSTANCE_HEADER,
    AppInstance,
    CallId,
    Error,
    MetricsBody,
    NodeOut,
    Probe,
    Reason,
    RegisterBody,
    RejectBody,
    RequestId,
    SessionId,
    SessionOut,
    StartRequestOut,
)
from callboard.sidecar.service import SidecarService

__all__ = ["PING_INTERVAL", "RETRY_MS", "create_app", "create_probe_app"]

#: Seconds between keep-alive comments on the event stream: well under the idle timeouts of
#: proxies and HTTP clients (typically 30-60 s), cheap for an idle loopback connection.
PING_INTERVAL = 15
#: Reconnection delay suggested to SSE clients (``retry:``), milliseconds: a restarted
#: sidecar is back in about a second, and a retry storm on loopback costs nothing.
RETRY_MS = 500

#: (status code, error classes) from the most specific; the first match wins.
_STATUS_OF: list[tuple[int, tuple[type[Exception], ...]]] = [
    (status.HTTP_503_SERVICE_UNAVAILABLE, (NodeDrainingError, StoreError)),
    (status.HTTP_409_CONFLICT, (CapacityError, SessionConflictError, AppInstanceReplacedError)),
    (status.HTTP_404_NOT_FOUND, (SessionNotFoundError, UnknownStartRequestError)),
    (status.HTTP_410_GONE, (StartRequestGoneError,)),
    (status.HTTP_422_UNPROCESSABLE_CONTENT, (InvalidIdError, InvalidValueError, StartRequestMismatchError)),
]
_ERRORS: dict[int | str, dict[str, object]] = {code: {"model": Error} for code in (404, 409, 410, 422, 503)}
#: OpenAPI links from a registration to what the app does next with the session: clients and
#: stateful fuzzers (schemathesis) follow them from the ids in the answer.
_SESSION_LINKS = {
    name: {
        "operationId": name,
        "parameters": {"call_id": "$response.body#/call_id", "session_id": "$response.body#/session_id"},
    }
    for name in ("get_session", "update_metrics", "end_session")
}
_UNAUTHORIZED: dict[int | str, dict[str, object]] = {
    401: {"model": Error, "description": "Missing or invalid bearer token"}
}


def _limit_error(detail: str) -> dict[str, object]:
    return Error(error="RequestRejected", detail=detail).model_dump()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's and FastAPI's own errors in the sidecar's error shape.

    A body that cannot be parsed (not UTF-8, not JSON) is Starlette's 400; it is answered 422
    like every other bad input of this API, so an app has one status for "fix the request".
    """
    assert isinstance(exc, StarletteHTTPException)
    code = 422 if exc.status_code == 400 else exc.status_code
    error = {401: "Unauthorized", 422: "ValidationError"}.get(code, "HTTPError")
    return JSONResponse(
        Error(error=error, detail=str(exc.detail)).model_dump(),
        status_code=code,
        headers=exc.headers,
    )


def _error_response(exc: CallboardError) -> JSONResponse:
    code = next((code for code, kinds in _STATUS_OF if isinstance(exc, kinds)), 500)
    headers = {"Retry-After": "1"} if isinstance(exc, StoreError) else None
    return JSONResponse(
        Error(error=type(exc).__name__, detail=str(exc)).model_dump(), status_code=code, headers=headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 in the sidecar's documented error shape, one line per problem."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors()
    )
    return JSONResponse(
        Error(error="ValidationError", detail=problems or "invalid request").model_dump(), status_code=422
    )


def create_app(service: SidecarService, *, token: str | None = None) -> FastAPI:
    """The session API of ``service``, with its own metrics registry; no state outside the two.

    With ``token``, every route except the probes needs ``Authorization: Bearer <token>``.
    """
    app = FastAPI(
        title="callboard sidecar",
        version=__version__,
        summary="The local API of an agent pod: register and end sessions, follow the event stream.",
    )
    app.add_middleware(
        RequestLimits, max_body_bytes=service.settings.api.max_body_bytes, error_body=_limit_error
    )
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(CallboardError)
    async def callboard_error(request: Request, exc: CallboardError) -> JSONResponse:
        return _error_response(exc)

    _add_probes(app, service)
    protected: dict[str, Any] = {}
    if token is not None:
        protected = {
            "dependencies": [Depends(bearer_auth(token, what="The sidecar's API token"))],
            "responses": _UNAUTHORIZED,
        }
    app.include_router(_session_routes(service), **protected)
    return app


def create_probe_app(service: SidecarService) -> FastAPI:
    """``/healthz``, ``/readyz`` and ``/metrics`` of ``service``: what may be exposed beyond the pod.

    Read-only and without session data: the probes say ok or why not, the metrics are counts
    labelled by node and pool. No OpenAPI document or docs page, and every other path is a
    404, so a scan of the port learns nothing about the session API.
    """
    app = FastAPI(
        title="callboard sidecar probes",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(RequestLimits, max_body_bytes=0, error_body=_limit_error)
    _add_probes(app, service)
    return app


async def _instance_header(
    instance: Annotated[
        AppInstance | None,
        Header(
            alias=APP_INSTANCE_HEADER,
            description="The app process calling (one id per process): a new one means the "
            "app restarted, and the previous instance's sessions are removed first.",
        ),
    ] = None,
) -> str | None:
    """The ``Callboard-App-Instance`` header of a request (validated like an id)."""
    return instance


def _session_routes(service: SidecarService) -> APIRouter:
    async def app_instance(instance: Annotated[str | None, Depends(_instance_header)]) -> None:
        if instance is not None:
            await service.app_instance(instance)

    router = APIRouter(
        dependencies=[Depends(app_instance)],
        responses={
            409: {
                "model": Error,
                "description": "Capacity, another node's session, or a replaced app instance",
            },
            422: {"model": Error, "description": "Bad input (here at least: the app instance header)"},
        },
    )

    @router.post(
        "/v1/sessions",
        response_model=SessionOut,
        status_code=status.HTTP_201_CREATED,
        responses={
            200: {
                "model": SessionOut,
                "description": "This node already had the session.",
                "links": _SESSION_LINKS,
            },
            201: {"description": "Registered.", "links": _SESSION_LINKS},
            **_ERRORS,
        },
        tags=["sessions"],
        operation_id="register_session",
    )
    async def register_session(
        body: RegisterBody, response: Response, instance: Annotated[str | None, Depends(_instance_header)]
    ) -> SessionOut:
        """Register a session: 201 when new, 200 when this node already has it (idempotent).

        409 at capacity, 503 while draining, 422 for a bad id. With ``start_request_id`` the
        start request is accepted (or answered as rejected when refused). With ``restore`` a
        session the app already runs is re-asserted after a sidecar restart.
        """
        info, created = await service.register(
            body.call_id,
            body.session_id,
            metrics=body.metrics,
            restore=body.restore,
            started_at=body.started_at,
            start_request_id=body.start_request_id,
            max_sessions_per_call=body.max_sessions_per_call,
            instance=instance,
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        return SessionOut.of(service.session(info.call_id, info.session_id))

    @router.get("/v1/sessions", response_model=list[SessionOut], tags=["sessions"])
    async def list_sessions() -> list[SessionOut]:
        """This node's live sessions."""
        return [SessionOut.of(view) for view in service.sessions()]

    @router.get(
        "/v1/calls/{call_id}/sessions/{session_id}",
        response_model=SessionOut,
        operation_id="get_session",
        responses=_ERRORS,
        tags=["sessions"],
    )
    async def get_session(
        call_id: Annotated[CallId, Path()], session_id: Annotated[SessionId, Path()]
    ) -> SessionOut:
        """One session of this node."""
        return SessionOut.of(service.session(call_id, session_id))

    @router.put(
        "/v1/calls/{call_id}/sessions/{session_id}/metrics",
        response_model=SessionOut,
        operation_id="update_metrics",
        responses=_ERRORS,
        tags=["sessions"],
    )
    async def update_metrics(
        call_id: Annotated[CallId, Path()], session_id: Annotated[SessionId, Path()], body: MetricsBody
    ) -> SessionOut:
        """Replace a session's metrics (shown cluster-wide, e.g. by ``callboard sessions``)."""
        await service.update_metrics(call_id, session_id, body.metrics)
        return SessionOut.of(service.session(call_id, session_id))

    @router.delete(
        "/v1/calls/{call_id}/sessions/{session_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        operation_id="end_session",
        responses=_ERRORS,
        tags=["sessions"],
    )
    async def end_session(
        call_id: Annotated[CallId, Path()],
        session_id: Annotated[SessionId, Path()],
        reason: Annotated[
            Reason, Query(description="Why it ended; kept in the session's tombstone.")
        ] = EndReason.FINISHED.value,
    ) -> Response:
        """End a session: it leaves the registry; a short tombstone keeps ``reason``. 404 if unknown."""
        await service.end(call_id, session_id, reason=reason)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get("/v1/start-requests", response_model=list[StartRequestOut], tags=["start requests"])
    async def list_start_requests() -> list[StartRequestOut]:
        """Start requests not answered yet (also sent as ``start_requested`` events)."""
        return [StartRequestOut.model_validate(r, from_attributes=True) for r in service.start_requests()]

    @router.post(
        "/v1/start-requests/{request_id}/reject",
        response_model=StartRequestOut,
        responses=_ERRORS,
        tags=["start requests"],
    )
    async def reject_start(request_id: Annotated[RequestId, Path()], body: RejectBody) -> StartRequestOut:
        """Reject a start request with a reason (to accept one, register its session)."""
        request = await service.reject_start(request_id, reason=body.reason)
        return StartRequestOut.model_validate(request, from_attributes=True)

    @router.get("/v1/node", response_model=NodeOut, tags=["node"])
    async def node_status() -> NodeOut:
        """This node: identity, capacity, sessions, draining, connection, app health, stream."""
        return NodeOut.of(service.status())

    @router.get(
        "/v1/events",
        tags=["events"],
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}},
    )
    async def events(
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
        since: Annotated[
            str | None, Query(alias="last_event_id", description="Same as the Last-Event-ID header.")
        ] = None,
    ) -> EventSourceResponse:
        """The app's event stream (Server-Sent Events): close_requested, start_requested, drain,
        registry_lost.

        Each event has ``event:`` (its type), ``id:`` and ``data:`` (a JSON object that repeats
        the type). Reconnect with ``Last-Event-ID`` to get what was missed; when that is no
        longer possible (or on a first connection) the stream starts with the events that
        restate the current state (pending close and start requests, drain, a registry
        outage longer than the TTL), without ids.
        """

        async def stream() -> AsyncIterator[ServerSentEvent]:
            yield ServerSentEvent(comment=f"callboard sidecar {service.registry.node_id}", retry=RETRY_MS)
            async with contextlib.aclosing(service.events.follow(last_event_id or since)) as follow:
                async for event in follow:
                    yield ServerSentEvent(
                        data=json.dumps(event.payload(), separators=(",", ":")),
                        event=event.type.value,
                        id=None if event.id is None else str(event.id),
                    )

        return EventSourceResponse(
            stream(), ping=PING_INTERVAL, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    return router


def _add_probes(app: FastAPI, service: SidecarService) -> None:
    metrics = metrics_registry(service)

    @app.get("/healthz", response_model=Probe, tags=["probes"], responses={503: {"model": Probe}})
    async def healthz() -> JSONResponse:
        """Liveness: the sidecar's loops run. A store outage does not fail it (restarting won't help)."""
        if service.healthy:
            return JSONResponse(Probe(status="ok").model_dump())
        return JSONResponse(Probe(status="unavailable", reason="a background loop stopped").model_dump(), 503)

    @app.get("/readyz", response_model=Probe, tags=["probes"], responses={503: {"model": Probe}})
    async def readyz() -> JSONResponse:
        """Readiness: connected, heartbeat fresh, app healthy, not draining."""
        ready, reason = service.ready()
        probe = Probe(status="ok" if ready else "unavailable", reason=None if ready else reason)
        return JSONResponse(probe.model_dump(), status_code=200 if ready else 503)

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics of this sidecar (text exposition format)."""
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)
