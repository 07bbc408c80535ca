"""The push listener stops when cancelled, even if the store turns the cancellation into an error."""

from __future__ import annotations

import asyncio

import pytest

from callboard.errors import StoreUnavailableError
from callboard.registry import InMemorySessionKVStore, SessionRegistry
from callboard.registry.store import Subscription


class _CancelBecomesError(Subscription):
    """A read that answers its cancellation with a connection error, as redis-py can."""

    def __init__(self) -> None:
        self.reads = 0

    async def next_message(self) -> bytes:
        self.reads += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise StoreUnavailableError("Redis is unreachable (pubsub read): connection lost") from None
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        return None


class _Store(InMemorySessionKVStore):
    def __init__(self) -> None:
        super().__init__()
        self.subscriptions: list[_CancelBecomesError] = []

    async def subscribe(self, channel: str) -> Subscription:
        subscription = _CancelBecomesError()
        self.subscriptions.append(subscription)
        return subscription


# Without the fix the listener outlives every cancellation, and the event loop's shutdown
# waits on it for good: the bound turns that hang into a failure.
@pytest.mark.timeout(20)
async def test_g10_a_listener_whose_read_turns_its_cancellation_into_an_error_still_stops() -> None:
    store = _Store()
    registry = SessionRegistry(store, node_id="node-a", ttl=5, foreign_scan_interval=None)
    await registry.start()
    registry.close_requests()  # a consumer, so the node listens on its channels
    await asyncio.sleep(0.05)
    assert store.subscriptions and all(s.reads for s in store.subscriptions)
    stopping = asyncio.create_task(registry.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5.0)
    assert done, "stop() waited on a listener that resubscribed instead of stopping"
    await stopping
    # Cancelled once, each listener ended: none subscribed again after its error.
    await asyncio.sleep(0.3)  # longer than the resubscribe backoff
    lingering = [t for t in asyncio.all_tasks() if t.get_name().startswith("listener:")]
    assert lingering == [], lingering
