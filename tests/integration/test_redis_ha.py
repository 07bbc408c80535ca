"""Issue 12 against real servers on loopback: Sentinel failover, cluster mode, ACL users.

The topologies come from tests/support/redis_topology.py (master + replica + 3 sentinels with
``down-after-milliseconds`` 1000; a 3-master cluster). The failover tests print their figures
(kill → promotion, promotion → every session visible, sessions the new master lacked); they
are measurements, never assertions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from click.testing import CliRunner

from callboard import ConfigurationError, MaxSessionsPerCallExceeded, StoreUnavailableError
from callboard.cli import sessions
from callboard.registry import CloseRequest, RedisSessionKVStore, SessionRegistry, store_from_url
from callboard.registry.backends import redis_connect
from tests.support.redis_server import RedisServer
from tests.support.redis_topology import ClusterTopology, SentinelTopology, create_acl_user
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis

NODES = 3
SESSIONS_PER_NODE = 50
#: Safe against this topology's failover (1 s down-after + margin): check_ttl stays quiet.
TTL = 10.0
#: The least-privilege user of the README's "Redis in production" section.
LEAST_PRIVILEGE_COMMANDS = (
    "-@all +ping +info +get +set +mget +del +exists +pexpire +pttl +scan +sadd +srem +scard "
    "+smembers +sismember +zadd +zrem +zrange +zrangebylex +publish +subscribe +unsubscribe +evalsha +eval "
    "+script|load +select +time"
)


@pytest.fixture
def sentinel() -> Iterator[SentinelTopology]:
    with SentinelTopology() as topology:
        yield topology


@pytest.fixture
def cluster() -> Iterator[ClusterTopology]:
    with ClusterTopology() as topology:
        yield topology


@pytest.fixture
async def nodes(sentinel: SentinelTopology) -> AsyncIterator[list[SessionRegistry]]:
    registries = [
        SessionRegistry(store_from_url(sentinel.url()), node_id=f"node-{i}", ttl=TTL) for i in range(NODES)
    ]
    for registry in registries:
        await registry.start()
    try:
        yield registries
    finally:
        for registry in registries:
            await registry.stop()


def _background_failures(caplog: pytest.LogCaptureFixture, registries: list[SessionRegistry]) -> list[str]:
    failed = [
        r.message for r in caplog.records if "background task" in r.message and r.levelno >= logging.ERROR
    ]
    failed += [t.get_name() for r in registries for t in r._tasks if t.done()]
    return failed


async def _heartbeat_until_it_lands(registry: SessionRegistry) -> int:
    """What a node's heartbeat loop does: retry while the store is unavailable."""
    while True:
        try:
            return await registry.heartbeat()
        except StoreUnavailableError:
            await asyncio.sleep(0.2)


def _subscribed(port: int, channel: str) -> bool:
    with redis.Redis(port=port) as admin:
        return int(dict(admin.pubsub_numsub(channel))[channel.encode()]) > 0


async def _wait_subscribed(port: int, channel: str) -> None:
    await wait_until(
        lambda: asyncio.to_thread(_subscribed, port, channel), timeout=60, what=f"{channel} resubscribed"
    )


def _role(port: int, role: str) -> bool:
    with redis.Redis(port=port) as admin:
        return bool(admin.info("replication")["role"] == role)


def _count_sessions(port: int) -> int:
    with redis.Redis(port=port) as admin:
        return sum(1 for _ in admin.scan_iter(match="vision_agents:sessions/*", count=1000))


