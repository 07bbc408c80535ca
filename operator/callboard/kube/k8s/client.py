"""A small asyncio client for the few Kubernetes API calls the operator makes itself.

kopf watches and runs the handlers; the background loops (placement, status sync, pod
annotations, adoption, Events, the leader lease) need to read and write objects outside
any handler, which kopf has no public client for. This one reuses kopf's credentials
(:class:`kopf.ConnectionInfo`: its headers and SSL context), speaks JSON over aiohttp
(already a kopf dependency) and maps HTTP failures onto a tiny exception tree::

    KubeApiError            any failed call (status 0: no HTTP answer at all)
    ├── NotFoundError       404
    ├── ConflictError       409 (exists already, or the resourceVersion moved)
    └── NotLeaderError      a write refused before sending: this replica no longer leads

Transient failures (connection errors, 429, 5xx) are retried a few times with backoff.
A 401 re-runs the login function once (service-account tokens rotate).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Self
from urllib.parse import quote

import aiohttp

from callboard.errors import CallboardError
from callboard.kube.resource.constants import GROUP, PLURAL, VERSION

__all__ = [
    "ConflictError",
    "KubeApi",
    "KubeApiError",
    "NotFoundError",
    "NotLeaderError",
    "agentsession_path",
    "event_path",
    "lease_path",
    "pod_path",
]

logger = logging.getLogger(__name__)

#: Retries of a transient failure, with these delays in seconds between them.
RETRY_DELAYS = (0.2, 0.5, 1.0)
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeApiError(CallboardError):
    """The Kubernetes API answered with an error, or could not be reached.

    ``status`` is the HTTP status (0 when no answer came), ``reason`` the API's reason, so
    callers tell a missing object or a lost race from an outage without parsing text.
    """

    def __init__(self, status: int, message: str, *, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(KubeApiError):
    """404: the object is gone, which most callers take as done rather than as a failure."""


class ConflictError(KubeApiError):
    """409: a create found the object, or a write lost a race on ``resourceVersion``."""


class NotLeaderError(KubeApiError):
    """A write this client refused to send: its :attr:`KubeApi.guard` says this replica
    no longer leads (a deposed leader must not write; see :mod:`callboard.kube.k8s.lease`)."""


def _q(part: str) -> str:
    return quote(part, safe="")


def agentsession_path(namespace: str | None = None, name: str | None = None, *, status: bool = False) -> str:
    base = f"/apis/{GROUP}/{VERSION}"
    if namespace is not None:
        base += f"/namespaces/{_q(namespace)}"
    base += f"/{PLURAL}"
    if name is not None:
        base += f"/{_q(name)}"
        if status:
            base += "/status"
    return base


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{_q(namespace)}/pods/{_q(name)}"


def event_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{_q(namespace)}/events"


def lease_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{_q(namespace)}/leases"
    return base if name is None else f"{base}/{_q(name)}"


class KubeApi:
    """JSON calls to one API server with the credentials ``login()`` returns.

    ``login`` returns a :class:`kopf.ConnectionInfo` (e.g. :func:`kopf.login_with_kubeconfig`).
    ``connections`` bounds the client's pool (keep-alive connections, and so requests in
    flight): each job that must not queue behind another gets a client of its own.
    """

    def __init__(self, login: Callable[[], Any], *, timeout: float = 30.0, connections: int = 64) -> None:
        self._login = login
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self.default_namespace: str | None = None
        self.guard: Callable[[], bool] | None = None
        """Checked before every write (and every retry of one): False refuses it with
        :class:`NotLeaderError`. The entrypoint sets it to the leader lease's ``valid``."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        info = self._login()
        if info is None:
            raise KubeApiError(0, "no Kubernetes credentials: not in a pod and no kubeconfig")
        self._server = str(info.server).rstrip("/")
        self.default_namespace = info.default_namespace
        old, self._session = (
            self._session,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=info.as_ssl_context()),
                headers={**info.as_http_headers(), "User-Agent": "callboard-operator"},
                timeout=self._timeout,
            ),
        )
        if old is not None:
            await old.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def check_guard(self, method: str, path: str) -> None:
        """Raise :class:`NotLeaderError` for a write the :attr:`guard` refuses."""
        if method != "GET" and self.guard is not None and not self.guard():
            raise NotLeaderError(0, f"{method} {path}: refused, this replica no longer leads")

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | list[dict[str, Any]] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one call; the decoded JSON answer (None when empty)."""
        relogged = False
        for attempt in range(len(RETRY_DELAYS) + 1):
            self.check_guard(method, path)
            if self._session is None:
                raise KubeApiError(0, "the API client is closed")
            try:
                async with self._session.request(
                    method,
                    self._server + path,
                    params=params,
                    data=None if body is None else json.dumps(body),
                    headers={"Content-Type": content_type} if body is not None else None,
                ) as response:
                    text = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt < len(RETRY_DELAYS):
                    await asyncio.sleep(RETRY_DELAYS[attempt])
                    continue
                raise KubeApiError(0, f"{method} {path}: {exc!r}") from exc
            if status < 300:
                return json.loads(text) if text else None
            if status == 401 and not relogged:
                relogged = True
                await self.open()
                continue
            if (status == 429 or status >= 500) and attempt < len(RETRY_DELAYS):
                await asyncio.sleep(RETRY_DELAYS[attempt])
                continue
            raise _error(status, method, path, text)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, path: str, *, params: Mapping[str, str] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, operations: list[dict[str, Any]]) -> Any:
        """An RFC 6902 patch: its ``test`` operations make it a precondition on exactly the
        fields it names (a list another controller changed fails it, a status write does not)."""
        return await self.request("PATCH", path, body=operations, content_type=JSON_PATCH)

    async def replace(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("PUT", path, body=body)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path, body={"propagationPolicy": "Background"})

    async def list_all(self, path: str, *, chunk: int = 500) -> list[dict[str, Any]]:
        """Every item of a list call, fetched in pages of ``chunk``."""
        items: list[dict[str, Any]] = []
        params = {"limit": str(chunk)}
        while True:
            page = await self.get(path, params=params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {"limit": str(chunk), "continue": token}


def _error(status: int, method: str, path: str, text: str) -> KubeApiError:
    reason, message = "", text[:500]
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        reason = str(data.get("reason", ""))
        message = str(data.get("message", message))
    message = f"{method} {path}: {message}"
    if status == 404:
        return NotFoundError(status, message, reason=reason)
    if status == 409:
        return ConflictError(status, message, reason=reason)
    return KubeApiError(status, message, reason=reason)
