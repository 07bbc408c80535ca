"""SessionRegistry foreign.py: sessions of Vision Agents nodes (no indexes) sharing the store.

Several registries sharing one backend play several nodes (see ``tests/integration/conftest.py``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from callboard import ConfigurationError, MaxSessionsPerCallExceeded
from callboard.registry import RedisSessionKVStore, SessionRegistry
from tests.integration.conftest import Cluster


async def test_foreign_node_interop(cluster: Cluster) -> None:
    """A node that only knows the documented layout (a Vision Agents node) and us."""
    ours = await cluster.node("callboard-node")
    foreign = await cluster.raw_store()
    # The foreign node registers a session by writing the documented key directly.
    record = {
        "session_id": "va-sess",
        "call_id": "call-1",
        "node_id": "va-node",
        "started_at": 1.0,
        "metrics_updated_at": 1.0,
        "metrics": {},
        "some_future_field": True,
    }
    await foreign.set("sessions/call-1/va-sess", json.dumps(record).encode(), 5)
    # We list it at once and, after the foreign scan, find it by call.
    assert [s.session_id for s in await ours.list_sessions()] == ["va-sess"]
    got = await ours.get("call-1", "va-sess")
    assert got is not None and got.node_id == "va-node"
    await ours.index_foreign_sessions()
    assert [s.session_id for s in await ours.get_for_call("call-1")] == ["va-sess"]
    # We close it the documented way: the foreign node polls the flag.
    await ours.request_close("call-1", "va-sess")
    assert await foreign.get("close_requests/call-1/va-sess") == b""
    # The foreign node sees our sessions and can close them by flag.
    await ours.register("call-1", "cb-sess")
    raw = await foreign.get("sessions/call-1/cb-sess")
    assert raw is not None
    decoded = json.loads(raw)
    assert set(decoded) == {"session_id", "call_id", "node_id", "started_at", "metrics_updated_at", "metrics"}
    assert decoded["node_id"] == "callboard-node"
    await foreign.set("close_requests/call-1/cb-sess", b"", 5)
    assert await ours.get_close_requests({"cb-sess": "call-1"}) == ["cb-sess"]
    # And it finds our sessions the documented way: by key prefix.
    assert sorted(await foreign.keys("sessions/call-1/")) == [
        "sessions/call-1/cb-sess",
        "sessions/call-1/va-sess",
    ]


@pytest.fixture
async def va_registry(redis_url: str) -> AsyncIterator[SessionRegistry]:
    """The fixture of Vision Agents' own registry tests, on callboard's Redis store."""
    client = aioredis.Redis.from_url(redis_url)
    registry = SessionRegistry(store=RedisSessionKVStore(client=client, key_prefix="test_reg:"), ttl=5.0)
    await registry.start()
    try:
        yield registry
    finally:
        await registry.stop()
        await client.aclose()


@pytest.mark.redis
async def test_get_for_call_ignores_extra_keys(va_registry: SessionRegistry) -> None:
    """Vision Agents' ``test_get_for_call_ignores_extra_keys``, unchanged but for the names."""
    registry = va_registry
    data = {
        "session_id": "s-fc",
        "call_id": "c-fc",
        "node_id": registry.node_id,
        "started_at": 1.0,
        "metrics_updated_at": 1.0,
        "metrics": {},
        "future_field": True,
    }
    key = "sessions/c-fc/s-fc"
    await registry._store.set(key, json.dumps(data).encode(), 10.0)

    sessions = await registry.get_for_call("c-fc")
    assert len(sessions) == 1
    assert sessions[0].session_id == "s-fc"


def _va_record(call_id: str, session_id: str) -> bytes:
    record = {"session_id": session_id, "call_id": call_id, "node_id": "va-node", "started_at": 1.0}
    return json.dumps({**record, "metrics_updated_at": None, "metrics": {}}).encode()


@pytest.mark.redis
async def test_g5_mixed_fleet_sees_a_plain_set_session_at_once_and_counts_it(redis_url: str) -> None:
    raw = aioredis.Redis.from_url(redis_url)
    ours = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="cb", fleet="mixed")
    await ours.start()
    try:
        # A Vision Agents node with its own Redis store: a plain SET ... PX, nothing else.
        await raw.set("vision_agents:sessions/call-1/va-1", _va_record("call-1", "va-1"), px=5000)
        assert [s.session_id for s in await ours.get_for_call("call-1")] == ["va-1"]
        with pytest.raises(MaxSessionsPerCallExceeded):
            await ours.register("call-1", "cb-1", max_sessions_per_call=1)
        await ours.register("call-1", "cb-1", max_sessions_per_call=2)
        assert sorted(s.session_id for s in await ours.get_for_call("call-1")) == ["cb-1", "va-1"]
    finally:
        await ours.stop()
        await raw.aclose()


@pytest.mark.redis
async def test_g5_a_foreign_session_found_by_the_scan_makes_every_node_read_exactly(redis_url: str) -> None:
    raw = aioredis.Redis.from_url(redis_url)
    a = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="cb-a")
    b = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="cb-b")
    await a.start()
    await b.start()
    try:
        await a.register("call-1", "cb-1")
        assert await a.index_foreign_sessions() == 0  # a clean scan: the fleet is callboard-only
        assert await raw.exists("vision_agents:index/callboard_only") == 1
        await raw.set("vision_agents:sessions/call-1/va-1", _va_record("call-1", "va-1"), px=2_000)
        assert await a.index_foreign_sessions() == 1  # the next scan finds a foreign writer
        assert await raw.exists("vision_agents:index/callboard_only") == 0
        # The foreign node refreshes its record; the index entry the scan wrote outlives it.
        await raw.pexpire("vision_agents:sessions/call-1/va-1", 30_000)
        assert await raw.pttl("vision_agents:index/calls/call-1") > 2_000
        # A session it writes later is seen at once by every node, and counted.
        await raw.set("vision_agents:sessions/call-1/va-2", _va_record("call-1", "va-2"), px=30_000)
        assert sorted(s.session_id for s in await b.get_for_call("call-1")) == ["cb-1", "va-1", "va-2"]
        with pytest.raises(MaxSessionsPerCallExceeded):
            await b.register("call-1", "cb-2", max_sessions_per_call=3)
    finally:
        await a.stop()
        await b.stop()
        await raw.aclose()


@pytest.mark.redis
async def test_at_most_one_node_scans_for_foreign_sessions(redis_url: str) -> None:
    registries = [
        SessionRegistry(RedisSessionKVStore(url=redis_url), node_id=f"cb-{i}", foreign_scan_interval=60.0)
        for i in range(3)
    ]
    for registry in registries:
        await registry.start()
    try:
        scanned = [await registry.scan_foreign_if_elected() for registry in registries]
        assert [s is not None for s in scanned].count(True) == 1
    finally:
        for registry in registries:
            await registry.stop()


@pytest.mark.redis
@pytest.mark.parametrize("fleet", ["callboard_only", "mixed"])
async def test_no_scanner_where_the_fleet_is_declared(redis_url: str, fleet: str) -> None:
    registry = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="cb", fleet=fleet)
    await registry.start()
    try:
        assert [t.get_name() for t in registry._tasks if "foreign" in t.get_name()] == []
    finally:
        await registry.stop()


def test_an_unknown_fleet_mode_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="callboard_only"):
        SessionRegistry(fleet="some")
