"""Every store test runs against each backend: in-memory, Redis (real server), and a
minimal dict backend that implements only the documented abstract methods."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from callboard.registry import (
    InMemorySessionKVStore,
    RedisSessionKVStore,
    SessionKVStore,
    SessionRegistry,
)
from tests.support.dict_store import DictStore
from tests.support.redis_topology import ClusterTopology

BACKENDS = [
    pytest.param("memory", marks=pytest.mark.memory),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("dict", marks=pytest.mark.memory),
    # A real 3-master cluster with a hash-tagged prefix (README "Redis in production").
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]
#: Every key in one slot, so the scripts run on one node of a cluster.
CLUSTER_PREFIX = "{callboard}:"


@pytest.fixture(scope="session")
def redis_cluster_topology() -> Iterator[ClusterTopology]:
    with ClusterTopology() as topology:
        yield topology


@pytest.fixture
def redis_cluster_url(redis_cluster_topology: ClusterTopology) -> str:
    """URL of one node of the session's cluster (not necessarily the slot's), every node flushed."""
    import redis

    for port in redis_cluster_topology.ports:
        with redis.Redis(port=port) as admin:
            admin.flushall()
    return redis_cluster_topology.url


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionKVStore]:
    """A started, empty store of each backend."""
    backend: SessionKVStore
    if request.param == "memory":
        backend = InMemorySessionKVStore()
    elif request.param == "dict":
        backend = DictStore()
    elif request.param == "redis-cluster":
        backend = RedisSessionKVStore(
            url=request.getfixturevalue("redis_cluster_url"), key_prefix=CLUSTER_PREFIX
        )
    else:
        backend = RedisSessionKVStore(url=request.getfixturevalue("redis_url"))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


class Cluster:
    """Builds registries that share one backend, as nodes of one cluster would."""

    def __init__(self, backend: str, redis_url: str | None) -> None:
        self.backend = backend
        self.redis_url = redis_url
        self._shared: SessionKVStore | None = None
        self.registries: list[SessionRegistry] = []
        self.raw_stores: list[SessionKVStore] = []

    def new_store(self) -> SessionKVStore:
        if self.backend == "redis":
            assert self.redis_url is not None
            return RedisSessionKVStore(url=self.redis_url)
        if self.backend == "redis-cluster":
            assert self.redis_url is not None
            return RedisSessionKVStore(url=self.redis_url, key_prefix=CLUSTER_PREFIX)
        if self._shared is None:
            self._shared = InMemorySessionKVStore() if self.backend == "memory" else DictStore()
        return self._shared

    async def node(self, node_id: str, *, ttl: float = 5.0, start: bool = True) -> SessionRegistry:
        registry = SessionRegistry(self.new_store(), node_id=node_id, ttl=ttl)
        self.registries.append(registry)
        if start:
            await registry.start()
        return registry

    async def raw_store(self) -> SessionKVStore:
        """A store that sees the keys as a foreign (Vision Agents) node does."""
        store = self.new_store()
        await store.start()
        self.raw_stores.append(store)
        return store

    @property
    def has_push(self) -> bool:
        return self.backend != "dict"


@pytest.fixture(params=BACKENDS)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    redis_url = {"redis": "redis_url", "redis-cluster": "redis_cluster_url"}.get(request.param)
    redis_url = request.getfixturevalue(redis_url) if redis_url else None
    built = Cluster(request.param, redis_url)
    try:
        yield built
    finally:
        for registry in built.registries:
            if registry.running:
                await registry.stop()
        for store in built.raw_stores:
            await store.close()
