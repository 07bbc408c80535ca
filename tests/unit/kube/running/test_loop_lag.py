"""The event-loop lag ticker: what it records, with a fake clock and a fake sleep."""

from __future__ import annotations

import asyncio

import pytest

from callboard.kube.running.loop_lag import watch_loop_lag
from callboard.kube.views.metrics import OperatorMetrics


async def test_a_sleep_that_wakes_late_is_recorded_as_lag() -> None:
    metrics = OperatorMetrics()
    now = [100.0]
    late = iter([0.0, 0.3, 0.002])
    calls = 0

    async def sleep(seconds: float) -> None:
        nonlocal calls
        calls += 1
        try:
            now[0] += seconds + next(late)
        except StopIteration:
            raise asyncio.CancelledError from None

    with pytest.raises(asyncio.CancelledError):
        await watch_loop_lag(
            histogram=metrics.loop_lag,
            gauge=metrics.loop_lag_last,
            interval=0.25,
            clock=lambda: now[0],
            sleep=sleep,
        )

    registry = metrics.registry
    assert calls == 4
    assert registry.get_sample_value("callboard_operator_event_loop_lag_seconds_count") == 3
    assert registry.get_sample_value("callboard_operator_event_loop_lag_seconds_sum") == pytest.approx(0.302)
    # 0.3 s lands above the 0.25 s bucket, the others below 5 ms.
    assert registry.get_sample_value("callboard_operator_event_loop_lag_seconds_bucket", {"le": "0.25"}) == 2
    assert registry.get_sample_value("callboard_operator_event_loop_lag_seconds_bucket", {"le": "0.5"}) == 3
    assert registry.get_sample_value("callboard_operator_event_loop_lag_last_seconds") == pytest.approx(0.002)


async def test_a_clock_that_runs_short_never_records_negative_lag() -> None:
    metrics = OperatorMetrics()
    now = [0.0]
    steps = iter([0.2])

    async def sleep(seconds: float) -> None:
        try:
            now[0] += next(steps)
        except StopIteration:
            raise asyncio.CancelledError from None

    with pytest.raises(asyncio.CancelledError):
        await watch_loop_lag(
            histogram=metrics.loop_lag,
            gauge=metrics.loop_lag_last,
            interval=0.25,
            clock=lambda: now[0],
            sleep=sleep,
        )
    assert metrics.registry.get_sample_value("callboard_operator_event_loop_lag_seconds_sum") == 0.0
