"""Three ``callboard serve`` processes over one real Redis: the cluster behaves as one."""

from __future__ import annotations

import asyncio
import time

import pytest

from callboard import SessionStatus
from callboard.registry import EndReason, StartRejection
from callboard.server import NodeApiError
from tests.integration.multiprocess.conftest import MakeCluster
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis


async def test_start_on_a_read_on_b_close_via_c(make_cluster: MakeCluster) -> None:
    # A long maintenance interval: a close that lands in well under it was pushed, not polled.
    cluster = await make_cluster(ttl=9.0, interval=3.0)
    a, b, c = (cluster.clients[n] for n in "abc")
    started = await a.start_session("call-1", "livestream")
    sid = started["session_id"]
    assert started["node_id"] == "node-a" and started["call_type"] == "livestream"

    seen = await b.get_session("call-1", sid)
    assert seen is not None and seen["node_id"] == "node-a" and seen["local"] is False
    assert [s["session_id"] for s in await c.list_sessions(call_id="call-1")] == [sid]
    assert [n["node_id"] for n in await b.list_nodes()] == ["node-a", "node-b", "node-c"]

    async def metrics_published() -> bool:
        m = await b.session_metrics("call-1", sid)
        return m is not None and "turns" in m["metrics"]

    await wait_until(metrics_published, timeout=8)

    t0 = time.perf_counter()
    answer = await c.close_session("call-1", sid)
    assert answer == {
        "session_id": sid,
        "call_id": "call-1",
        "node_id": "node-a",
        "status": "close_requested",
    }

    async def gone_on_a() -> bool:
        return await a.get_session("call-1", sid) is None

    await wait_until(gone_on_a, timeout=5, interval=0.005)
    assert time.perf_counter() - t0 < 1.0, "the close was not pushed (the poll is 3 s away)"
    for client in (a, b, c):
        assert await client.get_session("call-1", sid) is None
        assert await client.list_sessions() == []
    registry = cluster.registry()
    ended = await registry.get_ended("call-1", sid)
    assert ended is not None and ended.reason == "close_requested" and ended.node_id == "node-a"
    await registry.store.close()


