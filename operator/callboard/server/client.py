"""NodeClient: a small async client of the node HTTP API (any node answers for the cluster).

Used by ``callboard sessions|nodes --api URL``, the demo and the benchmarks. Answers are the
API's JSON objects (dicts), so what a script prints is what the API documents.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx

from callboard.errors import CallboardError

__all__ = ["NodeApiError", "NodeClient"]

#: Seconds per request: a node answers from memory or one registry round trip.
DEFAULT_TIMEOUT = 5.0


class NodeApiError(CallboardError):
    """The node answered with an error status (``status``, ``detail``) or not at all (0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


class NodeClient:
    """Talks to one node at ``base_url``; ``token`` is its bearer token, if it has one."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise NodeApiError(0, f"{self.base_url} did not answer: {exc!r}") from exc
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise NodeApiError(response.status_code, str(detail))
        return response.json()

    async def start_session(self, call_id: str, call_type: str = "default") -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/calls/{call_id}/sessions", json={"call_type": call_type}
        )
        return result

    async def get_session(self, call_id: str, session_id: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._call(
            "GET", f"/calls/{call_id}/sessions/{session_id}", missing_ok=True
        )
        return result

    async def session_metrics(self, call_id: str, session_id: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._call(
            "GET", f"/calls/{call_id}/sessions/{session_id}/metrics", missing_ok=True
        )
        return result

    async def close_session(self, call_id: str, session_id: str) -> dict[str, Any] | None:
        """Close wherever it runs; None when no such session exists."""
        result: dict[str, Any] | None = await self._call(
            "DELETE", f"/calls/{call_id}/sessions/{session_id}", missing_ok=True
        )
        return result

    async def list_sessions(
        self, *, call_id: str | None = None, node_id: str | None = None, page_size: int = 1000
    ) -> list[dict[str, Any]]:
        """Every matching session of the cluster: follows the pages' ``next`` cursors."""
        params: dict[str, Any] = {"limit": page_size}
        if call_id is not None:
            params["call_id"] = call_id
        if node_id is not None:
            params["node_id"] = node_id
        items: list[dict[str, Any]] = []
        while True:
            page = await self._call("GET", "/sessions", params=params)
            items.extend(page["items"])
            if page["next"] is None:
                return items
            params = {**params, "cursor": page["next"]}

    async def list_nodes(self) -> list[dict[str, Any]]:
        page = await self._call("GET", "/nodes")
        items: list[dict[str, Any]] = page["items"]
        return items

    async def ready(self) -> bool:
        """True when the node takes new sessions (``/ready`` is 200)."""
        try:
            response = await self._http.get("/ready")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/health")
        return result
