"""The node HTTP API: documented routes, listings, statuses, cross-node close."""

from __future__ import annotations

import asyncio

from callboard.launcher import CloseReason
from callboard.server import NODE_HEADER
from tests.support.fake_agents import FlakyStore
from tests.unit.server.conftest import MakeNode


async def test_start_get_and_close_a_local_session(make_node: MakeNode) -> None:
    a = await make_node("node-a")
    response = await a.client.post("/calls/call-1/sessions", json={"call_type": "livestream"})
    assert response.status_code == 201
    assert response.headers[NODE_HEADER] == "node-a"
    body = response.json()
    assert body["call_id"] == "call-1" and body["call_type"] == "livestream" and body["node_id"] == "node-a"
    sid = body["session_id"]
    assert sid == a.factory.created[0].id

    got = await a.client.get(f"/calls/call-1/sessions/{sid}")
    assert got.status_code == 200
    assert got.json()["node_id"] == "node-a" and got.json()["local"] is True
    assert got.json()["session_started_at"] == body["session_started_at"]

    session = a.launcher.get_session(sid)
    assert session is not None
    closed = await a.client.delete(f"/calls/call-1/sessions/{sid}")
    assert closed.status_code == 202
    assert closed.json() == {"session_id": sid, "call_id": "call-1", "node_id": "node-a", "status": "closing"}
    assert a.launcher.get_session(sid) is None  # at once, no maintenance cycle
    await asyncio.wait_for(session.wait(), 1)  # the agent closed and the record is gone
    assert a.factory.created[0].closed == 1
    assert (await a.client.get(f"/calls/call-1/sessions/{sid}")).status_code == 404


async def test_body_is_optional_like_the_documented_api(make_node: MakeNode) -> None:
    a = await make_node()
    response = await a.client.post("/calls/call-1/sessions")
    assert response.status_code == 201 and response.json()["call_type"] == "default"


async def test_start_on_a_read_on_b_close_via_c(make_node: MakeNode) -> None:
    a, b, c = await make_node("node-a"), await make_node("node-b"), await make_node("node-c")
    sid = (await a.client.post("/calls/call-1/sessions")).json()["session_id"]
    seen = await b.client.get(f"/calls/call-1/sessions/{sid}")
    assert seen.status_code == 200 and seen.json()["node_id"] == "node-a" and seen.json()["local"] is False
    assert seen.headers[NODE_HEADER] == "node-b"

    session = a.launcher.get_session(sid)
    assert session is not None
    closed = await c.client.post(f"/calls/call-1/sessions/{sid}/close")
    assert closed.status_code == 202
    assert closed.json()["status"] == "close_requested" and closed.json()["node_id"] == "node-a"
    await asyncio.wait_for(session.wait(), 1)  # pushed: no maintenance cycle ran
    assert session.close_reason is CloseReason.CLOSE_REQUESTED and a.factory.created[0].closed == 1
    assert (await b.client.get(f"/calls/call-1/sessions/{sid}")).status_code == 404


async def test_unknown_sessions_are_404(make_node: MakeNode) -> None:
    a = await make_node()
    for method, path in [
        ("GET", "/calls/call-1/sessions/nope"),
        ("DELETE", "/calls/call-1/sessions/nope"),
        ("POST", "/calls/call-1/sessions/nope/close"),
        ("GET", "/calls/call-1/sessions/nope/metrics"),
    ]:
        response = await a.client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert "nope" in response.json()["detail"]


async def test_invalid_ids_and_bodies_are_422(make_node: MakeNode) -> None:
    a = await make_node()
    for method, path, body in [
        ("POST", "/calls/bad*id/sessions", None),
        ("GET", "/calls/call-1/sessions/-leading-dash", None),
        ("GET", f"/calls/{'x' * 129}/sessions/s", None),
        ("POST", "/calls/call-1/sessions", {"call_type": "no spaces"}),
        ("POST", "/calls/call-1/sessions", [1, 2]),
        ("GET", "/sessions?limit=0", None),
        ("GET", "/sessions?limit=1001", None),
        ("GET", "/sessions?call_id=a[b]", None),
        ("GET", "/sessions?cursor=a%2Fb", None),
    ]:
        response = await a.client.request(method, path, json=body)
        assert response.status_code == 422, (method, path, body, response.text)
    assert a.factory.created == []
    unknown = await a.client.get("/sessions?cursor=not-one-we-gave")  # well formed, names no page
    assert unknown.status_code == 404 and "cursor" in unknown.json()["detail"]


