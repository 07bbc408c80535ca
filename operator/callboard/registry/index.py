"""Multi-key registry operations, behind one small interface with two implementations.

The registry never issues one round trip per session. Each operation below is one call
into a :class:`SessionIndex`:

- :class:`KVSessionIndex` works on any :class:`SessionKVStore` with only the documented
  methods (``mset``, ``keys``, ``mget``...). Look-ups by call or node scan keys; the
  per-call limit and the start-request claim are checked then written, so neither is
  atomic across processes. They are atomic within one process on the in-memory store,
  whose operations never suspend (no other task runs between the read and the write).
- ``RedisSessionIndex`` (in :mod:`callboard.registry.backends.redis_index`) runs each operation as
  one Lua script next to the data, keeps per-call and per-node sets so look-ups never scan,
  and makes the per-call limit atomic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from callboard.errors import MaxSessionsPerCallExceeded
from callboard.registry import _keys as k
from callboard.registry.models import EndedInfo, NodeInfo, SessionInfo, StartClaim, decode_or_none
from callboard.registry.store import PubSubSupport, SessionKVStore

__all__ = ["KVSessionIndex", "SessionIndex", "close_notice", "parse_close_notice"]


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
        self, info: SessionInfo, ttl: float, *, max_sessions_per_call: int | None = None
    ) -> None:
        """Write the session record (and indexes); ``MaxSessionsPerCallExceeded`` if over."""

    @abstractmethod
    async def heartbeat(self, node: NodeInfo, sessions: Sequence[SessionInfo], ttl: float) -> int:
        """Refresh the node record and every session; write back missing ones; return how many."""

    @abstractmethod
    async def remove(self, call_id: str, session_id: str, ended: EndedInfo | None) -> None:
        """Delete the session record and its close flag; leave a tombstone when ``ended``."""

    @abstractmethod
    async def sessions_for_call(self, call_id: str) -> list[bytes]:
        """Raw records of the sessions of one call."""

    @abstractmethod
    async def sessions_for_node(self, node_id: str) -> list[bytes]:
        """Raw records of the sessions of one node."""

    @abstractmethod
    async def request_close(self, call_id: str, session_id: str, ttl: float) -> str | None:
        """Write the close flag and notify the owner; return the owner's node id if known."""

    async def index_foreign(self) -> int:
        """Index sessions written by nodes that do not maintain indexes; return how many."""
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


class KVSessionIndex(SessionIndex):
    """The fallback over the documented store methods (plus push when the store has it)."""

    def __init__(self, store: SessionKVStore) -> None:
        self.store = store

    async def _records(self, keys: list[str]) -> list[bytes]:
        if not keys:
            return []
        return [v for v in await self.store.mget(keys) if v is not None]

    async def register(
        self, info: SessionInfo, ttl: float, *, max_sessions_per_call: int | None = None
    ) -> None:
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

    async def heartbeat(self, node: NodeInfo, sessions: Sequence[SessionInfo], ttl: float) -> int:
        items = [(k.node_key(node.node_id), node.to_json(), ttl)]
        items += [(k.session_key(s.call_id, s.session_id), s.to_json(), ttl) for s in sessions]
        await self.store.mset(items)
        return 0  # mset upserts; whether anything was missing is not known without a read

    async def remove(self, call_id: str, session_id: str, ended: EndedInfo | None) -> None:
        await self.store.delete([k.session_key(call_id, session_id), k.close_key(call_id, session_id)])
        if ended is not None:
            await self.store.set(k.ended_key(call_id, session_id), ended.to_json(), k.ENDED_TTL)

    async def sessions_for_call(self, call_id: str) -> list[bytes]:
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
