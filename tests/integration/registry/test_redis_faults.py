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


class _ServiceAddress:
    """A TCP forwarder standing in for a Service/DNS name: new connections go to the
    current ``target``; connections already open stay where they are (as after a failover)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()


async def test_g10_readonly_after_a_failover_is_unavailable_and_the_store_reconnects(
    redis_server: RedisServer, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    other = RedisServer()
    other.start()
    service = _ServiceAddress(redis_server.port)
    await service.start()
    registry = SessionRegistry(
        RedisSessionKVStore(url=f"redis://127.0.0.1:{service.port}/0"), node_id="node-a", ttl=5
    )
    old = aioredis.Redis.from_url(redis_url)
    try:
        await registry.start()
        await registry.register("call-1", "sess-1")
        # Failover: the old primary is demoted, the name now points to the new one.
        await old.execute_command("REPLICAOF", "127.0.0.1", str(other.port))
        service.target = other.port
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await registry.heartbeat() == 1  # the new primary is empty: written back
                break
            except StoreUnavailableError:  # until the retry reaches the new primary
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert [s.session_id for s in await registry.list_sessions()] == ["sess-1"]
    finally:
        await old.execute_command("REPLICAOF", "NO", "ONE")
        await old.aclose()
        await registry.stop()
        await service.stop()
        other.stop()


async def test_readonly_is_translated_to_store_unavailable(redis_server: RedisServer, redis_url: str) -> None:
    import redis.asyncio as aioredis

    other = RedisServer()
    other.start()
    store = RedisSessionKVStore(url=redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await store.start()
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(other.port))
        with pytest.raises(StoreUnavailableError, match=r"read-only replica now \(READONLY"):
            await store.set("k", b"v", 5)
    finally:
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        await admin.aclose()
        await store.close()
        other.stop()


async def test_g10_a_disconnect_racing_a_reconnect_of_the_same_connection_keeps_the_new_socket(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket left to the garbage collector after failovers (a ResourceWarning for an
    unclosed StreamWriter): a Sentinel pool disconnects its idle connections when the master
    changes, and redis-py's disconnect cleared the connection's streams only after awaiting
    the old stream's close. A command that had reconnected that connection meanwhile lost
    its new stream, open. The old stream's close is held here until the reconnect is done,
    which forces that interleaving every time."""
    store = RedisSessionKVStore(url=redis_url)
    await store.start()
    pool = store.client.connection_pool
    connection = await pool.get_connection()
    closing = asyncio.Event()
    wait_closed = asyncio.StreamWriter.wait_closed

    async def held_wait_closed(writer: asyncio.StreamWriter) -> None:
        await closing.wait()
        await wait_closed(writer)

    monkeypatch.setattr(asyncio.StreamWriter, "wait_closed", held_wait_closed)
    try:
        idle_disconnect = asyncio.create_task(connection.disconnect())
        await asyncio.sleep(0)  # it closed the old stream and waits for the close
        await connection.disconnect(nowait=True)  # a command's read failed: dropped at once
        await connection.connect()  # and connected again
        new_writer = connection._writer
        closing.set()
        await idle_disconnect
        assert new_writer is not None and connection._writer is new_writer
        assert not new_writer.is_closing()
        assert connection.is_connected
    finally:
        closing.set()
        await pool.release(connection)
        await store.close()


async def test_g10_a_pubsub_reconnect_while_stopping_starts_no_reread_on_the_closed_store(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last socket of issue 11 (a bare ``socket.socket`` collected in a later test): a
    listener cancelled by ``stop`` during a failover reconnected its pub/sub connection on
    the way out, and redis-py's reconnect callback started a re-read task after ``stop`` had
    taken its list of tasks. That re-read ran beside the final delete and the store's close,
    reconnected the closed pools (through the sentinels too) and left those sockets open.
    Here the reconnect callback fires as the subscription closes, every time."""
    from callboard.registry.backends import redis as redis_backend

    reread_while_stopping: list[bool] = []
    poll_missed_closes = SessionRegistry._poll_missed_closes

    async def recording_poll(self: SessionRegistry) -> None:
        if not self.running:
            reread_while_stopping.append(True)
        await poll_missed_closes(self)

    monkeypatch.setattr(SessionRegistry, "_poll_missed_closes", recording_poll)
    subscription_aclose = redis_backend._RedisSubscription.aclose

    async def reconnecting_aclose(self: redis_backend._RedisSubscription) -> None:
        self._reconnected(self._pubsub.connection)  # what redis-py calls after a reconnect
        await subscription_aclose(self)

    monkeypatch.setattr(redis_backend._RedisSubscription, "aclose", reconnecting_aclose)
    registry = await _registry(redis_url, "node-a")
    await registry.stop()
    await asyncio.sleep(0)  # a re-read started during stop would have taken its first step
    assert reread_while_stopping == []
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("resync:")] == []
