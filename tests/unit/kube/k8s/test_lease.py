"""The leader Lease: acquire, wait while another replica renews, take over, hand over, lose."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from callboard.kube.k8s.client import KubeApi, KubeApiError, NotLeaderError, agentsession_path
from callboard.kube.k8s.lease import LeaderLease
from callboard.kube.settings import LeaderSettings
from tests.support.fake_kube import FakeKube

FAST = LeaderSettings(
    namespace="ops", name="lead", lease_duration=0.4, renew_deadline=0.25, renew_interval=0.05
)


class BlackHoled(KubeApi):
    """One replica's view of a shared :class:`FakeKube`; ``cut`` makes its calls hang forever
    (a network path to the API server that drops packets: no error, no answer);
    ``no_lease_create`` is the chart's RBAC (get and update its Lease, never create it)."""

    def __init__(self, kube: FakeKube) -> None:
        super().__init__(lambda: None)
        self.kube = kube
        self.cut = False
        self.no_lease_create = False

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        if self.cut:
            await asyncio.Event().wait()
        if self.no_lease_create and method == "POST" and "/leases" in path:
            raise KubeApiError(403, "leases is forbidden: cannot create", reason="Forbidden")
        return await self.kube.request(method, path, body=body, params=params, content_type=content_type)


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


async def test_an_unreachable_api_loses_the_lease_at_its_renew_deadline() -> None:
    kube = FakeKube()
    a = LeaderLease(kube, FAST, identity="a")
    await a.acquire()
    kube.down = True
    started = asyncio.get_running_loop().time()
    calls = len(kube.calls)
    await asyncio.wait_for(a.keep(), 2.0)
    assert a.lost.is_set() and not a.valid()
    # Failures are retried until the renew deadline (counted from the last renewal), not
    # given up at the first one.
    assert asyncio.get_running_loop().time() - started >= FAST.renew_deadline - FAST.renew_interval
    assert len([c for c in kube.calls[calls:] if c[0] == "PUT"]) >= 2


async def test_g8_a_black_holed_leader_steps_down_before_a_standby_can_take_over() -> None:
    kube = FakeKube()
    old_view = BlackHoled(kube)
    old = LeaderLease(old_view, FAST, identity="old")
    await old.acquire()
    keeping = asyncio.create_task(old.keep())
    await asyncio.sleep(2 * FAST.renew_interval)  # a renewal or two went through
    old_view.cut = True  # its renewals now hang: no error ever comes back
    new = LeaderLease(kube, FAST, identity="new")
    await new.acquire()
    # The moment the standby leads, the old holder has stopped: no two leaders at once.
    assert old.lost.is_set() and not old.valid()
    assert keeping.done()
    assert kube.leases[("ops", "lead")]["spec"]["holderIdentity"] == "new"


async def test_g8_the_lease_is_valid_only_within_the_renew_deadline_of_its_last_renewal() -> None:
    kube = FakeKube()
    view = BlackHoled(kube)
    lease = LeaderLease(view, FAST, identity="a")
    assert not lease.valid()
    await lease.acquire()
    assert lease.valid()
    view.cut = True  # nobody renews (the keep task is not even running)
    await asyncio.sleep(FAST.renew_deadline)
    assert not lease.valid()


async def test_g8_a_deposed_leaders_client_refuses_to_write() -> None:
    kube = FakeKube()
    kube.apply("s1", "call-1")
    view = BlackHoled(kube)
    lease = LeaderLease(view, FAST, identity="a")
    await lease.acquire()
    kube.guard = lease.valid
    await kube.merge_patch(agentsession_path("ns", "s1", status=True), {"status": {"phase": "Pending"}})
    view.cut = True
    await asyncio.sleep(FAST.renew_deadline)
    before = len(kube.calls)
    with pytest.raises(NotLeaderError):
        await kube.merge_patch(agentsession_path("ns", "s1", status=True), {"status": {"phase": "Running"}})
    assert len(kube.calls) == before  # refused before it was sent
    assert kube.objects[("ns", "s1")]["status"]["phase"] == "Pending"
    assert await kube.get(agentsession_path("ns", "s1"))  # reads still work


async def test_g8_each_leadership_term_has_a_greater_fencing_token() -> None:
    kube = FakeKube()
    a, b = LeaderLease(kube, FAST, identity="a"), LeaderLease(kube, FAST, identity="b")
    await a.acquire()
    first = a.transitions
    await a.release()
    await b.acquire()
    assert b.transitions > first


async def test_g8_a_recreated_lease_moves_its_term_past_the_fence_and_only_its_holder_can() -> None:
    kube = FakeKube()
    a, b = LeaderLease(kube, FAST, identity="a"), LeaderLease(kube, FAST, identity="b")
    await a.acquire()
    assert a.transitions == 0  # a new Lease: the count starts again, below an old fence
    assert await a.advance(7) == 7
    assert a.transitions == 7
    assert await a.advance(5) == 7  # never lowered
    await a.release()
    await b.acquire()
    assert b.transitions == 8  # the next term is still above
    with pytest.raises(NotLeaderError):
        await a.advance(20)  # the deposed holder cannot move the term


async def test_a_missing_lease_it_may_not_create_is_waited_for_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Lease deleted by hand (the chart owns it; `helm upgrade` puts it back): the operator
    waits, says why, and leads once it exists again, instead of exiting into a crash loop."""
    kube = FakeKube()
    api = BlackHoled(kube)
    api.no_lease_create = True
    lease = LeaderLease(api, FAST, identity="a")
    acquiring = asyncio.create_task(lease.acquire())
    await asyncio.sleep(0.3)
    assert not acquiring.done()  # still trying, not raised
    assert "cannot take the leader lease" in caplog.text and "helm upgrade" in caplog.text
    kube.leases[("ops", "lead")] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "lead", "namespace": "ops", "resourceVersion": "1"},
        "spec": {},
    }
    await asyncio.wait_for(acquiring, 2.0)
    assert lease.held and kube.leases[("ops", "lead")]["spec"]["holderIdentity"] == "a"
