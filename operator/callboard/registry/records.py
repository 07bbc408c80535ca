"""Session and node records, and the heartbeat that keeps them alive.

Sessions are written by the node that runs them (:meth:`SessionRecords.register`), renewed
in one batch with the node record (:meth:`SessionRecords.heartbeat`, which also writes back
what the store lost) and removed with a tombstone that says why
(:meth:`SessionRecords.remove`). Reads answer for the whole cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Final

from callboard.errors import ConfigurationError, NodeIdInUseError
from callboard.registry import _keys as k
from callboard.registry import paging
from callboard.registry._core import RegistryCore
from callboard.registry.bounds import MAX_METRICS_BYTES, check_json_object, check_timestamp
from callboard.registry.ids import validate_id
from callboard.registry.models import EndedInfo, NodeInfo, SessionInfo, SessionStatus, decode_or_none
from callboard.registry.paging import MAX_PAGE_SIZE, SessionPage
from callboard.registry.store import PubSubSupport

__all__ = ["UNSET", "SessionRecords"]

logger = logging.getLogger("callboard.registry.registry")


class _Unset:
    """The type of :data:`UNSET`: "leave this field as it is"."""

    def __repr__(self) -> str:
        return "UNSET"


#: Default of :meth:`SessionRecords.set_node_info`'s fields: "not given", unlike None.
UNSET: Final = _Unset()


class SessionRecords(RegistryCore):
    """Registration, heartbeat and reads of session and node records."""

    @property
    def node(self) -> NodeInfo:
        """This node's record as the next heartbeat will write it."""
        return replace(self._node, active=len(self._local))

    @property
    def local_sessions(self) -> list[SessionInfo]:
        """Sessions registered by this registry and not yet removed."""
        return list(self._local.values())

    async def register(
        self,
        call_id: str,
        session_id: str,
        *,
        max_sessions_per_call: int | None = None,
        started_at: float | None = None,
        metrics: Mapping[str, Any] | None = None,
        new: bool = True,
    ) -> SessionInfo:
        """Record a new session of this node.

        With ``max_sessions_per_call``, refuse with
        :class:`~callboard.errors.MaxSessionsPerCallExceeded` if the call already has that
        many sessions on any node (atomic in Redis, best effort on a plain store).
        Refuse with :class:`~callboard.errors.SessionConflictError` when another node's live
        record holds the session (this node's own record is rewritten: a restore).
        ``started_at`` and ``metrics`` restore a session this node already ran (e.g. after
        a restart of the process that owns the registry), in the same single write; out of
        bounds (see :mod:`~callboard.registry.bounds`) they raise
        :class:`~callboard.errors.InvalidValueError` and nothing is written.
        A ``new`` session (not a restore, ``new=False``) is refused with
        :class:`~callboard.errors.NodeDrainingError` while the operator's drain mark on this
        node lives (see :mod:`~callboard.registry.drain_marks`; atomic with the write in Redis).
        """
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        if max_sessions_per_call is not None and max_sessions_per_call < 1:
            raise ConfigurationError("max_sessions_per_call must be >= 1")
        info = SessionInfo(
            session_id=session_id,
            call_id=call_id,
            node_id=self._node_id,
            started_at=time.time() if started_at is None else check_timestamp(started_at, "started_at"),
            metrics={} if metrics is None else check_json_object(metrics, "metrics", MAX_METRICS_BYTES),
            metrics_updated_at=None if metrics is None else time.time(),
        )
        await self._index.register(
            info, self._ttl, max_sessions_per_call=max_sessions_per_call, exact=self._exact, admit=new
        )
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
        """Replace the metrics of a session, only if the session still exists.

        Metrics that are not plain, finite JSON within :data:`~callboard.registry.bounds.MAX_METRICS_BYTES`
        raise :class:`~callboard.errors.InvalidValueError` and change nothing, so one bad
        value can never stop the heartbeat that writes the session back.
        """
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        checked = check_json_object(metrics, "metrics", MAX_METRICS_BYTES)
        info = self._local.get((call_id, session_id))
        if info is None:
            info = await self.get(call_id, session_id)
            if info is None:
                return
        info.metrics = checked
        info.metrics_updated_at = time.time()
        await self._store.set(
            k.session_key(call_id, session_id), info.to_json(), self._ttl, only_if_exists=True
        )

    async def get(self, call_id: str, session_id: str) -> SessionInfo | None:
        """A session anywhere in the cluster, or None (also when its record is malformed)."""
        validate_id(call_id, "call_id")
        validate_id(session_id, "session_id")
        raw = await self._store.get(k.session_key(call_id, session_id))
        return decode_or_none(SessionInfo.from_json, raw, on_error=self._warn_malformed("session"))

    async def get_for_call(self, call_id: str) -> list[SessionInfo]:
        """Every session of one call, on every node (documented-layout nodes' too, see README)."""
        validate_id(call_id, "call_id")
        return self._decode_sessions(await self._index.sessions_for_call(call_id, exact=self._exact))

    def set_node_info(
        self,
        *,
        address: str | _Unset | None = UNSET,
        capacity: int | _Unset | None = UNSET,
        pool: str | _Unset | None = UNSET,
        pod_name: str | _Unset | None = UNSET,
        namespace: str | _Unset | None = UNSET,
        version: str | _Unset | None = UNSET,
    ) -> None:
        """Describe this node in its record (published with the next heartbeat).

        Only the fields given change (None clears one), so two writers of the record (the
        CLI its address, a launcher its capacity) never undo each other.
        """
        if isinstance(capacity, int) and capacity < 0:
            raise ConfigurationError("capacity must be >= 0")
        given = {
            "address": address,
            "capacity": capacity,
            "pool": pool,
            "pod_name": pod_name,
            "namespace": namespace,
            "version": version,
        }
        changes: dict[str, Any] = {f: v for f, v in given.items() if not isinstance(v, _Unset)}
        self._node = replace(self._node, **changes)

    async def set_draining(self, draining: bool = True) -> None:
        """Mark this node draining (takes no new sessions) and publish it at once."""
        self._node = replace(self._node, draining=draining)
        await self.heartbeat()

    async def heartbeat(self) -> int:
        """Refresh this node's record and all its sessions in O(1) round trips.

        Upserts: a session this node still runs that the store lost (restart, flush, an
        outage longer than the TTL) is written back; one removed while the heartbeat was on
        its way is not, nor anything over a tombstone (G2). Returns how many were written back.
        """
        node = replace(self._node, active=len(self._local), heartbeat_at=time.time())
        restored = await self._index.heartbeat(
            node,
            list(self._local.values()),
            self._ttl,
            still_local=lambda s: self._local.get((s.call_id, s.session_id)) is s,
            digest=self._local.digest,
        )
        self._node = replace(self._node, heartbeat_at=node.heartbeat_at)
        if restored:
            logger.warning(
                "heartbeat of %s wrote back %d sessions the store had lost", self._node_id, restored
            )
        return restored

    async def _claim_node_id(self) -> None:
        """Make sure no other live process runs under this node id (G11).

        At start this process has written nothing yet, so a node record already there is
        another process's: a live duplicate (two pods given one id, a process started
        twice) or one that died. A running registry listens on its close channel, and a
        dead process's subscription went with its connection: with push, a listener means
        :class:`~callboard.errors.NodeIdInUseError` and none means the id is free, at once.
        (A process cut off by a partition keeps its subscription until Redis drops the
        connection, but not its record, which expires within one TTL.) Without push,
        watch the record for up to one TTL: refreshed means live; gone means free.
        """
        first = await self.get_node(self._node_id)
        if first is None:
            return
        if isinstance(self._store, PubSubSupport):
            listeners = await self._store.subscribers(k.close_channel(self._node_id))
            if listeners == 0:
                return
            if listeners is not None:
                raise NodeIdInUseError(
                    f"node id {self._node_id!r} is in use: another running registry listens under it "
                    f"(node record started at {first.started_at:.0f}); give every process its own id"
                )
        deadline = time.monotonic() + self._ttl
        # Ten looks per TTL: a live owner (heartbeating every TTL/3 or faster) is seen
        # refreshing within about a third of the TTL.
        interval = min(self._ttl / 10, 1.0)
        logger.warning(
            "node record of %s exists before this process wrote one; waiting up to %.0fs to see "
            "whether another live process uses this node id",
            self._node_id,
            self._ttl,
        )
        while time.monotonic() < deadline:
            await asyncio.sleep(interval)
            current = await self.get_node(self._node_id)
            if current is None:
                return
            if current.heartbeat_at != first.heartbeat_at or current.started_at != first.started_at:
                raise NodeIdInUseError(
                    f"node id {self._node_id!r} is in use: another live process refreshes its node "
                    f"record (started at {current.started_at:.0f}); give every process its own id"
                )

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

    async def list_sessions_page(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        node_id: str | None = None,
        call_id: str | None = None,
    ) -> SessionPage:
        """One page of :meth:`list_sessions`, at a cost bounded by ``limit``, not the cluster.

        Start without ``cursor``; pass each page's ``next_cursor`` until it is None. The
        order (node id, then call and session id), what paging through yields while sessions
        come and go, and the cursor's format are in :mod:`~callboard.registry.paging`. With
        ``call_id`` a page reads that call's sessions (one call has few); a cursor that is
        not one of these pages' raises :class:`~callboard.errors.InvalidValueError`.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ConfigurationError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        after = paging.decode_cursor(cursor) if cursor is not None else None
        if node_id is not None:
            validate_id(node_id, "node_id")
        if call_id is not None:
            return self._call_page(await self.get_for_call(call_id), after, limit, node_id)
        if after is None or after.scan is None:
            raws, resume = await self._index.sessions_page(after, limit, node_id=node_id)
            sessions = self._decode_sessions(raws)
            if resume is not None:
                return SessionPage(sessions, paging.encode_cursor(resume))
            if node_id is not None:
                return SessionPage(sessions, None)
            if len(sessions) >= limit:  # the unindexed phase starts on the next page
                return SessionPage(sessions, paging.encode_cursor(paging.PagePosition(scan=0)))
            after, room = paging.PagePosition(scan=0), limit - len(sessions)
        else:
            sessions, room = [], limit
        raws, position = await self._index.foreign_page(after, room, exact=self._exact)
        sessions += self._decode_sessions(raws)
        return SessionPage(sessions, paging.encode_cursor(position) if position else None)

    @staticmethod
    def _call_page(
        sessions: list[SessionInfo], after: paging.PagePosition | None, limit: int, node_id: str | None
    ) -> SessionPage:
        places = sorted(
            ((s.node_id, paging.member(s)), s) for s in sessions if node_id is None or s.node_id == node_id
        )
        if after is not None:
            start = (after.node, after.member or "\U0010ffff")
            places = [(place, s) for place, s in places if place > start]
        page = places[:limit]
        resume = paging.PagePosition(*page[-1][0]) if len(places) > limit else None
        return SessionPage([s for _, s in page], paging.encode_cursor(resume) if resume else None)

    async def list_live(self, *, full: bool = False) -> tuple[list[NodeInfo], list[SessionInfo]]:
        """Every live node and session of the cluster, at O(nodes + changed nodes' sessions)
        when it can.

        Through the node-id and per-node indexes (one script, no SCAN) while they can be
        trusted to name everything (see :meth:`SessionIndex.live_indexed`); else, and with
        ``full``, as :meth:`list_nodes` and :meth:`list_sessions` do, by scanning the key
        space. The sessions of a node whose version did not move since the last call are
        this registry's decoded copy (the same objects), so a quiet cluster costs two GETs
        per node and no decoding; while no node changed, the session list is the very list
        of the last call (callers must not modify it, and may compare it by identity). A
        record read again unchanged (a changed node's other sessions, a full scan) is not
        decoded again: it is the same object too.
        Sessions no node index names (a write that lost its index entry) show up again
        with their node's next heartbeat (G3); callers that must not miss one scan now and
        then (the operator's sync does, every ``FULL_READ_INTERVAL``, with ``full``).
        """
        copy = self._live_copy
        indexed = None
        if not full:
            indexed = await self._index.live_indexed(
                exact=self._exact,
                known={node_id: version for node_id, (version, _) in copy.items() if version},
            )
        if indexed is None:
            nodes, raws = await asyncio.gather(self.list_nodes(), self._read_prefix(k.SESSIONS_PREFIX))
            known: dict[bytes, SessionInfo] = {}
            for _, part in copy.values():
                known.update(part)
            if not full:
                copy.clear()
                self._live_sessions = None
            return nodes, list(self._decode_reusing(raws, known).values())
        warn = self._warn_malformed("node")
        decoded = (decode_or_none(NodeInfo.from_json, raw, on_error=warn) for raw in indexed.nodes)
        fresh = {node_id: copy[node_id] for node_id in indexed.unchanged if node_id in copy}
        for node_id, (version, raws) in indexed.changed.items():
            fresh[node_id] = (version, self._decode_reusing(raws, copy.get(node_id, (b"", {}))[1]))
        live = [n for n in decoded if n is not None]
        if not indexed.changed and fresh.keys() == copy.keys() and self._live_sessions is not None:
            return live, self._live_sessions  # the same list: nothing changed since the last read
        self._live_copy = fresh
        self._live_sessions = [s for _, part in fresh.values() for s in part.values()]
        return live, self._live_sessions

    def _decode_reusing(
        self, raws: Iterable[bytes], known: Mapping[bytes, SessionInfo]
    ) -> dict[bytes, SessionInfo]:
        """Decoded records by their raw bytes; a record in ``known`` is that object again."""
        warn = self._warn_malformed("session")
        out: dict[bytes, SessionInfo] = {}
        for raw in raws:
            session = known.get(raw)
            if session is None:
                session = decode_or_none(SessionInfo.from_json, raw, on_error=warn)
                if session is None:
                    continue
            out[raw] = session
        return out

    async def list_nodes(self) -> list[NodeInfo]:
        """Every node with a live record (heartbeat within the TTL)."""
        warn = self._warn_malformed("node")
        decoded = (
            decode_or_none(NodeInfo.from_json, raw, on_error=warn)
            for raw in await self._read_prefix(k.NODES_PREFIX)
        )
        return [n for n in decoded if n is not None]

    async def get_node(self, node_id: str) -> NodeInfo | None:
        """A node's live record, or None (also when it is malformed)."""
        validate_id(node_id, "node_id")
        raw = await self._store.get(k.node_key(node_id))
        return decode_or_none(NodeInfo.from_json, raw, on_error=self._warn_malformed("node"))

    async def session_status(
        self, call_id: str, session_id: str, node_id: str | None = None
    ) -> SessionStatus:
        """Tell a live session from one that ended and one that was lost with its node.

        ``node_id`` is the node the session was last seen on (the caller remembers it).
        Only a tombstone means ENDED (G4): with no record, no tombstone and the node alive
        (the gap after a flush, a failover or an eviction, before the node's next heartbeat
        writes the record back) the answer is UNKNOWN; LOST needs the node record gone too.
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
        if node_id is None or values[2] is not None:
            return SessionStatus.UNKNOWN
        return SessionStatus.LOST

    async def get_ended(self, call_id: str, session_id: str) -> EndedInfo | None:
        """The tombstone of a session that ended recently (why and when), if any."""
        return decode_or_none(EndedInfo.from_json, await self._store.get(k.ended_key(call_id, session_id)))

    def _decode_sessions(self, raws: Iterable[bytes]) -> list[SessionInfo]:
        warn = self._warn_malformed("session")
        decoded = (decode_or_none(SessionInfo.from_json, raw, on_error=warn) for raw in raws)
        return [s for s in decoded if s is not None]
