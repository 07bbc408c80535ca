"""The fixed-rate loop that paces the launcher's maintenance.

Cycles start at ``t0 + n * interval`` whatever each one took, so heartbeats never drift
towards the registry TTL (a "sleep interval after each cycle" loop is late by the cycle's
duration every time). A cycle that overruns one or more ticks skips them instead of
running a burst of catch-up cycles, which would hammer a store that just came back.

Clock and sleep are parameters so tests drive the loop with fake time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

__all__ = ["FixedRateStats", "run_fixed_rate"]


@dataclass(slots=True)
class FixedRateStats:
    """What the loop did so far; read by the launcher's stats and the Prometheus metrics."""

    cycles: int = 0
    skipped_ticks: int = 0
    """Ticks dropped because a cycle overran them."""
    last_duration: float = 0.0
    """Seconds the last cycle took."""
    max_lateness: float = 0.0
    """Largest delay, in seconds, between a tick and the start of its cycle."""


async def run_fixed_rate(
    cycle: Callable[[], Awaitable[None]],
    interval: float,
    *,
    stats: FixedRateStats | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    on_skip: Callable[[int], None] | None = None,
) -> NoReturn:
    """Run ``cycle`` every ``interval`` seconds forever; the first run is one interval away.

    ``cycle`` must guard its own failures: an exception ends the loop (and a guarded task
    around it reports that at once).
    """
    if interval <= 0:
        raise ValueError("interval must be > 0")
    stats = stats if stats is not None else FixedRateStats()
    next_at = clock() + interval
    while True:
        delay = next_at - clock()
        if delay > 0:
            await sleep(delay)
        started = clock()
        stats.max_lateness = max(stats.max_lateness, started - next_at)
        await cycle()
        stats.cycles += 1
        stats.last_duration = clock() - started
        next_at += interval
        now = clock()
        if next_at <= now:
            missed = int((now - next_at) // interval) + 1
            next_at += missed * interval
            stats.skipped_ticks += missed
            if on_skip is not None:
                on_skip(missed)
