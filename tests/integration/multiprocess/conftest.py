"""Clusters of real ``callboard serve`` processes over the suite's real Redis.

Each test gets fresh nodes under a fresh key prefix; whatever a test leaves running is
stopped (SIGTERM, then SIGKILL) at teardown, and a failing test shows the nodes' logs.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from callboard.demo.cluster import ProcessNode, serve_command
from callboard.registry import RedisSessionKVStore, SessionRegistry
from callboard.server import NodeClient
from tests.support.redis_server import free_port

pytestmark = pytest.mark.redis


@dataclass
class Cluster:
    redis_url: str
    prefix: str
    ttl: float
    interval: float
    nodes: dict[str, ProcessNode] = field(default_factory=dict)
    clients: dict[str, NodeClient] = field(default_factory=dict)

    def registry(self, node_id: str = "test-observer") -> SessionRegistry:
        """A registry on the same Redis and prefix (not started: it reads, it never heartbeats)."""
        store = RedisSessionKVStore(url=self.redis_url, key_prefix=self.prefix)
        return SessionRegistry(store, node_id=node_id, ttl=self.ttl, foreign_scan_interval=None)

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{node.log_tail(40)}" for name, node in self.nodes.items())


MakeCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def make_cluster(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[MakeCluster]:
    clusters: list[Cluster] = []

    async def make(
        names: Sequence[str] = ("a", "b", "c"),
        *,
        ttl: float = 2.0,
        interval: float = 0.5,
        extra: Sequence[str] = (),
    ) -> Cluster:
        cluster = Cluster(redis_url, f"mp-{secrets.token_hex(4)}:", ttl, interval)
        clusters.append(cluster)
        for name in names:
            node_id = f"node-{name}"
            argv = serve_command(
                node_id=node_id,
                port=free_port(),
                redis_url=redis_url,
                key_prefix=cluster.prefix,
                ttl=ttl,
                maintenance_interval=interval,
                extra=["--drain-timeout", "0.2", *extra],
            )
            port = int(argv[argv.index("--port") + 1])
            cluster.nodes[name] = ProcessNode(name, node_id, port, argv, tmp_path / f"{node_id}.log")
            cluster.clients[name] = NodeClient(cluster.nodes[name].url, timeout=5.0)
        await asyncio.gather(*(node.start() for node in cluster.nodes.values()))
        try:
            await asyncio.gather(*(node.wait_ready(30) for node in cluster.nodes.values()))
        except Exception:
            pytest.fail(f"nodes did not start:\n{cluster.logs()}")
        return cluster

    yield make
    failed = getattr(request.node, "rep_call", None)
    for cluster in clusters:
        await asyncio.gather(*(node.stop(timeout=10) for node in cluster.nodes.values()))
        for client in cluster.clients.values():
            await client.aclose()
        if failed is not None and failed.failed:
            print(cluster.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the item, so teardown can print logs of a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)  # type: ignore[attr-defined]
    return report
