"""registry/paging.py: the paged cluster-wide listing, over every backend and on real Redis.

The cost of a page is counted in Redis commands (``INFO commandstats`` deltas, scripts'
inner commands included), never timed.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
import redis

from callboard import InvalidValueError
from callboard.registry import RedisSessionKVStore, SessionInfo, SessionRegistry
from callboard.registry.paging import PagePosition, decode_cursor, encode_cursor
from tests.integration.conftest import Cluster


async def _page_through(
    registry: SessionRegistry, limit: int, **filters: str
) -> AsyncIterator[list[SessionInfo]]:
    cursor: str | None = None
    while True:
        page = await registry.list_sessions_page(limit=limit, cursor=cursor, **filters)
        assert len(page.sessions) <= limit
        yield page.sessions
        if (cursor := page.next_cursor) is None:
            return


def _ids(sessions: list[SessionInfo]) -> list[str]:
    return [s.session_id for s in sessions]


async def test_paging_through_yields_every_session_once_while_sessions_come_and_go(cluster: Cluster) -> None:
    nodes = [await cluster.node(f"node-{n}") for n in range(3)]
    for n, node in enumerate(nodes):
        for i in range(15):
            await node.register(f"call-{i % 4}", f"n{n}-s{i}")
    doomed = {f"n{n}-s{i}" for n in range(3) for i in (2, 7, 11)}
    stable = {f"n{n}-s{i}" for n in range(3) for i in range(15)} - doomed
    to_remove = sorted(doomed)
    added: set[str] = set()
    seen: list[str] = []
    counter = itertools.count()
    async for sessions in _page_through(nodes[0], 4):
        seen += _ids(sessions)
        # Between pages: one session starts somewhere, one of the doomed ends.
        i = next(counter)
        await nodes[i % 3].register("call-new", f"new-{i}")
        added.add(f"new-{i}")
        if to_remove:
            victim = to_remove.pop()
            owner = nodes[int(victim[1])]
            call_id = next(s.call_id for s in owner.local_sessions if s.session_id == victim)
            await owner.remove(call_id, victim)
    assert len(seen) == len(set(seen)), "a session was listed twice"
    assert stable <= set(seen), stable - set(seen)
    assert set(seen) <= stable | doomed | added


async def test_pages_follow_node_then_member_order_and_filters(cluster: Cluster) -> None:
    a, b = await cluster.node("node-a"), await cluster.node("node-b")
    for i in range(5):
        await a.register(f"call-{i % 2}", f"a-{i}")
        await b.register(f"call-{i % 2}", f"b-{i}")
    listed = [s async for page in _page_through(a, 3) for s in page]
    assert [(s.node_id, s.call_id, s.session_id) for s in listed] == sorted(
        (s.node_id, s.call_id, s.session_id) for s in listed
    )
    assert sorted(_ids(listed)) == sorted([f"a-{i}" for i in range(5)] + [f"b-{i}" for i in range(5)])
    on_b = [s async for page in _page_through(a, 2, node_id="node-b") for s in page]
    assert sorted(_ids(on_b)) == [f"b-{i}" for i in range(5)]
    call_1 = [s async for page in _page_through(b, 1, call_id="call-1") for s in page]
    assert sorted(_ids(call_1)) == ["a-1", "a-3", "b-1", "b-3"]
    both = [s async for page in _page_through(b, 10, call_id="call-0", node_id="node-a") for s in page]
    assert sorted(_ids(both)) == ["a-0", "a-2", "a-4"]


async def test_a_cursor_not_given_out_is_refused(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    for bad in ["", "!!!", "bm90IGpzb24", encode_cursor(PagePosition("bad/node")), "x" * 5000]:
        with pytest.raises(InvalidValueError, match="cursor"):
            await a.list_sessions_page(limit=5, cursor=bad)
    assert decode_cursor(encode_cursor(PagePosition("node-a", "call-1/s-1"))) == PagePosition(
        "node-a", "call-1/s-1"
    )


def _commands(admin: redis.Redis) -> int:
    """Commands the server ran since the last CONFIG RESETSTAT, inner script commands
    included; the test's own (CONFIG, INFO) and the idle pub/sub health checks left out."""
    stats = admin.info("commandstats")
    skip = {"cmdstat_config", "cmdstat_info", "cmdstat_ping"}
    return sum(int(v["calls"]) for name, v in stats.items() if name not in skip)


