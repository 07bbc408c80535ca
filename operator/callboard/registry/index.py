"""Multi-key registry operations, behind one small interface with two implementations.

The registry never issues one round trip per session. Each operation below is one call
into a :class:`SessionIndex`:

- :class:`KVSessionIndex` works on any :class:`SessionKVStore` with only the documented
  methods (``mset``, ``keys``, ``mget``...). Look-ups by call or node scan keys (so they
  are always exact); the per-call limit, the ownership check and the start-request claim
  are read then written, so none is atomic across processes (they are within one process
  on the in-memory store, whose operations never suspend), and the heartbeat's upsert
  drops sessions removed since its snapshot but cannot test tombstones in the same step.
- ``RedisSessionIndex`` (in :mod:`callboard.registry.backends.redis_index`) runs each operation as
  one Lua script next to the data, keeps per-call and per-node sets so look-ups never scan,
  and makes the per-call limit atomic.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from callboard.errors import MaxSessionsPerCallExceeded, SessionConflictError
from callboard.registry import _keys as k
from callboard.registry.models import EndedInfo, NodeInfo, SessionInfo, StartClaim, decode_or_none
from callboard.registry.store import PubSubSupport, SessionKVStore

__all__ = [
    "KVSessionIndex",
    "MembershipDigest",
    "SessionIndex",
    "close_notice",
    "conflict_error",
    "member_hash",
    "parse_close_notice",
]


def member_hash(call_id: str, session_id: str) -> tuple[int, int]:
    """The two 32-bit words of SHA-1("call_id/session_id") that the membership digest sums.

    ``heartbeat.lua`` computes the same with ``redis.sha1hex`` over the node's index set.
    """
    digest = hashlib.sha1(f"{call_id}/{session_id}".encode()).digest()  # a digest, not security
    return int.from_bytes(digest[:4], "big"), int.from_bytes(digest[4:8], "big")


class MembershipDigest:
    """An order-free digest of a set of sessions, kept up to date one member at a time.

    The cheap heartbeat compares it with the digest of the node's index set in Redis: a
    count alone passes when one member is missing and a stale one is in its place. Sums of
    32-bit words stay exact in Lua's doubles for up to 2**21 members per node.
    """

    __slots__ = ("_count", "_s1", "_s2")

    def __init__(self) -> None:
        self._count = self._s1 = self._s2 = 0

    def add(self, call_id: str, session_id: str) -> None:
        h1, h2 = member_hash(call_id, session_id)
        self._count += 1
        self._s1 += h1
        self._s2 += h2

    def discard(self, call_id: str, session_id: str) -> None:
        h1, h2 = member_hash(call_id, session_id)
        self._count -= 1
        self._s1 -= h1
        self._s2 -= h2

    def __str__(self) -> str:
        return f"{self._count}:{self._s1}:{self._s2}"


def conflict_error(call_id: str, session_id: str, owner: str) -> SessionConflictError:
    """The error for registering a session whose live record belongs to ``owner``."""
    return SessionConflictError(
        f"session {call_id}/{session_id} is registered by node {owner}, whose record is live: "
        "only its owner may write it (it is free again once removed or expired)"
    )


def close_notice(call_id: str, session_id: str) -> bytes:
    """The payload of a pushed close notice (ids never contain ``/``)."""
    return f"{call_id}/{session_id}".encode()


def parse_close_notice(message: bytes) -> tuple[str, str] | None:
    call_id, sep, session_id = message.decode(errors="replace").partition("/")
    return (call_id, session_id) if sep and call_id and session_id else None


class SessionIndex(ABC):
    """The registry's multi-key operations; each is O(1) round trips in a good backend."""

    @abstractmethod
    async def register(
        self,
        info: SessionInfo,
        ttl: float,
        *,
        max_sessions_per_call: int | None = None,
        exact: bool | None = None,
    ) -> None:
        """Write the session record (and indexes).

        ``MaxSessionsPerCallExceeded`` if the call is full (``exact``: count the call's
        records by their keys too, see :meth:`sessions_for_call`); ``SessionConflictError``
        if another node's live record holds the key (this node's own may be rewritten).
        """

    @abstractmethod
    async def heartbeat(
        self,
        node: NodeInfo,
        sessions: Sequence[SessionInfo],
        ttl: float,
        *,
        still_local: Callable[[SessionInfo], bool],
        digest: str,
    ) -> int:
        """Refresh the node record and every session; write back missing ones; return how many.

        ``sessions`` is a snapshot: a session removed since is no longer ``still_local`` and
        is never written back (nor over its tombstone). ``digest`` is the
        :class:`MembershipDigest` of ``sessions``.
        """

    @abstractmethod
    async def remove(self, call_id: str, session_id: str, ended: EndedInfo | None) -> None:
        """Delete the session record and its close flag; leave a tombstone when ``ended``."""

    @abstractmethod
    async def sessions_for_call(self, call_id: str, *, exact: bool | None = None) -> list[bytes]:
        """Raw records of the sessions of one call.

        ``exact=True`` also finds the call's records by their keys, as documented-layout
        nodes write them (no index): what a mixed fleet needs. ``False`` trusts the index
        (a fleet declared callboard-only); ``None`` decides by what the store knows of the
        fleet. A plain store always finds records by their keys.
        """

    @abstractmethod
    async def sessions_for_node(self, node_id: str) -> list[bytes]:
        """Raw records of the sessions of one node."""

    async def live_indexed(self, *, exact: bool | None = None) -> tuple[list[bytes], list[bytes]] | None:
        """Raw records of every live node and of those nodes' sessions, read through the
        indexes (no scan of the key space), or None when the indexes cannot be trusted to
        name them all (``exact`` as for :meth:`sessions_for_call`): the caller scans then.
        A plain store keeps no node index."""
        return None

    @abstractmethod
    async def request_close(self, call_id: str, session_id: str, ttl: float) -> str | None:
        """Write the close flag and notify the owner; return the owner's node id if known."""

    async def index_foreign(self, keep: float = 120.0) -> int:
        """Index sessions written by nodes that keep no indexes; return how many are foreign.

        ``keep`` (seconds) is how long what the scan learned holds: until the next scan.
        """
        return 0

    @abstractmethod
    async def claim_start(self, request_key: str, claim_key: str, claimant: str, ttl: float) -> StartClaim:
        """Claim a live start request for ``claimant``: CLAIMED for the first claimant only."""

    @abstractmethod
    async def commit_start(self, request_key: str, claim_key: str, claimant: str, ttl: float) -> StartClaim:
        """Turn ``claimant``'s claim (or no claim) into STARTED, unless withdrawn, taken or expired."""

    @abstractmethod
    async def withdraw_start(self, request_key: str, claim_key: str, ttl: float) -> StartClaim:
        """Withdraw a request: WITHDRAWN, or STARTED when a node committed it already."""

    async def hold_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``holder``; True while ``holder`` has it.

        A plain store has no cluster-wide jobs to elect a node for: always True.
        """
        return True


class KVSessionIndex(SessionIndex):
    """The fallback over the documented store methods (plus push when the store has it)."""

    def __init__(self, store: SessionKVStore) -> None:
        self.store = store

    async def _records(self, keys: list[str]) -> list[bytes]:
        if not keys:
            return []
        return [v for v in await self.store.mget(keys) if v is not None]

    async def register(
        self,
        info: SessionInfo,
        ttl: float,
        *,
        max_sessions_per_call: int | None = None,
        exact: bool | None = None,
    ) -> None:
        key = k.session_key(info.call_id, info.session_id)
        current = decode_or_none(SessionInfo.from_json, await self.store.get(key))
        if current is not None and current.node_id != info.node_id:
            raise conflict_error(info.call_id, info.session_id, current.node_id)
        if max_sessions_per_call is not None:
            others = [
                key
                for key in await self.store.keys(f"{k.SESSIONS_PREFIX}{info.call_id}/")
                if key != k.session_key(info.call_id, info.session_id)
            ]
            if len(others) >= max_sessions_per_call:
                raise MaxSessionsPerCallExceeded(
                    f"call {info.call_id!r} already has {len(others)} sessions "
                    f"(max_sessions_per_call={max_sessions_per_call})"
                )
        await self.store.set(k.session_key(info.call_id, info.session_id), info.to_json(), ttl)

    async def heartbeat(
        self,
        node: NodeInfo,
        sessions: Sequence[SessionInfo],
        ttl: float,
        *,
        still_local: Callable[[SessionInfo], bool],
        digest: str,
    ) -> int:
        items = [(k.node_key(node.node_id), node.to_json(), ttl)]
        items += [
            (k.session_key(s.call_id, s.session_id), s.to_json(), ttl) for s in sessions if still_local(s)
        ]
        await self.store.mset(items)
        return 0  # mset upserts; whether anything was missing is not known without a read

    async def remove(self, call_id: str, session_id: str, ended: EndedInfo | None) -> None:
        await self.store.delete([k.session_key(call_id, session_id), k.close_key(call_id, session_id)])
        if ended is not None:
            await self.store.set(k.ended_key(call_id, session_id), ended.to_json(), k.ENDED_TTL)

    async def sessions_for_call(self, call_id: str, *, exact: bool | None = None) -> list[bytes]:
        return await self._records(await self.store.keys(f"{k.SESSIONS_PREFIX}{call_id}/"))

    async def sessions_for_node(self, node_id: str) -> list[bytes]:
        # No per-node index here: the caller filters the records by node_id.
        return await self._records(await self.store.keys(k.SESSIONS_PREFIX))

    # Start claims: the same state machine as the Redis scripts (lua/start_*.lua), read then
    # written; see the module docstring for what that guarantees.

    async def claim_start(self, request_key: str, claim_key: str, claimant: str, ttl: float) -> StartClaim:
        state = await self.store.get(claim_key)
        if state is not None:
            return _claim_state(state, claimant, claimed=StartClaim.CLAIMED)
        if await self.store.get(request_key) is None:
            return StartClaim.EXPIRED
        await self.store.set(claim_key, f"claimed:{claimant}".encode(), ttl)
        return StartClaim.CLAIMED

    async def commit_start(self, request_key: str, claim_key: str, claimant: str, ttl: float) -> StartClaim:
        state = await self.store.get(claim_key)
        if state is not None and state != f"claimed:{claimant}".encode():
            return _claim_state(state, claimant, claimed=StartClaim.TAKEN)
        if await self.store.get(request_key) is None:
            return StartClaim.EXPIRED
        await self.store.set(claim_key, f"started:{claimant}".encode(), ttl)
        await self.store.delete([request_key])
        return StartClaim.STARTED

    async def withdraw_start(self, request_key: str, claim_key: str, ttl: float) -> StartClaim:
        state = await self.store.get(claim_key)
        await self.store.delete([request_key])
        if state is not None and state.startswith(b"started:"):
            return StartClaim.STARTED
        await self.store.set(claim_key, b"withdrawn", ttl)
        return StartClaim.WITHDRAWN

    async def request_close(self, call_id: str, session_id: str, ttl: float) -> str | None:
        await self.store.set(k.close_key(call_id, session_id), b"", ttl)
        if not isinstance(self.store, PubSubSupport):
            return None
        info = decode_or_none(SessionInfo.from_json, await self.store.get(k.session_key(call_id, session_id)))
        if info is None:
            return None
        owner = info.node_id
        await self.store.publish(k.close_channel(owner), close_notice(call_id, session_id))
        return owner


def _claim_state(state: bytes, claimant: str, *, claimed: StartClaim) -> StartClaim:
    """What an existing claim value means to ``claimant`` (``claimed``: its own claim)."""
    if state == b"withdrawn":
        return StartClaim.WITHDRAWN
    if state == f"started:{claimant}".encode():
        return StartClaim.STARTED
    if state == f"claimed:{claimant}".encode():
        return claimed
    return StartClaim.TAKEN
