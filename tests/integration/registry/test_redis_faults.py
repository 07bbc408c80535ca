"""Redis outages: restarts, stops, flushes. The registry fails clearly and recovers alone."""

from __future__ import annotations

import asyncio
import time

import pytest

from callboard import StoreUnavailableError
from callboard.registry import CloseRequest, RedisSessionKVStore, SessionRegistry
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis


async def _registry(url: str, node_id: str) -> SessionRegistry:
    registry = SessionRegistry(RedisSessionKVStore(url=url), node_id=node_id, ttl=5)
    await registry.start()
    return registry


async def test_restart_empty_every_session_is_back_after_one_heartbeat(
    redis_server: RedisServer, redis_url: str
) -> None:
    a = await _registry(redis_url, "node-a")
    b = await _registry(redis_url, "node-b")
    try:
        for i in range(50):
            await (a if i % 2 else b).register(f"call-{i % 5}", f"s-{i}")
        redis_server.restart()
        assert await a.list_sessions() == []  # reconnected by the retry, but Redis is empty
        assert await a.heartbeat() == 25
        assert await b.heartbeat() == 25
        assert len(await b.list_sessions()) == 50
        assert sorted(n.node_id for n in await a.list_nodes()) == ["node-a", "node-b"]
        assert len(await a.get_for_call("call-3")) == 10
    finally:
        await a.stop()
        await b.stop()


async def test_push_listener_resubscribes_after_restart(redis_server: RedisServer, redis_url: str) -> None:
    a = await _registry(redis_url, "node-a")
    b = await _registry(redis_url, "node-b")
    try:
        await a.register("call-1", "sess-1")
        stream = a.close_requests()
        redis_server.restart()
        deadline = time.monotonic() + 10
        while True:  # the heartbeat upserts the session once Redis answers again
            try:
                await a.heartbeat()
                break
            except StoreUnavailableError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        # Keep asking until the listener is subscribed again; each request is pushed.
        request = None
        while request is None and time.monotonic() < deadline:
            await b.request_close("call-1", "sess-1")
            try:
                request = await asyncio.wait_for(stream.get(), 0.3)
            except TimeoutError:
                continue
        assert request == CloseRequest("call-1", "sess-1")
    finally:
        await a.stop()
        await b.stop()


async def test_redis_stopped_calls_fail_fast_with_typed_error_then_recover(
    redis_server: RedisServer, redis_url: str
) -> None:
    a = await _registry(redis_url, "node-a")
    try:
        await a.register("call-1", "sess-1")
        redis_server.stop()
        for call in (a.heartbeat(), a.get("call-1", "sess-1"), a.register("call-1", "s2"), a.list_nodes()):
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="Redis is unreachable"):
                await call
            assert time.monotonic() - started < 8  # bounded by connect timeout and retries
        redis_server.start()
        await a.heartbeat()
        assert [s.session_id for s in await a.list_sessions()] == ["sess-1"]
    finally:
        await a.stop()


async def test_start_with_redis_down_raises_unavailable(redis_server: RedisServer) -> None:
    dead = RedisServer()  # a free port nobody listens on
    registry = SessionRegistry(RedisSessionKVStore(url=dead.url))
    with pytest.raises(StoreUnavailableError):
        await registry.start()
    await registry.store.close()


def test_store_needs_exactly_one_of_client_or_url() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RedisSessionKVStore()
    with pytest.raises(ValueError, match="exactly one"):
        RedisSessionKVStore(url="redis://x", client=object())  # type: ignore[arg-type]


async def test_heartbeat_repairs_lost_records_and_a_wrong_node_index(redis_url: str) -> None:
    import redis.asyncio as aioredis

    from callboard.registry.backends.redis_index import FULL_HEARTBEAT_EVERY

    a = await _registry(redis_url, "node-a")
    raw = aioredis.Redis.from_url(redis_url)
    try:
        for i in range(4):
            await a.register("call-1", f"s-{i}")
        # One record lost, index intact: the cheap heartbeat notices and writes it back.
        await raw.delete("vision_agents:sessions/call-1/s-0")
        assert await a.heartbeat() == 1
        assert await raw.exists("vision_agents:sessions/call-1/s-0") == 1
        # Right count, wrong members: only the periodic full heartbeat can tell.
        await raw.srem("vision_agents:index/nodes/node-a", "call-1/s-1")
        await raw.sadd("vision_agents:index/nodes/node-a", "call-1/ghost")
        await raw.delete("vision_agents:sessions/call-1/s-1")
        for _ in range(FULL_HEARTBEAT_EVERY):
            await a.heartbeat()
        members = {m.decode() for m in await raw.smembers("vision_agents:index/nodes/node-a")}
        assert members == {f"call-1/s-{i}" for i in range(4)}
        assert sorted(s.session_id for s in await a.list_sessions(node_id="node-a")) == [
            f"s-{i}" for i in range(4)
        ]
    finally:
        await raw.aclose()
        await a.stop()
