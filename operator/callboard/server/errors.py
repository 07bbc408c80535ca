"""Exception handlers: every callboard error becomes a definite status, never a bare 500.

| error | status |
| --- | --- |
| ``SessionNotFoundError`` | 404 |
| ``InvalidIdError``, ``InvalidValueError`` | 422 (same list shape as FastAPI's validation errors) |
| ``SessionConflictError`` (another node owns the session) | 409 |
| ``MaxConcurrentSessionsExceeded``, ``MaxSessionsPerCallExceeded`` | 429 |
| ``NodeDrainingError`` | 503, ``Retry-After`` |
| ``StoreError`` (``StoreUnavailableError``: Redis unreachable) | 503, ``Retry-After`` |
| ``AgentStartError`` (the user's ``create_agent`` failed) | 500 with a JSON detail |
| anything else | 500 with a JSON detail, logged with its traceback |
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from callboard.errors import (
    CallboardError,
    InvalidIdError,
    InvalidValueError,
    MaxConcurrentSessionsExceeded,
    MaxSessionsPerCallExceeded,
    NodeDrainingError,
    SessionConflictError,
    SessionNotFoundError,
    StoreError,
)
from callboard.launcher import AgentStartError

__all__ = ["install_exception_handlers"]

logger = logging.getLogger(__name__)

#: Seconds a client should wait before retrying after a 503: one maintenance cycle is
#: usually enough for a store connection to come back or a drain to be noticed elsewhere.
RETRY_AFTER = "1"


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return _error(404, str(exc) or "not found")


async def _invalid_id(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": ["path"], "msg": str(exc), "type": "invalid_id"}]}, status_code=422
    )


async def _invalid_value(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": ["body"], "msg": str(exc), "type": "invalid_value"}]}, status_code=422
    )


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return _error(409, str(exc))


async def _concurrent(request: Request, exc: Exception) -> JSONResponse:
    return _error(429, "Reached maximum number of concurrent sessions")


async def _per_call(request: Request, exc: Exception) -> JSONResponse:
    return _error(429, "Reached maximum number of sessions for this call")


async def _draining(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, "Node is draining and takes no new sessions", {"Retry-After": RETRY_AFTER})


async def _store(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("registry error on %s %s: %s", request.method, request.url.path, exc)
    return _error(503, f"Session registry unavailable: {exc}", {"Retry-After": RETRY_AFTER})


async def _agent_start(request: Request, exc: Exception) -> JSONResponse:
    logger.error("agent failed to start: %s", exc, exc_info=exc)
    return _error(500, f"Failed to start agent: {exc}")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, f"Internal error ({type(exc).__name__})")


def install_exception_handlers(app: FastAPI) -> None:
    """Map the callboard exception tree onto HTTP statuses (most specific first)."""
    app.add_exception_handler(SessionNotFoundError, _not_found)
    app.add_exception_handler(InvalidIdError, _invalid_id)
    app.add_exception_handler(InvalidValueError, _invalid_value)
    app.add_exception_handler(SessionConflictError, _conflict)
    app.add_exception_handler(MaxConcurrentSessionsExceeded, _concurrent)
    app.add_exception_handler(MaxSessionsPerCallExceeded, _per_call)
    app.add_exception_handler(NodeDrainingError, _draining)
    app.add_exception_handler(StoreError, _store)
    app.add_exception_handler(AgentStartError, _agent_start)
    app.add_exception_handler(CallboardError, _unexpected)
