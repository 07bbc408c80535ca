"""The sidecar's node runtime under issue 11's faults, through Toxiproxy: a long Redis stall
(defect 7: the heartbeat has its own lane and deadline) and a drain against a black-holed
Redis (defect 11: removals batched under one budget, the whole shutdown within the grace).

An observer reads Redis around the proxy; each test prints what it measured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from callboard.registry import RedisSessionKVStore, SessionRegistry
from callboard.sidecar.service import SidecarService
from callboard.sidecar.settings import (
    AppWatchSettings,
    DrainSettings,
    NodeSettings,
    SidecarRegistrySettings,
    SidecarSettings,
)
from tests.chaos.conftest import RedisProxy
from tests.support.waiting import wait_until

#: As in test_issue11_faults: the default TTL, an interval under TTL/3, a 19.5 s stall that
#: starts 0.5 s before a beat and ends 2 s before the records would expire.
TTL = 30.0
INTERVAL = 9.0
STALL = 19.5
STALL_BEFORE_TICK = 0.5

MakeSidecar = Callable[..., Awaitable[SidecarService]]


@pytest.fixture
async def make_sidecar(redis_proxy: RedisProxy) -> AsyncIterator[MakeSidecar]:
    made: list[SidecarService] = []

    async def make(node_id: str, *, drain: DrainSettings | None = None) -> SidecarService:
        settings = SidecarSettings(
            registry=SidecarRegistrySettings(ttl=TTL, heartbeat_interval=INTERVAL),
            node=NodeSettings(node_id=node_id, capacity=50),
            app=AppWatchSettings(consumer_grace=0),
            drain=drain or DrainSettings(),
        )
        registry = SessionRegistry(RedisSessionKVStore(url=redis_proxy.url), node_id=node_id, ttl=TTL)
        service = SidecarService(settings, registry=registry)
        await service.start()
        made.append(service)
        await wait_until(lambda: service.connected, what=f"{node_id} to connect")
        return service

    try:
        yield make
    finally:
        redis_proxy.client.heal(redis_proxy.name)
        for service in made:
            await service.stop()


@pytest.mark.timeout(180)
async def test_g10_sidecar_stall_under_20s_expires_no_session(
    redis_proxy: RedisProxy, make_sidecar: MakeSidecar
) -> None:
    sidecar = await make_sidecar("node-s")
    expected = set()
    for j in range(20):
        info, _ = await sidecar.register(f"call-{j % 4}", f"s-{j}")
        expected.add((info.call_id, info.session_id))
    observer = SessionRegistry(RedisSessionKVStore(url=redis_proxy.direct_url), node_id="observer", ttl=TTL)
    await observer.start()
    lost: set[tuple[str, str]] = set()
    try:
        beats = sidecar.stats.heartbeats
        await wait_until(
            lambda: sidecar.stats.heartbeats > beats, timeout=3 * INTERVAL, interval=0.05, what="a heartbeat"
        )
        beat_at = time.monotonic()
        await asyncio.sleep(INTERVAL - STALL_BEFORE_TICK)
        with redis_proxy.client.stalled(redis_proxy.name):
            stall_started = time.monotonic()
            while time.monotonic() - stall_started < STALL:
                lost |= expected - {(s.call_id, s.session_id) for s in await observer.list_sessions()}
                await asyncio.sleep(0.2)
        healed = time.monotonic()
        beats = sidecar.stats.heartbeats
        await wait_until(
            lambda: sidecar.stats.heartbeats > beats, timeout=3 * TTL, interval=0.05, what="a heartbeat after"
        )
        lost |= expected - {(s.call_id, s.session_id) for s in await observer.list_sessions()}
        print(
            f"\n[chaos] sidecar: stall {STALL:g}s from {stall_started - beat_at:.1f}s after a heartbeat, "
            f"ttl {TTL:g}s, interval {INTERVAL:g}s: heartbeat back {time.monotonic() - healed:.1f}s "
            f"after heal; sessions lost {len(lost)}/{len(expected)}, "
            f"failed beats {sidecar.stats.heartbeat_failures}"
        )
        assert not lost, f"{len(lost)} sessions expired during a {STALL:g}s stall"
    finally:
        await observer.stop()


#: A short drain and the grace it fits: the 10 s the rest of the shutdown needs, plus 2.
GRACE = 12.0
DRAIN = 2.0


@pytest.mark.timeout(120)
async def test_g9_sidecar_drain_and_stop_fit_the_grace_period_when_redis_is_black_holed(
    redis_proxy: RedisProxy, make_sidecar: MakeSidecar
) -> None:
    sidecar = await make_sidecar("node-d", drain=DrainSettings(timeout=DRAIN, grace_period=GRACE))
    for j in range(20):
        await sidecar.register(f"call-{j % 4}", f"s-{j}")
    redis_proxy.client.black_hole(redis_proxy.name)
    started = time.monotonic()
    cut = -1

    async def shut_down() -> None:
        nonlocal cut
        cut = await sidecar.drain()
        await sidecar.stop()

    try:
        await asyncio.wait_for(shut_down(), GRACE)
    finally:
        print(
            f"\n[chaos] sidecar drain({DRAIN:g}) + stop of 20 sessions with Redis black-holed: "
            f"{time.monotonic() - started:.1f}s (grace {GRACE:g}s)"
        )
        redis_proxy.client.heal(redis_proxy.name)
    assert cut == 20
    assert not sidecar.registry.local_sessions
