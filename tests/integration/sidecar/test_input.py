"""Capacity, bad input and bad configuration, against the real process."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from tests.integration.sidecar.conftest import SidecarFactory
from tests.support.redis_server import RedisServer
from tests.support.sidecar import SidecarProcess
from tests.support.waiting import wait_until


async def test_capacity_and_bad_input(sidecar_factory: SidecarFactory) -> None:
    sidecar = await sidecar_factory(env={"CALLBOARD_CAPACITY": "2"})
    http = sidecar.http
    for n in (1, 2):
        assert (
            await http.post("/v1/sessions", json={"call_id": "c", "session_id": f"s-{n}"})
        ).status_code == 201
    full = await http.post("/v1/sessions", json={"call_id": "c", "session_id": "s-3"})
    assert full.status_code == 409 and full.json()["error"] == "MaxConcurrentSessionsExceeded"
    assert (await http.delete("/v1/calls/c/sessions/s-1", params={"reason": "done"})).status_code == 204
    assert (await http.post("/v1/sessions", json={"call_id": "c", "session_id": "s-3"})).status_code == 201

    for body in (
        {"call_id": "c/1", "session_id": "s"},
        {"call_id": "c", "session_id": "s*"},
        {"call_id": "c", "session_id": "x" * 200},
        {"call_id": "c", "session_id": "s", "metrics": "fast"},
    ):
        response = await http.post("/v1/sessions", json=body)
        assert response.status_code == 422, body
    assert (
        await http.post("/v1/sessions", content=b"{not json", headers={"content-type": "application/json"})
    ).status_code == 422
    assert (await http.put("/v1/calls/c/sessions/s-2/metrics", json={"metrics": [1]})).status_code == 422
    assert (await http.delete("/v1/calls/c/sessions/nope")).status_code == 404
    assert await sidecar.session_ids() == ["s-2", "s-3"]
    node = await sidecar.get("/v1/node")
    assert (node["capacity"], node["active"], node["draining"]) == (2, 2, False)
    assert "callboard_sidecar_registrations_refused_total" in (await http.get("/metrics")).text
    assert "/v1/events" in (await sidecar.get("/openapi.json"))["paths"]


async def test_bad_configuration_exits_2_naming_the_variable(redis_url: str, tmp_path: Path) -> None:
    sidecar = SidecarProcess(
        redis_url=redis_url, node_id="node-a", log_dir=tmp_path, env={"CALLBOARD_HEARTBEAT_INTERVAL": "5"}
    )
    await sidecar.start(ready=False)
    assert await sidecar.wait(20) == 2
    assert "CALLBOARD_HEARTBEAT_INTERVAL" in sidecar.log()  # 5 s is not below the 2 s TTL
    await sidecar.aclose()


async def test_a_taken_port_exits_2(redis_url: str, tmp_path: Path) -> None:
    sidecar = SidecarProcess(redis_url=redis_url, node_id="node-a", log_dir=tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", sidecar.port))
        taken.listen()
        await sidecar.start(ready=False)
        assert await sidecar.wait(20) == 2
    assert "CALLBOARD_LISTEN" in sidecar.log() and "cannot listen" in sidecar.log()
    await sidecar.aclose()


async def test_starts_before_redis_and_becomes_ready_when_it_answers(
    sidecar_factory: SidecarFactory, redis_server: RedisServer
) -> None:
    redis_server.stop()
    try:
        sidecar = await sidecar_factory(ready=False)
        await wait_until(lambda: _alive(sidecar), what="the sidecar to serve /healthz")  # no crash loop
        ready = await sidecar.http.get("/readyz")
        assert ready.status_code == 503 and "not connected" in ready.json()["reason"]
        refused = await sidecar.http.post("/v1/sessions", json={"call_id": "c", "session_id": "s"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    finally:
        redis_server.start()
    await sidecar.wait_ready()
    assert (
        await sidecar.http.post("/v1/sessions", json={"call_id": "c", "session_id": "s"})
    ).status_code == 201


async def _alive(sidecar: SidecarProcess) -> bool:
    try:
        return (await sidecar.http.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False
