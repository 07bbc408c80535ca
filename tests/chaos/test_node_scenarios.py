"""Issue 11's remaining chaos scenarios for the node runtime, through Toxiproxy against a real
redis-server: Redis restarted empty under load, the push connection cut while close
requests are sent, and a node cut off for longer than the TTL.

Nodes reach Redis through the proxy; an observer (and every requester) reads and writes
around it, so the fault touches only the nodes. Each scenario asserts that nothing is lost
and nothing doubled, in heartbeats and maintenance cycles rather than seconds, and prints
what it measured.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from callboard.launcher import AgentLauncher
from callboard.registry import RedisSessionKVStore, SessionRegistry, SessionStatus
from tests.chaos.conftest import MakeNode, RedisProxy
from tests.support.fake_agents import FakeAgent
from tests.support.waiting import wait_until


@pytest.fixture
async def observer(redis_proxy: RedisProxy) -> AsyncIterator[SessionRegistry]:
    registry = SessionRegistry(RedisSessionKVStore(url=redis_proxy.direct_url), node_id="observer", ttl=30)
    await registry.start()
    try:
        yield registry
    finally:
        await registry.stop()


def doubled(listed: list[Any]) -> list[tuple[str, str]]:
    counts = Counter((s.call_id, s.session_id) for s in listed)
    return [key for key, n in counts.items() if n > 1]


@pytest.mark.timeout(240)
async def test_g3_redis_restarted_empty_under_load_every_session_is_back_within_one_heartbeat(
    redis_proxy: RedisProxy, make_node: MakeNode, observer: SessionRegistry
) -> None:
    nodes = [await make_node(f"node-{i}", ttl=30.0, interval=2.0) for i in range(3)]
    owner: dict[tuple[str, str], str] = {}

    async def fill(node: AgentLauncher[FakeAgent], count: int, offset: int) -> None:
        for j in range(count):
            session = await node.start_session(f"call-{(offset + j) % 100}")
            owner[(session.call_id, session.id)] = node.node_id

    await asyncio.gather(*(fill(n, 334 if i == 0 else 333, i * 334) for i, n in enumerate(nodes)))
    assert len(owner) == 1000
    restarted_at = time.time()
    restarted_mono = time.monotonic()
    redis_proxy.server.restart()  # empty: no persistence (a beat may already be writing back)

    async def every_node_beat_since() -> bool:
        return all((n.stats.last_heartbeat_at or 0) > restarted_at for n in nodes)

    # One successful heartbeat of each node after the restart, and nothing more, is the bound.
    await wait_until(every_node_beat_since, timeout=60, interval=0.05, what="a heartbeat of every node")
    recovered = time.monotonic() - restarted_mono
    listed = await observer.list_sessions()
    seen = {(s.call_id, s.session_id): s.node_id for s in listed}
    lost = set(owner) - set(seen)
    twice = doubled(listed)
    moved = [key for key, node_id in seen.items() if owner.get(key) != node_id]
    per_call = await observer.get_for_call("call-7")
    print(
        f"\n[chaos] redis restarted empty under 1000 sessions on 3 nodes: all back after one "
        f"heartbeat of each node, {recovered:.1f}s after the restart (interval 2s); "
        f"sessions lost {len(lost)}, duplicates {len(twice)}, on a wrong node {len(moved)}"
    )
    assert not lost and not twice and not moved
    assert len(per_call) == 10  # the per-call index is back too
    assert sum(len(n.sessions) for n in nodes) == 1000  # no node closed anything


@pytest.mark.timeout(120)
async def test_g6_close_requests_reach_their_owner_within_one_maintenance_interval_when_push_is_cut(
    redis_proxy: RedisProxy, make_node: MakeNode, observer: SessionRegistry
) -> None:
    interval = 1.0
    node = await make_node("node-p", ttl=10.0, interval=interval)
    sessions = [await node.start_session(f"call-{j}") for j in range(20)]
    closed_at: dict[str, float] = {}

    async def watch(s: Any) -> None:
        await s.wait()
        closed_at[s.id] = time.monotonic()

    watchers = [asyncio.ensure_future(watch(s)) for s in sessions]
    # Cut every connection of the node, the subscriber's with them (TCP RST on each; new
    # connections are reset too while the toxic is there), and send the closes meanwhile.
    toxic = redis_proxy.client.reset_peer(redis_proxy.name)
    sent_at: dict[str, float] = {}
    try:
        for session in sessions[:10]:
            await observer.request_close(session.call_id, session.id)
            sent_at[session.id] = time.monotonic()
            await asyncio.sleep(0.05)
    finally:
        redis_proxy.client.remove_toxic(redis_proxy.name, toxic.name)
    healed = time.monotonic()
    for session in sessions[10:]:  # and right after the cut, while the listener resubscribes
        await observer.request_close(session.call_id, session.id)
        sent_at[session.id] = time.monotonic()
    cycles = node.stats.maintenance.cycles

    async def two_cycles_since() -> bool:
        return node.stats.maintenance.cycles >= cycles + 2

    # Within one maintenance interval of the heal: by the end of the cycle after next at the latest.
    await wait_until(two_cycles_since, timeout=30, interval=0.05, what="two maintenance cycles")
    missing = [s.id for s in sessions if s.id not in closed_at]
    latency = sorted(closed_at[sid] - max(sent_at[sid], healed) for sid in closed_at)
    for w in watchers:
        w.cancel()
    print(
        f"\n[chaos] push connection cut (reset_peer) while 20 close requests were sent: "
        f"{len(closed_at)}/20 reached their owner, worst {latency[-1] if latency else float('nan'):.2f}s "
        f"after the heal (interval {interval:g}s); lost {len(missing)}, "
        f"closed twice {max(0, node.stats.closed['close_requested'] - len(closed_at))}"
    )
    assert not missing, f"close requests that never reached their owner: {missing}"
    assert node.stats.closed["close_requested"] == 20
    assert not node.sessions


@pytest.mark.timeout(120)
async def test_a_node_cut_off_longer_than_the_ttl_comes_back_with_its_sessions_live(
    redis_proxy: RedisProxy, make_node: MakeNode, observer: SessionRegistry
) -> None:
    """What a node cut off for longer than the TTL comes back as (recorded, not a policy:
    the operator issue decides): while cut off its records expire and ``session_status``
    says LOST (node record gone too); once it reaches Redis again its first heartbeat writes
    every session it still runs back, on the same node, with its original ``started_at``.
    Nothing is doubled, and nothing is tombstoned: the node never said the sessions ended."""
    ttl, interval = 3.0, 0.9
    node = await make_node("node-c", ttl=ttl, interval=interval)
    sessions = [await node.start_session(f"call-{j % 3}") for j in range(9)]
    before = {(s.call_id, s.session_id): s for s in await observer.list_sessions()}
    assert len(before) == 9
    redis_proxy.client.set_enabled(redis_proxy.name, False)  # connections closed, new ones refused
    cut = time.monotonic()
    try:

        async def all_expired() -> bool:
            return not await observer.list_sessions(node_id="node-c") and not await observer.list_sessions()

        await wait_until(
            all_expired, timeout=5 * ttl, interval=0.1, what="the cut-off node's records to expire"
        )
        during = {await observer.session_status(s.call_id, s.id, "node-c") for s in sessions}
        await asyncio.sleep(ttl)  # cut off well beyond the TTL
    finally:
        redis_proxy.client.set_enabled(redis_proxy.name, True)
    away = time.monotonic() - cut
    back_at = time.time()

    async def beat_since() -> bool:
        return (node.stats.last_heartbeat_at or 0) > back_at

    await wait_until(beat_since, timeout=30, interval=0.05, what="a heartbeat after the cut")
    listed = await observer.list_sessions()
    after = {(s.call_id, s.session_id): s for s in listed}
    statuses = {await observer.session_status(s.call_id, s.id, "node-c") for s in sessions}
    ended = [s.id for s in sessions if await observer.get_ended(s.call_id, s.id) is not None]
    print(
        f"\n[chaos] node cut off {away:.1f}s (ttl {ttl:g}s): status while away {sorted(during)}, "
        f"after its first heartbeat back {sorted(statuses)}; sessions back {len(after)}/9, "
        f"lost {len(set(before) - set(after))}, duplicates {len(doubled(listed))}, tombstoned {len(ended)}"
    )
    assert during == {SessionStatus.LOST}
    assert set(after) == set(before) and not doubled(listed)
    assert statuses == {SessionStatus.LIVE}
    assert all(after[key].node_id == "node-c" for key in after)
    assert all(after[key].started_at == before[key].started_at for key in after)
    assert not ended
    assert len(node.sessions) == 9  # the node itself closed nothing
