"""The fixed-rate loop that paces the launcher's maintenance.

Cycles start at ``t0 + n * interval`` whatever each one took, so heartbeats never drift
towards the registry TTL (a "sleep interval after each cycle" loop is late by the cycle's
duration every time). A cycle that overruns one or more ticks skips them instead of
running a burst of catch-up cycles, which would hammer a store that just came back.

The heartbeat runs in a lane of its own (its own task, never queued behind the close poll or
the metrics) through :func:`beat_within`: each beat gets a deadline a little before the next
tick, failed attempts are retried promptly within it, and an attempt still hanging at the
deadline is cancelled. So a stalled store costs the beats it stalls and no more: one command
against a black-holed Redis takes ~15 s (3 x 5 s socket timeout), which would otherwise skip
the next tick and let records expire after two missed beats instead of three.

Clock and sleep are parameters so tests drive the loop with fake time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

__all__ = ["HEARTBEAT_DEADLINE_SHARE", "FixedRateStats", "beat_within", "run_fixed_rate"]

#: A beat's deadline is this share of the interval after its tick: the attempt ends (or is
#: cancelled) before the next tick, so that tick is never skipped.
HEARTBEAT_DEADLINE_SHARE = 0.9
#: Seconds between retries of a failed beat within its deadline (doubling up to the cap): a
#: store that comes back mid-interval is written to at once, not at the next tick.
RETRY_BASE = 0.2
RETRY_CAP = 2.0


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


async def beat_within(
    beat: Callable[[], Awaitable[object]],
    deadline: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    retry_base: float = RETRY_BASE,
    retry_cap: float = RETRY_CAP,
) -> None:
    """Run ``beat`` until it succeeds or ``deadline`` (on ``clock``) passes.

    A failing attempt is retried after a short backoff while time remains; an attempt still
    running at the deadline is cancelled. Raises the last failure (``TimeoutError`` when the
    deadline cut an attempt), so the caller counts one failed beat, not one per attempt.
    """
    delay = retry_base
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError("no time left for the heartbeat before the next tick")
        try:
            await asyncio.wait_for(beat(), remaining)
        except TimeoutError as exc:
            raise TimeoutError(f"the heartbeat did not finish within {remaining:.1f}s") from exc
        except Exception:
            if deadline - clock() - delay <= 1e-6:  # a retry would start at the deadline
                raise
        else:
            return
        await sleep(delay)
        delay = min(delay * 2, retry_cap)
