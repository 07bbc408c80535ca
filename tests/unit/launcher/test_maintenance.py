"""The maintenance loop: fixed rate under fake time, and what one cycle does."""

from __future__ import annotations

import asyncio
import logging

import pytest

from callboard.launcher import CloseReason, FixedRateStats, run_fixed_rate
from callboard.launcher.maintenance import beat_within
from callboard.registry import SessionRegistry
from tests.support.dict_store import DictStore
from tests.support.fake_agents import FlakyStore
from tests.unit.launcher.conftest import MakeLauncher


class FakeTime:
    """A clock that only moves when the code under test sleeps or a cycle "works"."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


class Stop(Exception):
    pass


async def run_cycles(durations: list[float], interval: float) -> tuple[list[float], FixedRateStats, FakeTime]:
    time = FakeTime()
    starts: list[float] = []
    stats = FixedRateStats()
    pending = list(durations)

    async def cycle() -> None:
        if not pending:
            raise Stop
        starts.append(time.now)
        time.now += pending.pop(0)

    with pytest.raises(Stop):
        await run_fixed_rate(cycle, interval, stats=stats, clock=time.clock, sleep=time.sleep)
    return starts, stats, time


async def test_fixed_rate_does_not_drift() -> None:
    starts, stats, _ = await run_cycles([0.3, 0.9, 0.0, 0.5], interval=1.0)
    assert starts == [1001.0, 1002.0, 1003.0, 1004.0]  # whatever each cycle took
    assert stats.cycles == 4 and stats.skipped_ticks == 0
    assert stats.last_duration == 0.5


async def test_an_overrun_skips_ticks_and_keeps_the_phase() -> None:
    skipped: list[int] = []
    time = FakeTime()
    starts: list[float] = []
    pending = [2.5, 0.1, 0.1]

    async def cycle() -> None:
        if not pending:
            raise Stop
        starts.append(time.now)
        time.now += pending.pop(0)

    with pytest.raises(Stop):
        await run_fixed_rate(cycle, 1.0, clock=time.clock, sleep=time.sleep, on_skip=skipped.append)
    # 1001 ran until 1003.5: the ticks at 1002 and 1003 are skipped, not run in a burst.
    assert starts == [1001.0, 1004.0, 1005.0]
    assert skipped == [2]


async def test_g10_a_failing_beat_is_retried_within_its_deadline() -> None:
    time = FakeTime()
    attempts: list[float] = []

    async def beat() -> None:
        attempts.append(time.now)
        if len(attempts) < 4:
            raise ConnectionError("store down")

    await beat_within(beat, deadline=1009.0, clock=time.clock, sleep=time.sleep)
    # Backoff 0.2, 0.4, 0.8 s: the store that came back is written to at once, not a tick later.
    assert attempts == pytest.approx([1000.0, 1000.2, 1000.6, 1001.4])


async def test_g10_a_beat_gives_up_at_its_deadline_with_the_last_failure() -> None:
    time = FakeTime()

    async def beat() -> None:
        raise ConnectionError("store down")

    with pytest.raises(ConnectionError):
        await beat_within(beat, deadline=1003.0, clock=time.clock, sleep=time.sleep)
    assert time.now <= 1003.0  # never past the deadline: the next tick is not skipped


async def test_g10_a_hanging_beat_is_cancelled_at_its_deadline() -> None:
    loop = asyncio.get_running_loop()
    cancelled = asyncio.Event()

    async def beat() -> None:
        try:
            await asyncio.Event().wait()  # a command into a black-holed store
        finally:
            cancelled.set()

    with pytest.raises(TimeoutError, match="did not finish"):
        await beat_within(beat, deadline=loop.time() + 0.05, clock=loop.time)
    assert cancelled.is_set()


async def test_fixed_rate_rejects_bad_interval() -> None:
    async def cycle() -> None:
        pass

    with pytest.raises(ValueError, match="interval"):
        await run_fixed_rate(cycle, 0)


async def test_idle_and_max_duration_close(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher(agent_idle_timeout=30, max_session_duration_seconds=600)
    idle = await launcher.start_session("call-1")
    old = await launcher.start_session("call-2")
    fine = await launcher.start_session("call-3")
    a_idle, a_old, a_fine = factory.created
    a_idle.idle = 30.0
    a_old.on_call = 600.0
    a_fine.idle, a_fine.on_call = 29.9, 599.0
    await launcher.maintenance_cycle()
    await asyncio.wait_for(asyncio.gather(idle.wait(), old.wait()), 1)
    assert idle.close_reason is CloseReason.IDLE
    assert old.close_reason is CloseReason.MAX_DURATION
    assert launcher.sessions == [fine]


async def test_idle_timeout_zero_disables(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher(agent_idle_timeout=0)
    await launcher.start_session("call-1")
    factory.created[0].idle = 1e9
    await launcher.maintenance_cycle()
    assert len(launcher.sessions) == 1


async def test_a_broken_agent_does_not_stop_the_cycle(
    make_launcher: MakeLauncher, caplog: pytest.LogCaptureFixture
) -> None:
    launcher, factory = await make_launcher(agent_idle_timeout=10)
    await launcher.start_session("call-1")
    idle = await launcher.start_session("call-2")
    broken, idler = factory.created
    broken.timer_error = RuntimeError("agent bug")
    broken.metrics = {"bad": object()}  # not JSON
    idler.idle = 11
    with caplog.at_level(logging.WARNING, logger="callboard.launcher"):
        for _ in range(5):
            await launcher.maintenance_cycle()
    await asyncio.wait_for(idle.wait(), 1)
    assert idle.close_reason is CloseReason.IDLE
    assert len(launcher.sessions) == 1
    assert launcher.stats.errors["agent-timers"] == 5
    # Five failures, one warning each kind: the rest is counted, not logged.
    assert caplog.text.count("agent-timers failed") == 1
    assert caplog.text.count("agent-metrics failed") == 1


async def test_store_outage_is_survived_and_reported(
    make_launcher: MakeLauncher, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    launcher, _ = await make_launcher(
        registry=SessionRegistry(store, node_id="node-a"), maintenance_interval=0.5
    )
    session = await launcher.start_session("call-1")
    store.down = True
    with caplog.at_level(logging.INFO, logger="callboard.launcher"):
        for _ in range(3):
            await launcher.heartbeat_once()
        assert not launcher.stats.registry_ok
        assert caplog.text.count("heartbeat failed") == 1
        store.down = False
        await store.delete(await store.keys(""))  # what a Redis restart leaves
        await launcher.heartbeat_once()
    assert launcher.stats.registry_ok
    assert "heartbeat works again" in caplog.text
    assert launcher.get_session(session.id) is session
    assert await launcher.get_session_info("call-1", session.id) is not None  # written back


async def test_metrics_are_flushed_when_they_change(
    make_launcher: MakeLauncher, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher, factory = await make_launcher()
    session = await launcher.start_session("call-1")
    writes: list[dict[str, object]] = []
    update = launcher.registry.update_metrics

    async def spy(call_id: str, session_id: str, metrics: dict[str, object]) -> None:
        writes.append(dict(metrics))
        await update(call_id, session_id, metrics)

    monkeypatch.setattr(launcher.registry, "update_metrics", spy)
    factory.created[0].metrics = {"latency_ms": 300, "tokens": 10}
    await launcher.maintenance_cycle()
    await launcher.maintenance_cycle()
    factory.created[0].metrics = {"latency_ms": 280, "tokens": 25}
    await launcher.maintenance_cycle()
    assert writes == [{"latency_ms": 300, "tokens": 10}, {"latency_ms": 280, "tokens": 25}]
    info = await launcher.get_session_info("call-1", session.id)
    assert info is not None and info.metrics == {"latency_ms": 280, "tokens": 25}


async def test_polled_close_requests_when_the_store_cannot_push(make_launcher: MakeLauncher) -> None:
    store = DictStore()
    a, _ = await make_launcher(registry=SessionRegistry(store, node_id="node-a"))
    b, _ = await make_launcher(registry=SessionRegistry(store, node_id="node-b"))
    session = await a.start_session("call-1")
    await b.request_close_session("call-1", session.id)
    assert a.get_session(session.id) is session  # no push: nothing happened yet
    await a.maintenance_cycle()
    await asyncio.wait_for(session.wait(), 1)
    assert session.close_reason is CloseReason.CLOSE_REQUESTED


async def test_pushed_close_request_closes_at_once(make_launcher: MakeLauncher) -> None:
    a, _ = await make_launcher(node_id="node-a")
    b, _ = await make_launcher(node_id="node-b")
    session = await a.start_session("call-1")
    await b.request_close_session("call-1", session.id)
    await asyncio.wait_for(session.wait(), 1)  # no maintenance cycle ran
    assert session.close_reason is CloseReason.CLOSE_REQUESTED
    assert await b.get_session_info("call-1", session.id) is None


async def test_maintenance_loop_runs_by_itself(make_launcher: MakeLauncher) -> None:
    registry = SessionRegistry(node_id="node-a", ttl=0.3)
    launcher, _ = await make_launcher(registry=registry, maintenance_interval=0.01)
    started = asyncio.get_running_loop().time()
    while launcher.stats.maintenance.cycles < 3:
        await asyncio.sleep(0.01)
        assert asyncio.get_running_loop().time() - started < 5
    assert launcher.stats.last_heartbeat_at is not None