async def _page_costs(reader: SessionRegistry, admin: redis.Redis, limit: int) -> tuple[list[int], int]:
    costs: list[int] = []
    listed = 0
    cursor: str | None = None
    while True:
        admin.config_resetstat()
        page = await reader.list_sessions_page(limit=limit, cursor=cursor)
        costs.append(_commands(admin))
        listed += len(page.sessions)
        if (cursor := page.next_cursor) is None:
            return costs, listed


@pytest.mark.redis
async def test_a_page_costs_o_limit_redis_commands_however_big_the_cluster(redis_url: str) -> None:
    limit = 10
    writers = [
        SessionRegistry(RedisSessionKVStore(url=redis_url), node_id=f"node-{n:02d}", fleet="callboard_only")
        for n in range(12)
    ]
    reader = SessionRegistry(
        RedisSessionKVStore(url=redis_url),
        node_id="reader",
        fleet="callboard_only",
        foreign_scan_interval=None,
    )
    await reader.start()
    with redis.Redis.from_url(redis_url) as admin:
        try:
            for writer in writers[:4]:
                await writer.start()
                for i in range(10):
                    await writer.register(f"call-{i % 3}", f"{writer.node_id}-s{i}")
            small, listed_small = await _page_costs(reader, admin, limit)
            for writer in writers[4:]:
                await writer.start()
            for writer in writers:
                for i in range(10, 150):
                    await writer.register(f"call-{i % 30}", f"{writer.node_id}-s{i}")
            big, listed_big = await _page_costs(reader, admin, limit)
        finally:
            for registry in [reader, *writers]:
                await registry.stop()
    assert (listed_small, listed_big) == (40, 4 * 150 + 8 * 140)
    # One page: the script call, the directory read, per node touched an EXISTS and an
    # SMEMBERS, one GET per session returned. The whole cluster would be 1,720 GETs.
    assert max(big) <= 2 * limit + 10, big
    assert max(big) <= max(small) + 3, (small, big)
    print(f"\n[paging] commands per page of {limit}: 40 sessions {small}; 1,720 sessions max {max(big)}")


@pytest.mark.redis
async def test_g3_paged_listing_is_whole_again_one_heartbeat_after_flushall(redis_url: str) -> None:
    a = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="node-a", fleet="callboard_only")
    b = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="node-b", fleet="callboard_only")
    for registry in (a, b):
        await registry.start()
    try:
        for i in range(6):
            await (a if i % 2 else b).register("call-1", f"s-{i}")
        with redis.Redis.from_url(redis_url) as admin:
            admin.flushall()
        assert [s async for page in _page_through(a, 4) for s in page] == []
        await a.heartbeat()
        await b.heartbeat()
        listed = [s async for page in _page_through(a, 4) for s in page]
        assert sorted(_ids(listed)) == [f"s-{i}" for i in range(6)]
    finally:
        for registry in (a, b):
            await registry.stop()


@pytest.mark.redis
async def test_sessions_no_index_knows_are_listed_last_unless_the_fleet_is_callboard_only(
    redis_url: str,
) -> None:
    node = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="node-a", fleet="mixed")
    only = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="node-b", fleet="callboard_only")
    for registry in (node, only):
        await registry.start()
    try:
        await node.register("call-1", "ours")
        foreign = SessionInfo(session_id="theirs", call_id="call-1", node_id="va-node", started_at=1.0)
        with redis.Redis.from_url(redis_url) as va:  # a Vision Agents node's own client
            va.set("vision_agents:sessions/call-1/theirs", foreign.to_json(), px=30_000)
        mixed = [s async for page in _page_through(node, 1) for s in page]
        assert sorted(_ids(mixed)) == ["ours", "theirs"]
        assert _ids(mixed)[-1] == "theirs"  # the last phase
        assert _ids([s async for page in _page_through(only, 1) for s in page]) == ["ours"]
        # More unindexed sessions than a page holds: a SCAN step that finds more than the
        # page's room ends the page inside the step (_page_through checks every page's size).
        with redis.Redis.from_url(redis_url) as va:
            for i in range(40):
                other = SessionInfo(session_id=f"va-{i}", call_id="call-2", node_id="va-node", started_at=1.0)
                va.set(f"vision_agents:sessions/call-2/va-{i}", other.to_json(), px=30_000)
        many = _ids([s async for page in _page_through(node, 3) for s in page])
        assert set(many) == {"ours", "theirs", *(f"va-{i}" for i in range(40))}
    finally:
        for registry in (node, only):
            await registry.stop()
