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


# -- the sync read's cost follows the changes (node versions) -------------------------------------


async def _read_commands(raw: aioredis.Redis) -> int:
    """Commands the server ran so far (scripts' inner commands included), without INFO."""
    stats = await raw.info("commandstats")
    return sum(int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info")


async def _commands_of_one_read(reader: SessionRegistry, raw: aioredis.Redis) -> int:
    before = await _read_commands(raw)
    await reader.list_live()
    return await _read_commands(raw) - before


async def test_list_live_costs_the_same_redis_commands_however_many_sessions_did_not_change(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    a, b = await nodes("node-a"), await nodes("node-b")
    reader = await nodes("operator")
    for registry in (a, b, reader):
        registry.fleet = FleetMode.CALLBOARD_ONLY
    await a.register("call-0", "s-0")
    await b.register("call-1", "s-1")
    await reader.list_live()
    small = await _commands_of_one_read(reader, raw)
    for i in range(300):
        await a.register(f"call-{i}", f"s-a{i}")
    await a.heartbeat()
    await b.heartbeat()
    _, sessions = await reader.list_live()  # reads node-a whole once: it changed
    assert len(sessions) == 302
    big = await _commands_of_one_read(reader, raw)
    assert big == small  # 302 unchanged sessions cost what 2 did: nothing per session
    _, again = await reader.list_live()
    assert sorted(s.session_id for s in again) == sorted(s.session_id for s in sessions)


async def test_a_nodes_version_stays_through_heartbeats_that_change_nothing(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    a = await nodes("node-a")
    await a.register("call-1", "s-1")
    version = await raw.get(P + "index/versions/node-a")
    assert version is not None
    for _ in range(FULL_HEARTBEAT_EVERY + 1):  # cheap ones and a full one
        await a.heartbeat()
    assert await raw.get(P + "index/versions/node-a") == version
    assert await raw.pttl(P + "index/versions/node-a") > 0  # renewed, never leaked
    await a.register("call-2", "s-2")
    moved = await raw.get(P + "index/versions/node-a")
    assert moved is not None and int(moved) > int(version)
    await a.remove("call-2", "s-2")
    removed = await raw.get(P + "index/versions/node-a")
    assert removed is not None and int(removed) > int(moved)


async def test_list_live_sees_a_registration_and_a_removal_on_a_node_it_read_before(
    nodes: Callable[..., Awaitable[SessionRegistry]],
) -> None:
    a, reader = await nodes("node-a"), await nodes("operator")
    for registry in (a, reader):
        registry.fleet = FleetMode.CALLBOARD_ONLY
    await a.register("call-1", "s-1")
    _, sessions = await reader.list_live()
    assert [s.session_id for s in sessions] == ["s-1"]
    await a.register("call-2", "s-2")
    _, sessions = await reader.list_live()
    assert sorted(s.session_id for s in sessions) == ["s-1", "s-2"]
    await a.remove("call-1", "s-1")
    _, sessions = await reader.list_live()
    assert [s.session_id for s in sessions] == ["s-2"]


async def test_g3_list_live_drops_a_session_whose_record_expired_once_its_node_beats(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    """A record that expires on its own (evicted, deleted by hand) while its node lives: the
    node's next heartbeat finds it missing and moves the node's version on, so the reader's
    copy is not trusted past that beat; the write-back then shows the session again."""
    a, reader = await nodes("node-a"), await nodes("operator")
    for registry in (a, reader):
        registry.fleet = FleetMode.CALLBOARD_ONLY
    await a.register("call-1", "s-1")
    await a.register("call-2", "s-2")
    await reader.list_live()
    version = await raw.get(P + "index/versions/node-a")
    a._local.pop(("call-2", "s-2"))  # the node no longer runs it: no write-back
    await raw.delete(P + "sessions/call-2/s-2")
    await a.heartbeat()
    assert await raw.get(P + "index/versions/node-a") != version
    _, sessions = await reader.list_live()
    assert [s.session_id for s in sessions] == ["s-1"]


async def test_list_live_drops_the_sessions_of_a_dead_node_it_read_before(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    """A node that stops heartbeating moves no version: its record's expiry alone makes the
    reader read its sessions again (they expire with it)."""
    a, b, reader = await nodes("node-a"), await nodes("node-b"), await nodes("operator")
    for registry in (a, b, reader):
        registry.fleet = FleetMode.CALLBOARD_ONLY
    await a.register("call-1", "s-1")
    await b.register("call-2", "s-2")
    nodes_live, sessions = await reader.list_live()
    assert sorted(n.node_id for n in nodes_live) == ["node-a", "node-b", "operator"]
    # node-b died: its record expired, then its session's.
    await raw.delete(P + "nodes/node-b")
    nodes_live, sessions = await reader.list_live()
    assert sorted(n.node_id for n in nodes_live) == ["node-a", "operator"]
    assert sorted(s.session_id for s in sessions) == ["s-1", "s-2"]  # still live until it expires
    await raw.delete(P + "sessions/call-2/s-2")
    nodes_live, sessions = await reader.list_live()
    assert [s.session_id for s in sessions] == ["s-1"]


async def test_list_live_sees_a_vision_agents_session_after_reading_through_the_indexes(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    """With a warm copy of every node, a documented-layout session (no index, no version)
    still shows up: the foreign scan takes the callboard-only marker away, and the read
    scans again."""
    a, reader = await nodes("node-a"), await nodes("operator")
    await a.register("call-1", "s-1")
    await raw.set(P + "index/callboard_only", b"1")
    _, sessions = await reader.list_live()
    assert [s.session_id for s in sessions] == ["s-1"]
    await raw.set(
        P + "sessions/call-1/s-foreign",
        SessionInfo("s-foreign", "call-1", "va-node", time.time()).to_json(),
        px=30_000,
    )
    assert await a._index.index_foreign() == 1  # what the one scanner of the cluster does
    _, sessions = await reader.list_live()
    assert sorted(s.session_id for s in sessions) == ["s-1", "s-foreign"]


async def test_list_live_reads_a_node_that_keeps_no_version_whole_even_after_a_removal(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    """A node of an older callboard writes no version: a removal by another process must not
    make one for it (it would stand still while that node registers), so every read takes
    that node's sessions whole."""
    a, reader = await nodes("node-a"), await nodes("operator")
    for registry in (a, reader):
        registry.fleet = FleetMode.CALLBOARD_ONLY
    await a.register("call-1", "s-1")
    await a.register("call-3", "s-3")
    await raw.delete(P + "index/versions/node-a")  # what an older node looks like
    await reader.list_live()
    await reader.remove("call-1", "s-1")
    assert await raw.exists(P + "index/versions/node-a") == 0
    # The older node registers a session: its own script moves no version.
    await raw.set(
        P + "sessions/call-2/s-2", SessionInfo("s-2", "call-2", "node-a", time.time()).to_json(), px=30_000
    )
    await raw.sadd(P + "index/nodes/node-a", "call-2/s-2")
    _, sessions = await reader.list_live()
    assert sorted(s.session_id for s in sessions) == ["s-2", "s-3"]


async def test_a_full_list_live_scan_hands_back_the_same_objects_for_unchanged_records(
    nodes: Callable[..., Awaitable[SessionRegistry]], raw: aioredis.Redis
) -> None:
    """The sync loop's periodic scan must not make every session look new (each object would
    be decided again): a record read again unchanged is the object decoded before."""
    a, reader = await nodes("node-a"), await nodes("operator")
    for registry in (a, reader):
        registry.fleet = FleetMode.CALLBOARD_ONLY
    await a.register("call-1", "s-1")
    await a.register("call-2", "s-2")
    _, indexed = await reader.list_live()
    await a.register("call-3", "s-3")
    _, scanned = await reader.list_live(full=True)
    by_id = {s.session_id: s for s in scanned}
    assert sorted(by_id) == ["s-1", "s-2", "s-3"]
    assert all(by_id[s.session_id] is s for s in indexed)
    _, again = await reader.list_live()  # the index read after a scan: node-a moved on
    assert sorted(s.session_id for s in again) == ["s-1", "s-2", "s-3"]
    assert all(next(x for x in again if x.session_id == s.session_id) is s for s in indexed)
