"""kube/placing/start_tracker.py: every start in flight resolved by one batched read a tick.

A real registry on the in-memory store (the operator's and a node's, sharing it) and a fake
clock for the tracker's deadlines: each test drives :meth:`StartTracker.poll` by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from callboard.errors import StoreUnavailableError
from callboard.kube.placing import start_tracker
from callboard.kube.placing.start_tracker import ACCEPTED_GRACE, Outcome, OutcomeKind, StartTracker
from callboard.registry import InMemorySessionKVStore, SessionRegistry


class FakeClock:
    """``time.monotonic`` for the tracker, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@dataclass
class Placing:
    tracker: StartTracker
    operator: SessionRegistry
    node: SessionRegistry
    store: InMemorySessionKVStore
    clock: FakeClock

    async def follow(
        self, session_id: str, *, request_id: str | None, timeout: float = 30.0
    ) -> asyncio.Task[Outcome]:
        """Start waiting for ``session_id`` (in a task) and let the wait register itself."""
        task = asyncio.create_task(
            self.tracker.wait("call-1", session_id, request_id=request_id, timeout=timeout)
        )
        await asyncio.sleep(0)
        return task


@pytest.fixture
async def placing(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Placing]:
    clock = FakeClock()
    monkeypatch.setattr(start_tracker, "time", clock)
    store = InMemorySessionKVStore()
    operator = SessionRegistry(store, node_id="operator", ttl=30)
    node = SessionRegistry(store, node_id="node-a", ttl=30)
    await operator.start()
    await node.start()
    try:
        yield Placing(StartTracker(operator), operator, node, store, clock)
    finally:
        await node.stop()
        await operator.stop()


async def test_a_session_record_means_it_runs(placing: Placing) -> None:
    request = await placing.operator.request_start("node-a", "call-1", session_id="s-1")
    waiting = await placing.follow("s-1", request_id=request.request_id)
    await placing.tracker.poll()
    assert not waiting.done()
    await placing.node.register("call-1", "s-1")
    await placing.tracker.poll()
    outcome = await waiting
    assert outcome.kind is OutcomeKind.LIVE
    assert outcome.session is not None and outcome.session.node_id == "node-a"
    assert len(placing.tracker) == 0


async def test_a_refusal_carries_the_nodes_reason(placing: Placing) -> None:
    request = await placing.operator.request_start("node-a", "call-1", session_id="s-1")
    waiting = await placing.follow("s-1", request_id=request.request_id)
    await placing.node.answer_start(request, accepted=False, reason="capacity")
    await placing.tracker.poll()
    assert await waiting == Outcome(OutcomeKind.REJECTED, reason="capacity")


async def test_an_acceptance_without_a_record_counts_as_live_after_the_grace(placing: Placing) -> None:
    request = await placing.operator.request_start("node-a", "call-1", session_id="s-1")
    waiting = await placing.follow("s-1", request_id=request.request_id)
    await placing.node.answer_start(request, accepted=True)
    await placing.tracker.poll()  # the answer is seen: the grace starts now
    placing.clock.now += ACCEPTED_GRACE - 0.01
    await placing.tracker.poll()
    assert not waiting.done()
    placing.clock.now += 0.01
    await placing.tracker.poll()
    assert await waiting == Outcome(OutcomeKind.LIVE)


async def test_nothing_by_the_deadline_is_a_timeout(placing: Placing) -> None:
    request = await placing.operator.request_start("node-a", "call-1", session_id="s-1")
    waiting = await placing.follow("s-1", request_id=request.request_id, timeout=5.0)
    placing.clock.now += 4.99
    await placing.tracker.poll()
    assert not waiting.done()
    placing.clock.now += 0.01
    await placing.tracker.poll()
    assert await waiting == Outcome(OutcomeKind.TIMEOUT, reason="no answer")


async def test_without_a_request_id_only_the_record_counts_and_a_refusal_shows_as_a_timeout(
    placing: Placing,
) -> None:
    request = await placing.operator.request_start("node-a", "call-1", session_id="s-1")
    waiting = await placing.follow("s-1", request_id=None, timeout=5.0)
    await placing.node.answer_start(request, accepted=False, reason="capacity")
    await placing.tracker.poll()
    assert not waiting.done()
    placing.clock.now += 5.0
    await placing.tracker.poll()
    assert (await waiting).kind is OutcomeKind.TIMEOUT


async def test_many_starts_are_resolved_by_one_read_each_on_its_own(placing: Placing) -> None:
    requests = [
        await placing.operator.request_start("node-a", "call-1", session_id=f"s-{i}") for i in range(3)
    ]
    waits = [await placing.follow(f"s-{i}", request_id=r.request_id) for i, r in enumerate(requests)]
    await placing.node.register("call-1", "s-0")
    await placing.node.answer_start(requests[1], accepted=False, reason="draining")
    reads = 0
    real = placing.operator.get_start_progress

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal reads
        reads += 1
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    placing.operator.get_start_progress = counted  # type: ignore[method-assign]
    await placing.tracker.poll()
    assert reads == 1
    assert (await waits[0]).kind is OutcomeKind.LIVE
    assert await waits[1] == Outcome(OutcomeKind.REJECTED, reason="draining")
    assert not waits[2].done()
    waits[2].cancel()


async def test_a_store_failure_resolves_nothing_and_the_deadline_still_holds(
    placing: Placing, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = await placing.operator.request_start("node-a", "call-1", session_id="s-1")
    waiting = await placing.follow("s-1", request_id=request.request_id, timeout=5.0)
    await placing.node.register("call-1", "s-1")

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("redis is away")

    monkeypatch.setattr(placing.operator, "get_start_progress", unavailable)
    await placing.tracker.poll()
    assert not waiting.done()  # the record exists, but nobody could read it
    placing.clock.now += 5.0
    await placing.tracker.poll()
    assert (await waiting).kind is OutcomeKind.TIMEOUT


async def test_a_cancelled_wait_leaves_the_tracker(placing: Placing) -> None:
    waiting = await placing.follow("s-1", request_id=None)
    assert len(placing.tracker) == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(placing.tracker) == 0
