"""Deciding that the agent app died, from two signals, so its sessions go at once.

Without a watchdog a dead app's sessions stay listed until their TTL runs out, because the
sidecar (alive) keeps heartbeating them. Two independent signals say the app is gone:

- :class:`FailureCounter`: its health URL failed ``threshold`` times in a row;
- :class:`ConsumerWatch`: nothing has read the event stream for ``grace`` seconds (an app
  process that dies closes its connection, so the sidecar sees the reader leave at once).

Both are plain state machines fed with the time, so they are tested without sleeping;
:func:`watch_consumers` and :func:`watch_health` are the loops that feed them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

__all__ = ["ConsumerWatch", "FailureCounter", "probe", "watch_consumers", "watch_health"]


class ConsumerWatch:
    """Fires once per ``grace`` seconds spent without any event consumer.

    It starts as "absent" at ``now``: an app that never connects after a sidecar start (or
    restart) counts as gone too, so sessions left by a previous sidecar are cleaned up.
    ``grace`` 0 turns it off.
    """

    def __init__(self, grace: float, *, now: float) -> None:
        if grace < 0:
            raise ValueError("grace must be >= 0")
        self.grace = grace
        self._absent_since: float | None = now

    @property
    def absent_since(self) -> float | None:
        """Since when no consumer is connected (monotonic seconds), None while one is."""
        return self._absent_since

    def consumers_changed(self, count: int, *, now: float) -> None:
        if count > 0:
            self._absent_since = None
        elif self._absent_since is None:
            self._absent_since = now

    def due(self, *, now: float) -> bool:
        """True when the grace period ran out; then re-arms for another full period."""
        if self.grace == 0 or self._absent_since is None:
            return False
        if now - self._absent_since < self.grace:
            return False
        self._absent_since = now
        return True


class FailureCounter:
    """Counts consecutive failed probes; the app is dead at ``threshold`` of them."""

    def __init__(self, threshold: int) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.threshold = threshold
        self.failures = 0

    @property
    def healthy(self) -> bool:
        return self.failures < self.threshold

    def record(self, ok: bool) -> bool:
        """Record one probe; True when the app counts as dead after it."""
        self.failures = 0 if ok else self.failures + 1
        return not self.healthy


async def probe(client: httpx.AsyncClient, url: str, *, timeout: float) -> bool:
    """One health probe: True for any 2xx answer within ``timeout`` seconds."""
    try:
        response = await client.get(url, timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.is_success


async def watch_consumers(
    watch: ConsumerWatch, *, clock: Callable[[], float], on_dead: Callable[[str], Awaitable[None]]
) -> None:
    """Call ``on_dead`` each time ``watch`` runs out of grace; never returns."""
    tick = min(max(watch.grace / 5, 0.05), 1.0)  # notice within a fifth of the grace, at most 1 s late
    while True:
        await asyncio.sleep(tick)
        if watch.due(now=clock()):
            await on_dead(f"no event stream consumer for {watch.grace:g}s")


async def watch_health(
    url: str,
    counter: FailureCounter,
    *,
    interval: float,
    timeout: float,
    on_probe: Callable[[bool], None],
    on_dead: Callable[[str], Awaitable[None]],
) -> None:
    """Probe ``url`` every ``interval`` seconds; call ``on_dead`` while it fails past the threshold."""
    async with httpx.AsyncClient() as client:
        while True:
            ok = await probe(client, url, timeout=timeout)
            on_probe(ok)
            if counter.record(ok):
                await on_dead(f"{url} failed {counter.failures} times in a row")
            await asyncio.sleep(interval)
