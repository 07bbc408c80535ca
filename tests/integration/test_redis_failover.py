"""Issue 12 (Redis that survives a failure) and issue 11 defect 12 (READONLY after failover).

Strict xfails: each fails on the code it was written against; its fix removes the mark.
Real servers on loopback from tests/support/redis_topology.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from callboard import ConfigurationError, StoreUnavailableError
from callboard.registry import RedisSessionKVStore, SessionRegistry, store_from_url
from callboard.registry import registry as registry_module
from tests.support.redis_server import RedisServer
from tests.support.redis_topology import ClusterTopology, SentinelTopology
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def sentinel() -> Iterator[SentinelTopology]:
    with SentinelTopology() as topology:
        yield topology


@pytest.fixture
def cluster() -> Iterator[ClusterTopology]:
    with ClusterTopology() as topology:
        yield topology


@pytest.mark.timeout(180)
async def test_g3_sessions_visible_again_one_heartbeat_after_sentinel_failover(
    sentinel: SentinelTopology,
) -> None:
    registry = SessionRegistry(store_from_url(sentinel.url()), node_id="node-a", ttl=30)
    await registry.start()
    try:
        for i in range(50):
            await registry.register(f"call-{i % 5}", f"s-{i}")
        old = sentinel.master.port
        sentinel.kill_master()
        await asyncio.to_thread(sentinel.wait_for_promotion, old)
        # Replication is asynchronous: what the new master lacks, one heartbeat writes back.
        for _ in range(60):
            try:
                await registry.heartbeat()
                break
            except StoreUnavailableError:
                await asyncio.sleep(0.5)
        assert len(await registry.list_sessions()) == 50
    finally:
        await registry.stop()


@pytest.mark.timeout(120)
async def test_cluster_mode_with_default_prefix_is_refused_at_start(cluster: ClusterTopology) -> None:
    registry = SessionRegistry(RedisSessionKVStore(url=cluster.url), node_id="node-a", ttl=30)
    try:
        with pytest.raises(ConfigurationError, match=r"(?i)cluster") as refused:
            await registry.start()
        assert "{" in str(refused.value)  # names the way out: a hash-tagged key prefix
    finally:
        await registry.stop()
        await registry.store.close()


async def test_g10_readonly_after_failover_counts_as_unavailable() -> None:
    with RedisServer() as primary, RedisServer() as promoted:
        registry = SessionRegistry(RedisSessionKVStore(url=primary.url), node_id="node-a", ttl=30)
        await registry.start()
        try:
            await registry.register("call-1", "s-1")
            # The failover behind a Service: the old primary is now a replica; PING still works.
            with redis.Redis(port=primary.port) as admin:
                admin.replicaof("127.0.0.1", promoted.port)
            await registry.store.ping()
            with pytest.raises(StoreUnavailableError):
                await registry.register("call-1", "s-2")
        finally:
            await registry.stop()


def _other_clients(port: int) -> list[str]:
    """Connections to the server at ``port`` other than the asking one (normal and pub/sub)."""
    with redis.Redis(port=port) as admin:
        me = admin.client_id()
        return [
            f"{c['addr']} {c['cmd']}"
            for kind in ("normal", "pubsub")
            for c in admin.client_list(_type=kind)
            if int(c["id"]) != me
        ]


async def test_g10_stop_closes_every_connection_when_the_final_delete_outlasts_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The socket left to the garbage collector at stop after a failover: the final delete
    of the node record outlived its bound (a primary that pauses writes while it hands over,
    as Redis's FAILOVER does, or READONLY retries on a loaded machine), kept running behind
    its shield, and reconnected after the store was closed; when it then succeeded, its
    connection went back to a closed pool, open. A bound of 0 and paused writes force that
    race every time: once stop() returns, no connection of the registry may stay open."""
    monkeypatch.setattr(registry_module, "STOP_TIMEOUT", 0.0)
    with RedisServer() as server:
        registry = SessionRegistry(RedisSessionKVStore(url=server.url), node_id="node-a", ttl=30)
        await registry.start()
        await registry.register("call-1", "s-1")
        with redis.Redis(port=server.port) as admin:
            admin.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
        await registry.stop()
        await wait_until(
            lambda: asyncio.to_thread(lambda: not _other_clients(server.port)),
            timeout=10,
            what="the stopped registry's connections closed",
        )
