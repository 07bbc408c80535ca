"""kube/k8s/event_poster.py: Events are posted in the background, in order per object, and a
full queue or a failed post never reaches the caller. Against the fake Kubernetes API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callboard.kube.k8s import event_poster
from callboard.kube.k8s.event_poster import EventPoster, TokenBucket
from callboard.kube.resource.constants import REPORTING_COMPONENT
from tests.support.fake_kube import FakeKube


def _ref(name: str, namespace: str = "ns") -> dict[str, str]:
    return {"kind": "AgentSession", "name": name, "namespace": namespace, "uid": f"uid-{name}"}


@pytest.fixture
async def poster() -> AsyncIterator[tuple[EventPoster, FakeKube]]:
    kube = FakeKube()
    events = EventPoster(kube, instance="operator-0")
    events.start()
    try:
        yield events, kube
    finally:
        await events.stop()


async def test_an_event_is_posted_in_the_objects_namespace_with_who_reported_it(
    poster: tuple[EventPoster, FakeKube],
) -> None:
    events, kube = poster
    events.post(_ref("a", "team"), type="Normal", reason="Started", message="session s-1 runs")
    await events.flushed()
    [event] = kube.events
    assert event["metadata"]["namespace"] == "team"
    assert event["metadata"]["name"].startswith("a.")
    assert event["involvedObject"] == _ref("a", "team")
    assert (event["type"], event["reason"], event["message"]) == ("Normal", "Started", "session s-1 runs")
    assert event["reportingComponent"] == REPORTING_COMPONENT
    assert event["reportingInstance"] == "operator-0"
    assert event["firstTimestamp"] == event["lastTimestamp"]
    assert events.posted == 1


async def test_event_names_are_unique_and_a_namespace_less_reference_goes_to_default(
    poster: tuple[EventPoster, FakeKube],
) -> None:
    events, kube = poster
    for _ in range(2):
        events.post({"kind": "Node", "name": "n"}, type="Normal", reason="R", message="m")
    await events.flushed()
    assert [e["metadata"]["namespace"] for e in kube.events] == ["default", "default"]
    assert len({e["metadata"]["name"] for e in kube.events}) == 2


async def test_a_long_message_is_cut_to_1024_characters(poster: tuple[EventPoster, FakeKube]) -> None:
    events, kube = poster
    events.post(_ref("a"), type="Warning", reason="Failed", message="x" * 5000)
    await events.flushed()
    assert kube.events[0]["message"] == "x" * 1024


async def test_the_events_of_one_object_are_posted_in_order(poster: tuple[EventPoster, FakeKube]) -> None:
    events, kube = poster
    for i in range(50):
        for name in ("a", "b", "c"):
            events.post(_ref(name), type="Normal", reason=f"R{i}", message="m")
    await events.flushed()
    for name in ("a", "b", "c"):
        assert kube.reasons(name) == [f"R{i}" for i in range(50)]


async def test_a_failed_post_is_counted_as_not_posted_and_never_raised(
    poster: tuple[EventPoster, FakeKube],
) -> None:
    events, kube = poster
    kube.down = True
    events.post(_ref("a"), type="Normal", reason="Lost", message="m")
    await events.flushed()
    kube.down = False
    events.post(_ref("a"), type="Normal", reason="Kept", message="m")
    await events.flushed()
    assert kube.reasons("a") == ["Kept"]
    assert events.posted == 1


async def test_a_full_queue_drops_the_newest_and_counts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_poster, "QUEUE_SIZE", 2)
    kube = FakeKube()
    events = EventPoster(kube, instance="operator-0")  # not started: nothing drains the queues
    for reason in ("first", "second", "third"):
        events.post(_ref("a"), type="Normal", reason=reason, message="m")
    assert events.dropped == 1
    events.start()
    await events.stop()  # posts what is queued before the workers stop
    assert kube.reasons("a") == ["first", "second"]


def test_the_token_bucket_lets_a_burst_through_then_spaces_the_rest_at_the_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(rate=10.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    # Takers that find no token reserve the next ones: 0.1 s, 0.2 s, ... from now, in all at 10/s.
    assert [round(bucket.take(), 6) for _ in range(3)] == [0.1, 0.2, 0.3]
    now[0] += 10.0  # a quiet spell refills up to the burst, never more
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() > 0
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0.0, burst=1)


async def test_a_rate_of_zero_posts_no_event_and_counts_each_as_dropped() -> None:
    kube = FakeKube()
    counted: list[int] = []
    events = EventPoster(kube, instance="operator-0", rate=0.0, on_dropped=counted.append)
    events.start()
    try:
        for reason in ("Started", "Closed"):
            events.post(_ref("a"), type="Normal", reason=reason, message="m")
        await events.flushed()
    finally:
        await events.stop()
    assert kube.events == [] and events.dropped == 2 and sum(counted) == 2


async def test_a_full_queue_counts_its_drops_in_the_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_poster, "QUEUE_SIZE", 1)
    counted: list[int] = []
    events = EventPoster(FakeKube(), instance="operator-0", rate=10.0, on_dropped=counted.append)
    for reason in ("first", "second", "third"):  # not started: nothing drains the queue
        events.post(_ref("a"), type="Normal", reason=reason, message="m")
    assert events.dropped == 2 and counted == [1, 1]
