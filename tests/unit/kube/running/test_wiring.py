"""The runtime as a whole: starting without a registry, refusing writes once deposed."""

from __future__ import annotations

import asyncio

import pytest

from callboard.errors import StoreError
from callboard.kube.k8s.client import NotLeaderError
from callboard.kube.running.wiring import OPERATOR_NODE_ID, LeaderRegistry, Runtime
from callboard.registry import InMemorySessionKVStore, SessionRegistry, StartClaim, StartRequest
from tests.support.fake_kube import FakeKube
from tests.support.waiting import wait_until
from tests.unit.kube.conftest import Harness, fast_settings
from tests.unit.kube.fakes import FakeNode


class DownStore(InMemorySessionKVStore):
    """An in-memory store that refuses every call while ``down`` (Redis not up yet)."""

    def __init__(self) -> None:
        super().__init__(cleanup_interval=0.05)
        self.down = True
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        if self.down:
            raise StoreError("connection refused")
        await super().start()

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        if self.down:
            raise StoreError("connection refused")
        return await super().mget(keys)

    async def keys(self, prefix: str) -> list[str]:
        if self.down:
            raise StoreError("connection refused")
        return await super().keys(prefix)


async def test_g10_the_operator_runs_while_the_registry_is_down_at_start_and_connects_later() -> None:
    store = DownStore()
    harness = Harness(fast_settings(), store)
    await harness.runtime.start()  # does not raise: kopf must run anyway
    try:
        await harness.until(lambda: store.starts >= 2)  # retried in the background
        assert not harness.runtime.connected.is_set()
        # The probe says so: never "ok" before the registry ever answered.
        assert harness.runtime.liveness()["registry"] == "unreachable: connection refused"
        # Deletes go through meanwhile: an object that was never placed holds no finalizer.
        harness.kube.apply("early", "call-0")
        await harness.until(lambda: harness.runtime.cache.get(("ns", "early")) is not None)
        harness.kube.delete_object("early")
        await harness.until(lambda: harness.kube.get_object("early") is None)
        store.down = False
        await harness.until(harness.runtime.connected.is_set)
        assert harness.runtime.liveness()["registry"] == "ok"
        await harness.node("n1")
        harness.kube.apply("a1", "call-1")
        await harness.phase("a1", "Running")
    finally:
        await harness.kopf.stop()
        for node in harness.nodes:
            await node.kill()
        await harness.runtime.stop()


async def test_g8_a_deposed_runtime_sends_no_start_or_close_request(harness: Harness) -> None:
    node = await harness.node("n1")
    await node.registry.register("call-1", "s1")
    registry = harness.runtime.registry
    registry.guard = lambda: False
    with pytest.raises(NotLeaderError):
        await registry.request_start("n1", "call-2", session_id="s2")
    with pytest.raises(NotLeaderError):
        await registry.request_close("call-1", "s1")
    assert await node.registry.pending_start_requests() == []
    assert node.closes == 0 and node.sessions == ["s1"]


async def test_g8_a_deposed_runtime_neither_sets_nor_takes_back_drain_marks(harness: Harness) -> None:
    registry = harness.runtime.registry
    await registry.mark_draining(["n1"], ttl=60)  # the new leader's mark, say
    registry.guard = lambda: False
    with pytest.raises(NotLeaderError):
        await registry.mark_draining(["n2"], ttl=60)
    with pytest.raises(NotLeaderError):
        await registry.clear_drain_marks(["n1"])
    assert await registry.drain_marks(["n1", "n2"]) == {"n1"}


def _leader(store: InMemorySessionKVStore, term: int) -> LeaderRegistry:
    """One replica's registry handle in leadership term ``term``; it believes it leads."""
    registry = LeaderRegistry(store, node_id=OPERATOR_NODE_ID, ttl=5.0, foreign_scan_interval=None)
    registry.guard = lambda: True
    registry.fencing_token = term
    return registry


async def test_g8_no_request_goes_out_before_the_terms_fence_is_published() -> None:
    store = InMemorySessionKVStore()
    leader = _leader(store, 3)
    assert await leader.get_fence() is None
    request = await leader.request_start("n1", "call-1", session_id="s1")  # the runtime has not yet
    assert request.fencing_token == 3
    assert leader.fence_published and await leader.get_fence() == 3
    late = _leader(store, 2)  # a deposed term that never published: its first request is refused
    with pytest.raises(NotLeaderError):
        await late.request_close("call-1", "s1")
    with pytest.raises(NotLeaderError):
        await late.request_start("n1", "call-2", session_id="s2")
    assert late.deposed and [r.session_id for r in await _pending(store, "n1")] == ["s1"]


