"""A whole operator runtime over a fake API server and an in-memory registry."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from callboard.kube.resource.constants import FINALIZER
from callboard.kube.running.wiring import Runtime
from callboard.kube.settings import (
    AdoptionSettings,
    DeletionSettings,
    LeaderSettings,
    PlacementSettings,
    PodSettings,
    RegistrySettings,
    Settings,
    SyncSettings,
)
from callboard.registry import InMemorySessionKVStore
from tests.support.fake_kube import FakeKube
from tests.unit.kube.fakes import FakeKopf, FakeNode


def fast_settings(**overrides: Any) -> Settings:
    settings = Settings(
        namespaces=("ns", "adopted"),
        registry=RegistrySettings(url="memory://", ttl=5.0),
        placement=PlacementSettings(start_timeout=0.5, max_attempts=3, poll_interval=0.02, workers=4),
        sync=SyncSettings(interval=0.05, lost_grace=0.2),
        deletion=DeletionSettings(timeout=1.0),
        adoption=AdoptionSettings(namespace=None, grace=0.1, prime_timeout=1.0),
        pods=PodSettings(min_interval=0.0),
        # The operator's own namespace, where the chart runs the agent pool (FakeNode's pods).
        leader=LeaderSettings(namespace="agents"),
    )
    for name, value in overrides.items():
        setattr(settings, name, value)
    return settings


class Harness:
    def __init__(self, settings: Settings, store: InMemorySessionKVStore | None = None) -> None:
        self.kube = FakeKube()
        self.store = store if store is not None else InMemorySessionKVStore(cleanup_interval=0.05)
        self.runtime = Runtime(settings=settings, api=self.kube, store=self.store)
        self.kopf = FakeKopf(self.kube, self.runtime)
        self.nodes: list[FakeNode] = []

    async def node(self, node_id: str, **kw: Any) -> FakeNode:
        node = FakeNode(self.store, node_id, **kw)
        await node.start()
        self.nodes.append(node)
        return node

    async def reasons(self, name: str) -> list[str]:
        """Reasons of the Events about ``name``, once every queued Event was posted."""
        await asyncio.wait_for(self.runtime.events.flushed(), 5.0)
        return self.kube.reasons(name)

    async def events(self) -> list[dict[str, Any]]:
        await asyncio.wait_for(self.runtime.events.flushed(), 5.0)
        return self.kube.events

    def status(self, name: str, namespace: str = "ns") -> dict[str, Any]:
        obj = self.kube.get_object(name, namespace)
        return {} if obj is None else obj.get("status") or {}

    async def until(self, check: Callable[[], object], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; objects: {self.kube.objects}")
            await asyncio.sleep(0.01)

    async def phase(
        self, name: str, phase: str, timeout: float = 5.0, namespace: str = "ns"
    ) -> dict[str, Any]:
        await self.until(lambda: self.status(name, namespace).get("phase") == phase, timeout)
        return self.status(name, namespace)

    async def held(
        self, name: str, phase: str, timeout: float = 5.0, namespace: str = "ns"
    ) -> dict[str, Any]:
        """``phase``, and the operator's finalizer on the object (it follows the first status
        write): a delete from here on goes through the finalizer's close."""
        status = await self.phase(name, phase, timeout, namespace)

        def holds() -> bool:
            meta = (self.kube.get_object(name, namespace) or {}).get("metadata") or {}
            return FINALIZER in (meta.get("finalizers") or [])

        await self.until(holds, timeout)
        return status


@pytest.fixture
def settings() -> Settings:
    return fast_settings()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Harness]:
    """A started harness, stopped on the way out: the ``harness`` fixture, with own settings."""
    h = Harness(settings)
    await h.runtime.start()
    try:
        yield h
    finally:
        await h.kopf.stop()
        for node in h.nodes:
            await node.kill()
        await h.runtime.stop()


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    async with running(settings) as h:
        yield h
