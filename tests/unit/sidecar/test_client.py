"""The Python client: errors rebuilt as callboard classes, retries, re-assertion."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from callboard.errors import (
    InvalidIdError,
    MaxConcurrentSessionsExceeded,
    NodeDrainingError,
)
from callboard.sidecar import SidecarClient, SidecarRequestError, SidecarUnavailableError
from callboard.sidecar.api import create_app
from tests.unit.sidecar.conftest import Local


def client_of(local: Local) -> SidecarClient:
    return SidecarClient("http://sidecar", transport=httpx.ASGITransport(app=create_app(local.service)))


async def test_register_end_and_errors_are_callboard_classes(local: Local) -> None:
    async with client_of(local) as client:
        session = await client.register("call-1", "s-1", metrics={"a": 1})
        assert session["node_id"] == "node-a"
        await client.register("call-2", "s-2")
        with pytest.raises(MaxConcurrentSessionsExceeded):
            await client.register("call-3", "s-3")
        assert [s.session_id for s in client.live_sessions] == ["s-1", "s-2"]
        await client.update_metrics("call-1", "s-1", {"a": 2})
        assert client.live_sessions[0].metrics == {"a": 2}
        assert await client.end("call-1", "s-1", reason="done") is True
        assert await client.end("call-1", "s-1") is False  # already ended
        assert [s.session_id for s in client.live_sessions] == ["s-2"]
        assert [s["session_id"] for s in await client.sessions()] == ["s-2"]
        assert (await client.node())["active"] == 1
        with pytest.raises(InvalidIdError):
            await client.register("call/1", "s")  # refused before any request
        force = asyncio.Event()
        force.set()  # do not wait for the live session: it is cut off
        assert await local.service.drain(force=force) == 1
        with pytest.raises(NodeDrainingError):
            await client.register("call-4", "s-4")


async def test_other_refusals_are_sidecar_request_errors(local: Local) -> None:
    async with client_of(local) as client:
        with pytest.raises(SidecarRequestError) as info:
            await client.reject("request-1", reason="x" * 500)  # longer than a tombstone takes
        assert info.value.status_code == 422


async def test_requests_retry_while_the_sidecar_is_unreachable_then_reassert() -> None:
    calls: list[tuple[str, str, dict[str, object] | None]] = []
    down = {"count": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path, body))
        if down["count"] > 0:
            down["count"] -= 1
            raise httpx.ConnectError("refused", request=request)
        if request.method == "POST":
            assert body is not None
            return httpx.Response(
                201, json={**body, "node_id": "n", "started_at": 1.0, "metrics": body.get("metrics") or {}}
            )
        return httpx.Response(200, json={})

    client = SidecarClient(
        "http://sidecar", transport=httpx.MockTransport(handler), reconnect_base=0.001, reconnect_cap=0.002
    )
    async with client:
        await client.register("call-1", "s-1", metrics={"m": 1})
        calls.clear()
        down["count"] = 3  # the sidecar restarts: three refused connections
        await client.update_metrics("call-1", "s-1", {"m": 2})
        methods = [(m, p) for m, p, _ in calls]
        assert methods[:4] == [("PUT", "/v1/calls/call-1/sessions/s-1/metrics")] * 4
        assert methods[4] == ("POST", "/v1/sessions")  # re-asserted after the outage
        restore = calls[4][2]
        assert restore == {
            "call_id": "call-1",
            "session_id": "s-1",
            "restore": True,
            "started_at": 1.0,
            "metrics": {"m": 2},
        }


async def test_gives_up_after_the_retry_budget() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = SidecarClient(
        "http://sidecar", transport=httpx.MockTransport(refuse), retry_timeout=0.05, reconnect_base=0.01
    )
    async with client:
        with pytest.raises(SidecarUnavailableError, match="no answer within"):
            await client.node()


async def test_store_unavailable_is_retried_but_draining_is_not() -> None:
    answers = [
        httpx.Response(503, json={"error": "StoreUnavailableError", "detail": "redis down"}),
        httpx.Response(503, json={"error": "NodeDrainingError", "detail": "draining"}),
    ]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return answers.pop(0)

    async with SidecarClient(
        "http://s", transport=httpx.MockTransport(handler), reconnect_base=0.001
    ) as client:
        with pytest.raises(NodeDrainingError):
            await client.register("call-1", "s-1")
    assert len(seen) == 2
