"""Small asyncio helpers shared by the long-running parts (registry, launcher, sidecar).

- :func:`guarded_task`: a named background task whose failure is logged at once, instead of
  surfacing (or not) when someone awaits it.
- :func:`stop_tasks`: cancel, wait with a bound, report what got stuck.
- :class:`LogThrottle`: log a repeating failure once per interval, with a count, so an
  outage of Redis does not flood the logs at every heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

__all__ = ["LogThrottle", "guarded_task", "stop_tasks"]


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
