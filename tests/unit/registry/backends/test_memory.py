"""The in-memory store's expiry with a fake clock (no sleeps)."""

from __future__ import annotations

import pytest

from callboard.registry import InMemorySessionKVStore
from callboard.registry.backends import memory


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(memory.time, "monotonic", lambda: now[0])
    return now


async def test_lazy_expiry_and_sweep(clock: list[float]) -> None:
    store = InMemorySessionKVStore(cleanup_interval=1)
    await store.mset([("a", b"1", 10), ("b", b"2", 20)])
    clock[0] += 15
    assert store.sweep() == 1
    assert await store.keys("") == ["b"]
    clock[0] += 10
    assert await store.get("b") is None  # lazily, without a sweep
    assert store.sweep() == 0


async def test_pubsub_delivers_after_subscribe_only() -> None:
    store = InMemorySessionKVStore()
    await store.publish("ch", b"before")
    sub = await store.subscribe("ch")
    await store.publish("ch", b"after")
    assert await sub.next_message() == b"after"
    await sub.aclose()
    await store.publish("ch", b"nobody")  # no subscriber left: a no-op
