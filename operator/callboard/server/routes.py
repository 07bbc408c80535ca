"""The routes of the node HTTP API, bound to one launcher (no module-level state).

Documented Vision Agents routes, same paths and statuses, plus cluster-wide listings:

| method | path | answer |
| --- | --- | --- |
| POST | ``/calls/{call_id}/sessions`` | 201: a session starts on this node |
| GET | ``/calls/{call_id}/sessions`` | the call's sessions on every node |
| GET | ``/calls/{call_id}/sessions/{session_id}`` | one session of any node |
| DELETE | ``/calls/{call_id}/sessions/{session_id}`` | 202: closed here at once, or its node is told |
| POST | ``/calls/{call_id}/sessions/{session_id}/close`` | 202: same, for ``sendBeacon`` |
| GET | ``/calls/{call_id}/sessions/{session_id}/metrics`` | the agent's metrics |
| GET | ``/sessions`` | every session (filter by call or node; pages by cursor) |
| GET | ``/nodes`` | every live node |
| GET | ``/health``, ``/ready`` | liveness; readiness (503 draining / registry down) |
| GET | ``/metrics`` | Prometheus |
"""

# No ``from __future__ import annotations`` here: FastAPI reads these annotations at run
# time, and some (the page-size limit) are built from the settings inside a function.

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from fastapi.responses import JSONResponse

from callboard import __version__
from callboard.errors import InvalidValueError, SessionNotFoundError, StoreError
from callboard.launcher import AgentLauncher
from callboard.registry import MAX_ID_LENGTH, SessionInfo
from callboard.registry.paging import MAX_CURSOR_LENGTH
from callboard.server import hooks
from callboard.server.metrics import CONTENT_TYPE_LATEST, NodeMetrics
from callboard.server.models import (
    ID_PATTERN,
    CloseSessionResponse,
    ErrorResponse,
    HealthResponse,
    NodeList,
    NodeResponse,
    ReadyResponse,
    SessionList,
    SessionMetricsResponse,
    SessionPageResponse,
    SessionResponse,
    StartSessionRequest,
    StartSessionResponse,
    utc,
)
from callboard.server.settings import ServerSettings

__all__ = ["api_routes", "probe_routes"]

CallId = Annotated[
    str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description="Call id")
]
SessionId = Annotated[
    str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description="Session id")
]
CallFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description="Only this call"),
]
NodeFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description="Only this node"),
]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Sessions to skip")]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Where the page starts: the last page's `next` (omit for the first page)",
    ),
]

_REGISTRY_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "Registry unreachable"}
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such session"}
}
_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "Refused by an authorization hook"}
}
_START = [Depends(hooks.can_start_session)]
_CLOSE = [Depends(hooks.can_close_session)]
_VIEW = [Depends(hooks.can_view_session)]
_METRICS = [Depends(hooks.can_view_metrics)]


def _page(sessions: list[SessionInfo], *, this_node: str, limit: int, offset: int) -> SessionList:
    ordered = sorted(sessions, key=lambda s: (s.started_at, s.call_id, s.session_id))
    page = ordered[offset : offset + limit]
    end = offset + len(page)
    return SessionList(
        items=[SessionResponse.of(s, this_node=this_node) for s in page],
        total=len(ordered),
        limit=limit,
        offset=offset,
        next_offset=end if end < len(ordered) else None,
    )


