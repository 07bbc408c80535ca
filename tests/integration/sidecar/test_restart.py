"""Nothing is lost when the sidecar restarts or the app's stream reconnects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from callboard.registry import EndReason, RedisSessionKVStore, SessionRegistry
from callboard.sidecar.sse import SSEDecoder
from tests.integration.sidecar.conftest import AppFactory, SidecarFactory
from tests.support.sidecar import SidecarProcess, metric, python_app
from tests.support.waiting import wait_until


async def test_sidecar_restart_loses_nothing(
    sidecar_factory: SidecarFactory,
    app_factory: AppFactory,
    peer: SessionRegistry,
    redis_url: str,
    tmp_path: Path,
) -> None:
    sidecar = await sidecar_factory()  # TTL 2 s
    app = await app_factory(python_app(sidecar, log_dir=tmp_path))
    for session_id in ("s-1", "s-2"):
        await app.send(op="register", call_id="call-1", session_id=session_id)
        await app.expect("registered", session_id=session_id)
    await app.send(op="metrics", call_id="call-1", session_id="s-1", metrics={"turns": 4})
    await app.expect("metrics", session_id="s-1")
    before = await peer.get("call-1", "s-1")
    assert before is not None

    await sidecar.kill()  # a crash: no drain, no deregistration
    # Asked while the sidecar is away. A close flag lives one ttl of whoever asks (the operator
    # asks again every 30 s for that reason); this outage (the kill, the 2 s TTL running out, a
    # new process starting) outlasted the peer's 10 s on a loaded machine, where the sidecar's
    # start alone took 11 s, and the flag was gone before the re-assertion. So this close
    # comes from a requester whose ttl outlives any outage of this test.
    closer = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="closer", ttl=300)
    await closer.start()
    try:
        await closer.request_close("call-1", "s-2")
    finally:
        await closer.stop()
    # Wait until the TTL took both sessions: what comes back was restored by the app.
    await wait_until(lambda: _gone(peer, "s-1"), timeout=5, what="the sessions to expire")
    await sidecar.start()

    await wait_until(lambda: _live(peer, "s-1"), timeout=10, what="the client to re-assert s-1")
    restored = await peer.get("call-1", "s-1")
    assert restored is not None
    assert (restored.node_id, restored.started_at, restored.metrics) == (
        "node-a",
        before.started_at,
        {"turns": 4},
    )
    # The close asked during the outage is delivered after the re-assertion, and acted on.
    await app.expect("ended", session_id="s-2", known=True)
    ended = await peer.get_ended("call-1", "s-2")
    assert ended is not None and ended.reason == "closed-by-request"
    assert await sidecar.session_ids() == ["s-1"]
    assert await metric(sidecar, "sessions_restored_total") == 2

    # The restored session is heartbeated by the new process: it outlives the TTL.
    await wait_until(lambda: _heartbeats(sidecar, 9), what="nine heartbeats (> TTL)")
    assert await peer.get("call-1", "s-1") is not None
    # And the stream works again: a close after the restart reaches the app.
    await peer.request_close("call-1", "s-1")
    await app.expect("ended", session_id="s-1", known=True)


async def test_stream_resumes_with_last_event_id_without_loss(
    sidecar_factory: SidecarFactory, peer: SessionRegistry
) -> None:
    sidecar = await sidecar_factory()
    for n in range(4):
        response = await sidecar.http.post("/v1/sessions", json={"call_id": "call-1", "session_id": f"s-{n}"})
        assert response.status_code == 201
    async with httpx.AsyncClient(base_url=sidecar.url, timeout=10) as http:
        first = await _read_events(http, peer, close=["s-0"], count=1)
        last_id = first[0]["id"]
        # The app is away: two closes happen meanwhile.
        await peer.request_close("call-1", "s-1")
        await peer.request_close("call-1", "s-2")
        await wait_until(lambda: _event_count(sidecar, 3), what="the sidecar to emit both")
        resumed = await _read_events(http, peer, close=["s-3"], count=3, last_event_id=last_id)
    assert [e["data"]["session_id"] for e in resumed] == ["s-1", "s-2", "s-3"]
    ids = [int(last_id)] + [int(e["id"]) for e in resumed]
    assert ids == sorted(ids) and len(set(ids)) == 4


async def test_sessions_left_by_a_dead_sidecar_go_when_no_app_comes_back(
    sidecar_factory: SidecarFactory, peer: SessionRegistry
) -> None:
    env = {"CALLBOARD_TTL": "30", "CALLBOARD_HEARTBEAT_INTERVAL": "0.3", "CALLBOARD_EVENT_GRACE": "1"}
    sidecar = await sidecar_factory(env=env)
    async with (
        httpx.AsyncClient(base_url=sidecar.url, timeout=10) as http,
        http.stream("GET", "/v1/events"),  # an app is connected...
    ):
        await wait_until(lambda: _consumers(sidecar), what="the stream")
        response = await http.post("/v1/sessions", json={"call_id": "call-1", "session_id": "s-1"})
        assert response.status_code == 201
        await sidecar.kill()  # ...and the whole pod dies
    await sidecar.start()  # the sidecar is restarted; the app never comes back
    await wait_until(lambda: _gone(peer, "s-1"), timeout=5, what="the stale session to be removed")
    ended = await peer.get_ended("call-1", "s-1")
    assert ended is not None and ended.reason == EndReason.APP_UNHEALTHY  # removed, long before its 30 s TTL


async def _read_events(
    http: httpx.AsyncClient,
    peer: SessionRegistry,
    *,
    close: list[str],
    count: int,
    last_event_id: str | None = None,
) -> list[dict[str, Any]]:
    """Connect, ask for ``close`` once connected, return the first ``count`` events with ids."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[dict[str, Any]] = []
    async with http.stream("GET", "/v1/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        decoder = SSEDecoder()
        asked = False
        async for line in response.aiter_lines():
            if not asked and decoder.retry is not None:  # the greeting arrived: we are subscribed
                for session_id in close:
                    await peer.request_close("call-1", session_id)
                asked = True
            raw = decoder.feed(line)
            if raw is not None and raw.id is not None:
                events.append({"type": raw.event, "data": json.loads(raw.data), "id": raw.id})
                if len(events) == count:
                    break
    return events


async def _gone(peer: SessionRegistry, session_id: str) -> bool:
    return await peer.get("call-1", session_id) is None


async def _live(peer: SessionRegistry, session_id: str) -> bool:
    return await peer.get("call-1", session_id) is not None


async def _heartbeats(sidecar: SidecarProcess, count: int) -> bool:
    return await metric(sidecar, "heartbeats_total") >= count


async def _event_count(sidecar: SidecarProcess, count: int) -> bool:
    return await metric(sidecar, "events_total") >= count


async def _consumers(sidecar: SidecarProcess) -> bool:
    return bool((await sidecar.get("/v1/node"))["event_consumers"] >= 1)
