"""Close requests and the push streams that deliver notices to this node.

A close request for another node's session writes the documented flag (pollers and Vision
Agents nodes see it) and pushes a notice that the owner's registry delivers at once through
:meth:`PushStreams.close_requests`. The listener resubscribes with backoff after a store
failure and then polls what it may have missed, so delivery is at least once. A store
that reconnects by itself without an error (redis-py does, inside ``get_message``) reports
it through :meth:`Subscription.on_reconnect`, and the listener polls at once then too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Generic, NamedTuple, Self, TypeVar

from callboard.errors import StoreError
from callboard.registry import _keys as k
from callboard.registry._core import RegistryCore
from callboard.registry.ids import validate_id
from callboard.registry.index import flag_token, is_fenced, parse_close_notice
from callboard.registry.store import PubSubSupport, SessionKVStore

__all__ = ["RESUBSCRIBE_BASE", "RESUBSCRIBE_CAP", "CloseRequest", "EventStream", "PushStreams"]

T = TypeVar("T")

#: Backoff of the push listener after a store failure, seconds (doubles up to the cap).
RESUBSCRIBE_BASE = 0.1
RESUBSCRIBE_CAP = 5.0


class CloseRequest(NamedTuple):
    """A request to close one session of this node."""

    call_id: str
    session_id: str


class EventStream(Generic[T]):
    """Events for this node (close or start requests), from the moment it was opened.

    Iterate it (``async for event in stream``) or await :meth:`get`; close it with
    :meth:`aclose` or use it as an async context manager. Events arrive by push, at least
    once (a reconnect re-delivers what was pending), so consumers must be idempotent.
    """

    def __init__(self, streams: set[EventStream[T]]) -> None:
        self._streams = streams
        self._queue: asyncio.Queue[T] = asyncio.Queue()
        streams.add(self)

    def _put(self, event: T) -> None:
        self._queue.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        return await self._queue.get()

    async def get(self) -> T:
        """Wait for the next event."""
        return await self._queue.get()

    def pending(self) -> int:
        """Events received and not yet consumed."""
        return self._queue.qsize()

    async def aclose(self) -> None:
        self._streams.discard(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class PushStreams(RegistryCore):
    """Cross-node close requests, their push stream and the resubscribing listener."""

    def __init__(
        self,
        store: SessionKVStore | None = None,
        *,
        node_id: str | None = None,
        ttl: float = 30.0,
        foreign_scan_interval: float | None = 60.0,
    ) -> None:
        super().__init__(store, node_id=node_id, ttl=ttl, foreign_scan_interval=foreign_scan_interval)
        self._close_streams: set[EventStream[CloseRequest]] = set()
        self._resyncs: set[asyncio.Task[None]] = set()

    async def request_close(self, call_id: str, session_id: str, *, fencing_token: int | None = None) -> None:
        """Ask the session's owner to close it; a session of this node is signalled locally.

        ``fencing_token`` is the operator leader's term (see :mod:`callboard.registry.fencing`):
        below the registry's fence the close is neither written nor pushed and
        :class:`~callboard.errors.DeposedLeaderError` says so. None: never refused for that.
        """
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        if (call_id, session_id) in self._local:
            self._local_close.add((call_id, session_id))
            self._dispatch(CloseRequest(call_id, session_id))
            return
        await self._index.request_close(call_id, session_id, self._ttl, token=fencing_token)

    async def get_close_requests(self, sessions: Mapping[str, str]) -> list[str]:
        """Of ``{session_id: call_id}``, the session ids with a pending close request.

        A flag whose fencing token is below the fence (written by a leader deposed since)
        does not count: the current leader asks again for what it still wants closed.
        """
        items = list(sessions.items())
        if not items:
            return []
        *flags, raw_fence = await self._store.mget([*(k.close_key(c, s) for s, c in items), k.FENCE_KEY])
        fence = flag_token(raw_fence)
        return [
            s
            for (s, c), flag in zip(items, flags, strict=True)
            if (flag is not None and not is_fenced(flag_token(flag), fence)) or (c, s) in self._local_close
        ]

    def close_requests(self) -> EventStream[CloseRequest]:
        """Open a stream of close requests for this node's sessions (pushed)."""
        return EventStream(self._close_streams)

    def _dispatch(self, request: CloseRequest) -> None:
        for stream in list(self._close_streams):
            stream._put(request)

    def _on_close_notice(self, message: bytes) -> None:
        parsed = parse_close_notice(message)
        if parsed is not None and parsed in self._local:
            self._dispatch(CloseRequest(*parsed))

    async def _poll_missed_closes(self) -> None:
        """After a reconnect, deliver close flags set while notices could not arrive."""
        pending = await self.get_close_requests({s: c for c, s in self._local})
        for session_id in pending:
            for call_id, sid in list(self._local):
                if sid == session_id:
                    self._dispatch(CloseRequest(call_id, sid))

    def _resync_soon(self, channel: str, resync: Callable[[], Awaitable[None]]) -> None:
        """The store reconnected ``channel`` by itself: re-read what was missed, at once.

        Not once ``stop`` has begun: a listener it cancels may reconnect on the way out
        (redis-py calls this from its reconnect), after ``stop`` took its list of tasks. Such
        a re-read ran beside the final delete and the store's close, reconnected the closed
        pools and left their sockets to the garbage collector (issue 11).
        """
        if not self._running:
            return

        async def run() -> None:
            try:
                await resync()
            except StoreError as exc:
                self._log_store_failure(f"re-read after reconnect of {channel}", exc)

        task = asyncio.get_running_loop().create_task(run(), name=f"resync:{channel}")
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _listen(
        self,
        store: PubSubSupport,
        channel: str,
        handler: Callable[[bytes], None],
        resync: Callable[[], Awaitable[None]],
        ready: asyncio.Event,
    ) -> None:
        """Deliver pushed notices; resubscribe with backoff after a store failure."""
        delay = RESUBSCRIBE_BASE
        resubscribed = False
        while True:
            try:
                subscription = await store.subscribe(channel)
            except StoreError as exc:
                _stop_if_cancelled(exc)
                self._log_store_failure(f"subscribe {channel}", exc)
                ready.set()  # start() must not hang on an outage
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUBSCRIBE_CAP)
                resubscribed = True
                continue
            ready.set()
            subscription.on_reconnect(lambda: self._resync_soon(channel, resync))
            try:
                if resubscribed:
                    await resync()
                delay = RESUBSCRIBE_BASE
                self._throttle.reset(f"subscribe {channel}")
                async for message in subscription:
                    handler(message)
            except StoreError as exc:
                _stop_if_cancelled(exc)
                self._log_store_failure(f"listen {channel}", exc)
                resubscribed = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUBSCRIBE_CAP)
            finally:
                await subscription.aclose()


def _stop_if_cancelled(exc: StoreError) -> None:
    """Re-raise the cancellation a client library turned into a connection error.

    redis-py can answer a cancelled read or reconnect with ``ConnectionError`` (a store
    error here) instead of ``CancelledError``: the listener would then back off and
    resubscribe for ever, and ``stop()``, or the event loop's own shutdown, wait on it for
    good (a failover test's teardown hung so). The task still counts the request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc
