"""The Redis index (``backends/redis_index.py`` and its Lua) under races and lost keys.

Each test here reproduces one defect of issue 11 against a real redis-server: the raw
client plays the eviction, the manual cleanup or the race the registry must survive.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from callboard import MaxSessionsPerCallExceeded, SessionStatus
from callboard.registry import FleetMode, NodeInfo, RedisSessionKVStore, SessionInfo, SessionRegistry
from callboard.registry.backends.redis_index import FULL_HEARTBEAT_EVERY
from callboard.registry.index import MembershipDigest

pytestmark = pytest.mark.redis

P = "vision_agents:"


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[Callable[..., Awaitable[SessionRegistry]]]:
    made: list[SessionRegistry] = []

    async def node(node_id: str, *, ttl: float = 30.0) -> SessionRegistry:
        registry = SessionRegistry(
            RedisSessionKVStore(url=redis_url), node_id=node_id, ttl=ttl, foreign_scan_interval=None
        )
        await registry.start()
        made.append(registry)
        return registry

    try:
        yield node
    finally:
        for registry in made:
            await registry.stop()


async def test_g2_removed_session_stays_removed_when_remove_overtakes_the_heartbeat(
    nodes: Callable[..., Awaitable[SessionRegistry]],
) -> None:
    a = await nodes("node-a")
    await a.register("call-1", "s-keep")
    await a.register("call-1", "s-gone")
    index = a._index
    original = index.heartbeat

    async def remove_lands_first(
        node: NodeInfo, sessions: Sequence[SessionInfo], *args: Any, **kw: Any
    ) -> Any:
        # The heartbeat took its snapshot (with s-gone); remove() completes on the server first.
        await a.remove("call-1", "s-gone")
        return await original(node, sessions, *args, **kw)

    index.heartbeat = remove_lands_first  # type: ignore[method-assign]
    await a.heartbeat()
    index.heartbeat = original  # type: ignore[method-assign]
    assert await a.get("call-1", "s-gone") is None
    assert [s.session_id for s in await a.get_for_call("call-1")] == ["s-keep"]
    assert await a.session_status("call-1", "s-gone", "node-a") is SessionStatus.ENDED
    # A re-invited agent is admitted: the ghost does not count against the limit.
    await a.remove("call-1", "s-keep")
    await a.register("call-1", "s-new", max_sessions_per_call=1)


async def test_g2_full_heartbeat_with_a_stale_snapshot_never_writes_over_a_tombstone(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    a = await nodes("node-a")
    await a.register("call-1", "s-1")
    stale = a.local_sessions
    await a.remove("call-1", "s-1")
    index = a._index
    digest = MembershipDigest()
    digest.add("call-1", "s-1")
    for _ in range(FULL_HEARTBEAT_EVERY):  # cheap and full beats both see the stale list
        # The index's own guard: even a caller that still lists it never writes it back.
        await index.heartbeat(a.node, stale, a.ttl, still_local=lambda s: True, digest=str(digest))
    assert await raw.exists(f"{P}sessions/call-1/s-1") == 0
    assert await raw.sismember(f"{P}index/calls/call-1", "s-1") == 0
    assert await raw.sismember(f"{P}index/nodes/node-a", "call-1/s-1") == 0


async def test_g3_heartbeats_restore_every_member_of_a_lost_call_index(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    a = await nodes("node-a")
    b = await nodes("node-b")
    for i in range(3):
        await a.register("call-1", f"a-{i}")
        await b.register("call-1", f"b-{i}")
    await raw.delete(f"{P}index/calls/call-1")  # eviction or a manual cleanup
    await a.heartbeat()
    await b.heartbeat()
    assert len(await a.get_for_call("call-1")) == 6
    with pytest.raises(MaxSessionsPerCallExceeded):
        await a.register("call-1", "one-too-many", max_sessions_per_call=6)


async def test_g3_heartbeat_restores_one_lost_member_of_a_call_index(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    a = await nodes("node-a")
    for i in range(3):
        await a.register("call-1", f"s-{i}")
    await raw.srem(f"{P}index/calls/call-1", "s-1")
    await a.heartbeat()  # a cheap one
    assert sorted(s.session_id for s in await a.get_for_call("call-1")) == ["s-0", "s-1", "s-2"]


async def test_heartbeat_never_shortens_another_nodes_call_index_ttl(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    long_lived = await nodes("node-long", ttl=120.0)
    short_lived = await nodes("node-short", ttl=3.0)
    await long_lived.register("call-1", "s-long")
    await short_lived.register("call-1", "s-short")
    for _ in range(FULL_HEARTBEAT_EVERY):
        await short_lived.heartbeat()
    assert await raw.pttl(f"{P}index/calls/call-1") > 60_000


async def test_cheap_heartbeat_notices_a_swapped_member_of_the_node_index(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    a = await nodes("node-a")
    for i in range(3):
        await a.register("call-1", f"s-{i}")
    # Same count, other members: one stale member in, one real session out.
    await raw.srem(f"{P}index/nodes/node-a", "call-1/s-1")
    await raw.sadd(f"{P}index/nodes/node-a", "call-1/ghost")
    await raw.pexpire(f"{P}sessions/call-1/s-1", 1000)
    await a.heartbeat()  # the beat right after start: a cheap one
    assert await raw.pttl(f"{P}sessions/call-1/s-1") > 1000
    members = {m.decode() for m in await raw.smembers(f"{P}index/nodes/node-a")}
    assert members == {"call-1/s-0", "call-1/s-1", "call-1/s-2"}


@pytest.mark.parametrize("lost", ["index/nodes/node-a", "index/digests/node-a"])
async def test_g3_cheap_heartbeat_rebuilds_a_node_index_or_digest_the_store_lost(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis, lost: str
) -> None:
    a = await nodes("node-a")
    for i in range(3):
        await a.register(f"call-{i}", f"s-{i}")
    await a.remove("call-0", "s-0")
    digest = await raw.get(f"{P}index/digests/node-a")
    assert digest is not None and digest.decode() == a._local.digest  # kept by the scripts
    await raw.delete(f"{P}{lost}")
    await raw.pexpire(f"{P}sessions/call-1/s-1", 1000)
    await a.heartbeat()  # a cheap one: the digest or the set's size gives it away
    assert await raw.pttl(f"{P}sessions/call-1/s-1") > 1000
    assert {m.decode() for m in await raw.smembers(f"{P}index/nodes/node-a")} == {"call-1/s-1", "call-2/s-2"}
    assert (await raw.get(f"{P}index/digests/node-a")) == a._local.digest.encode()


# -- the operator's read through the indexes (list_live) -----------------------------------------


async def test_list_live_reads_through_the_indexes_what_a_scan_finds(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    a, b = await nodes("node-a"), await nodes("node-b")
    for registry in (a, b):
        registry.fleet = FleetMode.CALLBOARD_ONLY
    await a.register("call-1", "s-1")
    await a.register("call-2", "s-2")
    await b.register("call-1", "s-3")
    await a.heartbeat()
    await b.heartbeat()
    # Keys the scan walks through and the index read never touches.
    await raw.set(P + "ended/call-9/s-old", b"{}")
    await raw.set(P + "start_results/r-1", b"{}")

    indexed = await a._index.live_indexed(exact=False)
    assert indexed is not None  # no fallback: the indexes were read
    nodes_live, sessions_live = await a.list_live()
    nodes_scan, sessions_scan = await a.list_nodes(), await a.list_sessions()
    assert (
        sorted(n.node_id for n in nodes_live) == sorted(n.node_id for n in nodes_scan) == ["node-a", "node-b"]
    )
    assert sorted((s.call_id, s.session_id, s.node_id) for s in sessions_live) == sorted(
        (s.call_id, s.session_id, s.node_id) for s in sessions_scan
    )
    assert len(sessions_live) == 3


async def test_list_live_falls_back_to_a_scan_without_the_node_id_index(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    """Nodes of a version that keeps no node-id index (or a flush before their next heartbeat)
    must still be seen: a missing index means "scan", never "no nodes"."""
    a = await nodes("node-a")
    a.fleet = FleetMode.CALLBOARD_ONLY
    await a.register("call-1", "s-1")
    await raw.delete(P + "index/node_ids")

    assert await a._index.live_indexed(exact=False) is None
    nodes_live, sessions_live = await a.list_live()
    assert [n.node_id for n in nodes_live] == ["node-a"]
    assert [s.session_id for s in sessions_live] == ["s-1"]
    await a.heartbeat()  # the next heartbeat writes the index back
    assert await a._index.live_indexed(exact=False) is not None


async def test_list_live_scans_while_the_fleet_is_not_known_to_be_callboard_only(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    """A documented-layout (Vision Agents) node writes sessions no index knows: in ``auto``
    mode only the foreign scan's marker lets the index read stand for the whole fleet."""
    a = await nodes("node-a")
    await a.register("call-1", "s-1")
    await raw.set(
        P + "sessions/call-1/s-foreign", SessionInfo("s-foreign", "call-1", "va-node", time.time()).to_json()
    )

    assert await a._index.live_indexed(exact=None) is None  # no marker yet
    _, sessions = await a.list_live()
    assert sorted(s.session_id for s in sessions) == ["s-1", "s-foreign"]
    await raw.set(P + "index/callboard_only", b"1")
    assert await a._index.live_indexed(exact=None) is not None
    assert await a._index.live_indexed(exact=True) is None  # mixed: always scan


async def test_list_live_leaves_out_and_prunes_a_node_whose_record_and_index_expired(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    a = await nodes("node-a")
    a.fleet = FleetMode.CALLBOARD_ONLY
    await a.register("call-1", "s-1")
    # node-c stopped heartbeating a while ago: its record and index set expired, its entry
    # in the directory (which has no TTL) is still there.
    await raw.zadd(P + "index/node_ids", {"node-c": 0})
    live, sessions = await a.list_live()
    assert [n.node_id for n in live] == ["node-a"]
    assert [s.session_id for s in sessions] == ["s-1"]
    assert await raw.zscore(P + "index/node_ids", "node-c") is None  # pruned by the read
    assert await raw.zscore(P + "index/node_ids", "node-a") is not None
