"""The leader Lease: acquire, wait while another replica renews, take over, hand over, lose."""

from __future__ import annotations

import asyncio

from callboard.kube.k8s.lease import LeaderLease
from callboard.kube.settings import LeaderSettings
from tests.support.fake_kube import FakeKube

FAST = LeaderSettings(namespace="ops", name="lead", lease_duration=0.4, renew_interval=0.1)


async def test_first_replica_takes_the_lease_the_second_waits_until_it_is_released() -> None:
    kube = FakeKube()
    a, b = LeaderLease(kube, FAST, identity="a"), LeaderLease(kube, FAST, identity="b")
    await a.acquire()
    assert a.held and kube.leases[("ops", "lead")]["spec"]["holderIdentity"] == "a"
    keeping = asyncio.create_task(a.keep())
    waiting = asyncio.create_task(b.acquire())
    await asyncio.sleep(0.8)  # two lease durations: "a" renews, so "b" must still wait
    assert not waiting.done()
    keeping.cancel()
    await a.release()
    await asyncio.wait_for(waiting, 1.0)
    lease = kube.leases[("ops", "lead")]["spec"]
    assert lease["holderIdentity"] == "b" and lease["leaseTransitions"] == 1


async def test_a_lease_nobody_renews_is_taken_over_after_its_duration() -> None:
    kube = FakeKube()
    await LeaderLease(kube, FAST, identity="dead").acquire()  # then never renewed
    b = LeaderLease(kube, FAST, identity="b")
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(b.acquire(), 2.0)
    assert asyncio.get_running_loop().time() - started >= FAST.lease_duration
    assert kube.leases[("ops", "lead")]["spec"]["holderIdentity"] == "b"


async def test_the_holder_notices_it_lost_the_lease() -> None:
    kube = FakeKube()
    a = LeaderLease(kube, FAST, identity="a")
    await a.acquire()
    # Someone else wrote the lease (e.g. took it while this replica was frozen).
    lease = kube.leases[("ops", "lead")]
    lease["spec"]["holderIdentity"] = "usurper"
    lease["metadata"]["resourceVersion"] = "999"
    await asyncio.wait_for(a.keep(), 1.0)
    assert a.lost.is_set() and not a.held


async def test_an_unreachable_api_loses_the_lease_after_its_duration() -> None:
    kube = FakeKube()
    a = LeaderLease(kube, FAST, identity="a")
    await a.acquire()
    kube.down = True
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(a.keep(), 2.0)
    assert a.lost.is_set()
    assert asyncio.get_running_loop().time() - started >= FAST.lease_duration - FAST.renew_interval
