"""Launchers over in-memory registries, stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from callboard.launcher import AgentLauncher
from callboard.registry import InMemorySessionKVStore, SessionRegistry
from tests.support.fake_agents import AgentFactory, FakeAgent, fake_join

MakeLauncher = Callable[..., Awaitable[tuple[AgentLauncher[FakeAgent], AgentFactory]]]


@pytest.fixture
def shared_store() -> InMemorySessionKVStore:
    """One store for every registry of a test: the registries are nodes of one cluster."""
    return InMemorySessionKVStore()


@pytest.fixture
async def make_launcher(shared_store: InMemorySessionKVStore) -> AsyncIterator[MakeLauncher]:
    made: list[AgentLauncher[FakeAgent]] = []

    async def make(
        *, node_id: str = "node-a", registry: SessionRegistry | None = None, start: bool = True, **kwargs: Any
    ) -> tuple[AgentLauncher[FakeAgent], AgentFactory]:
        factory = AgentFactory()
        if registry is None:
            registry = SessionRegistry(shared_store, node_id=node_id, ttl=30.0)
        launcher = AgentLauncher(factory, fake_join, registry=registry, **kwargs)
        made.append(launcher)
        if start:
            await launcher.start()
        return launcher, factory

    yield make
    for launcher in made:
        await launcher.stop()
