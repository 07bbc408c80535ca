"""A sidecar service on an in-memory store, its API over ASGI, and a second node beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from callboard.registry import InMemorySessionKVStore, SessionRegistry
from callboard.sidecar.api import create_app
from callboard.sidecar.service import SidecarService
from callboard.sidecar.settings import AppWatchSettings, NodeSettings, SidecarSettings
from tests.support.waiting import wait_until


@dataclass
class Local:
    service: SidecarService
    http: httpx.AsyncClient
    other: SessionRegistry
    """Another node on the same store: sends close and start requests, reads records."""


@pytest.fixture
async def local() -> AsyncIterator[Local]:
    store = InMemorySessionKVStore()
    settings = SidecarSettings(
        node=NodeSettings(node_id="node-a", capacity=2, pool="voice"),
        app=AppWatchSettings(consumer_grace=0),
    )
    service = SidecarService(settings, registry=SessionRegistry(store, node_id="node-a", ttl=30))
    other = SessionRegistry(store, node_id="node-b", ttl=30)
    await service.start()
    await other.start()
    await wait_until(lambda: service.connected, what="the service to connect")
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as http:
        yield Local(service=service, http=http, other=other)
    await service.stop()
    await other.stop()
