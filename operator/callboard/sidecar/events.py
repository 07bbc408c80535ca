"""The app's event stream: a bounded, replayable log of events with increasing ids.

Events (``close_requested``, ``start_requested``, ``drain``, ``registry_lost``) go to every
connected consumer.
A consumer that reconnects with ``Last-Event-ID`` gets what it missed from a bounded replay
buffer, so nothing is lost while the app reconnects. When the buffer cannot cover the gap
(the id is older than the buffer, or comes from a previous sidecar process), the consumer is
told the *current state* instead: the service provides it as a snapshot of the events that
still matter (pending close and start requests, drain). Consumers must therefore be
idempotent, which they must be anyway: delivery is at least once.

Ids are integers. The first id of a sidecar process is its start time in microseconds, so
ids keep increasing across restarts of the sidecar too (one process never issues a million
events a second), and an id from a previous process is recognisable as such.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Event", "EventLog", "EventType", "first_event_id"]


class EventType(StrEnum):
    """The kinds of event on the stream (the SSE ``event:`` field)."""

    CLOSE_REQUESTED = "close_requested"
    """Close this session: someone (the operator, another node, ``kubectl delete``) asked."""
    START_REQUESTED = "start_requested"
    """Start a session: accept by registering it with ``start_request_id``, or reject it."""
    DRAIN = "drain"
    """The pod is going away: take no new sessions, finish the live ones before the deadline."""
    REGISTRY_LOST = "registry_lost"
    """No heartbeat reached the registry for longer than its TTL: the node's sessions expired
    there, the operator marked their objects Lost and may have started replacements. Unless
    the app knows better, it ends these calls (a session that comes back is closed under the
    default ``lostPolicy: Close``)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event; ``id`` is None for snapshot events (they restate state, not history)."""

    type: EventType
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON object sent as SSE ``data``: the type is repeated for readers that ignore ``event:``."""
        return {"type": self.type.value, **self.data}


def first_event_id() -> int:
    """The first id of this process: start time in microseconds (see the module docstring)."""
    return time.time_ns() // 1000


class EventLog:
    """Append-only log of the last ``capacity`` events, with waiting readers.

    ``snapshot`` is called when a reader cannot be served from the buffer; it returns the
    events that restate the current state.
    """

    def __init__(
        self,
        *,
        capacity: int,
        snapshot: Callable[[], list[Event]],
        first_id: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._buffer: deque[Event] = deque(maxlen=capacity)
        self._snapshot = snapshot
        self._first_id = first_event_id() if first_id is None else first_id
        self._head = self._first_id - 1
        self._changed = asyncio.Event()
        self._closed = False
        self._consumers = 0
        self._consumers_changed: list[Callable[[int], None]] = []
        self.appended = 0

    @property
    def head(self) -> int:
        """The id of the last event appended (``first_id - 1`` when none was)."""
        return self._head

    @property
    def first_id(self) -> int:
        return self._first_id

    @property
    def consumers(self) -> int:
        """Readers connected right now."""
        return self._consumers

    @property
    def closed(self) -> bool:
        return self._closed

    def on_consumers_changed(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(count)`` whenever a reader connects or leaves."""
        self._consumers_changed.append(callback)

    def append(self, type: EventType, data: dict[str, Any]) -> Event:
        """Add an event and wake every reader."""
        self._head += 1
        event = Event(type=type, data=data, id=self._head)
        self._buffer.append(event)
        self.appended += 1
        self._wake()
        return event

    def close(self) -> None:
        """End every reader's iteration (the sidecar is shutting down)."""
        self._closed = True
        self._wake()

    def replay_after(self, last_id: int) -> list[Event] | None:
        """Events after ``last_id`` from the buffer; None when the buffer cannot cover the gap."""
        if last_id == self._head:
            return []
        if not self._first_id - 1 <= last_id < self._head:
            return None  # another process's id, or one from the future
        oldest = self._buffer[0].id if self._buffer else self._head + 1
        assert oldest is not None
        if last_id < oldest - 1:
            return None  # fell out of the buffer
        return [e for e in self._buffer if e.id is not None and e.id > last_id]

    async def follow(self, last_event_id: str | None) -> AsyncGenerator[Event, None]:
        """Yield what the reader missed (or a snapshot), then every new event until :meth:`close`
        (events appended before it are still delivered).

        Counts the reader as a consumer while the iterator is open.
        """
        self._set_consumers(self._consumers + 1)
        try:
            cursor = self._head  # no await until the backlog is taken: it ends exactly here
            backlog = self._resume(last_event_id)
            if backlog is None:
                backlog = self._snapshot()
            for event in backlog:
                yield event
            while True:
                changed = self._changed
                if cursor == self._head:
                    if self._closed:  # after the last event: a closing stream still delivers
                        return
                    await changed.wait()
                    continue
                missed = self.replay_after(cursor)
                if missed is None:  # this reader fell behind by more than the buffer
                    missed = self._snapshot()
                    cursor = self._head
                for event in missed:
                    if event.id is not None:
                        cursor = event.id
                    yield event
        finally:
            self._set_consumers(self._consumers - 1)

    def _resume(self, last_event_id: str | None) -> list[Event] | None:
        if last_event_id is None or not last_event_id.strip():
            return None
        try:
            last_id = int(last_event_id)
        except ValueError:
            return None
        return self.replay_after(last_id)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _set_consumers(self, count: int) -> None:
        self._consumers = count
        for callback in self._consumers_changed:
            callback(count)
