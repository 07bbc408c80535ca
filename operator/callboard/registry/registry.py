"""SessionRegistry: the cluster-wide view of agent sessions, shared through a store.

Each node (agent server process or sidecar) owns one registry. It writes the sessions it
runs, refreshes them and its node record in one batch heartbeat, and answers questions
about sessions anywhere in the cluster. The class is assembled from one module per
protocol, so a change to one protocol is made in one file:

- :mod:`~callboard.registry.records`: session and node records, heartbeat, reads;
- :mod:`~callboard.registry.push`: close requests and the push streams;
- :mod:`~callboard.registry.start_requests`: start requests and their answers;
- :mod:`~callboard.registry.fencing`: the operator leader's fence (G8);
- :mod:`~callboard.registry.foreign`: the scan that indexes Vision Agents nodes' sessions;
- :mod:`~callboard.registry.drain_marks`: the operator's marks on nodes it is about to remove.

This module holds only the lifecycle (start, stop) that wires them together.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

from callboard._aio import guarded_task, stop_tasks
from callboard.errors import ConfigurationError, StoreError
from callboard.registry import _keys as k
from callboard.registry._core import generate_node_id
from callboard.registry.drain_marks import DrainMarks
from callboard.registry.fencing import Fencing
from callboard.registry.foreign import ForeignScan
from callboard.registry.index import KVSessionIndex
from callboard.registry.models import FleetMode
from callboard.registry.push import CloseRequest, EventStream, PushStreams
from callboard.registry.records import SessionRecords
from callboard.registry.start_requests import StartRequests
from callboard.registry.store import PubSubSupport, SessionKVStore

__all__ = ["CloseRequest", "EventStream", "SessionRegistry", "generate_node_id"]

logger = logging.getLogger(__name__)

#: Bound on the final deregistration at stop, seconds: never block a shutdown on Redis.
STOP_TIMEOUT = 2.0


class SessionRegistry(SessionRecords, PushStreams, StartRequests, Fencing, ForeignScan, DrainMarks):
    """Registration, heartbeat, cross-node close and expiry of agent sessions.

    ``store`` defaults to a fresh :class:`InMemorySessionKVStore` (one process);
    ``node_id`` to :func:`generate_node_id`; ``ttl`` is the lifetime in seconds of every
    record not refreshed by a heartbeat (so heartbeats must come well within it).
    ``fleet`` (:class:`~callboard.registry.FleetMode`) says who writes sessions: per-call
    reads and limits find sessions of Vision Agents nodes with their own Redis client only
    by scanning the call's keys (O(key space), as Vision Agents does). ``"auto"`` scans
    unless the cluster's one foreign scan found no such session; ``"callboard_only"``
    never scans; ``"mixed"`` always does (see the README's mixed-fleet section).
    ``foreign_scan_interval`` paces that foreign scan (run by one node of the cluster, the
    lease holder, in auto mode only); None runs none.
    """

    def __init__(
        self,
        store: SessionKVStore | None = None,
        *,
        node_id: str | None = None,
        ttl: float = 30.0,
        foreign_scan_interval: float | None = 60.0,
        fleet: FleetMode | str = FleetMode.AUTO,
    ) -> None:
        super().__init__(store, node_id=node_id, ttl=ttl, foreign_scan_interval=foreign_scan_interval)
        try:
            self.fleet = FleetMode(fleet)
        except ValueError:
            modes = ", ".join(m.value for m in FleetMode)
            raise ConfigurationError(f"fleet must be one of {modes}, got {fleet!r}") from None

    async def start(self) -> None:
        """Start the store, publish the node record and listen for pushed close requests.

        Raises :class:`~callboard.errors.StoreUnavailableError` if the store is unreachable
        and :class:`~callboard.errors.NodeIdInUseError` if another live process heartbeats
        under this node id (a record left by a process that died only delays the start,
        by at most one TTL, until it expires).
        """
        if self._running:
            return
        await self._store.start()
        await self._store.check_ttl(self.ttl)
        try:
            await self._claim_node_id()
        except BaseException:
            await self._store.close()
            raise
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
        if (
            self.foreign_scan_interval is not None
            and self.fleet is FleetMode.AUTO
            and not isinstance(self._index, KVSessionIndex)
        ):
            self._tasks.append(
                guarded_task(
                    self._scan_foreign(self.foreign_scan_interval), name="foreign-scan", logger=logger
                )
            )

    async def stop(self) -> None:
        """Stop background work, remove this node's record (bounded wait), close the store.

        Nothing of this registry touches the store once it is closed: a final delete still
        running at its bound (a primary that pauses writes in a failover, READONLY retries)
        is cancelled and awaited first, and a background task that outlived its bound gets
        one more bound before the close. Left running, either reconnected to a closed pool
        and left its socket to the garbage collector. A cancelled ``stop`` still finishes the
        bounded delete and closes the store before the cancellation goes on.
        """
        if not self._running:
            return
        self._running = False
        tasks = [*self._tasks, *self._resyncs]
        try:
            await stop_tasks(tasks, timeout=STOP_TIMEOUT, logger=logger)
            self._tasks.clear()
            await self._deregister()
            # A cancelled listener still closing its subscription (a reconnect on a loaded
            # machine) holds pooled connections: closing the store under it let it reconnect
            # them afterwards, open (issue 11). It gets one more bound, then the store closes.
            if running := [t for t in tasks if not t.done()]:
                await asyncio.wait(running, timeout=STOP_TIMEOUT)
        finally:
            await self._store.close()

    async def _deregister(self) -> None:
        """Delete this node's record within STOP_TIMEOUT; the delete never outlives the call.

        Shielded: a cancellation of ``stop`` waits for the delete (within the same bound)
        and is raised after it.
        """
        loop = asyncio.get_running_loop()
        delete = loop.create_task(self._store.delete([k.node_key(self._node_id)]), name="deregister")
        deadline = loop.time() + STOP_TIMEOUT
        cancelled = False
        try:
            while not delete.done() and (left := deadline - loop.time()) > 0:
                try:
                    await asyncio.wait([delete], timeout=left)
                except asyncio.CancelledError:
                    cancelled = True
        finally:
            if not delete.done():
                delete.cancel()
                await asyncio.wait([delete])
        if delete.cancelled():
            logger.warning(
                "could not remove node record of %s at stop within %.1fs", self._node_id, STOP_TIMEOUT
            )
        elif isinstance(exc := delete.exception(), StoreError):
            logger.warning("could not remove node record of %s at stop: %s", self._node_id, exc)
        elif exc is not None:
            raise exc
        if cancelled:
            raise asyncio.CancelledError

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
