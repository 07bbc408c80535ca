"""Factories of real sidecar and app processes (cleaned up after each test), and a peer node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from callboard.registry import RedisSessionKVStore, SessionRegistry
from tests.support.sidecar import AppProcess, SidecarProcess

SidecarFactory = Callable[..., Awaitable[SidecarProcess]]
AppFactory = Callable[[AppProcess], Awaitable[AppProcess]]


@pytest.fixture
async def sidecar_factory(redis_url: str, tmp_path: Path) -> AsyncIterator[SidecarFactory]:
    started: list[SidecarProcess] = []

    async def make(
        node_id: str = "node-a", *, env: Mapping[str, str] | None = None, ready: bool = True
    ) -> SidecarProcess:
        sidecar = SidecarProcess(redis_url=redis_url, node_id=node_id, log_dir=tmp_path, env=env)
        started.append(sidecar)
        await sidecar.start(ready=ready)
        return sidecar

    yield make
    for sidecar in started:
        await sidecar.aclose()


@pytest.fixture
async def app_factory() -> AsyncIterator[AppFactory]:
    started: list[AppProcess] = []

    async def run(app: AppProcess) -> AppProcess:
        started.append(app)
        await app.start()
        return app

    yield run
    for app in started:
        await app.aclose()


@pytest.fixture
async def peer(redis_url: str) -> AsyncIterator[SessionRegistry]:
    """Another node of the cluster (the operator's view): asks for closes and starts, reads records."""
    registry = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="peer", ttl=10)
    await registry.start()
    yield registry
    await registry.stop()
