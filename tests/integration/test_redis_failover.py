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
from tests.support.redis_server import RedisServer
from tests.support.redis_topology import ClusterTopology, SentinelTopology

pytestmark = pytest.mark.redis


# Known defect (open): after a failover, a pub/sub reconnect racing the registry's stop can
# leave one socket for the garbage collector (a ResourceWarning at collection, seen in about
# one full run of three under load). The test's own assertions stand; the leak is tracked.
KNOWN_FAILOVER_SOCKET_LEAK = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


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


@KNOWN_FAILOVER_SOCKET_LEAK
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
