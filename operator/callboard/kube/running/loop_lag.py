"""How late the operator's event loop runs: the lag a sleep sees beyond what it asked for.

Everything the operator does (kopf's watch pipeline, the placer's workers, the sync loop)
shares one event loop; only the Lease renews from a thread of its own. A burst that keeps
the loop busy delays all of them at once, and no per-request latency shows it: the request
waited before it was even sent. A ticker that sleeps :data:`INTERVAL` seconds and measures
how much longer the sleep took is the cheapest direct measure (Node's
``monitorEventLoopDelay`` and aiomonitor's "loop lag" do the same); the result feeds a
histogram and a gauge of the last value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge, Histogram

__all__ = ["INTERVAL", "watch_loop_lag"]

#: Seconds between two measurements: 4 per second costs nothing and still catches a stall
#: of a few hundred milliseconds, the scale at which a burst starts to delay the watch.
INTERVAL = 0.25


async def watch_loop_lag(
    *,
    histogram: Histogram,
    gauge: Gauge,
    interval: float = INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Measure the loop's lag every ``interval`` seconds, forever (cancel to stop)."""
    while True:
        before = clock()
        await sleep(interval)
        lag = max(0.0, clock() - before - interval)
        histogram.observe(lag)
        gauge.set(lag)
