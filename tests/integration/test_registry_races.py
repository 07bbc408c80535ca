"""Issue 11's registry defects, each driven by the order of calls against a real redis-server.

Every test here failed on the code it was written against (a strict xfail until its fix
landed; the fixes removed the marks). Raw
edits go straight to Redis with the documented Vision Agents key layout
(``<prefix>sessions/{call}/{session}``): that is what eviction, a flush, manual clean-up or a
Vision Agents node does to the keys.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from callboard import CallboardError, MaxSessionsPerCallExceeded
from callboard.registry import DEFAULT_KEY_PREFIX, RedisSessionKVStore, SessionRegistry, SessionStatus

pytestmark = pytest.mark.redis

P = DEFAULT_KEY_PREFIX


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the same Redis, for the edits a fault or a foreign writer makes."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def node(redis_url: str) -> AsyncIterator[SessionRegistry]:
    registry = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="node-a", ttl=30)
    await registry.start()
    try:
        yield registry
    finally:
        await registry.stop()


@pytest.fixture
async def other(redis_url: str) -> AsyncIterator[SessionRegistry]:
    registry = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="node-b", ttl=30)
    await registry.start()
    try:
        yield registry
    finally:
        await registry.stop()


def _record(call_id: str, session_id: str, node_id: str) -> bytes:
    """A session record as a Vision Agents node writes it (the documented JSON)."""
    return json.dumps(
        {
            "session_id": session_id,
            "call_id": call_id,
            "node_id": node_id,
            "started_at": time.time(),
            "metrics_updated_at": None,
            "metrics": {},
        }
    ).encode()


# -- defect 1 ---------------------------------------------------------------------------


async def test_g2_removed_session_stays_removed(node: SessionRegistry, raw: aioredis.Redis) -> None:
    """The heartbeat snapshots the sessions, remove() reaches Redis first, the heartbeat after.

    The order is forced without timing: the script cache is flushed and only remove.lua
    is loaded again, so the heartbeat's first EVALSHA comes back NOSCRIPT and remove.lua
    runs on the server while the heartbeat reloads its script.
    """
    await node.register("call-1", "keep")
    await node.register("call-1", "gone")
    await node.register("call-1", "warm-up")
    # Two idle pooled connections, so neither call below has to open one (which would yield).
    await asyncio.gather(node.get("call-1", "keep"), node.get("call-1", "gone"))
    await raw.script_flush()
    await node.remove("call-1", "warm-up")  # remove.lua is cached again, heartbeat.lua is not

    heartbeat = asyncio.create_task(node.heartbeat())  # snapshot: keep, gone
    removal = asyncio.create_task(node.remove("call-1", "gone"))
    await asyncio.gather(heartbeat, removal)

    assert await node.session_status("call-1", "gone", "node-a") is SessionStatus.ENDED
    assert await node.get("call-1", "gone") is None
    assert [s.session_id for s in await node.get_for_call("call-1")] == ["keep"]


# -- defect 2 ---------------------------------------------------------------------------


async def test_g5_documented_layout_session_visible_to_get_for_call_at_once(
    node: SessionRegistry, raw: aioredis.Redis
) -> None:
    await raw.set(f"{P}sessions/call-1/va-1", _record("call-1", "va-1", "vision-agents-node"), px=30_000)
    assert [s.session_id for s in await node.get_for_call("call-1")] == ["va-1"]


async def test_g5_call_limit_counts_documented_layout_session(
    node: SessionRegistry, raw: aioredis.Redis
) -> None:
    await raw.set(f"{P}sessions/call-1/va-1", _record("call-1", "va-1", "vision-agents-node"), px=30_000)
    with pytest.raises(MaxSessionsPerCallExceeded):
        await node.register("call-1", "mine", max_sessions_per_call=1)


async def test_g5_scanned_documented_layout_session_stays_in_call_index(
    node: SessionRegistry, raw: aioredis.Redis
) -> None:
    """The Vision Agents node keeps refreshing its record; the call index must follow it."""
    key = f"{P}sessions/call-1/va-1"
    await raw.set(key, _record("call-1", "va-1", "vision-agents-node"), px=2_000)
    await node.index_foreign_sessions()
    await raw.pexpire(key, 30_000)  # the foreign node's own refresh
    await node.heartbeat()
    # Only the index's remaining time is read (no waiting): it must not die before the record.
    assert await raw.pttl(f"{P}index/calls/call-1") > 2_000


# -- defect 3 ---------------------------------------------------------------------------


async def test_g3_lost_call_index_is_repaired_by_heartbeats(
    node: SessionRegistry, other: SessionRegistry, raw: aioredis.Redis
) -> None:
    await node.register("call-1", "on-a")
    await other.register("call-1", "on-b")
    await raw.delete(f"{P}index/calls/call-1")  # eviction or a manual clean-up
    await node.heartbeat()
    await other.heartbeat()
    assert sorted(s.session_id for s in await node.get_for_call("call-1")) == ["on-a", "on-b"]


async def test_g5_call_limit_holds_after_call_index_loss(
    node: SessionRegistry, other: SessionRegistry, raw: aioredis.Redis
) -> None:
    await node.register("call-1", "on-a", max_sessions_per_call=2)
    await other.register("call-1", "on-b", max_sessions_per_call=2)
    await raw.delete(f"{P}index/calls/call-1")
    await node.heartbeat()
    await other.heartbeat()
    with pytest.raises(MaxSessionsPerCallExceeded):
        await node.register("call-1", "third", max_sessions_per_call=2)


# -- defect 4 ---------------------------------------------------------------------------


async def test_g3_heartbeat_restores_session_behind_a_swapped_index_member(
    node: SessionRegistry, raw: aioredis.Redis
) -> None:
    await node.register("call-1", "s-1")
    await node.register("call-1", "s-2")
    node_index = f"{P}index/nodes/node-a"
    await raw.srem(node_index, "call-1/s-2")  # one member lost ...
    await raw.sadd(node_index, "call-1/stale")  # ... one stale member: the count is right
    await raw.delete(f"{P}sessions/call-1/s-2")  # and the record went with the data loss
    await node.heartbeat()
    assert await node.get("call-1", "s-2") is not None


# -- defect 5 ---------------------------------------------------------------------------


async def test_g4_status_of_lost_record_on_live_node_is_not_ended(
    node: SessionRegistry, other: SessionRegistry, raw: aioredis.Redis
) -> None:
    await node.register("call-1", "s-1")
    await raw.delete(f"{P}sessions/call-1/s-1")  # a flush/failover/eviction, before the write-back
    status = await other.session_status("call-1", "s-1", "node-a")
    assert status in {SessionStatus.LIVE, SessionStatus.UNKNOWN}, status


# -- defect 6 ---------------------------------------------------------------------------


async def test_g12_bad_metrics_do_not_poison_heartbeats(node: SessionRegistry, raw: aioredis.Redis) -> None:
    await node.register("call-1", "s-1")
    with pytest.raises((TypeError, ValueError, CallboardError)):
        await node.update_metrics("call-1", "s-1", {"bad": object()})
    await raw.delete(f"{P}sessions/call-1/s-1")  # forces a write-back, which serialises the record
    await node.heartbeat()
    restored = await node.get("call-1", "s-1")
    assert restored is not None
    assert restored.metrics == {}


# -- defect 9 ---------------------------------------------------------------------------


async def test_g11_register_refuses_another_nodes_live_session(
    node: SessionRegistry, other: SessionRegistry
) -> None:
    await node.register("call-1", "s-1")
    with pytest.raises(CallboardError):
        await other.register("call-1", "s-1")
    info = await node.get("call-1", "s-1")
    assert info is not None
    assert info.node_id == "node-a"


async def test_g11_duplicate_node_id_is_refused_at_start(node: SessionRegistry, redis_url: str) -> None:
    twin = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="node-a", ttl=30)
    try:
        with pytest.raises(CallboardError):
            await twin.start()
    finally:
        await twin.stop()
        await twin.store.close()


# -- defect 10 --------------------------------------------------------------------------


@pytest.mark.parametrize("started_at", [math.nan, math.inf, 1e300])
async def test_g12_register_rejects_non_finite_started_at(node: SessionRegistry, started_at: float) -> None:
    with pytest.raises((ValueError, CallboardError)):
        await node.register("call-1", "s-1", started_at=started_at)
    assert await node.list_sessions() == []


async def test_g12_update_metrics_rejects_huge_value(node: SessionRegistry) -> None:
    await node.register("call-1", "s-1")
    with pytest.raises((ValueError, CallboardError)):
        await node.update_metrics("call-1", "s-1", {"blob": "x" * 20_000_000})
