"""SessionRegistry: the cluster-wide view of agent sessions, shared through a store.

Each node (agent server process or sidecar) owns one registry. It writes the sessions it
runs, refreshes them and its node record in one batch heartbeat, and answers questions
about sessions anywhere in the cluster. A close request for another node's session writes
the documented flag (pollers and Vision Agents nodes see it) and pushes a notice that the
owner's registry delivers at once through :meth:`SessionRegistry.close_requests`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Generic, NamedTuple, Self, TypeVar

from callboard._aio import LogThrottle, guarded_task, stop_tasks
from callboard.errors import StoreError
from callboard.registry import keys as k
from callboard.registry.ids import validate_id
from callboard.registry.index import KVSessionIndex, SessionIndex, parse_close_notice
from callboard.registry.memory import InMemorySessionKVStore
from callboard.registry.models import (
    EndedInfo,
    NodeInfo,
    SessionInfo,
    SessionStatus,
    StartRequest,
    StartResult,
)
from callboard.registry.store import PubSubSupport, SessionIndexSupport, SessionKVStore

__all__ = ["CloseRequest", "EventStream", "SessionRegistry", "generate_node_id"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Keys read per MGET when listing the whole cluster: bounded replies, few round trips.
LIST_CHUNK = 1000
#: Backoff of the push listener after a store failure, seconds (doubles up to the cap).
RESUBSCRIBE_BASE = 0.1
RESUBSCRIBE_CAP = 5.0
#: Bound on the final deregistration at stop, seconds: never block a shutdown on Redis.
STOP_TIMEOUT = 2.0


def generate_node_id() -> str:
    """A readable unique node id: host name plus a random suffix."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
    host = host.strip("-.")[:48] or "node"
    return f"{host}-{uuid.uuid4().hex[:8]}"


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


