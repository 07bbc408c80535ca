"""Launchers over a real Redis, each with its own connection pool, as separate nodes would be."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from callboard import (
    DeposedLeaderError,
    MaxSessionsPerCallExceeded,
    NodeDrainingError,
    StoreUnavailableError,
)
from callboard.launcher import AgentLauncher, CloseReason
from callboard.registry import RedisSessionKVStore, SessionRegistry
from callboard.registry import _keys as k
from tests.support.fake_agents import AgentFactory, FakeAgent, fake_join
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis

MakeNode = Callable[..., Awaitable[AgentLauncher[FakeAgent]]]


@pytest.fixture
async def make_node(redis_url: str) -> AsyncIterator[MakeNode]:
    made: list[AgentLauncher[FakeAgent]] = []

    async def make(node_id: str, *, ttl: float = 30.0, **kwargs: Any) -> AgentLauncher[FakeAgent]:
        registry = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id=node_id, ttl=ttl)
        launcher = AgentLauncher(AgentFactory(), fake_join, registry=registry, **kwargs)
        await launcher.start()
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        await launcher.stop()


async def test_per_call_limit_is_atomic_across_nodes(make_node: MakeNode) -> None:
    nodes = [await make_node(f"node-{i}", max_sessions_per_call=2) for i in range(3)]

    async def start(launcher: AgentLauncher[FakeAgent], call: str) -> bool:
        try:
            await launcher.start_session(call)
        except MaxSessionsPerCallExceeded:
            return False
        return True

    for call in ("race-1", "race-2"):
        results = await asyncio.gather(*(start(nodes[i % 3], call) for i in range(30)))
        assert sum(results) == 2, call
        assert len(await nodes[0].registry.get_for_call(call)) == 2


async def test_pushed_close_across_nodes_needs_no_cycle(make_node: MakeNode) -> None:
    a = await make_node("node-a")
    b = await make_node("node-b")
    session = await a.start_session("call-1")
    await b.request_close_session("call-1", session.id)
    await asyncio.wait_for(session.wait(), 2)
    assert session.close_reason is CloseReason.CLOSE_REQUESTED
    assert a.stats.maintenance.cycles == 0
    assert await b.get_session_info("call-1", session.id) is None


async def test_close_flag_of_a_vision_agents_node_is_polled(make_node: MakeNode, redis_url: str) -> None:
    """A Vision Agents node only writes the documented flag (no push): the poll finds it."""
    a = await make_node("node-a")
    session = await a.start_session("call-1")
    raw = RedisSessionKVStore(url=redis_url)
    await raw.set(k.close_key("call-1", session.id), b"", 30)
    await raw.close()
    await asyncio.sleep(0.05)
    assert a.get_session(session.id) is session  # nothing pushed
    await a.maintenance_cycle()
    await asyncio.wait_for(session.wait(), 2)
    assert session.close_reason is CloseReason.CLOSE_REQUESTED


async def test_redis_outage_is_survived_and_sessions_come_back(
    make_node: MakeNode, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a = await make_node("node-a", agent_idle_timeout=10, maintenance_interval=0.5)
    live = await a.start_session("call-1")
    idle = await a.start_session("call-2")
    idle.agent.idle = 11.0
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="callboard.launcher"):
        for _ in range(3):
            await a.maintenance_cycle()
            await a.heartbeat_once()
    assert not a.stats.registry_ok
    assert caplog.text.count("heartbeat failed") == 1  # rate-limited
    await asyncio.wait_for(idle.wait(), 5)  # local closes go on without Redis
    assert idle.close_reason is CloseReason.IDLE
    with pytest.raises(StoreUnavailableError):
        await a.start_session("call-3")
    assert a.get_session(live.id) is live

    redis_server.start()  # empty
    await a.maintenance_cycle()
    await a.heartbeat_once()
    assert a.stats.registry_ok
    info = await a.get_session_info("call-1", live.id)
    assert info is not None and info.node_id == "node-a"
    assert await a.get_session_info("call-2", idle.id) is None


async def test_start_request_over_redis(make_node: MakeNode, redis_url: str) -> None:
    a = await make_node("node-a")
    operator = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="operator")
    request = await operator.request_start("node-a", "call-1", session_id="ags-1", params={"voice": "warm"})
    for _ in range(200):
        result = await operator.get_start_result(request.request_id)
        if result is not None:
            break
        await asyncio.sleep(0.01)
    assert result is not None and result.accepted
    session = a.get_session("ags-1")
    assert session is not None and session.agent.params == {"voice": "warm"}
    await operator.store.close()


async def test_drain_is_published(make_node: MakeNode) -> None:
    a = await make_node("node-a", max_concurrent_sessions=3)
    b = await make_node("node-b")
    await a.start_session("call-1")
    assert await a.drain(0) == 1
    node = await b.registry.get_node("node-a")
    assert node is not None and node.draining and node.free_slots == 0 and node.capacity == 3


async def test_stop_with_live_sessions_leaves_no_store_connection_open(
    make_node: MakeNode, redis_url: str
) -> None:
    """``stop()`` waits for every session's clean-up before it closes the store: a clean-up
    that ran after would open connections of a closed pool that nobody ever closes (before
    the fix 3 launchers x 20 sessions left ~15 sockets and ResourceWarnings at exit)."""
    import redis.asyncio as aioredis

    nodes = [await make_node(f"node-{i}") for i in range(3)]
    for node in nodes:
        for j in range(20):
            await node.start_session(f"call-{j % 4}")
    observer = aioredis.from_url(redis_url)
    try:
        for node in nodes:
            await node.stop()
        await asyncio.sleep(0.2)  # let any clean-up left behind run (and open its connection)

        async def others() -> list[str]:
            listed = (await observer.execute_command("CLIENT", "LIST")).decode().splitlines()
            return [line for line in listed if "cmd=client" not in line]

        async def none_left() -> bool:
            return not await others()

        await wait_until(none_left, timeout=5, interval=0.05, what="every launcher connection closed")
        assert not await others()
        for node in nodes:
            assert node.stats.closed["stopped"] == 20
    finally:
        await observer.aclose()


@pytest.fixture
async def marked_node(redis_url: str) -> AsyncIterator[tuple[AgentLauncher[FakeAgent], AgentFactory]]:
    """A launcher on node-a and its agent factory (to see which agents it made)."""
    factory = AgentFactory()
    registry = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="node-a")
    launcher = AgentLauncher(factory, fake_join, registry=registry)
    await launcher.start()
    yield launcher, factory
    await launcher.stop()


async def test_g9_a_node_marked_draining_refuses_a_start(
    marked_node: tuple[AgentLauncher[FakeAgent], AgentFactory],
) -> None:
    a, factory = marked_node
    await a.registry.mark_draining(["node-a"], ttl=60, by="operator")
    with pytest.raises(NodeDrainingError, match="node-a"):
        await a.start_session("call-1")
    assert factory.created == []  # refused before an agent was made
    assert a.stats.rejected["draining"] == 1
    assert await a.registry.get_for_call("call-1") == []


async def test_g9_a_mark_set_while_the_agent_is_created_still_refuses(
    marked_node: tuple[AgentLauncher[FakeAgent], AgentFactory],
) -> None:
    """The registration itself refuses: the mark may come after the admission check."""
    a, factory = marked_node
    factory.gate = asyncio.Event()
    start = asyncio.create_task(a.start_session("call-1"))
    await wait_until(lambda: a.stats.started == 0 and a._starting == 1, what="the start to pass admission")
    await a.registry.mark_draining(["node-a"], ttl=60)
    factory.gate.set()
    with pytest.raises(NodeDrainingError):
        await start
    assert [agent.closed for agent in factory.created] == [1]
    assert await a.registry.get_for_call("call-1") == []
    assert a.sessions == []


async def test_g9_a_start_request_to_a_marked_launcher_is_answered_draining(
    marked_node: tuple[AgentLauncher[FakeAgent], AgentFactory], redis_url: str
) -> None:
    launcher, factory = marked_node
    operator = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="operator")
    await operator.start()
    try:
        await operator.mark_draining(["node-a"], ttl=60)
        request = await operator.request_start("node-a", "call-1", session_id="s-1")
        result = await wait_until(lambda: operator.get_start_result(request.request_id), what="the answer")
        assert not result.accepted and result.reason == "draining"
        assert factory.created == [] and await operator.get("call-1", "s-1") is None
        assert launcher.stats.rejected["draining"] == 1
    finally:
        await operator.stop()


async def test_g8_a_launcher_refuses_a_deposed_leaders_start_and_close(
    make_node: MakeNode, redis_url: str
) -> None:
    a = await make_node("node-a")
    old = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="operator-old", ttl=30)
    new = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="operator-new", ttl=30)
    await old.start()
    await new.start()
    try:
        await old.raise_fence(3)
        running = await old.request_start("node-a", "call-1", session_id="s-1", fencing_token=3)
        accepted = await wait_until(lambda: old.get_start_result(running.request_id), what="the answer")
        assert accepted.accepted
        await new.raise_fence(4)  # a new leader took over; the old one does not know yet
        late = await old.request_start("node-a", "call-2", session_id="s-2", fencing_token=3)
        refused = await wait_until(lambda: old.get_start_result(late.request_id), what="the refusal")
        assert not refused.accepted and refused.reason is not None
        assert refused.reason.startswith("fenced: ")
        await wait_until(lambda: a.stats.start_requests["fenced"] == 1, what="the launcher's count")
        assert a.get_session("s-2") is None
        with pytest.raises(DeposedLeaderError):
            await old.request_close("call-1", "s-1", fencing_token=3)
        await a.maintenance_cycle()  # nothing to poll either
        session = a.get_session("s-1")
        assert session is not None and session.close_reason is None
        await new.request_close("call-1", "s-1", fencing_token=4)
        await asyncio.wait_for(session.wait(), 5)
        assert session.close_reason is CloseReason.CLOSE_REQUESTED
    finally:
        await old.stop()
        await new.stop()
