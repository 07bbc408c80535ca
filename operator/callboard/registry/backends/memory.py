"""The in-memory store: the default, for one process (tests, demos, a single node).

Keys expire lazily on access and by a periodic sweep (so memory is returned even for keys
nobody reads again). Push notices work within the process, so several registries sharing
one store instance behave like several nodes sharing one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from callboard.errors import ConfigurationError
from callboard.registry.store import PubSubSupport, SessionKVStore, Subscription

__all__ = ["InMemorySessionKVStore"]

logger = logging.getLogger(__name__)

#: Bound of a subscriber's queue: a consumer that stops reading loses the oldest notices
#: rather than growing memory without limit; polling remains the fallback for close flags.
_SUBSCRIBER_QUEUE_SIZE = 10_000


class InMemorySessionKVStore(SessionKVStore, PubSubSupport):
    """A dict with per-key expiry. ``cleanup_interval`` (seconds) paces the sweep."""

    def __init__(self, *, cleanup_interval: float = 60.0) -> None:
        if cleanup_interval <= 0:
            raise ConfigurationError("cleanup_interval must be > 0")
        self.cleanup_interval = cleanup_interval
        self._data: dict[str, tuple[bytes, float]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="memory-store-sweep")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    def sweep(self) -> int:
        """Drop every expired key now; return how many were dropped."""
        now = time.monotonic()
        expired = [k for k, (_, deadline) in self._data.items() if deadline <= now]
        for key in expired:
            del self._data[key]
        return len(expired)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)
            dropped = self.sweep()
            if dropped:
                logger.debug("in-memory store swept %d expired keys", dropped)

    def _live(self, key: str, now: float) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._data[key]
            return None
        return item[0]

    async def set(self, key: str, value: bytes, ttl: float, *, only_if_exists: bool = False) -> None:
        now = time.monotonic()
        if only_if_exists and self._live(key, now) is None:
            return
        self._data[key] = (bytes(value), now + ttl)

    async def mset(self, items: list[tuple[str, bytes, float]]) -> None:
        now = time.monotonic()
        for key, value, ttl in items:
            self._data[key] = (bytes(value), now + ttl)

    async def expire(self, *keys: str, ttl: float) -> None:
        now = time.monotonic()
        for key in keys:
            value = self._live(key, now)
            if value is not None:
                self._data[key] = (value, now + ttl)

    async def get(self, key: str) -> bytes | None:
        return self._live(key, time.monotonic())

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        now = time.monotonic()
        return [self._live(key, now) for key in keys]

    async def keys(self, prefix: str) -> list[str]:
        now = time.monotonic()
        return [k for k in list(self._data) if k.startswith(prefix) and self._live(k, now) is not None]

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def publish(self, channel: str, message: bytes) -> None:
        for queue in self._subscribers.get(channel, ()):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(message)

    async def subscribers(self, channel: str) -> int | None:
        return len(self._subscribers.get(channel, ()))

    async def subscribe(self, channel: str) -> Subscription:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=_SUBSCRIBER_QUEUE_SIZE)
        self._subscribers.setdefault(channel, set()).add(queue)
        return _MemorySubscription(self._subscribers, channel, queue)


class _MemorySubscription(Subscription):
    def __init__(
        self, registry: dict[str, set[asyncio.Queue[bytes]]], channel: str, queue: asyncio.Queue[bytes]
    ) -> None:
        self._registry = registry
        self._channel = channel
        self._queue = queue

    async def next_message(self) -> bytes:
        return await self._queue.get()

    async def aclose(self) -> None:
        subscribers = self._registry.get(self._channel)
        if subscribers is not None:
            subscribers.discard(self._queue)
            if not subscribers:
                del self._registry[self._channel]