async def test_killed_node_leaves_every_listing_after_the_ttl(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(ttl=2.0, interval=0.5)
    a, b, c = (cluster.clients[n] for n in "abc")
    doomed = [(await c.start_session(call))["session_id"] for call in ("call-1", "call-2")]
    survivor = (await a.start_session("call-1"))["session_id"]
    assert len(await b.list_sessions()) == 3

    await cluster.nodes["c"].kill()
    killed_at = time.perf_counter()
    assert len(await b.list_sessions()) == 3  # nobody said goodbye: still listed for now

    async def c_is_gone() -> bool:
        listings = [
            await a.list_sessions(),
            await b.list_sessions(),
            await b.list_sessions(node_id="node-c"),
            await a.list_sessions(call_id="call-2"),
        ]
        nodes = [n["node_id"] for n in await a.list_nodes()]
        return "node-c" not in nodes and not any(s["node_id"] == "node-c" for lst in listings for s in lst)

    await wait_until(c_is_gone, timeout=cluster.ttl + 3)
    elapsed = time.perf_counter() - killed_at
    assert cluster.ttl - 2 * cluster.interval <= elapsed <= cluster.ttl + 2
    assert [s["session_id"] for s in await b.list_sessions()] == [survivor]
    assert await a.get_session("call-2", doomed[1]) is None
    registry = cluster.registry()
    assert await registry.session_status("call-1", doomed[0], node_id="node-c") is SessionStatus.LOST
    await registry.store.close()


async def test_redis_restart_every_session_is_back(
    make_cluster: MakeCluster, redis_server: RedisServer
) -> None:
    cluster = await make_cluster(("a", "b"), ttl=3.0, interval=0.5)
    a, b = cluster.clients["a"], cluster.clients["b"]
    sessions = {
        (await a.start_session("call-1"))["session_id"],
        (await a.start_session("call-2"))["session_id"],
        (await b.start_session("call-1"))["session_id"],
    }
    await asyncio.to_thread(redis_server.restart)  # same port, empty

    async def all_back() -> bool:
        try:
            listed = {s["session_id"] for s in await b.list_sessions()}
            nodes = {n["node_id"] for n in await a.list_nodes()}
        except NodeApiError:
            return False  # 503 while the nodes reconnect
        return listed == sessions and nodes == {"node-a", "node-b"}

    await wait_until(all_back, timeout=10)
    assert len(await a.list_sessions(call_id="call-1")) == 2  # the per-call index is back too
    # And cross-node close works again (the push listener resubscribed, or the poll).
    sid = next(s["session_id"] for s in await a.list_sessions(node_id="node-a") if s["call_id"] == "call-2")
    await b.close_session("call-2", sid)

    async def closed() -> bool:
        return await a.get_session("call-2", sid) is None

    await wait_until(closed, timeout=5)
    assert all(node.alive for node in cluster.nodes.values())


async def test_per_call_limit_holds_across_nodes_under_concurrency(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(extra=["--max-sessions-per-call", "2"])
    clients = list(cluster.clients.values())

    async def start(i: int, call: str) -> int:
        try:
            await clients[i % 3].start_session(call)
        except NodeApiError as exc:
            return exc.status
        return 201

    calls = ("race-1", "race-2", "race-3")
    results = await asyncio.gather(*(start(i, call) for call in calls for i in range(9)))
    for k, call in enumerate(calls):
        statuses = sorted(results[k * 9 : (k + 1) * 9])
        assert statuses == [201, 201] + [429] * 7, (call, statuses)
        assert len(await clients[0].list_sessions(call_id=call)) == 2


async def test_sigterm_drains_then_exits_cleanly(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(("a", "b"), ttl=3.0, interval=0.5, extra=["--drain-timeout", "1.5"])
    a, b = cluster.clients["a"], cluster.clients["b"]
    sid = (await a.start_session("call-1"))["session_id"]
    node = cluster.nodes["a"]
    assert node.proc is not None
    node.proc.terminate()

    async def not_ready() -> bool:
        return not await a.ready()

    await wait_until(not_ready, timeout=2, interval=0.01)
    with pytest.raises(NodeApiError) as refused:
        await a.start_session("call-2")
    assert refused.value.status in (0, 503)  # 503 while draining (0 if it already closed the port)
    assert await asyncio.wait_for(node.proc.wait(), 10) == 0
    assert await b.get_session("call-1", sid) is None
    assert [n["node_id"] for n in await b.list_nodes()] == ["node-b"]  # deregistered, not expired
    registry = cluster.registry()
    ended = await registry.get_ended("call-1", sid)
    assert ended is not None and ended.reason == EndReason.DRAIN_TIMEOUT
    await registry.store.close()


async def test_start_requests_through_the_registry(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(("a", "b"), extra=["--max-concurrent-sessions", "1"])
    operator = cluster.registry("operator")

    async def answer(node_id: str, call_id: str, session_id: str) -> tuple[bool, str | None]:
        request = await operator.request_start(node_id, call_id, session_id=session_id)
        result = None

        async def answered() -> bool:
            nonlocal result
            result = await operator.get_start_result(request.request_id)
            return result is not None

        await wait_until(answered, timeout=5, interval=0.01)
        assert result is not None
        return result.accepted, result.reason

    assert await answer("node-a", "call-1", "ags-1") == (True, None)
    seen = await cluster.clients["b"].get_session("call-1", "ags-1")
    assert seen is not None and seen["node_id"] == "node-a"
    assert await answer("node-a", "call-2", "ags-2") == (False, StartRejection.CAPACITY)
    assert await cluster.clients["b"].get_session("call-2", "ags-2") is None
    await operator.store.close()
