"""Small asyncio helpers shared by the long-running parts (registry, launcher, sidecar, operator).

- :func:`guarded_task`: a named background task whose failure is logged at once, instead of
  surfacing (or not) when someone awaits it.
- :func:`stop_tasks`: cancel, wait with a bound, report what got stuck.
- :class:`LogThrottle`: log a repeating failure once per interval, with a count, so an
  outage of Redis does not flood the logs at every heartbeat.
- :class:`Pulse`: "something changed" for any number of waiters, without a lost wake-up.
- :class:`WorkQueue`: client-go's work-queue semantics (each key queued once, processed by
  one worker at a time, re-queued if it changed meanwhile), for the operator's placer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Hashable, Iterable
from typing import Any, Generic, TypeVar

__all__ = ["LogThrottle", "Pulse", "WorkQueue", "guarded_task", "stop_tasks"]


def guarded_task(coro: Coroutine[Any, Any, None], *, name: str, logger: logging.Logger) -> asyncio.Task[None]:
    """Start ``coro`` as a task named ``name``; log at once if it fails or returns early."""

    async def guard() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("background task %s failed", name)
            raise
        else:
            logger.debug("background task %s exited", name)

    task = asyncio.create_task(guard(), name=name)
    # A task cancelled before its first step never awaits ``coro``: close it, so Python
    # does not warn that it was never awaited. Closing a finished coroutine is a no-op.
    task.add_done_callback(lambda _: coro.close())
    return task


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, timeout: float, logger: logging.Logger) -> None:
    """Cancel ``tasks`` and wait up to ``timeout`` seconds; warn about those still running."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    done, stuck = await asyncio.wait(pending, timeout=timeout)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            logger.debug("task %s ended with %r", task.get_name(), task.exception())
    for task in stuck:
        logger.warning("task %s did not stop within %.1fs", task.get_name(), timeout)


class LogThrottle:
    """Let one message per key through every ``interval`` seconds; count the rest."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None to stay quiet; otherwise how many messages were suppressed since the last one."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)

    def reset(self, key: str) -> None:
        """Forget ``key`` (the failure is over): its next occurrence logs at once."""
        self._last.pop(key, None)
        self._suppressed.pop(key, None)


K = TypeVar("K", bound=Hashable)


class Pulse:
    """ "Something changed" for any number of waiters, without a lost wake-up.

    Each :meth:`fire` wakes everyone waiting at that moment and arms a fresh event, so a
    waiter that comes later waits for the next change instead of seeing an old one.
    """

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
    """client-go's work-queue semantics: a key is queued at most once, processed by one worker.

    A key added while a worker processes it is queued again when the worker calls
    :meth:`done`, so no change is lost and no key is processed twice at the same time.
    """

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
