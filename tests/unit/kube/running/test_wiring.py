"""The runtime as a whole: starting without a registry, refusing writes once deposed."""

from __future__ import annotations

import asyncio

import pytest

from callboard.errors import StoreError
from callboard.kube.k8s.client import NotLeaderError
from callboard.kube.running.wiring import Runtime
from callboard.registry import InMemorySessionKVStore
from tests.support.fake_kube import FakeKube
from tests.unit.kube.conftest import Harness, fast_settings


class DownStore(InMemorySessionKVStore):
    """An in-memory store that refuses every call while ``down`` (Redis not up yet)."""

    def __init__(self) -> None:
        super().__init__(cleanup_interval=0.05)
        self.down = True
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        if self.down:
            raise StoreError("connection refused")
        await super().start()

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        if self.down:
            raise StoreError("connection refused")
        return await super().mget(keys)

    async def keys(self, prefix: str) -> list[str]:
        if self.down:
            raise StoreError("connection refused")
        return await super().keys(prefix)


async def test_g10_the_operator_runs_while_the_registry_is_down_at_start_and_connects_later() -> None:
    store = DownStore()
    harness = Harness(fast_settings(), store)
    await harness.runtime.start()  # does not raise: kopf must run anyway
    try:
        await harness.until(lambda: store.starts >= 2)  # retried in the background
        assert not harness.runtime.connected.is_set()
        # Deletes go through meanwhile: an object without a session is released at once.
        harness.kube.apply("early", "call-0")
        await harness.until(lambda: "finalizers" in (harness.kube.get_object("early") or {})["metadata"])
        harness.kube.delete_object("early")
        await harness.until(lambda: harness.kube.get_object("early") is None)
        store.down = False
        await harness.until(harness.runtime.connected.is_set)
        await harness.node("n1")
        harness.kube.apply("a1", "call-1")
        await harness.phase("a1", "Running")
    finally:
        await harness.kopf.stop()
        for node in harness.nodes:
            await node.kill()
        await harness.runtime.stop()


async def test_g8_a_deposed_runtime_sends_no_start_or_close_request(harness: Harness) -> None:
    node = await harness.node("n1")
    await node.registry.register("call-1", "s1")
    registry = harness.runtime.registry
    registry.guard = lambda: False
    with pytest.raises(NotLeaderError):
        await registry.request_start("n1", "call-2", session_id="s2")
    with pytest.raises(NotLeaderError):
        await registry.request_close("call-1", "s1")
    assert await node.registry.pending_start_requests() == []
    assert node.closes == 0 and node.sessions == ["s1"]


async def test_events_go_through_their_own_client_when_one_is_given() -> None:
    """A burst's Events must not queue behind (or in front of) the status patches."""
    main, events = FakeKube(), FakeKube()
    runtime = Runtime(settings=fast_settings(), api=main, store=InMemorySessionKVStore(), events_api=events)
    runtime.events.start()
    try:
        runtime.events.post(
            {"namespace": "ns", "name": "a", "uid": "u1"}, type="Normal", reason="Seen", message="m"
        )
        await asyncio.wait_for(runtime.events.flushed(), 5.0)
    finally:
        await runtime.events.stop()
    assert events.reasons("a") == ["Seen"]
    assert main.events == []