class SessionRegistry:
    """Registration, heartbeat, cross-node close and expiry of agent sessions.

    ``store`` defaults to a fresh :class:`InMemorySessionKVStore` (one process);
    ``node_id`` to :func:`generate_node_id`; ``ttl`` is the lifetime in seconds of every
    record not refreshed by a heartbeat (so heartbeats must come well within it).
    ``foreign_scan_interval`` paces the scan that indexes sessions of nodes which do not
    keep indexes (Vision Agents nodes sharing the Redis); None turns it off.
    """

    def __init__(
        self,
        store: SessionKVStore | None = None,
        *,
        node_id: str | None = None,
        ttl: float = 30.0,
        foreign_scan_interval: float | None = 60.0,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        if foreign_scan_interval is not None and foreign_scan_interval <= 0:
            raise ValueError("foreign_scan_interval must be > 0 or None")
        self._store: SessionKVStore = store if store is not None else InMemorySessionKVStore()
        self._node_id = validate_id(node_id if node_id is not None else generate_node_id(), "node_id")
        self._ttl = ttl
        self.foreign_scan_interval = foreign_scan_interval
        self._index: SessionIndex = (
            self._store.session_index()
            if isinstance(self._store, SessionIndexSupport)
            else KVSessionIndex(self._store)
        )
        self._node = NodeInfo(node_id=self._node_id)
        self._local: dict[tuple[str, str], SessionInfo] = {}
        self._local_close: set[tuple[str, str]] = set()
        self._close_streams: set[EventStream[CloseRequest]] = set()
        self._start_streams: set[EventStream[StartRequest]] = set()
        self._seen_starts: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._throttle = LogThrottle()
        self._running = False

    # -- properties ---------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def store(self) -> SessionKVStore:
        return self._store

    @property
    def running(self) -> bool:
        return self._running

    @property
    def supports_push(self) -> bool:
        """Whether close requests reach this node by push (else only by polling)."""
        return isinstance(self._store, PubSubSupport)

    @property
    def node(self) -> NodeInfo:
        """This node's record as the next heartbeat will write it."""
        return replace(self._node, active=len(self._local))

    @property
    def local_sessions(self) -> list[SessionInfo]:
        """Sessions registered by this registry and not yet removed."""
        return list(self._local.values())

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the store, publish the node record and listen for pushed close requests.

        Raises :class:`~callboard.errors.StoreUnavailableError` if the store is unreachable.
        """
        if self._running:
            return
        await self._store.start()
        await self.heartbeat()
        self._running = True
        if isinstance(self._store, PubSubSupport):
            ready = [asyncio.Event(), asyncio.Event()]
            listeners = [
                (k.close_channel(self._node_id), self._on_close_notice, self._poll_missed_closes),
                (k.start_channel(self._node_id), self._on_start_notice, self._poll_missed_starts),
            ]
            for event, (channel, handler, resync) in zip(ready, listeners, strict=True):
                self._tasks.append(
                    guarded_task(
                        self._listen(self._store, channel, handler, resync, event),
                        name=f"listener:{channel}",
                        logger=logger,
                    )
                )
            await asyncio.gather(*(event.wait() for event in ready))
        if self.foreign_scan_interval is not None and not isinstance(self._index, KVSessionIndex):
            self._tasks.append(
                guarded_task(
                    self._scan_foreign(self.foreign_scan_interval), name="foreign-scan", logger=logger
                )
            )

    async def stop(self) -> None:
        """Stop background work, remove this node's record (bounded wait), close the store."""
        if not self._running:
            return
        self._running = False
        await stop_tasks(self._tasks, timeout=STOP_TIMEOUT, logger=logger)
        self._tasks.clear()
        try:
            await asyncio.wait_for(
                asyncio.shield(self._store.delete([k.node_key(self._node_id)])), STOP_TIMEOUT
            )
        except (TimeoutError, StoreError) as exc:
            logger.warning("could not remove node record of %s at stop: %s", self._node_id, exc)
        await self._store.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- documented API ---------------------------------------------------------------

    async def register(
        self,
        call_id: str,
        session_id: str,
        *,
        max_sessions_per_call: int | None = None,
        started_at: float | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> SessionInfo:
        """Record a new session of this node.

        With ``max_sessions_per_call``, refuse with
        :class:`~callboard.errors.MaxSessionsPerCallExceeded` if the call already has that
        many sessions on any node (atomic in Redis, best effort on a plain store).
        ``started_at`` and ``metrics`` restore a session this node already ran (e.g. after
        a restart of the process that owns the registry).
        """
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        if max_sessions_per_call is not None and max_sessions_per_call < 1:
            raise ValueError("max_sessions_per_call must be >= 1")
        info = SessionInfo(
            session_id=session_id,
            call_id=call_id,
            node_id=self._node_id,
            started_at=time.time() if started_at is None else started_at,
            metrics=dict(metrics or {}),
            metrics_updated_at=None if metrics is None else time.time(),
        )
        await self._index.register(info, self._ttl, max_sessions_per_call=max_sessions_per_call)
        self._local[(call_id, session_id)] = info
        return info

    async def remove(self, call_id: str, session_id: str, *, reason: str = "closed") -> None:
        """Forget a session: its record and close flag go, a short tombstone says why."""
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        self._local.pop((call_id, session_id), None)
        self._local_close.discard((call_id, session_id))
        ended = EndedInfo(
            session_id=session_id,
            call_id=call_id,
            node_id=self._node_id,
            ended_at=time.time(),
            reason=reason,
        )
        await self._index.remove(call_id, session_id, ended)

    async def update_metrics(self, call_id: str, session_id: str, metrics: Mapping[str, Any]) -> None:
        """Replace the metrics of a session, only if the session still exists."""
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        info = self._local.get((call_id, session_id))
        if info is None:
            info = await self.get(call_id, session_id)
            if info is None:
                return
        info.metrics = dict(metrics)
        info.metrics_updated_at = time.time()
        await self._store.set(
            k.session_key(call_id, session_id), info.to_json(), self._ttl, only_if_exists=True
        )

    async def request_close(self, call_id: str, session_id: str) -> None:
        """Ask the session's owner to close it; a session of this node is signalled locally."""
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        if (call_id, session_id) in self._local:
            self._local_close.add((call_id, session_id))
            self._dispatch(CloseRequest(call_id, session_id))
            return
        await self._index.request_close(call_id, session_id, self._ttl)

    async def get_close_requests(self, sessions: Mapping[str, str]) -> list[str]:
        """Of ``{session_id: call_id}``, the session ids with a pending close request."""
        items = list(sessions.items())
        if not items:
            return []
        flags = await self._store.mget([k.close_key(c, s) for s, c in items])
        return [
            s
            for (s, c), flag in zip(items, flags, strict=True)
            if flag is not None or (c, s) in self._local_close
        ]

    async def get(self, call_id: str, session_id: str) -> SessionInfo | None:
        """A session anywhere in the cluster, or None (also when its record is malformed)."""
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        raw = await self._store.get(k.session_key(call_id, session_id))
        return None if raw is None else self._decode_session(raw)

    async def get_for_call(self, call_id: str) -> list[SessionInfo]:
        """Every session of one call, on every node."""
        validate_id(call_id, "call_id")
        return self._decode_sessions(await self._index.sessions_for_call(call_id))

    # -- beyond the documented API --------------------------------------------------------

    def set_node_info(
        self,
        *,
        address: str | None = None,
        capacity: int | None = None,
        pool: str | None = None,
        pod_name: str | None = None,
        namespace: str | None = None,
        version: str | None = None,
    ) -> None:
        """Describe this node in its record (published with the next heartbeat)."""
        if capacity is not None and capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._node = replace(
            self._node,
            address=address,
            capacity=capacity,
            pool=pool,
            pod_name=pod_name,
            namespace=namespace,
            version=version,
        )

    async def set_draining(self, draining: bool = True) -> None:
        """Mark this node draining (takes no new sessions) and publish it at once."""
        self._node = replace(self._node, draining=draining)
        await self.heartbeat()

    async def heartbeat(self) -> int:
        """Refresh this node's record and all its sessions in O(1) round trips.

        Upserts: a session this node still runs that the store lost (restart, flush, an
        outage longer than the TTL) is written back. Returns how many were written back.
        """
        node = replace(self._node, active=len(self._local), heartbeat_at=time.time())
        restored = await self._index.heartbeat(node, list(self._local.values()), self._ttl)
        self._node = replace(self._node, heartbeat_at=node.heartbeat_at)
        if restored:
            logger.warning(
                "heartbeat of %s wrote back %d sessions the store had lost", self._node_id, restored
            )
        return restored

    async def list_sessions(
        self, *, node_id: str | None = None, call_id: str | None = None
    ) -> list[SessionInfo]:
        """Sessions of the whole cluster, or of one node and/or one call."""
        if call_id is not None:
            sessions = await self.get_for_call(call_id)
        elif node_id is not None:
            validate_id(node_id, "node_id")
            sessions = self._decode_sessions(await self._index.sessions_for_node(node_id))
        else:
            sessions = self._decode_sessions(await self._read_prefix(k.SESSIONS_PREFIX))
        if node_id is not None:
            sessions = [s for s in sessions if s.node_id == node_id]
        return sessions

    async def list_nodes(self) -> list[NodeInfo]:
        """Every node with a live record (heartbeat within the TTL)."""
        nodes = []
        for raw in await self._read_prefix(k.NODES_PREFIX):
            try:
                nodes.append(NodeInfo.from_json(raw))
            except (TypeError, ValueError) as exc:
                logger.warning("skipping malformed node record: %s", exc)
        return nodes

    async def get_node(self, node_id: str) -> NodeInfo | None:
        validate_id(node_id, "node_id")
        raw = await self._store.get(k.node_key(node_id))
        if raw is None:
            return None
        try:
            return NodeInfo.from_json(raw)
        except (TypeError, ValueError) as exc:
            logger.warning("malformed node record %s: %s", node_id, exc)
            return None

    async def session_status(
        self, call_id: str, session_id: str, node_id: str | None = None
    ) -> SessionStatus:
        """Tell a live session from one that ended and one that was lost with its node.

        ``node_id`` is the node the session was last seen on (the caller remembers it).
        """
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        wanted = [k.session_key(call_id, session_id), k.ended_key(call_id, session_id)]
        if node_id is not None:
            wanted.append(k.node_key(validate_id(node_id, "node_id")))
        values = await self._store.mget(wanted)
        if values[0] is not None:
            return SessionStatus.LIVE
        if values[1] is not None:
            return SessionStatus.ENDED
        if node_id is None:
            return SessionStatus.UNKNOWN
        return SessionStatus.ENDED if values[2] is not None else SessionStatus.LOST

    async def get_ended(self, call_id: str, session_id: str) -> EndedInfo | None:
        """The tombstone of a session that ended recently (why and when), if any."""
        raw = await self._store.get(k.ended_key(call_id, session_id))
        if raw is None:
            return None
        try:
            return EndedInfo.from_json(raw)
        except (TypeError, ValueError):
            return None

    def close_requests(self) -> EventStream[CloseRequest]:
        """Open a stream of close requests for this node's sessions (pushed)."""
        return EventStream(self._close_streams)

    def start_requests(self) -> EventStream[StartRequest]:
        """Open a stream of start requests for this node (pushed).

        Requests sent before the stream was opened are in :meth:`pending_start_requests`.
        """
        return EventStream(self._start_streams)

    async def request_start(
        self,
        node_id: str,
        call_id: str,
        *,
        session_id: str | None = None,
        call_type: str = "default",
        params: Mapping[str, Any] | None = None,
    ) -> StartRequest:
        """Ask ``node_id`` to start a session for ``call_id``; follow it by its session id.

        The request waits in the store for ``ttl`` seconds (the node polls it after a
        reconnect) and is pushed at once when the store supports it.
        """
        request = StartRequest(
            request_id=uuid.uuid4().hex,
            node_id=validate_id(node_id, "node_id"),
            call_id=validate_id(call_id, "call_id"),
            session_id=validate_id(session_id or str(uuid.uuid4()), "session_id"),
            call_type=validate_id(call_type, "call_type"),
            params=dict(params or {}),
        )
        payload = request.to_json()
        await self._store.set(k.start_request_key(node_id, request.request_id), payload, self._ttl)
        if node_id == self._node_id:
            self._on_start_notice(payload)
        elif isinstance(self._store, PubSubSupport):
            await self._store.publish(k.start_channel(node_id), payload)
        return request

    async def pending_start_requests(self) -> list[StartRequest]:
        """Start requests for this node not answered yet (the polling fallback)."""
        requests = []
        for raw in await self._read_prefix(f"{k.START_REQUESTS_PREFIX}{self._node_id}/"):
            try:
                requests.append(StartRequest.from_json(raw))
            except (TypeError, ValueError) as exc:
                logger.warning("skipping malformed start request: %s", exc)
        return sorted(requests, key=lambda r: r.requested_at)

    async def answer_start(
        self, request: StartRequest, *, accepted: bool, reason: str | None = None
    ) -> StartResult:
        """Record this node's answer to ``request`` (register the session first to accept)."""
        result = StartResult(
            request_id=request.request_id,
            node_id=self._node_id,
            accepted=accepted,
            session_id=request.session_id if accepted else None,
            reason=reason,
        )
        await self._store.set(k.start_result_key(request.request_id), result.to_json(), k.ENDED_TTL)
        await self._store.delete([k.start_request_key(request.node_id, request.request_id)])
        return result

    async def get_start_result(self, request_id: str) -> StartResult | None:
        """The answer to a start request, once the node gave it."""
        raw = await self._store.get(k.start_result_key(validate_id(request_id, "request_id")))
        if raw is None:
            return None
        try:
            return StartResult.from_json(raw)
        except (TypeError, ValueError) as exc:
            logger.warning("malformed start result %s: %s", request_id, exc)
            return None

    async def index_foreign_sessions(self) -> int:
        """Index sessions of nodes that keep no indexes now (normally done periodically)."""
        return await self._index.index_foreign()

    # -- internals -------------------------------------------------------------------------

    def _dispatch(self, request: CloseRequest) -> None:
        for stream in list(self._close_streams):
            stream._put(request)

    def _on_close_notice(self, message: bytes) -> None:
        parsed = parse_close_notice(message)
        if parsed is not None and parsed in self._local:
            self._dispatch(CloseRequest(*parsed))

    def _on_start_notice(self, message: bytes) -> None:
        try:
            request = StartRequest.from_json(message)
        except (TypeError, ValueError) as exc:
            logger.warning("ignoring malformed start request notice: %s", exc)
            return
        now = time.monotonic()
        if request.node_id != self._node_id or request.request_id in self._seen_starts:
            return
        self._seen_starts = {r: t for r, t in self._seen_starts.items() if now - t < 2 * self._ttl}
        self._seen_starts[request.request_id] = now
        for stream in list(self._start_streams):
            stream._put(request)

    async def _read_prefix(self, prefix: str) -> list[bytes]:
        keys = await self._store.keys(prefix)
        values: list[bytes] = []
        for start in range(0, len(keys), LIST_CHUNK):
            chunk = await self._store.mget(keys[start : start + LIST_CHUNK])
            values.extend(v for v in chunk if v is not None)
        return values

    def _decode_session(self, raw: bytes) -> SessionInfo | None:
        try:
            return SessionInfo.from_json(raw)
        except (TypeError, ValueError) as exc:
            if (suppressed := self._throttle.allow("malformed-session")) is not None:
                logger.warning("skipping malformed session record (%s; %d more not shown)", exc, suppressed)
            return None

    def _decode_sessions(self, raws: Iterable[bytes]) -> list[SessionInfo]:
        return [s for s in map(self._decode_session, raws) if s is not None]

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
                self._log_store_failure(f"subscribe {channel}", exc)
                ready.set()  # start() must not hang on an outage
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUBSCRIBE_CAP)
                resubscribed = True
                continue
            ready.set()
            try:
                if resubscribed:
                    await resync()
                delay = RESUBSCRIBE_BASE
                self._throttle.reset(f"subscribe {channel}")
                async for message in subscription:
                    handler(message)
            except StoreError as exc:
                self._log_store_failure(f"listen {channel}", exc)
                resubscribed = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUBSCRIBE_CAP)
            finally:
                await subscription.aclose()

    async def _poll_missed_starts(self) -> None:
        for request in await self.pending_start_requests():
            self._on_start_notice(request.to_json())

    async def _poll_missed_closes(self) -> None:
        """After a reconnect, deliver close flags set while notices could not arrive."""
        pending = await self.get_close_requests({s: c for c, s in self._local})
        for session_id in pending:
            for call_id, sid in list(self._local):
                if sid == session_id:
                    self._dispatch(CloseRequest(call_id, sid))

    async def _scan_foreign(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self._index.index_foreign()
            except StoreError as exc:
                self._log_store_failure("foreign-scan", exc)

    def _log_store_failure(self, what: str, exc: Exception) -> None:
        if (suppressed := self._throttle.allow(what)) is not None:
            logger.warning(
                "registry %s: %s failed: %s (%d similar messages suppressed)",
                self._node_id,
                what,
                exc,
                suppressed,
            )
