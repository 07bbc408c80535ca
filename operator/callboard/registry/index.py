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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from callboard.errors import (
    DeposedLeaderError,
    MaxSessionsPerCallExceeded,
    NodeDrainingError,
    SessionConflictError,
)
from callboard.registry import _keys as k
from callboard.registry.models import EndedInfo, NodeInfo, SessionInfo, StartClaim, decode_or_none
from callboard.registry.paging import PagePosition
from callboard.registry.store import PubSubSupport, SessionKVStore

__all__ = [
    "KVSessionIndex",
    "LiveRead",
    "MembershipDigest",
    "SessionIndex",
    "close_flag",
    "close_notice",
    "conflict_error",
    "deposed_error",
    "drain_marked_error",
    "flag_token",
    "is_fenced",
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


def drain_marked_error(node_id: str) -> NodeDrainingError:
    """The error for registering a new session on a node the operator marked for removal."""
    return NodeDrainingError(
        f"node {node_id} is marked draining by the operator (about to be removed) and takes no new sessions"
    )


def close_notice(call_id: str, session_id: str) -> bytes:
    """The payload of a pushed close notice (ids never contain ``/``)."""
    return f"{call_id}/{session_id}".encode()


def parse_close_notice(message: bytes) -> tuple[str, str] | None:
    call_id, sep, session_id = message.decode(errors="replace").partition("/")
    return (call_id, session_id) if sep and call_id and session_id else None


#: How long the fence lives on a store without scripts (whose ``set`` needs a TTL), seconds.
#: A year: far beyond any term; the leader rewrites it every few seconds anyway.
FENCE_KV_TTL = 365 * 86400.0


def close_flag(token: int | None) -> bytes:
    """The value of a close flag: the requester's fencing token, or empty (documented layout).

    Vision Agents nodes only test that the flag exists, so any value closes the session there.
    """
    return b"" if token is None else str(token).encode()


def flag_token(value: bytes | None) -> int | None:
    """The fencing token a close flag (or the fence key) holds; None when it holds none.

    Anything that is not a plain integer (the documented empty flag, a foreign writer's
    value) carries no token: such a flag is never fenced, as before fencing existed.
    """
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def is_fenced(token: int | None, fence: int | None) -> bool:
    """Whether a request with ``token`` comes from a deposed leader, given the ``fence``.

    A request without a token (Vision Agents tools, the CLI, older operators) never is, nor
    is any request while no fence is published.
    """
    return token is not None and fence is not None and token < fence


def deposed_error(what: str, token: int, fence: int) -> DeposedLeaderError:
    """The error for a request of ``what`` whose ``token`` is below the registry's ``fence``."""
    return DeposedLeaderError(
        f"{what} refused: its fencing token {token} is below the registry's fence {fence} "
        "(a newer operator leader took over; this one was deposed)",
        token=token,
        fence=fence,
    )


@dataclass(slots=True)
class LiveRead:
    """One read through the indexes (:meth:`SessionIndex.live_indexed`)."""

    nodes: list[bytes]
    """Raw records of every live node."""
    changed: dict[str, tuple[bytes, list[bytes]]] = field(default_factory=dict)
    """Per node whose version the caller did not hold: its version (``b""``: it keeps none,
    read it whole every time) and the raw records of all its sessions."""
    unchanged: list[str] = field(default_factory=list)
    """Nodes whose version the caller holds: their sessions are the caller's copy."""


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
        admit: bool = True,
    ) -> None:
        """Write the session record (and indexes).

        ``MaxSessionsPerCallExceeded`` if the call is full (``exact``: count the call's
        records by their keys too, see :meth:`sessions_for_call`); ``SessionConflictError``
        if another node's live record holds the key (this node's own may be rewritten);
        with ``admit`` (a new session, not a restore) ``NodeDrainingError`` while the
        operator's drain mark on the node lives (atomic with the write in Redis).
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

    async def live_indexed(
        self, *, exact: bool | None = None, known: Mapping[str, bytes] | None = None
    ) -> LiveRead | None:
        """Raw records of every live node and of the sessions of the nodes whose version is
        not in ``known`` (node id → the version the caller holds), read through the indexes
        (no scan of the key space), or None when the indexes cannot be trusted to name them
        all (``exact`` as for :meth:`sessions_for_call`): the caller scans then. The caller
        keeps the sessions of unchanged nodes, so a quiet cluster costs O(nodes) a read.
        A plain store keeps no node index."""
        return None

    @abstractmethod
    async def sessions_page(
        self, after: PagePosition | None, limit: int, *, node_id: str | None = None
    ) -> tuple[list[bytes], PagePosition | None]:
        """Raw records of up to ``limit`` sessions after ``after`` in node, then member order
        (see :mod:`~callboard.registry.paging`), and where to resume (None: no node is left).

        ``node_id``: that node's sessions only. The work is bounded by ``limit`` (and by the
        sessions of the nodes the page touches), never by the size of the cluster.
        """

    async def foreign_page(
        self, at: PagePosition, limit: int, *, exact: bool | None = None
    ) -> tuple[list[bytes], PagePosition | None]:
        """The last phase of a paged listing: up to ``limit`` records no node index knows,
        from one step of a scan at ``at`` (``at.scan``, after ``at.member``), and where to go
        on (None: done). ``exact`` as in :meth:`sessions_for_call`. A store without indexes
        found every record in :meth:`sessions_page` already: none here.
        """
        return [], None

    @abstractmethod
    async def request_close(
        self, call_id: str, session_id: str, ttl: float, *, token: int | None = None
    ) -> str | None:
        """Write the close flag and notify the owner; return the owner's node id if known.

        With a fencing ``token`` below the fence (``_keys.FENCE_KEY``) nothing is written
        or pushed: :class:`~callboard.errors.DeposedLeaderError`. The flag holds the token.
        """

    @abstractmethod
    async def raise_fence(self, token: int) -> int:
        """Raise the fence to ``token`` unless it is higher already; return the fence after."""

    async def index_foreign(self, keep: float = 120.0) -> int:
        """Index sessions written by nodes that keep no indexes; return how many are foreign.

        ``keep`` (seconds) is how long what the scan learned holds: until the next scan.
        """
        return 0

    @abstractmethod
    async def claim_start(
        self, request_key: str, claim_key: str, claimant: str, ttl: float, *, token: int | None = None
    ) -> StartClaim:
        """Claim a live start request for ``claimant``: CLAIMED for the first claimant only.

        FENCED (and the request dead) when its fencing ``token`` is below the fence.
        """

    @abstractmethod
    async def commit_start(
        self, request_key: str, claim_key: str, claimant: str, ttl: float, *, token: int | None = None
    ) -> StartClaim:
        """Turn ``claimant``'s claim (or no claim) into STARTED, unless withdrawn, taken,
        expired or fenced (``token`` below the fence, checked again: it may have risen)."""

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
        admit: bool = True,
    ) -> None:
        if admit and await self.store.get(k.drain_mark_key(info.node_id)) is not None:
            raise drain_marked_error(info.node_id)  # best effort: a plain store has no atomic check
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

    async def sessions_page(
        self, after: PagePosition | None, limit: int, *, node_id: str | None = None
    ) -> tuple[list[bytes], PagePosition | None]:
        # No indexes here: every page reads every record (the in-process store holds one
        # process's sessions) and cuts the same order as the Redis script.
        # A member "" means after the whole node: past every member ("\U0010ffff" sorts last).
        start = (after.node, after.member or "\U0010ffff") if after is not None else ("", "")
        found: list[tuple[tuple[str, str], bytes]] = []
        for raw in await self._records(await self.store.keys(k.SESSIONS_PREFIX)):
            info = decode_or_none(SessionInfo.from_json, raw)
            if info is None or (node_id is not None and info.node_id != node_id):
                continue
            place = (info.node_id, f"{info.call_id}/{info.session_id}")
            if after is None or place > start:
                found.append((place, raw))
        found.sort(key=lambda item: item[0])
        page = found[:limit]
        resume = PagePosition(*page[-1][0]) if len(found) > limit else None
        return [raw for _, raw in page], resume

    # Start claims: the same state machine as the Redis scripts (lua/start_*.lua), read then
    # written; see the module docstring for what that guarantees.

    async def claim_start(
        self, request_key: str, claim_key: str, claimant: str, ttl: float, *, token: int | None = None
    ) -> StartClaim:
        state = await self.store.get(claim_key)
        if state is not None and state != f"claimed:{claimant}".encode():
            return _claim_state(state, claimant, claimed=StartClaim.CLAIMED)
        if await self._fence_out(request_key, claim_key, ttl, token):
            return StartClaim.FENCED
        if state is not None:
            return StartClaim.CLAIMED
        if await self.store.get(request_key) is None:
            return StartClaim.EXPIRED
        await self.store.set(claim_key, f"claimed:{claimant}".encode(), ttl)
        return StartClaim.CLAIMED

    async def commit_start(
        self, request_key: str, claim_key: str, claimant: str, ttl: float, *, token: int | None = None
    ) -> StartClaim:
        state = await self.store.get(claim_key)
        if state is not None and state != f"claimed:{claimant}".encode():
            return _claim_state(state, claimant, claimed=StartClaim.TAKEN)
        if await self._fence_out(request_key, claim_key, ttl, token):
            return StartClaim.FENCED
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

    async def _fence_out(self, request_key: str, claim_key: str, ttl: float, token: int | None) -> bool:
        """Mark a start request from a deposed leader fenced (dead); True when it is one."""
        if token is None:
            return False
        if not is_fenced(token, flag_token(await self.store.get(k.FENCE_KEY))):
            return False
        await self.store.set(claim_key, b"fenced", ttl)
        await self.store.delete([request_key])
        return True

    async def raise_fence(self, token: int) -> int:
        current = flag_token(await self.store.get(k.FENCE_KEY))
        if current is not None and current >= token:
            return current
        await self.store.set(k.FENCE_KEY, str(token).encode(), FENCE_KV_TTL)
        return token

    async def request_close(
        self, call_id: str, session_id: str, ttl: float, *, token: int | None = None
    ) -> str | None:
        if token is not None:
            fence = flag_token(await self.store.get(k.FENCE_KEY))
            if fence is not None and is_fenced(token, fence):
                raise deposed_error(f"close request for {call_id}/{session_id}", token, fence)
        await self.store.set(k.close_key(call_id, session_id), close_flag(token), ttl)
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
    if state == b"fenced":
        return StartClaim.FENCED
    if state == f"started:{claimant}".encode():
        return StartClaim.STARTED
    if state == f"claimed:{claimant}".encode():
        return claimed
    return StartClaim.TAKEN
