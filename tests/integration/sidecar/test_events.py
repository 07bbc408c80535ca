"""Close and start requests from another node reach real apps through a real sidecar."""

from __future__ import annotations

import time
from pathlib import Path

from callboard.registry import EndReason, RedisSessionKVStore, SessionRegistry, SessionStatus
from tests.integration.sidecar.conftest import AppFactory, SidecarFactory
from tests.support.redis_server import RedisServer
from tests.support.sidecar import SidecarProcess, node_app, python_app
from tests.support.waiting import wait_until


async def test_cross_node_close_reaches_the_python_app(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    # Heartbeats 1.5 s apart: a close seen within a second came by push, not by the poll.
    sidecar = await sidecar_factory(env={"CALLBOARD_TTL": "5", "CALLBOARD_HEARTBEAT_INTERVAL": "1.5"})
    app = await app_factory(python_app(sidecar, log_dir=tmp_path))
    await app.send(op="register", call_id="call-1", session_id="s-1", metrics={"turns": 0})
    await app.expect("registered", session_id="s-1")
    stored = await peer.get("call-1", "s-1")
    assert stored is not None and stored.node_id == "node-a" and stored.metrics == {"turns": 0}
    await wait_until(lambda: _consumers(sidecar), what="the app's event stream")

    sent = time.monotonic()
    await peer.request_close("call-1", "s-1")
    event = await app.expect("event", type="close_requested", data__session_id="s-1", timeout=5)
    assert time.monotonic() - sent < 1.0, "the close came by the heartbeat poll, not by push"
    assert event["data"] == {
        "type": "close_requested",
        "call_id": "call-1",
        "session_id": "s-1",
        "reason": EndReason.CLOSE_REQUESTED,
    }
    assert event["id"] is not None
    await app.expect("ended", session_id="s-1", known=True)
    ended = await peer.get_ended("call-1", "s-1")
    assert ended is not None and (ended.reason, ended.node_id) == ("closed-by-request", "node-a")
    assert await peer.session_status("call-1", "s-1") is SessionStatus.ENDED
    assert await sidecar.session_ids() == []


async def test_node_js_app_registers_gets_the_close_and_ends(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    sidecar = await sidecar_factory()
    app = await app_factory(node_app(sidecar, call_id="call-js", session_id="s-js", log_dir=tmp_path))
    registered = await app.expect("registered", timeout=15)
    assert (registered["node_id"], registered["session_id"]) == ("node-a", "s-js")
    assert await peer.get("call-js", "s-js") is not None
    await peer.request_close("call-js", "s-js")
    await app.expect("event", type="close_requested", data__session_id="s-js")
    await app.expect("ended", session_id="s-js")
    assert await app.wait(10) == 0
    ended = await peer.get_ended("call-js", "s-js")
    assert ended is not None and ended.reason == "closed-by-node-app"
    assert await peer.get("call-js", "s-js") is None


async def test_start_request_accepted(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    sidecar = await sidecar_factory()
    app = await app_factory(python_app(sidecar, "--on-start", "accept", log_dir=tmp_path))
    await wait_until(lambda: _consumers(sidecar), what="the app's event stream")
    request = await peer.request_start("node-a", "call-7", session_id="s-7", params={"voice": "en"})
    event = await app.expect("event", type="start_requested")
    assert event["data"]["request_id"] == request.request_id
    assert event["data"]["params"] == {"voice": "en"}
    await app.expect("accepted", request_id=request.request_id, session_id="s-7")
    result = await wait_until(lambda: peer.get_start_result(request.request_id), what="the answer")
    assert result.accepted and result.session_id == "s-7" and result.node_id == "node-a"
    stored = await peer.get("call-7", "s-7")
    assert stored is not None and stored.node_id == "node-a"
    assert await sidecar.session_ids() == ["s-7"]


async def test_start_request_rejected_with_the_apps_reason(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    sidecar = await sidecar_factory()
    app = await app_factory(
        python_app(sidecar, "--on-start", "reject", "--reject-reason", "model-not-loaded", log_dir=tmp_path)
    )
    await wait_until(lambda: _consumers(sidecar), what="the app's event stream")
    request = await peer.request_start("node-a", "call-8", session_id="s-8")
    await app.expect("rejected", request_id=request.request_id)
    result = await wait_until(lambda: peer.get_start_result(request.request_id), what="the answer")
    assert not result.accepted and result.reason == "model-not-loaded"
    assert await peer.get("call-8", "s-8") is None
    assert await sidecar.session_ids() == []


async def test_start_request_sent_before_the_app_connects_is_in_its_first_events(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    sidecar = await sidecar_factory()
    request = await peer.request_start("node-a", "call-9", session_id="s-9")
    await wait_until(lambda: _pending_starts(sidecar), what="the sidecar to hold the request")
    app = await app_factory(python_app(sidecar, log_dir=tmp_path))
    event = await app.expect("event", type="start_requested")
    assert event["id"] is None  # restated state, not history
    await app.expect("accepted", request_id=request.request_id)
    result = await wait_until(lambda: peer.get_start_result(request.request_id), what="the answer")
    assert result.accepted


async def test_the_app_is_told_when_its_node_lost_the_registry_for_longer_than_the_ttl(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, tmp_path: Path
) -> None:
    with RedisServer() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        sidecar = await sidecar_factory(env={"CALLBOARD_REDIS_URL": url})  # TTL 2 s, beats 0.3 s
        app = await app_factory(python_app(sidecar, log_dir=tmp_path))
        await app.send(op="register", call_id="call-1", session_id="s-1")
        await app.expect("registered", session_id="s-1")
        await wait_until(lambda: _consumers(sidecar), what="the app's event stream")
        assert app.find("event", type="registry_lost") is None

        server.stop()  # the registry is gone: heartbeats fail, the records expire after the TTL
        event = await app.expect("event", type="registry_lost", timeout=15)
        data = event["data"]
        assert data["ttl"] == 2 and data["sessions"] == [{"call_id": "call-1", "session_id": "s-1"}]
        # since: the last heartbeat that reached the registry (one may land while it stops).
        assert isinstance(data["since"], float) and data["since"] <= time.time()
        assert event["id"] is not None
        # Told while it lasts: a reader that connects now gets it in the state it is shown first.
        # (A second reader of the same app: with an instance id of its own it would be taken
        # for a restarted app, whose first request removes the old instance's sessions.)
        late = await app_factory(python_app(sidecar, "--instance-id", "none", log_dir=tmp_path, name="late"))
        restated = await late.expect("event", type="registry_lost", timeout=10)
        assert restated["id"] is None and restated["data"] == data

        server.start()  # back, empty: the heartbeat writes the session back
        registry = SessionRegistry(RedisSessionKVStore(url=url), node_id="peer", ttl=10)
        await registry.start()
        try:
            await wait_until(
                lambda: registry.get("call-1", "s-1"), what="the session written back", timeout=15
            )
        finally:
            await registry.stop()
        assert [
            e["data"] for e in app.messages if e.get("kind") == "event" and e["type"] == "registry_lost"
        ] == [data], "told once per outage"


async def _consumers(sidecar: SidecarProcess) -> bool:
    return bool((await sidecar.get("/v1/node"))["event_consumers"] >= 1)


async def _pending_starts(sidecar: SidecarProcess) -> bool:
    return bool(await sidecar.get("/v1/start-requests"))


async def test_g8_a_deposed_leaders_start_request_never_reaches_the_app(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    sidecar = await sidecar_factory()
    app = await app_factory(python_app(sidecar, "--on-start", "accept", log_dir=tmp_path))
    await wait_until(lambda: _consumers(sidecar), what="the app's event stream")
    await peer.raise_fence(4)  # the current leader's term; the request below is of term 3
    deposed = await peer.request_start("node-a", "call-5", session_id="s-5", fencing_token=3)
    refused = await wait_until(lambda: peer.get_start_result(deposed.request_id), what="the refusal")
    assert not refused.accepted and refused.reason is not None and refused.reason.startswith("fenced: ")
    current = await peer.request_start("node-a", "call-6", session_id="s-6", fencing_token=4)
    first = await app.expect("event", type="start_requested")
    assert first["data"]["request_id"] == current.request_id  # the fenced one was never offered
    await app.expect("accepted", request_id=current.request_id)
    assert await sidecar.session_ids() == ["s-6"]
    assert await peer.get("call-5", "s-5") is None
