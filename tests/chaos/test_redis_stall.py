"""Nodes heartbeat through Toxiproxy; Redis stalls for 3 s (requests held, then delivered).

An observer reads Redis directly (around the proxy) all along: a session whose record
disappears at any sample is lost, a session seen twice or on another node is doubled.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from callboard.launcher import AgentLauncher
from callboard.registry import RedisSessionKVStore, SessionRegistry
from tests.chaos.conftest import MakeNode, RedisProxy
from tests.support.fake_agents import FakeAgent
from tests.support.waiting import wait_until

NODES = 3
SESSIONS_PER_NODE = 20
#: TTL (the default) and maintenance interval of the nodes, seconds: a 3 s stall always
#: covers a heartbeat, which waits (under the 5 s socket timeout) and goes on.
TTL = 30.0
INTERVAL = 2.5
STALL = 3.0


@pytest.fixture
async def nodes(make_node: MakeNode) -> list[AgentLauncher[FakeAgent]]:
    return [await make_node(f"node-{i}", ttl=TTL, interval=INTERVAL) for i in range(NODES)]


async def test_g10_stall_of_3s_loses_no_session(
    redis_proxy: RedisProxy, nodes: list[AgentLauncher[FakeAgent]]
) -> None:
    expected: dict[tuple[str, str], str] = {}
    for i, node in enumerate(nodes):
        for j in range(SESSIONS_PER_NODE):
            session = await node.start_session(f"call-{i}-{j % 5}")
            expected[(session.call_id, session.id)] = node.node_id
    observer = SessionRegistry(RedisSessionKVStore(url=redis_proxy.direct_url), node_id="observer", ttl=TTL)
    await observer.start()
    lost: set[tuple[str, str]] = set()
    doubled: set[tuple[str, str]] = set()
    samples = 0

    async def sample() -> bool:
        nonlocal samples
        samples += 1
        seen: dict[tuple[str, str], str] = {}
        for s in await observer.list_sessions():
            key = (s.call_id, s.session_id)
            if key in seen or expected.get(key, s.node_id) != s.node_id or key not in expected:
                doubled.add(key)
            seen[key] = s.node_id
        lost.update(set(expected) - set(seen))
        return False

    try:
        await sample()
        assert not lost
        assert not doubled
        beats_before = [n.stats.maintenance.cycles for n in nodes]
        stall_started = time.monotonic()
        with redis_proxy.client.held(redis_proxy.name):
            while time.monotonic() - stall_started < STALL:
                await sample()
                await asyncio.sleep(0.1)
        healed_at = time.time()
        healed_mono = time.monotonic()

        async def all_beat_again() -> bool:
            await sample()
            return all(
                n.stats.last_heartbeat_at is not None and n.stats.last_heartbeat_at > healed_at for n in nodes
            )

        await wait_until(
            all_beat_again, timeout=4 * TTL, interval=0.05, what="every node heartbeats after the stall"
        )
        recovered = time.monotonic() - healed_mono
        # Then one whole maintenance cycle more on every node: the recovery is complete (and
        # the connections the fault broke are closed before the nodes stop).
        after = [n.stats.maintenance.cycles for n in nodes]

        async def one_more_cycle() -> bool:
            await sample()
            return all(n.stats.maintenance.cycles >= c + 1 for n, c in zip(nodes, after, strict=True))

        await wait_until(
            one_more_cycle, timeout=4 * TTL, interval=0.05, what="one more maintenance cycle on every node"
        )
        await sample()
        errors = {n.node_id: dict(n.stats.errors) for n in nodes}
        cycles = [n.stats.maintenance.cycles - b for n, b in zip(nodes, beats_before, strict=True)]
        print(
            f"\n[chaos] stall {STALL:g}s (requests held) on {NODES} nodes x {SESSIONS_PER_NODE} sessions, "
            f"ttl {TTL:g}s, interval {INTERVAL:g}s: every node heartbeat again {recovered:.2f}s after heal; "
            f"cycles during the test {cycles}; "
            f"samples {samples}, sessions lost {len(lost)}, duplicates {len(doubled)}; step errors {errors}"
        )
        assert not lost, f"sessions lost during the stall: {sorted(lost)}"
        assert not doubled, f"sessions doubled or moved: {sorted(doubled)}"
        assert all(len(n.sessions) == SESSIONS_PER_NODE for n in nodes)
    finally:
        await observer.stop()