async def _pending(store: InMemorySessionKVStore, node_id: str) -> list[StartRequest]:
    node = SessionRegistry(store, node_id=node_id, foreign_scan_interval=None)
    return await node.pending_start_requests()


async def test_g8_a_deposed_leaders_start_and_close_are_refused_by_the_node() -> None:
    store = InMemorySessionKVStore()
    node = FakeNode(store, "n1")
    await node.start()
    try:
        await node.registry.register("call-1", "s1")
        old, new = _leader(store, 3), _leader(store, 4)
        await old.publish_fence()
        await new.publish_fence()  # a new term began; the old replica does not know yet
        request = await old.request_start("n1", "call-2", session_id="s2")
        assert request.fencing_token == 3
        await wait_until(lambda: node.not_started, what="the node refused the request")
        assert node.not_started == [(request, StartClaim.FENCED)]
        result = await old.get_start_result(request.request_id)
        assert result is not None and not result.accepted and result.reason is not None
        assert result.reason.startswith("fenced: ")
        with pytest.raises(NotLeaderError):
            await old.request_close("call-1", "s1")
        assert old.deposed  # and refuses everything from now on
        with pytest.raises(NotLeaderError):
            await old.request_start("n1", "call-3", session_id="s3")
        assert node.closes == 0 and node.sessions == ["s1"]
        await new.request_close("call-1", "s1")  # the leader's close goes through
        await wait_until(lambda: node.closes == 1, what="the node closed s1")
    finally:
        await node.stop()


async def test_g8_a_runtime_publishes_its_fence_before_it_counts_as_connected() -> None:
    store = InMemorySessionKVStore()
    runtime = Runtime(
        settings=fast_settings(), api=FakeKube(), store=store, guard=lambda: True, fencing_token=6
    )
    await runtime.start()
    try:
        await wait_until(runtime.connected.is_set, what="registry connected")
        assert await runtime.registry.get_fence() == 6
        assert runtime.registry.fence_published
    finally:
        await runtime.stop()


async def test_g8_a_recreated_lease_moves_the_term_past_the_registrys_fence() -> None:
    store = InMemorySessionKVStore()
    await _leader(store, 9).publish_fence()  # terms of the Lease before it was deleted
    moved: list[int] = []

    async def advance(at_least: int) -> int:
        moved.append(at_least)
        return at_least

    runtime = Runtime(
        settings=fast_settings(),
        api=FakeKube(),
        store=store,
        guard=lambda: True,
        fencing_token=0,
        advance_term=advance,
    )
    await runtime.start()
    try:
        await wait_until(runtime.connected.is_set, what="registry connected")
        assert moved == [10]
        assert runtime.registry.fencing_token == 10 and not runtime.registry.deposed
        assert await runtime.registry.get_fence() == 10
    finally:
        await runtime.stop()


async def test_g8_a_runtime_below_the_fence_without_its_lease_refuses_every_request() -> None:
    store = InMemorySessionKVStore()
    await _leader(store, 9).publish_fence()  # a newer leader acts
    runtime = Runtime(
        settings=fast_settings(), api=FakeKube(), store=store, guard=lambda: True, fencing_token=8
    )
    await runtime.start()
    try:
        await wait_until(runtime.connected.is_set, what="registry connected")
        assert runtime.registry.deposed
        with pytest.raises(NotLeaderError):
            await runtime.registry.request_start("n1", "call-1", session_id="s1")
        assert await runtime.registry.get_fence() == 9
    finally:
        await runtime.stop()


async def test_events_go_through_their_own_client_when_one_is_given() -> None:
    """A burst's Events must not queue behind (or in front of) the status patches."""
    main, events = FakeKube(), FakeKube()
    runtime = Runtime(settings=fast_settings(), api=main, store=InMemorySessionKVStore(), events_api=events)
    runtime.events.start()
    try:
        runtime.events.post(
            {"namespace": "ns", "name": "a", "uid": "u1"}, type="Normal", reason="Seen", message="m"
        )
        await asyncio.wait_for(runtime.events.flushed(), 5.0)
    finally:
        await runtime.events.stop()
    assert events.reasons("a") == ["Seen"]
    assert main.events == []
