"""G11 against the real process: the session API stays in its pod, the probe port shows counts only.

The sidecar runs as ``callboard sidecar`` with its probes on every interface, as in the chart;
a second process (the attack list of :mod:`tests.support.attacks`, run as its own program)
tries everything issue 14 found open, through the machine's non-loopback address, as another
pod would through the pod IP. The registry is a Redis with a password, as the chart's bundled
one now is; the attacker knows its address, not the password.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio

from callboard.registry import RedisSessionKVStore, SessionRegistry
from tests.integration.sidecar.conftest import SidecarFactory
from tests.support.paths import REPO_ROOT as ROOT
from tests.support.redis_server import RedisServer
from tests.support.sidecar import SidecarProcess

pytestmark = pytest.mark.redis

PASSWORD = "pod-secret"


def _outside_address() -> str:
    """This machine's address on its network (what another host, or pod, would connect to)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("198.51.100.1", 9))  # no packet is sent: this only picks the route
        address = probe.getsockname()[0]
    assert not address.startswith("127."), "the test needs a non-loopback interface"
    return str(address)


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"CONFIG SET requirepass {PASSWORD}\r\n".encode())
        assert sock.recv(16).startswith(b"+OK")
    yield server
    server.stop()


async def _attack(*args: str) -> tuple[int, list[dict[str, object]]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests" / "support" / "attacks.py"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    assert err == b"" or proc.returncode in (0, 1), err.decode()
    return proc.returncode, [json.loads(line) for line in out.splitlines()]


async def test_g11_a_second_process_cannot_reach_the_session_api(
    sidecar_factory: SidecarFactory, locked_redis: RedisServer
) -> None:
    outside = _outside_address()
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis.port}/0"
    probe_port = SidecarProcess(redis_url=url, node_id="x", log_dir=Path()).probe_port
    sidecar = await sidecar_factory(
        "node-a",
        env={"CALLBOARD_REDIS_URL": url, "CALLBOARD_PROBE_LISTEN": f"0.0.0.0:{probe_port}"},
    )
    registered = await sidecar.http.post(
        "/v1/sessions", json={"call_id": "victim-call", "session_id": "victim-s"}
    )
    assert registered.status_code == 201

    code, attempts = await _attack(
        "--pod-ip",
        outside,
        "--session-port",
        str(sidecar.port),
        "--probe-port",
        str(probe_port),
        "--redis-url",
        f"redis://127.0.0.1:{locked_redis.port}/0",
        "--victim",
        "victim-call/victim-s",
    )
    assert attempts, "the attack list ran"
    assert [a for a in attempts if not a["refused"]] == []
    assert code == 0
    session_port_attempts = [a for a in attempts if "session port" in str(a["name"])]
    assert session_port_attempts and all(
        str(a["detail"]).startswith("unreachable") for a in session_port_attempts
    )

    # The app in the pod keeps working, and its session is intact.
    assert await sidecar.session_ids() == ["victim-s"]
    ok = await sidecar.http.put("/v1/calls/victim-call/sessions/victim-s/metrics", json={"metrics": {"n": 1}})
    assert ok.status_code == 200
    # The node record names no address other pods could use.
    reader = SessionRegistry(RedisSessionKVStore(url=url), node_id="reader", ttl=10)
    nodes = {n.node_id: n for n in await reader.list_nodes()}
    assert nodes["node-a"].address is None
    await reader.store.close()


async def test_g11_the_probe_port_shows_counts_only(
    sidecar_factory: SidecarFactory, locked_redis: RedisServer
) -> None:
    outside = _outside_address()
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis.port}/0"
    probe_port = SidecarProcess(redis_url=url, node_id="x", log_dir=Path()).probe_port
    sidecar = await sidecar_factory(
        "node-a",
        env={"CALLBOARD_REDIS_URL": url, "CALLBOARD_PROBE_LISTEN": f"0.0.0.0:{probe_port}"},
    )
    for n in (1, 2):
        await sidecar.http.post("/v1/sessions", json={"call_id": "call-xyz", "session_id": f"session-{n}"})
    async with httpx.AsyncClient(base_url=f"http://{outside}:{probe_port}", timeout=5) as probes:
        assert (await probes.get("/readyz")).json()["status"] == "ok"
        assert (await probes.get("/healthz")).status_code == 200
        metrics = (await probes.get("/metrics")).text
        assert 'callboard_sidecar_sessions{node_id="node-a"} 2.0' in metrics
        for response in [await probes.get(p) for p in ("/readyz", "/healthz", "/metrics")]:
            assert "call-xyz" not in response.text and "session-" not in response.text
        assert (await probes.get("/v1/sessions")).status_code == 404
        assert (await probes.get("/openapi.json")).status_code == 404


async def test_g11_without_the_password_the_registry_refuses(locked_redis: RedisServer) -> None:
    client = redis.asyncio.from_url(f"redis://127.0.0.1:{locked_redis.port}/0")
    with pytest.raises(redis.exceptions.AuthenticationError):
        await client.set("vision_agents:nodes/attacker", b"{}")
    await client.aclose()


async def test_g11_a_non_loopback_session_api_exits_2(sidecar_factory: SidecarFactory) -> None:
    sidecar = await sidecar_factory(env={"CALLBOARD_LISTEN": "0.0.0.0:8555"}, ready=False)
    assert await sidecar.wait(20) == 2
    assert "CALLBOARD_LISTEN" in sidecar.log() and "not a loopback address" in sidecar.log()