def _report(capsys: pytest.CaptureFixture[str], title: str, **figures: object) -> None:
    with capsys.disabled():
        print(f"\n[failover] {title}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.mark.timeout(180)
async def test_g3_g6_g10_three_nodes_of_50_sessions_survive_kill_9_of_the_master(
    sentinel: SentinelTopology,
    nodes: list[SessionRegistry],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.WARNING)
    for n, registry in enumerate(nodes):
        for i in range(SESSIONS_PER_NODE):
            await registry.register(f"call-{i % 10}", f"n{n}-s{i}")
    streams = [registry.close_requests() for registry in nodes]

    old_port = sentinel.master.port
    killed = time.monotonic()
    sentinel.kill_master()
    _, new_port = await asyncio.to_thread(sentinel.wait_for_promotion, old_port)
    promoted = time.monotonic()
    lacked = NODES * SESSIONS_PER_NODE - await asyncio.to_thread(_count_sessions, new_port)

    # One heartbeat per node after the promotion (retried while the old master is still named)
    # writes back what the new master lacks.
    restored = [await _heartbeat_until_it_lands(registry) for registry in nodes]
    assert sum(restored) == lacked
    listed = await nodes[0].list_sessions()
    visible = time.monotonic()
    assert sorted(s.session_id for s in listed) == sorted(
        f"n{n}-s{i}" for n in range(NODES) for i in range(SESSIONS_PER_NODE)
    )

    # A close request sent after the failover reaches its owner by push (no poll runs here).
    await _wait_subscribed(new_port, "vision_agents:channels/close/node-1")
    await nodes[0].request_close("call-3", "n1-s3")
    assert await asyncio.wait_for(streams[1].get(), 30) == CloseRequest("call-3", "n1-s3")

    assert _background_failures(caplog, nodes) == []
    _report(
        capsys,
        "kill -9 of the master, 3 nodes x 50 sessions",
        kill_to_promotion_s=f"{promoted - killed:.2f}",
        promotion_to_all_visible_s=f"{visible - promoted:.2f}",
        sessions_the_new_master_lacked=lacked,
        written_back_by_heartbeats=sum(restored),
        sessions_lost_after_one_heartbeat=0,
    )


@pytest.mark.timeout(240)
async def test_g3_g10_failover_during_a_burst_of_registrations_and_close_requests(
    sentinel: SentinelTopology,
    nodes: list[SessionRegistry],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Registrations and close requests that fail are retried by their caller; after the
    repair (one heartbeat, and a re-sent close for a session still listed) none is lost
    and none is doubled."""
    caplog.set_level(logging.WARNING)
    owner, requester = nodes[1], nodes[2]
    delivered: set[tuple[str, str]] = set()
    stream = owner.close_requests()

    async def collect() -> None:
        async for request in stream:
            delivered.add((request.call_id, request.session_id))

    collector = asyncio.create_task(collect())
    registered: list[str] = []
    asked: list[tuple[str, str]] = []
    retries = 0

    async def burst() -> None:
        nonlocal retries
        for i in range(120):
            while True:
                try:
                    await owner.register(f"call-{i % 6}", f"b-{i}")
                    break
                except StoreUnavailableError:
                    retries += 1
                    await asyncio.sleep(0.1)
            registered.append(f"b-{i}")
            if i % 3 == 0:
                while True:
                    try:
                        await requester.request_close(f"call-{i % 6}", f"b-{i}")
                        break
                    except StoreUnavailableError:
                        retries += 1
                        await asyncio.sleep(0.1)
                asked.append((f"call-{i % 6}", f"b-{i}"))

    running = asyncio.create_task(burst())
    await wait_until(lambda: len(registered) >= 30, timeout=60, what="30 registrations")
    old_port = sentinel.master.port
    killed = time.monotonic()
    sentinel.kill_master()
    _, new_port = await asyncio.to_thread(sentinel.wait_for_promotion, old_port)
    promoted = time.monotonic()
    await running
    await _heartbeat_until_it_lands(owner)
    visible = time.monotonic()

    listed = [s.session_id for s in await requester.list_sessions()]
    assert sorted(listed) == sorted(registered)  # none lost, none doubled
    # The requester's repair: a close it asked for whose session is still listed is re-sent.
    await _wait_subscribed(new_port, "vision_agents:channels/close/node-1")
    resent = [req for req in asked if req not in delivered]
    for call_id, session_id in resent:
        await requester.request_close(call_id, session_id)
    await wait_until(lambda: set(asked) <= delivered, timeout=60, what="every close request delivered")
    collector.cancel()
    assert set(asked) <= delivered
    assert _background_failures(caplog, nodes) == []
    _report(
        capsys,
        "kill -9 during a burst of 120 registrations and 40 close requests",
        kill_to_promotion_s=f"{promoted - killed:.2f}",
        promotion_to_all_visible_s=f"{visible - promoted:.2f}",
        calls_retried_by_callers=retries,
        close_requests_resent=len(resent),
        sessions_lost_after_repair=len(set(registered) - set(listed)),
    )


async def test_sentinel_ttl_shorter_than_a_failover_is_warned_at_start(
    sentinel: SentinelTopology, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    # down-after-milliseconds is 1000 here: a failover takes about 4 s, so 8 s is the floor.
    async with SessionRegistry(store_from_url(sentinel.url()), node_id="short", ttl=5):
        pass
    assert any(
        "cannot survive a Sentinel failover" in r.message and "1000" in r.message for r in caplog.records
    )
    caplog.clear()
    async with SessionRegistry(store_from_url(sentinel.url()), node_id="long", ttl=TTL):
        pass
    assert not any("Sentinel failover" in r.message for r in caplog.records)


async def test_sentinel_url_with_a_wrong_master_name_is_unavailable(sentinel: SentinelTopology) -> None:
    store = store_from_url(sentinel.url().replace("/callboard/", "/nosuchmaster/"))
    with pytest.raises(StoreUnavailableError, match="nosuchmaster"):
        await store.start()
    await store.close()


def _slot_owner_index(cluster: ClusterTopology, prefix: str) -> int:
    with redis.Redis(port=cluster.ports[0]) as admin:
        slot = int(admin.execute_command("CLUSTER", "KEYSLOT", prefix))
        for first, last, owner, *_ in admin.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return cluster.ports.index(int(owner[1]))
    raise AssertionError("no owner")


@pytest.mark.timeout(120)
async def test_cluster_mode_with_a_hash_tagged_prefix_works_end_to_end(cluster: ClusterTopology) -> None:
    prefix = "{callboard}:"
    # Connect through a node that does not serve the prefix's slot: the store finds the one that does.
    entry = cluster.nodes[(_slot_owner_index(cluster, prefix) + 1) % 3]
    a = SessionRegistry(RedisSessionKVStore(url=entry.url, key_prefix=prefix), node_id="node-a", ttl=30)
    b = SessionRegistry(RedisSessionKVStore(url=entry.url, key_prefix=prefix), node_id="node-b", ttl=30)
    async with a, b:
        await a.register("call-1", "s-1")
        await b.register("call-1", "s-2", max_sessions_per_call=2)
        with pytest.raises(MaxSessionsPerCallExceeded, match="already has 2 sessions"):
            await b.register("call-1", "s-3", max_sessions_per_call=2)
        assert await a.heartbeat() == 0
        assert await b.heartbeat() == 0
        assert sorted(s.session_id for s in await b.get_for_call("call-1")) == ["s-1", "s-2"]
        assert sorted(s.session_id for s in await a.list_sessions()) == ["s-1", "s-2"]
        closes = a.close_requests()
        await b.request_close("call-1", "s-1")
        assert await asyncio.wait_for(closes.get(), 30) == CloseRequest("call-1", "s-1")
        starts = a.start_requests()
        request = await b.request_start("node-a", "call-2", session_id="s-9")
        assert (await asyncio.wait_for(starts.get(), 30)).request_id == request.request_id
        await a.register("call-2", "s-9")
        await a.answer_start(request, accepted=True)
        result = await b.get_start_result(request.request_id)
        assert result is not None and result.accepted
        await a.remove("call-1", "s-1")
        assert [s.session_id for s in await b.get_for_call("call-1")] == ["s-2"]


async def test_cluster_mode_needs_a_hash_tagged_prefix_too_on_a_custom_prefix(
    cluster: ClusterTopology,
) -> None:
    store = RedisSessionKVStore(url=cluster.url, key_prefix="myapp:")
    with pytest.raises(ConfigurationError, match=r"cluster mode.*\{callboard\}:"):
        await store.start()
    await store.close()


async def test_the_documented_least_privilege_acl_user_works(
    redis_server: RedisServer, redis_url: str
) -> None:
    url = create_acl_user(redis_server, "callboard", "pw", commands=LEAST_PRIVILEGE_COMMANDS)
    a = SessionRegistry(store_from_url(url), node_id="node-a", ttl=30)
    b = SessionRegistry(store_from_url(url), node_id="node-b", ttl=30)
    async with a, b:
        await a.register("call-1", "s-1", max_sessions_per_call=3)
        await b.register("call-1", "s-2")
        assert await a.heartbeat() == 0
        assert len(await b.get_for_call("call-1")) == 2
        assert len(await a.list_sessions()) == 2
        closes = a.close_requests()
        await b.request_close("call-1", "s-1")
        assert await asyncio.wait_for(closes.get(), 30) == CloseRequest("call-1", "s-1")
        request = await b.request_start("node-a", "call-2")
        assert [r.request_id for r in await a.pending_start_requests()] == [request.request_id]
        await a.answer_start(request, accepted=False, reason="full")
        await a.remove("call-1", "s-1")
        await a.index_foreign_sessions()
    with redis.Redis(port=redis_server.port) as admin:
        assert all(key.startswith(b"vision_agents:") for key in admin.keys("*"))


@pytest.mark.parametrize(
    "commands",
    [
        LEAST_PRIVILEGE_COMMANDS.replace(" +time", ""),  # the documented user before node versions
        "+@read +@write +@keyspace +@scripting +@pubsub -@dangerous +ping",  # category rules
    ],
    ids=["least-privilege-of-an-earlier-release", "category-rules"],
)
async def test_an_acl_user_that_may_not_run_time_still_registers_and_moves_the_node_version(
    redis_server: RedisServer, redis_url: str, commands: str
) -> None:
    url = create_acl_user(redis_server, "callboard-old", "pw", commands=commands)
    version_key = "vision_agents:index/versions/node-a"
    with redis.Redis(port=redis_server.port) as admin:
        async with SessionRegistry(store_from_url(url), node_id="node-a", ttl=30) as a:
            await a.register("call-1", "s-1")
            first = admin.get(version_key)
            await a.register("call-1", "s-2")
            second = admin.get(version_key)
            await a.heartbeat()
            await a.remove("call-1", "s-1")
            third = admin.get(version_key)
            assert [s.session_id for s in await a.get_for_call("call-1")] == ["s-2"]
    assert first is not None and second is not None and third is not None
    assert int(first) < int(second) < int(third)


async def test_a_user_without_channel_rights_is_reported_at_start(
    redis_server: RedisServer, redis_url: str
) -> None:
    url = create_acl_user(redis_server, "nochannels", "pw", channel_pattern=None)
    registry = SessionRegistry(store_from_url(url), node_id="node-a", ttl=30)
    with pytest.raises(ConfigurationError, match=r"may not publish.*&vision_agents:\*"):
        await registry.start()
    await registry.store.close()


async def test_an_evicting_maxmemory_policy_is_warned_at_start(
    redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with redis.Redis(port=redis_server.port) as admin:
        admin.config_set("maxmemory-policy", "allkeys-lru")
    try:
        async with SessionRegistry(store_from_url(redis_url), node_id="node-a", ttl=30):
            pass
    finally:
        with redis.Redis(port=redis_server.port) as admin:
            admin.config_set("maxmemory-policy", "noeviction")
    assert any("maxmemory-policy is allkeys-lru" in r.message for r in caplog.records)


async def test_the_command_line_reads_and_closes_through_a_sentinel_url(sentinel: SentinelTopology) -> None:
    def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        result = CliRunner(env=env).invoke(sessions.command, list(args), catch_exceptions=False)
        return result.exit_code, result.output

    async with SessionRegistry(store_from_url(sentinel.url()), node_id="node-a", ttl=TTL) as registry:
        await registry.register("call-1", "s-1")
        closes = registry.close_requests()
        code, out = await asyncio.to_thread(invoke, "list", "--redis-url", sentinel.url(), "--json")
        assert code == 0, out
        assert [s["session_id"] for s in json.loads(out)] == ["s-1"]
        env = {"CALLBOARD_REDIS_URL": sentinel.url(scheme="valkey+sentinel")}
        code, out = await asyncio.to_thread(invoke, "close", "call-1", "s-1", env=env)
        assert code == 0, out
        assert await asyncio.wait_for(closes.get(), 30) == CloseRequest("call-1", "s-1")


async def test_g10_a_demoted_master_answering_readonly_means_reconnect_to_the_new_one(
    sentinel: SentinelTopology, nodes: list[SessionRegistry]
) -> None:
    """A graceful failover (SENTINEL FAILOVER) keeps the old master up as a replica: pooled
    connections to it are dropped or answered READONLY, and the store follows the sentinels."""
    registry = nodes[0]
    await registry.register("call-1", "before")
    old_port = sentinel.master.port
    with redis.Redis(port=sentinel.sentinel_ports[0]) as admin:
        admin.execute_command("SENTINEL", "FAILOVER", "callboard")
    _, new_port = await asyncio.to_thread(sentinel.wait_for_promotion, old_port)
    await wait_until(
        lambda: asyncio.to_thread(_role, old_port, "slave"),
        timeout=60,
        what="the old master demoted",
    )
    while True:  # unavailable while the pool learns the new master; never a plain StoreError
        try:
            await registry.register("call-1", "after")
            break
        except StoreUnavailableError:
            await asyncio.sleep(0.2)
    await _heartbeat_until_it_lands(registry)
    with redis.Redis(port=new_port) as admin:
        assert (
            admin.exists("vision_agents:sessions/call-1/after", "vision_agents:sessions/call-1/before") == 2
        )


async def test_g10_concurrent_master_lookups_keep_every_sentinel(sentinel: SentinelTopology) -> None:
    """The last socket of issue 11: redis-py's ``discover_master`` moves the sentinel that
    answered to the front by a stale index when lookups overlap (every pooled connection
    reconnects after a failover), so one sentinel client was listed twice and another fell
    out of the list: never asked again, never closed, its connections left open. A refused
    first address makes every lookup ask the second sentinel at once, each time."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    hosts = ",".join(f"127.0.0.1:{p}" for p in [refused, *sentinel.sentinel_ports])
    store = store_from_url(f"redis+sentinel://{hosts}/callboard")
    assert isinstance(store, RedisSessionKVStore)
    manager = redis_connect.sentinel_of(store.client)
    clients = list(manager.sentinels)
    try:
        for client in clients[1:]:  # connected already, so the lookups ask in step
            await client.ping()
        await asyncio.gather(*(manager.discover_master("callboard") for _ in range(16)))
        assert sorted(map(id, manager.sentinels)) == sorted(map(id, clients))
    finally:
        await store.close()
