"""The local API over ASGI, on an in-memory store (the event stream is tested over real HTTP)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from callboard.registry import InMemorySessionKVStore, SessionRegistry, StartClaim
from callboard.sidecar.api import create_app, create_probe_app
from callboard.sidecar.service import SidecarService
from callboard.sidecar.settings import SidecarSettings
from tests.support.waiting import wait_until
from tests.unit.sidecar.conftest import Local


async def register(http: httpx.AsyncClient, call_id: str, session_id: str, **extra: Any) -> httpx.Response:
    return await http.post("/v1/sessions", json={"call_id": call_id, "session_id": session_id, **extra})


async def test_register_is_idempotent_and_listed(local: Local) -> None:
    created = await register(local.http, "call-1", "s-1", metrics={"latency_ms": 80})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["call_id"], body["session_id"], body["node_id"]) == ("call-1", "s-1", "node-a")
    assert body["metrics"] == {"latency_ms": 80} and body["close_requested"] is False
    again = await register(local.http, "call-1", "s-1")
    assert again.status_code == 200
    assert again.json()["started_at"] == body["started_at"]
    listed = (await local.http.get("/v1/sessions")).json()
    assert [s["session_id"] for s in listed] == ["s-1"]
    one = await local.http.get("/v1/calls/call-1/sessions/s-1")
    assert one.status_code == 200 and one.json()["metrics"] == {"latency_ms": 80}
    stored = await local.other.get("call-1", "s-1")  # the cluster sees it, with its metrics
    assert stored is not None and stored.node_id == "node-a" and stored.metrics == {"latency_ms": 80}


async def test_capacity_refuses_with_409_until_a_slot_frees(local: Local) -> None:
    assert (await register(local.http, "call-1", "s-1")).status_code == 201
    assert (await register(local.http, "call-2", "s-2")).status_code == 201
    full = await register(local.http, "call-3", "s-3")
    assert full.status_code == 409
    assert full.json()["error"] == "MaxConcurrentSessionsExceeded"
    assert (await register(local.http, "call-1", "s-1")).status_code == 200  # a known one is no new one
    assert (await local.http.delete("/v1/calls/call-1/sessions/s-1")).status_code == 204
    assert (await register(local.http, "call-3", "s-3")).status_code == 201
    assert local.service.stats.refused == {"capacity": 1}


async def test_max_sessions_per_call_is_409(local: Local) -> None:
    await local.other.register("call-1", "s-b")
    refused = await register(local.http, "call-1", "s-a", max_sessions_per_call=1)
    assert refused.status_code == 409 and refused.json()["error"] == "MaxSessionsPerCallExceeded"
    assert local.service.stats.refused == {"call_limit": 1}


async def test_a_start_request_over_the_per_call_limit_is_answered_call_limit(local: Local) -> None:
    await local.other.register("call-9", "s-b")
    request = await local.other.request_start("node-a", "call-9", session_id="s-9")
    await wait_until(lambda: local.service.start_requests(), what="the start request")
    refused = await register(
        local.http, "call-9", "s-9", start_request_id=request.request_id, max_sessions_per_call=1
    )
    assert refused.status_code == 409
    result = await local.other.get_start_result(request.request_id)
    assert result is not None and (result.accepted, result.reason) == (False, "call_limit")


@pytest.mark.parametrize(
    "body",
    [
        {"call_id": "call/1", "session_id": "s"},
        {"call_id": "call-1", "session_id": "s*"},
        {"call_id": "", "session_id": "s"},
        {"call_id": "c" * 129, "session_id": "s"},
        {"call_id": 7, "session_id": "s"},
        {"session_id": "s"},
        {"call_id": "call-1", "session_id": "s", "metrics": [1, 2]},
        {"call_id": "call-1", "session_id": "s", "max_sessions_per_call": 0},
    ],
)
async def test_bad_registrations_are_422(local: Local, body: dict[str, Any]) -> None:
    response = await local.http.post("/v1/sessions", json=body)
    assert response.status_code == 422, response.text
    assert local.service.sessions() == []


async def test_a_registration_needs_a_session_id_without_a_start_request(local: Local) -> None:
    response = await local.http.post("/v1/sessions", json={"call_id": "call-1"})
    assert response.status_code == 422 and response.json()["error"] == "StartRequestMismatchError"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/v1/calls/ca*ll/sessions/s", {}),
        ("DELETE", "/v1/calls/call/sessions/s%5B1%5D", {}),
        ("PUT", "/v1/calls/call/sessions/.s/metrics", {"json": {"metrics": {}}}),
        ("PUT", "/v1/calls/call/sessions/s/metrics", {"json": {"metrics": "fast"}}),
        ("DELETE", "/v1/calls/call/sessions/s", {"params": {"reason": "x" * 201}}),
        ("DELETE", "/v1/calls/call/sessions/s", {"params": {"reason": ""}}),
        ("POST", "/v1/start-requests/r*/reject", {"json": {"reason": "no"}}),
        ("POST", "/v1/start-requests/r1/reject", {"json": {}}),
    ],
)
async def test_bad_input_in_paths_and_bodies_is_422(
    local: Local, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = await local.http.request(method, path, **kwargs)
    assert response.status_code == 422, response.text


async def test_unknown_sessions_are_404(local: Local) -> None:
    for response in (
        await local.http.get("/v1/calls/call-1/sessions/nope"),
        await local.http.delete("/v1/calls/call-1/sessions/nope"),
        await local.http.put("/v1/calls/call-1/sessions/nope/metrics", json={"metrics": {}}),
        await local.http.post("/v1/start-requests/nope/reject", json={"reason": "no"}),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"] in ("SessionNotFoundError", "UnknownStartRequestError")


async def test_end_keeps_the_reason_in_the_tombstone(local: Local) -> None:
    await register(local.http, "call-1", "s-1")
    response = await local.http.delete("/v1/calls/call-1/sessions/s-1", params={"reason": "user-hung-up"})
    assert response.status_code == 204
    assert await local.other.get("call-1", "s-1") is None
    ended = await local.other.get_ended("call-1", "s-1")
    assert ended is not None and (ended.reason, ended.node_id) == ("user-hung-up", "node-a")
    assert local.service.stats.ended == {"app": 1}


async def test_end_a_session_only_the_store_still_knows(local: Local) -> None:
    """After a sidecar restart the app may end a session before re-asserting it."""
    previous = SessionRegistry(local.other.store, node_id="node-a", ttl=30)
    await previous.register("call-1", "s-old")  # as the previous sidecar process left it
    assert (await local.http.delete("/v1/calls/call-1/sessions/s-old")).status_code == 204
    assert await local.other.get("call-1", "s-old") is None
    await local.other.register("call-2", "s-other")  # another node's session is not ours to end
    assert (await local.http.delete("/v1/calls/call-2/sessions/s-other")).status_code == 404
    assert await local.other.get("call-2", "s-other") is not None


async def test_metrics_update(local: Local) -> None:
    await register(local.http, "call-1", "s-1")
    response = await local.http.put("/v1/calls/call-1/sessions/s-1/metrics", json={"metrics": {"turns": 3}})
    assert response.status_code == 200 and response.json()["metrics"] == {"turns": 3}
    stored = await local.other.get("call-1", "s-1")
    assert stored is not None and stored.metrics == {"turns": 3} and stored.metrics_updated_at


async def test_draining_refuses_new_sessions_with_503_but_restores(local: Local) -> None:
    assert await local.service.drain() == 0  # no sessions: returns at once
    refused = await register(local.http, "call-1", "s-1")
    assert refused.status_code == 503 and refused.json()["error"] == "NodeDrainingError"
    restored = await register(local.http, "call-1", "s-2", restore=True)
    assert restored.status_code == 201
    node = await local.other.get_node("node-a")
    assert node is not None and node.draining and node.free_slots == 0
    ready = await local.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["reason"] == "draining"
    assert (await local.http.get("/v1/node")).json()["draining"] is True


async def test_restore_keeps_start_time_and_metrics_and_delivers_a_pending_close(local: Local) -> None:
    await local.other.request_close("call-1", "s-1")  # asked while the sidecar was away
    body = {"restore": True, "started_at": 1_700_000_000.5, "metrics": {"turns": 9}}
    assert (await register(local.http, "call-1", "s-1", **body)).status_code == 201
    stored = await local.other.get("call-1", "s-1")
    assert stored is not None
    assert (stored.started_at, stored.metrics, stored.node_id) == (1_700_000_000.5, {"turns": 9}, "node-a")
    view = (await local.http.get("/v1/calls/call-1/sessions/s-1")).json()
    assert view["close_requested"] is True
    assert local.service.stats.restored == 1


async def test_close_request_from_another_node_marks_the_session(local: Local) -> None:
    await register(local.http, "call-1", "s-1")
    await local.other.request_close("call-1", "s-1")
    await wait_until(lambda: local.service.sessions()[0].close_requested, what="the close request")
    assert local.service.stats.events == {"close_requested": 1}


async def test_start_request_accepted_by_registering(local: Local) -> None:
    request = await local.other.request_start("node-a", "call-9", session_id="s-9", params={"voice": "en"})
    await wait_until(lambda: local.service.start_requests(), what="the start request")
    listed = (await local.http.get("/v1/start-requests")).json()
    assert [(r["request_id"], r["params"]) for r in listed] == [(request.request_id, {"voice": "en"})]
    response = await local.http.post(
        "/v1/sessions", json={"call_id": "call-9", "start_request_id": request.request_id}
    )
    assert response.status_code == 201 and response.json()["session_id"] == "s-9"
    result = await local.other.get_start_result(request.request_id)
    assert result is not None and result.accepted and result.session_id == "s-9"
    assert (await local.http.get("/v1/start-requests")).json() == []


async def test_start_request_rejected_with_a_reason(local: Local) -> None:
    request = await local.other.request_start("node-a", "call-9", session_id="s-9")
    await wait_until(lambda: local.service.start_requests(), what="the start request")
    response = await local.http.post(
        f"/v1/start-requests/{request.request_id}/reject", json={"reason": "no gpu"}
    )
    assert response.status_code == 200
    result = await local.other.get_start_result(request.request_id)
    assert result is not None and not result.accepted and result.reason == "no gpu"


async def test_accepting_a_start_request_for_another_call_is_422(local: Local) -> None:
    request = await local.other.request_start("node-a", "call-9", session_id="s-9")
    await wait_until(lambda: local.service.start_requests(), what="the start request")
    response = await register(local.http, "call-8", "s-9", start_request_id=request.request_id)
    assert response.status_code == 422 and response.json()["error"] == "StartRequestMismatchError"


async def test_a_full_node_rejects_start_requests_by_itself(local: Local) -> None:
    await register(local.http, "call-1", "s-1")
    await register(local.http, "call-2", "s-2")
    request = await local.other.request_start("node-a", "call-9")
    await wait_until(lambda: local.other.get_start_result(request.request_id), what="the answer")
    result = await local.other.get_start_result(request.request_id)
    assert result is not None and not result.accepted and result.reason == "capacity"
    assert local.service.start_requests() == []


async def test_probes_metrics_and_openapi(local: Local) -> None:
    assert (await local.http.get("/healthz")).json() == {"status": "ok", "reason": None}
    assert (await local.http.get("/readyz")).status_code == 200
    await register(local.http, "call-1", "s-1")
    metrics = (await local.http.get("/metrics")).text
    assert 'callboard_sidecar_sessions{node_id="node-a"} 1.0' in metrics
    assert 'callboard_sidecar_free_slots{node_id="node-a"} 1.0' in metrics
    assert 'callboard_sidecar_sessions_registered_total{node_id="node-a"} 1.0' in metrics
    assert "python_gc_objects_collected_total" not in metrics  # a registry of its own
    schema = (await local.http.get("/openapi.json")).json()
    assert {
        "/v1/sessions",
        "/v1/calls/{call_id}/sessions/{session_id}",
        "/v1/calls/{call_id}/sessions/{session_id}/metrics",
        "/v1/start-requests",
        "/v1/start-requests/{request_id}/reject",
        "/v1/node",
        "/v1/events",
        "/healthz",
        "/readyz",
    } <= set(schema["paths"])
    node = (await local.http.get("/v1/node")).json()
    assert (node["node_id"], node["pool"], node["capacity"], node["active"]) == ("node-a", "voice", 2, 1)


async def test_before_the_store_answers_calls_are_503_with_retry_after() -> None:
    service = SidecarService(
        SidecarSettings(), registry=SessionRegistry(InMemorySessionKVStore(), node_id="n")
    )
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as http:
        response = await register(http, "call-1", "s-1")
        assert response.status_code == 503
        assert response.json()["error"] == "StoreUnavailableError"
        assert response.headers["retry-after"] == "1"
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and "not connected" in ready.json()["reason"]
        assert (await http.get("/healthz")).status_code == 503  # its loops are not running


async def test_g7_accepting_a_withdrawn_start_request_is_410_and_registers_nothing(local: Local) -> None:
    request = await local.other.request_start("node-a", "call-9", session_id="s-9")
    await wait_until(lambda: local.service.start_requests(), what="the start request")
    [listed] = (await local.http.get("/v1/start-requests")).json()
    assert listed["expires_at"] == request.expires_at
    assert await local.other.withdraw_start(request) is StartClaim.WITHDRAWN  # its requester gave up
    response = await local.http.post(
        "/v1/sessions", json={"call_id": "call-9", "start_request_id": request.request_id}
    )
    assert response.status_code == 410 and response.json()["error"] == "StartRequestGoneError"
    assert await local.other.get_for_call("call-9") == [] and local.service.sessions() == []
    assert (await local.http.get("/v1/start-requests")).json() == []
    gone = await register(local.http, "call-9", "s-9", start_request_id=request.request_id)
    assert gone.status_code == 410  # not held any more, not in the store: still not a plain registration


async def test_g7_a_start_request_claimed_by_another_process_is_not_offered_to_the_app(local: Local) -> None:
    twin = SessionRegistry(local.other.store, node_id="node-a")  # the same node id, started twice
    request = await local.other.request_start("node-a", "call-9", session_id="s-9")
    # The in-memory store never suspends: the twin claims before the sidecar reads the push.
    assert await twin.claim_start(request) is StartClaim.CLAIMED
    later = await local.other.request_start("node-a", "call-8", session_id="s-8")
    await wait_until(lambda: local.service.start_requests(), what="the later request")
    assert [r.request_id for r in local.service.start_requests()] == [later.request_id]
    gone = await register(local.http, "call-9", "s-9", start_request_id=request.request_id)
    assert gone.status_code == 410 and await local.other.get_for_call("call-9") == []


async def test_g12_values_out_of_bounds_are_422_and_another_nodes_session_is_409(local: Local) -> None:
    # Out of the registry's bounds: refused by the registry; a body over the HTTP limit (64 KiB)
    # is refused before it is read, with the same status.
    for metrics, error in (({"x": 10**20}, "InvalidValueError"), ({"blob": "x" * 70_000}, "RequestRejected")):
        refused = await register(local.http, "call-1", "s-1", metrics=metrics)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == error, refused.text
    assert "metrics" in (await register(local.http, "call-1", "s-1", metrics={"x": 10**20})).json()["detail"]
    nan = await local.http.post(
        "/v1/sessions",
        content=b'{"call_id": "call-1", "session_id": "s-1", "metrics": {"x": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422, nan.text
    assert (await register(local.http, "call-1", "s-1")).status_code == 201
    bad = await local.http.put("/v1/calls/call-1/sessions/s-1/metrics", json={"metrics": {"x": 10**20}})
    assert bad.status_code == 422, bad.text
    await local.other.register("call-2", "s-other")
    taken = await register(local.http, "call-2", "s-other")
    assert taken.status_code == 409 and taken.json()["error"] == "SessionConflictError", taken.text
    assert (await local.http.get("/healthz")).status_code == 200


async def test_g11_the_probe_app_serves_counts_and_nothing_else(local: Local) -> None:
    """The port that may be exposed: probes and counts, no ids, no way to act on a session."""
    await register(local.http, "secret-call", "secret-session")
    await local.other.request_start("node-a", "secret-call", params={"api_key": "sk-123"})
    await wait_until(lambda: local.service.start_requests(), what="the start request to arrive")
    transport = httpx.ASGITransport(app=create_probe_app(local.service))
    async with httpx.AsyncClient(transport=transport, base_url="http://probes") as probes:
        bodies = []
        for path in ("/healthz", "/readyz", "/metrics"):
            response = await probes.get(path)
            assert response.status_code == 200, path
            bodies.append(response.text)
        assert 'callboard_sidecar_sessions{node_id="node-a"} 1.0' in bodies[2]
        for text in bodies:
            assert "secret" not in text and "sk-123" not in text
        for path in (
            "/v1/sessions",
            "/v1/events",
            "/v1/node",
            "/v1/start-requests",
            "/openapi.json",
            "/docs",
        ):
            assert (await probes.get(path)).status_code == 404, path
        assert (
            await probes.post("/v1/sessions", json={"call_id": "c", "session_id": "s"})
        ).status_code == 422
        assert (await probes.delete("/v1/calls/secret-call/sessions/secret-session")).status_code == 404
        assert (await probes.post("/metrics", content=b"")).status_code == 405
    assert [v.info.session_id for v in local.service.sessions()] == ["secret-session"]


async def test_g11_with_a_token_the_session_api_needs_it(local: Local) -> None:
    transport = httpx.ASGITransport(app=create_app(local.service, token="s3cret"))
    async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as http:
        for method, path in (
            ("POST", "/v1/sessions"),
            ("GET", "/v1/sessions"),
            ("GET", "/v1/events"),
            ("GET", "/v1/node"),
            ("GET", "/v1/start-requests"),
            ("DELETE", "/v1/calls/c/sessions/s"),
        ):
            denied = await http.request(method, path, headers={"Authorization": "Bearer nope"})
            assert denied.status_code == 401, path
            assert denied.json()["error"] == "Unauthorized"
        assert local.service.sessions() == []
        auth = {"Authorization": "Bearer s3cret"}
        ok = await http.post("/v1/sessions", json={"call_id": "c", "session_id": "s"}, headers=auth)
        assert ok.status_code == 201
        for path in ("/healthz", "/readyz", "/metrics"):  # the kubelet carries no token
            assert (await http.get(path)).status_code == 200, path


def _as(instance: str) -> dict[str, str]:
    return {"Callboard-App-Instance": instance}


async def test_a_new_app_instance_removes_the_sessions_of_the_previous_one_before_it_is_answered(
    local: Local,
) -> None:
    http = local.http
    first = await http.post(
        "/v1/sessions", json={"call_id": "call-1", "session_id": "s-1"}, headers=_as("run-1")
    )
    assert first.status_code == 201, first.text
    assert (await register(http, "call-2", "x")).status_code == 201  # no instance: nobody's
    # The same instance again changes nothing.
    listed = await http.get("/v1/sessions", headers=_as("run-1"))
    assert sorted(s["session_id"] for s in listed.json()) == ["s-1", "x"]
    # A new instance: its very first answer no longer lists the previous run's session.
    listed = await http.get("/v1/sessions", headers=_as("run-2"))
    assert [s["session_id"] for s in listed.json()] == ["x"]
    ended = await local.other.get_ended("call-1", "s-1")
    assert ended is not None and ended.reason == "app_restarted"
    assert local.service.stats.app_restarts == 1
    # The replaced instance is refused: it cannot end what the new one registers.
    mine = await http.post(
        "/v1/sessions", json={"call_id": "call-3", "session_id": "s-3"}, headers=_as("run-2")
    )
    assert mine.status_code == 201
    stale = await http.delete("/v1/calls/call-3/sessions/s-3", headers=_as("run-1"))
    assert stale.status_code == 409 and stale.json()["error"] == "AppInstanceReplacedError", stale.text
    assert sorted(s["session_id"] for s in (await http.get("/v1/sessions")).json()) == ["s-3", "x"]


async def test_a_bad_app_instance_header_is_a_422(local: Local) -> None:
    response = await local.http.get("/v1/sessions", headers=_as("bad instance/id"))
    assert response.status_code == 422 and "Callboard-App-Instance" in response.text, response.text
