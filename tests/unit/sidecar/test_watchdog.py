"""Deciding that the app died: fed with fake time, no sleeps."""

from __future__ import annotations

import httpx
import pytest

from callboard.sidecar.watchdog import ConsumerWatch, FailureCounter, probe


def test_consumer_watch_fires_once_per_grace_without_consumers() -> None:
    watch = ConsumerWatch(10.0, now=0.0)
    assert not watch.due(now=9.9)
    assert watch.due(now=10.0)  # nobody connected since the start
    assert not watch.due(now=15.0)  # re-armed for a full period
    assert watch.due(now=20.0)


def test_a_consumer_resets_the_watch() -> None:
    watch = ConsumerWatch(10.0, now=0.0)
    watch.consumers_changed(1, now=5.0)
    assert not watch.due(now=100.0)  # connected all along
    watch.consumers_changed(2, now=100.0)
    watch.consumers_changed(1, now=101.0)
    assert not watch.due(now=200.0)  # still one left
    watch.consumers_changed(0, now=200.0)
    assert watch.absent_since == 200.0
    assert not watch.due(now=209.0)
    assert watch.due(now=210.0)


def test_a_short_reconnect_does_not_fire() -> None:
    watch = ConsumerWatch(10.0, now=0.0)
    watch.consumers_changed(1, now=1.0)
    watch.consumers_changed(0, now=50.0)
    watch.consumers_changed(1, now=50.5)
    assert not watch.due(now=70.0)


def test_grace_zero_turns_it_off() -> None:
    assert not ConsumerWatch(0.0, now=0.0).due(now=1e9)
    with pytest.raises(ValueError, match="grace"):
        ConsumerWatch(-1, now=0.0)


def test_failure_counter_needs_consecutive_failures() -> None:
    counter = FailureCounter(3)
    assert [counter.record(ok) for ok in (False, False, True, False, False)] == [False] * 5
    assert counter.healthy
    assert counter.record(False)  # third in a row
    assert not counter.healthy
    assert counter.record(False)  # stays dead
    assert not counter.record(True)
    assert counter.healthy
    with pytest.raises(ValueError, match="threshold"):
        FailureCounter(0)


@pytest.mark.parametrize(
    ("status", "ok"), [(200, True), (204, True), (500, False), (503, False), (404, False)]
)
async def test_probe_takes_any_2xx(status: int, ok: bool) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status))
    async with httpx.AsyncClient(transport=transport) as client:
        assert await probe(client, "http://app/health", timeout=1) is ok


async def test_probe_counts_an_unreachable_app_as_failed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        assert await probe(client, "http://app/health", timeout=1) is False
