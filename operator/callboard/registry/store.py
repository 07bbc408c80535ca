"""The storage interface of the registry: bytes with a TTL per key.

:class:`SessionKVStore` keeps exactly the documented Vision Agents methods, so a backend
written for that interface plugs in unchanged. Anything faster or richer is an *optional
capability*, a separate ABC a backend may also inherit; the registry checks for it and
falls back to the plain methods when it is absent:

- :class:`PubSubSupport`: push notices (cross-node close at once instead of at the next poll);
- :class:`SessionIndexSupport`: server-side indexes and atomic scripts (O(1) round-trip
  heartbeats, per-call look-ups without scanning, atomic per-call limits).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from callboard.registry.index import SessionIndex

__all__ = ["PubSubSupport", "SessionIndexSupport", "SessionKVStore", "Subscription"]

_PING_KEY = "health/ping"


class SessionKVStore(ABC):
    """Abstract key-value store over bytes with a TTL (seconds) on every key."""

    async def start(self) -> None:
        """Connect or start background work. No-op by default."""

    async def close(self) -> None:
        """Release connections and stop background work. No-op by default."""

    async def check_ttl(self, ttl: float) -> None:
        """Warn when records of ``ttl`` seconds cannot outlive the store's own recovery
        (a Redis Sentinel failover): the registry calls it at start. No-op by default."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl: float, *, only_if_exists: bool = False) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds; with ``only_if_exists`` never create."""

    @abstractmethod
    async def mset(self, items: list[tuple[str, bytes, float]]) -> None:
        """Store several ``(key, value, ttl)`` items at once."""

    @abstractmethod
    async def expire(self, *keys: str, ttl: float) -> None:
        """Reset the TTL of existing keys; missing keys are ignored."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None when it is missing or expired."""

    @abstractmethod
    async def mget(self, keys: list[str]) -> list[bytes | None]:
        """The values of ``keys`` in order, None for each missing one."""

    @abstractmethod
    async def keys(self, prefix: str) -> list[str]:
        """All live keys that start with ``prefix`` (without the store's own key prefix)."""

    @abstractmethod
    async def delete(self, keys: list[str]) -> None:
        """Delete ``keys``; missing keys are ignored."""

    async def ping(self) -> None:
        """Cheap health check: raise if the store cannot serve a read right now."""
        await self.get(_PING_KEY)


class Subscription(ABC):
    """Messages of one channel, from the moment :meth:`PubSubSupport.subscribe` returned."""

    @abstractmethod
    async def next_message(self) -> bytes:
        """Wait for the next message; raises the store's errors if the connection fails."""

    @abstractmethod
    async def aclose(self) -> None:
        """Unsubscribe and release the connection."""

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the store reconnected and resubscribed by itself.

        Messages published while the connection was down are lost without an error, so
        the subscriber re-reads what it may have missed. A store that never reconnects
        silently (it raises from :meth:`next_message` instead) keeps this no-op default.
        """

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            yield await self.next_message()


class PubSubSupport(ABC):
    """Optional capability: fire-and-forget messages on named channels."""

    @abstractmethod
    async def publish(self, channel: str, message: bytes) -> None:
        """Send ``message`` to the current subscribers of ``channel`` (none is fine)."""

    @abstractmethod
    async def subscribe(self, channel: str) -> Subscription:
        """Subscribe to ``channel``; messages published after this returns are delivered."""

    async def subscribers(self, channel: str) -> int | None:
        """How many subscribers ``channel`` has right now; None when the store cannot tell.

        A node's registry listens on its own channels while its process lives, so this
        tells a live duplicate of a node id from a record left by a process that died.
        """
        return None


class SessionIndexSupport(ABC):
    """Optional capability: a server-side :class:`~callboard.registry.index.SessionIndex`."""

    @abstractmethod
    def session_index(self) -> SessionIndex:
        """The accelerated index operations that run in the store itself."""