def api_routes(launcher: AgentLauncher[Any], settings: ServerSettings, metrics: NodeMetrics) -> APIRouter:
    """Session, node and metrics routes (behind the bearer token when one is set)."""
    router = APIRouter()
    Limit = Annotated[
        int,
        Query(ge=1, le=settings.max_page_size, description="Page size"),
    ]

    async def _info(call_id: str, session_id: str) -> SessionInfo:
        info = await launcher.get_session_info(call_id, session_id)
        if info is None:
            raise SessionNotFoundError(f"Session with id '{session_id}' not found in call '{call_id}'")
        return info

    async def _close(call_id: str, session_id: str) -> CloseSessionResponse:
        local = launcher.get_session(session_id)
        if local is not None and local.call_id == call_id:
            await launcher.close_session(session_id)
            return CloseSessionResponse(
                session_id=session_id, call_id=call_id, node_id=launcher.node_id, status="closing"
            )
        info = await _info(call_id, session_id)
        await launcher.request_close_session(call_id, session_id)
        return CloseSessionResponse(
            session_id=session_id, call_id=call_id, node_id=info.node_id, status="close_requested"
        )

    @router.post(
        "/calls/{call_id}/sessions",
        status_code=status.HTTP_201_CREATED,
        summary="Join call with an agent",
        description="Start a new agent on this node and have it join the call.",
        responses={
            400: {"model": ErrorResponse, "description": "The body is not parsable (not JSON, not UTF-8)"},
            429: {"model": ErrorResponse, "description": "Session limits exceeded"},
            500: {"model": ErrorResponse, "description": "The agent factory failed"},
            503: {"model": ErrorResponse, "description": "Draining, not running, or registry unreachable"},
            **_FORBIDDEN,
        },
        dependencies=_START,
    )
    async def start_session(call_id: CallId, body: StartSessionRequest | None = None) -> StartSessionResponse:
        if not launcher.running:
            raise HTTPException(503, "Node is not running", headers={"Retry-After": "1"})
        request = body if body is not None else StartSessionRequest()
        session = await launcher.start_session(call_id, request.call_type)
        return StartSessionResponse(
            session_id=session.id,
            call_id=session.call_id,
            call_type=session.call_type,
            node_id=launcher.node_id,
            session_started_at=session.started_at,
        )

    @router.get(
        "/calls/{call_id}/sessions",
        summary="Sessions of one call, on every node",
        responses={**_REGISTRY_DOWN, **_FORBIDDEN},
        dependencies=_VIEW,
    )
    async def list_call_sessions(
        call_id: CallId, limit: Limit = settings.default_page_size, offset: Offset = 0
    ) -> SessionList:
        sessions = await launcher.registry.get_for_call(call_id)
        return _page(sessions, this_node=launcher.node_id, limit=limit, offset=offset)

    @router.get(
        "/calls/{call_id}/sessions/{session_id}",
        summary="Get info about an agent session on any node",
        responses={**_NOT_FOUND, **_REGISTRY_DOWN, **_FORBIDDEN},
        dependencies=_VIEW,
    )
    async def get_session(call_id: CallId, session_id: SessionId) -> SessionResponse:
        return SessionResponse.of(await _info(call_id, session_id), this_node=launcher.node_id)

    @router.delete(
        "/calls/{call_id}/sessions/{session_id}",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Close an agent session on any node",
        description="A session of this node closes at once; another node's is told through the "
        "registry (pushed at once, polled as the fallback).",
        responses={**_NOT_FOUND, **_REGISTRY_DOWN, **_FORBIDDEN},
        dependencies=_CLOSE,
    )
    async def close_session(call_id: CallId, session_id: SessionId) -> CloseSessionResponse:
        return await _close(call_id, session_id)

    @router.post(
        "/calls/{call_id}/sessions/{session_id}/close",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Close an agent session (sendBeacon alternative)",
        description="Same as DELETE, for the browser sendBeacon API which only sends POST.",
        responses={**_NOT_FOUND, **_REGISTRY_DOWN, **_FORBIDDEN},
        dependencies=_CLOSE,
    )
    async def close_session_beacon(call_id: CallId, session_id: SessionId) -> CloseSessionResponse:
        return await _close(call_id, session_id)

    @router.get(
        "/calls/{call_id}/sessions/{session_id}/metrics",
        summary="Get metrics of an agent session on any node",
        description="Straight from the agent when this node runs it; else as last published.",
        responses={**_NOT_FOUND, **_REGISTRY_DOWN, **_FORBIDDEN},
        dependencies=_METRICS,
    )
    async def get_session_metrics(call_id: CallId, session_id: SessionId) -> SessionMetricsResponse:
        local = launcher.get_session(session_id)
        if local is not None and local.call_id == call_id:
            live = launcher.local_metrics(session_id)
            return SessionMetricsResponse(
                session_id=session_id,
                call_id=call_id,
                node_id=launcher.node_id,
                metrics=live or {},
                session_started_at=local.started_at,
                metrics_generated_at=utc(time.time()) if live is not None else None,
            )
        info = await _info(call_id, session_id)
        return SessionMetricsResponse(
            session_id=info.session_id,
            call_id=info.call_id,
            node_id=info.node_id,
            metrics=info.metrics,
            session_started_at=datetime.fromtimestamp(info.started_at, tz=UTC),
            metrics_generated_at=utc(info.metrics_updated_at),
        )

    @router.get(
        "/sessions",
        summary="Every session of the cluster",
        description="Filter by call and/or node. Ordered by node id, then call and session id; "
        "paged by cursor (`next`), each page reads O(limit) registry entries, never the whole "
        "cluster. Paging to the end yields every session that lived throughout exactly once.",
        responses={
            **_REGISTRY_DOWN,
            **_FORBIDDEN,
            404: {"model": ErrorResponse, "description": "The cursor is not one this API gave out"},
        },
        dependencies=[Depends(hooks.can_view_listing)],
    )
    async def list_sessions(
        call_id: CallFilter = None,
        node_id: NodeFilter = None,
        limit: Limit = settings.default_page_size,
        cursor: Cursor = None,
    ) -> SessionPageResponse:
        try:
            page = await launcher.registry.list_sessions_page(
                limit=limit, cursor=cursor, node_id=node_id, call_id=call_id
            )
        except InvalidValueError as exc:  # an opaque token naming no page: no such page
            raise HTTPException(404, str(exc)) from exc
        return SessionPageResponse(
            items=[SessionResponse.of(s, this_node=launcher.node_id) for s in page.sessions],
            limit=limit,
            next=page.next_cursor,
        )

    @router.get("/nodes", summary="Every live node of the cluster", responses=_REGISTRY_DOWN)
    async def list_nodes() -> NodeList:
        nodes = sorted(await launcher.registry.list_nodes(), key=lambda n: n.node_id)
        now = time.time()
        return NodeList(items=[NodeResponse.of(n, now=now) for n in nodes], total=len(nodes))

    @router.get(
        "/metrics",
        summary="Prometheus metrics of this node",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


def probe_routes(launcher: AgentLauncher[Any], settings: ServerSettings) -> APIRouter:
    """``/health`` and ``/ready``: never behind auth (kubelet probes carry no token)."""
    router = APIRouter()

    @router.get("/health", summary="Liveness: the process answers")
    async def health() -> HealthResponse:
        return HealthResponse(node_id=launcher.node_id, version=__version__)

    @router.get(
        "/ready",
        summary="Readiness: takes new sessions",
        description="503 while the node is draining, not running, or cannot reach the registry.",
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "Not ready"}},
    )
    async def ready() -> Any:
        state: Literal["ready", "draining", "registry unreachable", "not running"] = "ready"
        if not launcher.running:
            state = "not running"
        elif launcher.draining:
            state = "draining"
        else:
            try:
                await asyncio.wait_for(launcher.registry.store.ping(), settings.ready_timeout)
            except (StoreError, TimeoutError):
                state = "registry unreachable"
        body = ReadyResponse(
            status=state,
            node_id=launcher.node_id,
            active_sessions=len(launcher.sessions),
            capacity=launcher.max_concurrent_sessions,
        )
        if state != "ready":
            return JSONResponse(body.model_dump(mode="json"), status_code=503, headers={"Retry-After": "1"})
        return body

    return router
