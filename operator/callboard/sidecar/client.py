"""Async Python client of the sidecar's local API, for agent apps written in Python.

It survives the sidecar: requests are retried while the sidecar is unreachable (within
``retry_timeout``), the event stream reconnects by itself and resumes with ``Last-Event-ID``,
and after every reconnection the client *re-asserts* the sessions it knows are live (the
sidecar restores the ones it lost in a restart, keeping their start time and metrics). So
a sidecar restart loses nothing, provided the app follows :meth:`SidecarClient.events` (or
calls :meth:`SidecarClient.reassert` itself).

Errors are the callboard classes an in-process node raises (``MaxConcurrentSessionsExceeded``,
``NodeDrainingError``, ``SessionNotFoundError``...), rebuilt from the API's error bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

from callboard import errors as cb_errors
from callboard.registry import EndReason, validate_id
from callboard.sidecar import errors as sc_errors
from callboard.sidecar.schemas import APP_INSTANCE_HEADER
from callboard.sidecar.settings import DEFAULT_PORT
from callboard.sidecar.sse import SSEDecoder

__all__ = ["DEFAULT_URL", "PROCESS_INSTANCE_ID", "LiveSession", "SidecarClient", "SidecarEvent"]

logger = logging.getLogger(__name__)

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
#: This process's app instance id, sent with every request (``Callboard-App-Instance``): a
#: restarted app is a new process, so the sidecar knows the sessions of the old one died.
#: One per process (not per client), so several clients of one app are one instance.
PROCESS_INSTANCE_ID = uuid.uuid4().hex
#: Seconds without a byte on the event stream before it counts as dead: three keep-alive
#: pings (every 15 s) missed, so a half-open connection is noticed within a minute.
STREAM_READ_TIMEOUT = 45.0

#: Error classes the API names in its bodies, rebuilt on this side.
_ERROR_CLASSES: dict[str, type[cb_errors.CallboardError]] = {
    cls.__name__: cls
    for cls in (
        cb_errors.MaxConcurrentSessionsExceeded,
        cb_errors.MaxSessionsPerCallExceeded,
        cb_errors.NodeDrainingError,
        cb_errors.CapacityError,
        cb_errors.SessionNotFoundError,
        cb_errors.StoreUnavailableError,
        cb_errors.StoreError,
        cb_errors.InvalidIdError,
        cb_errors.StartRequestGoneError,
        cb_errors.InvalidValueError,
        cb_errors.SessionConflictError,
        sc_errors.AppInstanceReplacedError,
        sc_errors.UnknownStartRequestError,
        sc_errors.StartRequestMismatchError,
    )
}


@dataclass(frozen=True, slots=True)
class SidecarEvent:
    """One event of the stream: ``close_requested``, ``start_requested``, ``drain`` or ``registry_lost``.

    ``id`` is None for events that restate the current state (first connection, or a gap
    the sidecar could not replay). Unknown types are passed on, for forward compatibility.
    """

    type: str
    data: dict[str, Any]
    id: str | None = None

    @property
    def call_id(self) -> str | None:
        return self.data.get("call_id")

    @property
    def session_id(self) -> str | None:
        return self.data.get("session_id")

    @property
    def request_id(self) -> str | None:
        return self.data.get("request_id")


@dataclass(slots=True)
class LiveSession:
    """What the client remembers of a session it registered, to re-assert it."""

    call_id: str
    session_id: str
    started_at: float
    metrics: dict[str, Any] | None = field(default=None)


class SidecarClient:
    """Client of one sidecar at ``base_url``; use as an async context manager.

    ``retry_timeout``: seconds a call keeps retrying while the sidecar is unreachable (or
    its store is) before raising :class:`~callboard.sidecar.errors.SidecarUnavailableError`;
    ``reconnect_base``/``reconnect_cap``: backoff between attempts, seconds; ``token``: the
    sidecar's bearer token when it requires one (the chart hands it to the agent container
    in its environment, see the README); ``instance_id``: the app instance this client
    speaks for (default: one id per process, :data:`PROCESS_INSTANCE_ID`; None sends none,
    and the sidecar then cannot tell a restart of this app).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        retry_timeout: float = 10.0,
        request_timeout: float = 5.0,
        reconnect_base: float = 0.1,
        reconnect_cap: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        token: str | None = None,
        instance_id: str | None = PROCESS_INSTANCE_ID,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_timeout = retry_timeout
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        # The sidecar's bearer token (its CALLBOARD_API_TOKEN), when it requires one.
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if instance_id is not None:
            validate_id(instance_id, "instance_id")
            headers[APP_INSTANCE_HEADER] = instance_id
        self.instance_id = instance_id
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=request_timeout, transport=transport, headers=headers
        )
        self._live: dict[tuple[str, str], LiveSession] = {}
        self._last_event_id: str | None = None
        self._reassert_lock = asyncio.Lock()
        self._closed = False
        self.reconnects = 0
        """Times the event stream was re-established after a failure (for tests and logs)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self._http.aclose()

    @property
    def live_sessions(self) -> list[LiveSession]:
        """Sessions registered through this client and not ended."""
        return list(self._live.values())

    @property
    def last_event_id(self) -> str | None:
        return self._last_event_id

    # -- sessions ---------------------------------------------------------------------------

    async def register(
        self,
        call_id: str,
        session_id: str | None = None,
        *,
        metrics: Mapping[str, Any] | None = None,
        start_request_id: str | None = None,
        max_sessions_per_call: int | None = None,
    ) -> dict[str, Any]:
        """Register a session; returns the session as the sidecar shows it.

        Raises ``MaxConcurrentSessionsExceeded`` (full), ``NodeDrainingError``,
        ``InvalidIdError``. With ``start_request_id`` it accepts that start request
        (``session_id`` may then be omitted).
        """
        validate_id(call_id, "call_id")
        if session_id is not None:
            validate_id(session_id, "session_id")
        body: dict[str, Any] = {"call_id": call_id, "session_id": session_id}
        if metrics is not None:
            body["metrics"] = dict(metrics)
        if start_request_id is not None:
            body["start_request_id"] = start_request_id
        if max_sessions_per_call is not None:
            body["max_sessions_per_call"] = max_sessions_per_call
        session: dict[str, Any] = (await self._request("POST", "/v1/sessions", json=body)).json()
        key = (session["call_id"], session["session_id"])
        self._live[key] = LiveSession(
            call_id=key[0],
            session_id=key[1],
            started_at=session["started_at"],
            metrics=session.get("metrics"),
        )
        return session

    async def accept(self, event: SidecarEvent) -> dict[str, Any]:
        """Accept a ``start_requested`` event: register the session it names."""
        if event.request_id is None or event.call_id is None:
            raise ValueError(f"not a start request: {event}")
        return await self.register(event.call_id, event.session_id, start_request_id=event.request_id)

    async def reject(self, event_or_request_id: SidecarEvent | str, reason: str) -> None:
        """Reject a start request, with a reason the operator records."""
        request_id = (
            event_or_request_id.request_id
            if isinstance(event_or_request_id, SidecarEvent)
            else event_or_request_id
        )
        validate_id(request_id, "request_id")
        await self._request("POST", f"/v1/start-requests/{request_id}/reject", json={"reason": reason})

    async def end(self, call_id: str, session_id: str, *, reason: str = EndReason.FINISHED) -> bool:
        """End a session; False when the sidecar did not know it (already ended or removed)."""
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        self._live.pop((call_id, session_id), None)
        try:
            await self._request(
                "DELETE", f"/v1/calls/{call_id}/sessions/{session_id}", params={"reason": reason}
            )
        except cb_errors.SessionNotFoundError:
            return False
        return True

    async def update_metrics(self, call_id: str, session_id: str, metrics: Mapping[str, Any]) -> None:
        """Replace a session's metrics (remembered, so a re-assertion restores them)."""
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        live = self._live.get((call_id, session_id))
        if live is not None:
            live.metrics = dict(metrics)
        await self._request(
            "PUT", f"/v1/calls/{call_id}/sessions/{session_id}/metrics", json={"metrics": dict(metrics)}
        )

    async def sessions(self) -> list[dict[str, Any]]:
        """The sidecar's view of this node's sessions."""
        result: list[dict[str, Any]] = (await self._request("GET", "/v1/sessions")).json()
        return result

    async def node(self) -> dict[str, Any]:
        """The node status (capacity, draining, connection, app health...)."""
        result: dict[str, Any] = (await self._request("GET", "/v1/node")).json()
        return result

    async def reassert(self) -> int:
        """Re-register every live session (idempotent); returns how many were sent."""
        async with self._reassert_lock:
            sent = 0
            for key, live in list(self._live.items()):
                if key not in self._live:
                    continue  # ended meanwhile
                body = {
                    "call_id": live.call_id,
                    "session_id": live.session_id,
                    "restore": True,
                    "started_at": live.started_at,
                    "metrics": live.metrics,
                }
                await self._request("POST", "/v1/sessions", json=body, reassert=False)
                sent += 1
                if key not in self._live:  # ended while we restored it: end it again
                    with contextlib.suppress(cb_errors.SessionNotFoundError):
                        await self._request("DELETE", f"/v1/calls/{key[0]}/sessions/{key[1]}", reassert=False)
            if sent:
                logger.info("re-asserted %d live sessions to the sidecar", sent)
            return sent

    # -- events -------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[SidecarEvent]:
        """Follow the event stream forever, reconnecting and resuming; re-asserts on reconnect."""
        delay = self.reconnect_base
        failed = False
        while not self._closed:
            headers = {"Accept": "text/event-stream"}
            if self._last_event_id is not None:
                headers["Last-Event-ID"] = self._last_event_id
            timeout = httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_TIMEOUT)
            try:
                async with self._http.stream(
                    "GET", "/v1/events", headers=headers, timeout=timeout
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise _error_from(response)
                    if failed:
                        self.reconnects += 1
                        failed = False
                    delay = self.reconnect_base
                    if self._live:
                        await self.reassert()
                    decoder = SSEDecoder()
                    async for line in response.aiter_lines():
                        raw = decoder.feed(line)
                        if decoder.retry is not None:
                            delay = max(decoder.retry / 1000, self.reconnect_base)
                        if raw is None:
                            continue
                        if raw.id is not None:
                            self._last_event_id = raw.id
                        yield SidecarEvent(type=raw.event, data=_json_object(raw.data), id=raw.id)
            except (httpx.TransportError, cb_errors.CallboardError) as exc:
                if self._closed:
                    return
                logger.debug("event stream interrupted: %r", exc)
            failed = True
            if self._closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_cap)

    # -- internals ----------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, reassert: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send, retrying while the sidecar (or its store) is unreachable; raise callboard errors."""
        deadline = time.monotonic() + self.retry_timeout
        delay = self.reconnect_base
        interrupted = False
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                failure: Exception = exc
            else:
                if response.is_success:
                    break
                error = _error_from(response)
                if not isinstance(error, cb_errors.StoreUnavailableError):
                    raise error
                failure = error
            interrupted = True
            if time.monotonic() + delay > deadline:
                raise sc_errors.SidecarUnavailableError(
                    f"{method} {self.base_url}{path}: no answer within {self.retry_timeout:g}s: {failure}"
                ) from failure
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_cap)
        if interrupted and reassert and self._live:
            await self.reassert()  # the sidecar may have restarted while we retried
        return response


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}


def _error_from(response: httpx.Response) -> cb_errors.CallboardError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        cls = _ERROR_CLASSES.get(body["error"])
        if cls is not None:
            return cls(str(body.get("detail", "")))
    detail = body.get("detail") if isinstance(body, dict) else response.text
    return sc_errors.SidecarRequestError(
        f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}",
        status_code=response.status_code,
    )
