"""The replayable event log behind the app's stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest

from callboard.sidecar.events import Event, EventLog, EventType, first_event_id

CLOSE = EventType.CLOSE_REQUESTED
STATE = [Event(EventType.DRAIN, {"timeout": 5})]


def make_log(capacity: int = 4, first_id: int = 100) -> EventLog:
    return EventLog(capacity=capacity, snapshot=lambda: list(STATE), first_id=first_id)


def test_ids_increase_from_the_first_id() -> None:
    log = make_log()
    assert log.head == 99
    ids = [log.append(CLOSE, {"n": n}).id for n in range(3)]
    assert ids == [100, 101, 102]
    assert log.head == 102


def test_first_id_of_a_later_process_is_larger() -> None:
    assert first_event_id() < first_event_id() + 1  # microseconds since the epoch
    assert first_event_id() > 1_600_000_000 * 1_000_000


def test_replay_after_covers_the_buffer_only() -> None:
    log = make_log(capacity=3)
    for n in range(5):  # ids 100..104; the buffer keeps 102..104
        log.append(CLOSE, {"n": n})
    assert log.replay_after(104) == []
    assert [e.id for e in log.replay_after(102) or []] == [103, 104]
    assert [e.id for e in log.replay_after(101) or []] == [102, 103, 104]
    assert log.replay_after(100) is None  # 101 fell out of the buffer
    assert log.replay_after(98) is None  # older than this process
    assert log.replay_after(105) is None  # from the future: another process


async def test_follow_without_id_gets_the_snapshot_then_live_events() -> None:
    log = make_log()
    log.append(CLOSE, {"n": "before"})  # history is not replayed to a new reader
    async with contextlib.aclosing(log.follow(None)) as follow:
        first = await asyncio.wait_for(anext(follow), 1)
        assert first == STATE[0] and first.id is None
        log.append(CLOSE, {"n": "after"})
        event = await asyncio.wait_for(anext(follow), 1)
        assert (event.id, event.data) == (101, {"n": "after"})


async def test_follow_resumes_after_last_event_id_without_loss() -> None:
    log = make_log(capacity=10)
    for n in range(4):
        log.append(CLOSE, {"n": n})
    async with contextlib.aclosing(log.follow("101")) as follow:
        got = [await asyncio.wait_for(anext(follow), 1) for _ in range(2)]
        assert [e.id for e in got] == [102, 103]
        log.append(CLOSE, {"n": 4})
        assert (await asyncio.wait_for(anext(follow), 1)).id == 104


@pytest.mark.parametrize("last_id", ["98", "not-a-number", "99999999", "100"])
async def test_follow_falls_back_to_the_snapshot_when_it_cannot_replay(last_id: str) -> None:
    log = make_log(capacity=2)
    for n in range(4):  # ids 100..103, buffer 102..103: "100" is a gap
        log.append(CLOSE, {"n": n})
    async with contextlib.aclosing(log.follow(last_id)) as follow:
        assert await asyncio.wait_for(anext(follow), 1) == STATE[0]
        log.append(CLOSE, {"n": 4})
        assert (await asyncio.wait_for(anext(follow), 1)).id == 104


async def test_a_reader_that_falls_behind_the_buffer_gets_the_snapshot() -> None:
    log = make_log(capacity=2)
    async with contextlib.aclosing(log.follow(str(log.head))) as follow:
        waiting = asyncio.ensure_future(anext(follow))
        await asyncio.sleep(0)  # the reader waits for the next event
        for n in range(5):  # more than the buffer before the reader runs again
            log.append(CLOSE, {"n": n})
        first = await asyncio.wait_for(waiting, 1)
        assert first == STATE[0]
        log.append(CLOSE, {"n": 5})
        assert (await asyncio.wait_for(anext(follow), 1)).id == 105


async def test_close_ends_every_reader_and_consumers_are_counted() -> None:
    log = make_log()
    counts: list[int] = []
    log.on_consumers_changed(counts.append)
    readers = [log.follow(str(log.head)) for _ in range(2)]
    tasks = [asyncio.ensure_future(_drain(r)) for r in readers]
    await asyncio.sleep(0.01)
    assert log.consumers == 2
    log.append(CLOSE, {"n": 1})
    log.close()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert results == [[100], [100]]
    assert log.consumers == 0
    assert counts == [1, 2, 1, 0]


async def test_a_cancelled_reader_stops_counting() -> None:
    log = make_log()
    task = asyncio.ensure_future(_drain(log.follow(None)))
    await asyncio.sleep(0.01)
    assert log.consumers == 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert log.consumers == 0


def test_payload_repeats_the_type() -> None:
    assert Event(CLOSE, {"call_id": "c"}, 7).payload() == {"type": "close_requested", "call_id": "c"}


async def _drain(follow: AsyncGenerator[Event, None]) -> list[int | None]:
    ids: list[int | None] = []
    async with contextlib.aclosing(follow) as it:
        async for event in it:
            if event.id is not None:
                ids.append(event.id)
    return ids