async def test_limits_are_429(make_node: MakeNode) -> None:
    a = await make_node("node-a", max_concurrent_sessions=1)
    b = await make_node("node-b", max_sessions_per_call=1)
    assert (await a.client.post("/calls/call-1/sessions")).status_code == 201
    full = await a.client.post("/calls/call-2/sessions")
    assert (
        full.status_code == 429 and full.json()["detail"] == "Reached maximum number of concurrent sessions"
    )
    per_call = await b.client.post("/calls/call-1/sessions")  # call-1 already has a session on node-a
    assert per_call.status_code == 429
    assert per_call.json()["detail"] == "Reached maximum number of sessions for this call"


async def test_metrics_local_live_and_remote_published(make_node: MakeNode) -> None:
    a, b = await make_node("node-a"), await make_node("node-b")
    sid = (await a.client.post("/calls/call-1/sessions")).json()["session_id"]
    a.factory.created[0].metrics = {"latency_ms": 310.5, "tokens": 12}
    local = (await a.client.get(f"/calls/call-1/sessions/{sid}/metrics")).json()
    assert local["metrics"] == {"latency_ms": 310.5, "tokens": 12} and local["metrics_generated_at"]
    remote = (await b.client.get(f"/calls/call-1/sessions/{sid}/metrics")).json()
    assert remote["metrics"] == {} and remote["metrics_generated_at"] is None  # not published yet
    await a.launcher.maintenance_cycle()
    remote = (await b.client.get(f"/calls/call-1/sessions/{sid}/metrics")).json()
    assert remote["metrics"] == {"latency_ms": 310.5, "tokens": 12} and remote["node_id"] == "node-a"


async def test_listings_filter_and_paginate(make_node: MakeNode) -> None:
    a, b = await make_node("node-a"), await make_node("node-b")
    for i in range(5):
        await (a if i % 2 else b).client.post(f"/calls/call-{i % 2}/sessions")
    everything = (await a.client.get("/sessions")).json()
    assert len(everything["items"]) == 5 and everything["limit"] == 100 and everything["next"] is None
    first = (await a.client.get("/sessions?limit=2")).json()
    second = (await a.client.get("/sessions", params={"limit": 2, "cursor": first["next"]})).json()
    assert [s["session_id"] for s in first["items"] + second["items"]] == [
        s["session_id"] for s in everything["items"][:4]
    ]
    assert second["next"] is not None and second["next"] != first["next"]
    on_b = (await a.client.get("/sessions?node_id=node-b")).json()
    assert len(on_b["items"]) == 3 and {s["node_id"] for s in on_b["items"]} == {"node-b"}
    call_1 = (await b.client.get("/calls/call-1/sessions")).json()
    assert call_1["total"] == 2 and {s["call_id"] for s in call_1["items"]} == {"call-1"}
    both = (await b.client.get("/sessions?call_id=call-0&node_id=node-b")).json()
    assert len(both["items"]) == 3
    nodes = (await b.client.get("/nodes")).json()
    assert [n["node_id"] for n in nodes["items"]] == ["node-a", "node-b"] and nodes["total"] == 2


async def test_draining_node_is_503_and_not_ready(make_node: MakeNode) -> None:
    a = await make_node()
    assert (await a.client.get("/ready")).status_code == 200
    await a.launcher.drain(0)
    response = await a.client.post("/calls/call-1/sessions")
    assert response.status_code == 503 and "draining" in response.json()["detail"]
    assert response.headers["Retry-After"] == "1"
    ready = await a.client.get("/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert (await a.client.get("/health")).status_code == 200
    node = (await a.client.get("/nodes")).json()["items"][0]
    assert node["draining"] is True and node["free_slots"] == 0


async def test_g9_node_api_refuses_a_start_on_a_node_marked_draining(make_node: MakeNode) -> None:
    """A session started outside the operator (``POST``) does not land on a scale-down victim."""
    a = await make_node()
    await a.launcher.registry.mark_draining(["node-a"], ttl=60)
    response = await a.client.post("/calls/call-1/sessions")
    assert response.status_code == 503 and "draining" in response.json()["detail"]
    assert a.factory.created == [] and await a.launcher.registry.get_for_call("call-1") == []
    await a.launcher.registry.clear_drain_marks(["node-a"])
    assert (await a.client.post("/calls/call-1/sessions")).status_code == 201


async def test_unreachable_registry_is_503_never_500(make_node: MakeNode) -> None:
    store = FlakyStore()
    a = await make_node(store=store)
    sid = (await a.client.post("/calls/call-1/sessions")).json()["session_id"]
    store.down = True
    for method, path in [
        ("POST", "/calls/call-2/sessions"),
        ("GET", f"/calls/call-1/sessions/{sid}"),
        ("GET", "/calls/call-9/sessions/other/metrics"),
        ("DELETE", "/calls/call-9/sessions/other"),
        ("GET", "/sessions"),
        ("GET", "/calls/call-1/sessions"),
        ("GET", "/nodes"),
    ]:
        response = await a.client.request(method, path)
        assert response.status_code == 503, (method, path, response.text)
        assert "registry unavailable" in response.json()["detail"]
    ready = await a.client.get("/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "registry unreachable"
    # A local session still closes: that needs no registry round trip first.
    assert (await a.client.delete(f"/calls/call-1/sessions/{sid}")).status_code == 202
    assert a.launcher.get_session(sid) is None
    store.down = False
    assert (await a.client.get("/ready")).status_code == 200


async def test_agent_factory_failure_is_a_json_500(make_node: MakeNode) -> None:
    a = await make_node()
    a.factory.error = RuntimeError("model quota exceeded")
    response = await a.client.post("/calls/call-1/sessions")
    assert response.status_code == 500
    assert "model quota exceeded" in response.json()["detail"]


async def test_health_and_openapi(make_node: MakeNode) -> None:
    a = await make_node()
    health = (await a.client.get("/health")).json()
    assert health["status"] == "ok" and health["node_id"] == "node-a"
    spec = (await a.client.get("/openapi.json")).json()
    documented = {
        ("post", "/calls/{call_id}/sessions"),
        ("get", "/calls/{call_id}/sessions/{session_id}"),
        ("delete", "/calls/{call_id}/sessions/{session_id}"),
        ("post", "/calls/{call_id}/sessions/{session_id}/close"),
        ("get", "/calls/{call_id}/sessions/{session_id}/metrics"),
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/sessions"),
        ("get", "/calls/{call_id}/sessions"),
        ("get", "/nodes"),
        ("get", "/metrics"),
    }
    assert {(m, p) for p, ops in spec["paths"].items() for m in ops} == documented
    assert spec["paths"]["/calls/{call_id}/sessions"]["post"]["responses"].keys() >= {
        "201",
        "422",
        "429",
        "503",
    }
    assert spec["paths"]["/calls/{call_id}/sessions/{session_id}"]["delete"]["responses"].keys() >= {
        "202",
        "404",
    }


async def test_close_reason_of_api_close(make_node: MakeNode) -> None:
    a = await make_node()
    sid = (await a.client.post("/calls/call-1/sessions")).json()["session_id"]
    session = a.launcher.get_session(sid)
    assert session is not None
    await a.client.delete(f"/calls/call-1/sessions/{sid}")
    await asyncio.wait_for(session.wait(), 1)
    assert session.close_reason is CloseReason.CLOSED
