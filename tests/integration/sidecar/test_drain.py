"""SIGTERM: the node is marked draining, the app is told, live sessions get until the timeout."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from callboard.registry import EndReason, SessionRegistry
from tests.integration.sidecar.conftest import AppFactory, SidecarFactory
from tests.support.sidecar import SidecarProcess, python_app
from tests.support.waiting import wait_until


async def _consumers(sidecar: SidecarProcess) -> bool:
    return bool((await sidecar.get("/v1/node"))["event_consumers"] >= 1)


async def test_sigterm_without_sessions_exits_at_once(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    sidecar = await sidecar_factory(env={"CALLBOARD_DRAIN_TIMEOUT": "30", "CALLBOARD_GRACE_PERIOD": "40"})
    app = await app_factory(python_app(sidecar, log_dir=tmp_path))
    await wait_until(lambda: _consumers(sidecar), what="the app's event stream")
    assert await peer.get_node("node-a") is not None
    started = time.monotonic()
    sidecar.signal(signal.SIGTERM)
    drain = await app.expect("event", type="drain")
    assert drain["data"]["timeout"] == 30
    assert await sidecar.wait(10) == 0
    assert time.monotonic() - started < 5, "nothing to wait for: the drain timeout must not be spent"
    assert await peer.get_node("node-a") is None  # deregistered on exit, not left to the TTL


async def test_sigterm_waits_for_live_sessions_to_end(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    # A drain timeout no run of this test reaches, so an exit can only come from the last session
    # ending; the sidecar's own log line says which it was. (A wall-clock bound, < 15 s since
    # SIGTERM, stood for that and depended on how loaded the machine was.)
    sidecar = await sidecar_factory(env={"CALLBOARD_DRAIN_TIMEOUT": "600", "CALLBOARD_GRACE_PERIOD": "610"})
    app = await app_factory(python_app(sidecar, "--on-drain", "ignore", log_dir=tmp_path))
    for session_id in ("s-1", "s-2"):
        await app.send(op="register", call_id="call-1", session_id=session_id)
        await app.expect("registered", session_id=session_id)
    sidecar.signal(signal.SIGTERM)
    drain = await app.expect("event", type="drain")
    assert drain["data"]["deadline"] > time.time() + 20

    node = await peer.get_node("node-a")
    assert node is not None and node.draining and node.free_slots == 0  # the operator places nothing here
    await app.send(op="register", call_id="call-2", session_id="s-new")
    refused = await app.expect("error", op="register")
    assert refused["error"] == "NodeDrainingError"
    ready = await sidecar.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["reason"] == "draining"
    assert sidecar.running  # still waiting for the two sessions

    await app.send(op="end", call_id="call-1", session_id="s-1", reason="call-over")
    await app.expect("ended", session_id="s-1")
    assert sidecar.running
    await app.send(op="end", call_id="call-1", session_id="s-2", reason="call-over")
    assert await sidecar.wait(10) == 0
    assert "drained (0 sessions cut off at the timeout)" in sidecar.log(), "exited at the last end"
    for session_id in ("s-1", "s-2"):
        ended = await peer.get_ended("call-1", session_id)
        assert ended is not None and ended.reason == "call-over"
    assert await peer.get_node("node-a") is None
    assert await peer.get("call-2", "s-new") is None


async def test_an_app_that_ends_its_sessions_on_drain(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    sidecar = await sidecar_factory(env={"CALLBOARD_DRAIN_TIMEOUT": "30", "CALLBOARD_GRACE_PERIOD": "40"})
    app = await app_factory(python_app(sidecar, "--on-drain", "end", log_dir=tmp_path))
    await app.send(op="register", call_id="call-1", session_id="s-1")
    await app.expect("registered", session_id="s-1")
    sidecar.signal(signal.SIGTERM)
    await app.expect("ended", session_id="s-1")
    assert await sidecar.wait(10) == 0
    ended = await peer.get_ended("call-1", "s-1")
    assert ended is not None and ended.reason == "drained"


async def test_sessions_still_live_at_the_drain_timeout_are_cut_off(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    sidecar = await sidecar_factory(env={"CALLBOARD_DRAIN_TIMEOUT": "1.5"})
    app = await app_factory(
        python_app(sidecar, "--on-drain", "ignore", "--on-close", "ignore", log_dir=tmp_path)
    )
    await app.send(op="register", call_id="call-1", session_id="s-1")
    await app.expect("registered", session_id="s-1")
    started = time.monotonic()
    sidecar.signal(signal.SIGTERM)
    assert await sidecar.wait(10) == 0
    assert time.monotonic() - started >= 1.4, "the drain timeout was not waited for"
    ended = await peer.get_ended("call-1", "s-1")
    assert ended is not None and ended.reason == EndReason.DRAIN_TIMEOUT
    assert await peer.get("call-1", "s-1") is None
    # The app was told before the stream closed.
    cut = await app.expect("event", type="close_requested", data__session_id="s-1")
    assert cut["data"]["reason"] == EndReason.DRAIN_TIMEOUT


async def test_a_second_signal_stops_waiting(sidecar_factory: SidecarFactory, peer: SessionRegistry) -> None:
    sidecar = await sidecar_factory(env={"CALLBOARD_DRAIN_TIMEOUT": "60", "CALLBOARD_GRACE_PERIOD": "70"})
    response = await sidecar.http.post("/v1/sessions", json={"call_id": "call-1", "session_id": "s-1"})
    assert response.status_code == 201
    sidecar.signal(signal.SIGTERM)
    await wait_until(lambda: _draining(peer), what="the node to drain")
    sidecar.signal(signal.SIGTERM)
    assert await sidecar.wait(10) == 0
    ended = await peer.get_ended("call-1", "s-1")
    assert ended is not None and ended.reason == EndReason.DRAIN_TIMEOUT


async def _draining(peer: SessionRegistry) -> bool:
    node = await peer.get_node("node-a")
    return node is not None and node.draining


async def test_the_stream_ends_on_exit(sidecar_factory: SidecarFactory) -> None:
    sidecar = await sidecar_factory()
    async with (
        httpx.AsyncClient(base_url=sidecar.url, timeout=10) as http,
        http.stream("GET", "/v1/events") as response,
    ):
        await wait_until(lambda: _consumers(sidecar), what="the stream")
        sidecar.signal(signal.SIGTERM)
        body = b"".join([chunk async for chunk in response.aiter_bytes()])  # returns: the stream ended
    assert b"event: drain" in body
    assert await sidecar.wait(10) == 0


async def test_g9_a_sidecar_marked_draining_by_the_operator_refuses_a_session(
    sidecar_factory: SidecarFactory, peer: SessionRegistry
) -> None:
    sidecar = await sidecar_factory()
    await peer.mark_draining(["node-a"], ttl=60, by="operator")
    refused = await sidecar.http.post("/v1/sessions", json={"call_id": "call-1", "session_id": "s-1"})
    assert refused.status_code == 503, refused.text
    assert await peer.get("call-1", "s-1") is None
    await peer.clear_drain_marks(["node-a"])
    taken = await sidecar.http.post("/v1/sessions", json={"call_id": "call-1", "session_id": "s-1"})
    assert taken.status_code == 201, taken.text
    assert await peer.get("call-1", "s-1") is not None


async def test_g9_a_start_request_to_a_marked_sidecar_is_answered_draining(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    sidecar = await sidecar_factory()
    await app_factory(python_app(sidecar, log_dir=tmp_path))
    await wait_until(lambda: _consumers(sidecar), what="the app's event stream")
    await peer.mark_draining(["node-a"], ttl=60)
    request = await peer.request_start("node-a", "call-1", session_id="s-1")
    result = await wait_until(lambda: peer.get_start_result(request.request_id), what="the answer")
    assert not result.accepted and result.reason == "draining"
    assert await peer.get("call-1", "s-1") is None
    assert await sidecar.session_ids() == []
