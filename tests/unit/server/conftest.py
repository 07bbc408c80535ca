"""Apps over launchers with fake agents and a shared in-memory store, called in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from callboard.launcher import AgentLauncher
from callboard.registry import InMemorySessionKVStore, SessionKVStore, SessionRegistry
from callboard.server import AuthorizationHooks, ServerSettings, create_app
from tests.support.fake_agents import AgentFactory, FakeAgent, fake_join


@dataclass
class Node:
    launcher: AgentLauncher[FakeAgent]
    factory: AgentFactory
    app: FastAPI
    client: httpx.AsyncClient


MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    shared = InMemorySessionKVStore()
    async with AsyncExitStack() as stack:

        async def make(
            node_id: str = "node-a",
            *,
            store: SessionKVStore | None = None,
            settings: ServerSettings | None = None,
            hooks: AuthorizationHooks | None = None,
            **launcher_kwargs: Any,
        ) -> Node:
            factory = AgentFactory()
            registry = SessionRegistry(store or shared, node_id=node_id, ttl=30.0)
            launcher = AgentLauncher(factory, fake_join, registry=registry, **launcher_kwargs)
            app = create_app(launcher, settings, hooks=hooks)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node")
            )
            return Node(launcher, factory, app, client)

        yield make
