"""A third-party-style backend: only the documented abstract methods, nothing optional.

It proves a custom store written for the documented interface works unchanged: no push,
no indexes, no scripts; the registry falls back to polling and scanning.
"""

from __future__ import annotations

import time

from callboard.registry import SessionKVStore


class DictStore(SessionKVStore):
    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, float]] = {}

    def _alive(self, key: str) -> bool:
        item = self.data.get(key)
        return item is not None and item[1] > time.monotonic()

    async def set(self, key: str, value: bytes, ttl: float, *, only_if_exists: bool = False) -> None:
        if only_if_exists and not self._alive(key):
            return
        self.data[key] = (value, time.monotonic() + ttl)

    async def mset(self, items: list[tuple[str, bytes, float]]) -> None:
        for key, value, ttl in items:
            await self.set(key, value, ttl)

    async def expire(self, *keys: str, ttl: float) -> None:
        for key in keys:
            if self._alive(key):
                self.data[key] = (self.data[key][0], time.monotonic() + ttl)

    async def get(self, key: str) -> bytes | None:
        return self.data[key][0] if self._alive(key) else None

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def keys(self, prefix: str) -> list[str]:
        return [key for key in self.data if key.startswith(prefix) and self._alive(key)]

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.data.pop(key, None)
