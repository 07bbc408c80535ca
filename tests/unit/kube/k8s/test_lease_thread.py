"""The leader Lease on its own thread: a busy operator loop cannot starve it; loss, release and
term changes still reach the operator."""

from __future__ import annotations

import asyncio
import time

from callboard.kube.k8s.lease import LeaderLease
from callboard.kube.k8s.lease_thread import ThreadedLease
from callboard.kube.settings import LeaderSettings
from tests.support.fake_kube import FakeKube

#: Short, but with a renew deadline a loaded machine can still meet from a thread.
SETTINGS = LeaderSettings(
    namespace="ops", name="lead", lease_duration=1.5, renew_deadline=1.0, renew_interval=0.1
)


def hog_the_loop(seconds: float) -> None:
    """What the operator's start-up did (kopf's start, the first lists): Python work on the
    event loop's thread that never yields to the loop."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def test_g8_a_leader_whose_loop_is_busy_past_its_renew_deadline_keeps_the_lease() -> None:
    kube = FakeKube()
    async with ThreadedLease(lambda: kube, SETTINGS, identity="a") as lease:
        await lease.acquire()
        renewed = kube.leases[("ops", "lead")]["spec"]["renewTime"]
        hog_the_loop(3 * SETTINGS.renew_deadline)
        # The renewals went on while the loop was held, so the term never lapsed.
        assert kube.leases[("ops", "lead")]["spec"]["renewTime"] != renewed
        assert lease.valid() and lease.held
        await asyncio.sleep(0)  # a loss would have been relayed to this loop by now
        assert not lease.lost.is_set()
        await lease.release()


async def test_g8_a_lease_the_thread_cannot_renew_is_invalid_and_lost_on_the_operators_loop() -> None:
    kube = FakeKube()
    async with ThreadedLease(lambda: kube, SETTINGS, identity="a") as lease:
        await lease.acquire()
        assert lease.valid()
        kube.down = True
        await asyncio.wait_for(lease.lost.wait(), 10 * SETTINGS.renew_deadline)
        assert not lease.valid() and not lease.held


async def test_release_hands_the_lease_over_and_stops_renewing() -> None:
    kube = FakeKube()
    async with ThreadedLease(lambda: kube, SETTINGS, identity="a") as lease:
        await lease.acquire()
        await lease.release()
        assert not lease.valid()
        spec = kube.leases[("ops", "lead")]["spec"]
        assert spec["holderIdentity"] is None and spec["leaseDurationSeconds"] == 1
    assert not lease.lost.is_set()  # handed over, not lost
    after = len(kube.calls)
    b = LeaderLease(kube, SETTINGS, identity="b")
    await asyncio.wait_for(b.acquire(), 5.0)
    assert kube.leases[("ops", "lead")]["spec"]["holderIdentity"] == "b"
    assert all(body is None or body["spec"]["holderIdentity"] == "b" for _, _, body in kube.calls[after:])


async def test_g8_the_term_advances_through_the_renewal_thread() -> None:
    kube = FakeKube()
    async with ThreadedLease(lambda: kube, SETTINGS, identity="a") as lease:
        await lease.acquire()
        assert lease.transitions == 0
        assert await lease.advance(7) == 7
        assert lease.transitions == 7
        assert kube.leases[("ops", "lead")]["spec"]["leaseTransitions"] == 7
        await lease.release()


async def test_leaving_while_still_waiting_for_the_lease_stops_the_thread() -> None:
    """SIGTERM on a standby: the wait for the lease is cancelled and nothing is left running."""
    kube = FakeKube()
    holder = LeaderLease(kube, SETTINGS, identity="holder")
    await holder.acquire()
    keeping = asyncio.create_task(holder.keep())
    async with ThreadedLease(lambda: kube, SETTINGS, identity="standby") as standby:
        waiting = asyncio.create_task(standby.acquire())
        await asyncio.sleep(2 * SETTINGS.renew_interval)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert not standby.held
    assert standby._thread is not None and not standby._thread.is_alive()
    assert kube.leases[("ops", "lead")]["spec"]["holderIdentity"] == "holder"
    keeping.cancel()
