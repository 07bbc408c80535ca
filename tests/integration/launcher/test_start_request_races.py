"""Issue 11 defect 8: a start request outlives its placement and starts a second agent.

It failed on the code it was written against (a strict xfail). It passes since register()
refuses a session another node's live record holds (defect 9): the late start on node-b is
refused. Defect 8's own fix (expiry, atomic claim, withdrawal) makes it pass without that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from callboard.launcher import AgentLauncher
from callboard.registry import RedisSessionKVStore, SessionRegistry
from tests.support.fake_agents import AgentFactory, FakeAgent, fake_join
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis

MakeNode = Callable[[str], Awaitable[AgentLauncher[FakeAgent]]]


@pytest.fixture
async def make_node(redis_url: str) -> AsyncIterator[MakeNode]:
    made: list[AgentLauncher[FakeAgent]] = []

    async def make(node_id: str) -> AgentLauncher[FakeAgent]:
        registry = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id=node_id, ttl=30)
        launcher = AgentLauncher(AgentFactory(), fake_join, registry=registry)
        await launcher.start()
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        await launcher.stop()


@pytest.fixture
async def requester(redis_url: str) -> AsyncIterator[SessionRegistry]:
    """The operator's registry: it sends start requests and reads their answers."""
    registry = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="operator", ttl=30)
    await registry.start()
    try:
        yield registry
    finally:
        await registry.stop()


async def test_g1_start_request_placed_elsewhere_is_not_started_late(
    make_node: MakeNode, requester: SessionRegistry
) -> None:
    # node-b is down when the request is sent: the push is lost, the request waits in Redis.
    late = await requester.request_start("node-b", "call-1", session_id="s-1")
    # The requester's start timeout passes; it places the same session on node-c.
    c = await make_node("node-c")
    placed = await requester.request_start("node-c", "call-1", session_id="s-1")

    async def placed_answered() -> bool:
        return await requester.get_start_result(placed.request_id) is not None

    assert await wait_until(
        placed_answered, timeout=10, interval=0.05, what="node-c to answer the placed request"
    )
    assert [s.id for s in c.sessions] == ["s-1"]
    # node-b comes up and polls its pending requests.
    b = await make_node("node-b")

    async def b_decided() -> bool:
        return bool(b.sessions) or await requester.get_start_result(late.request_id) is not None

    # A fixed node may never answer a withdrawn request: a wait that does not fail, no assert.
    await wait_until(b_decided, timeout=5, interval=0.05, fail=False)
    assert b.sessions == []
    info = await requester.get("call-1", "s-1")
    assert info is not None
    assert info.node_id == "node-c"
    assert len(await requester.get_for_call("call-1")) == 1
