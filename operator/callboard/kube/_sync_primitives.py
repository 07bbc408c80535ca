"""Two small asyncio primitives of the operator's loops.

- :class:`Pulse`: "something changed" for any number of waiters, without a lost wake-up:
  each :meth:`Pulse.fire` wakes everyone waiting at that moment.
- :class:`WorkQueue`: client-go's work-queue semantics. A key is queued at most once; a
  key added while a worker processes it is queued again when the worker is done, so no
  change is lost and no key is processed twice at the same time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Pulse", "WorkQueue"]

K = TypeVar("K", bound=Hashable)


class Pulse:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """Wait for the next :meth:`fire`, up to ``timeout`` seconds; whether it came."""
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_later(self, key: K, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    async def get(self) -> K:
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def busy(self, key: K) -> bool:
        """Queued or being processed."""
        return key in self._queued or key in self._processing
