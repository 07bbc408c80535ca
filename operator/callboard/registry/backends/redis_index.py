"""Registry operations as Lua scripts run inside Redis: one round trip each.

The heartbeat sends nothing per session in the steady state: the node's index set names
the sessions to renew. Besides the documented keys, it keeps two kinds of set (see
:mod:`callboard.registry._keys`):
``index/calls/{call_id}`` (session ids) and ``index/nodes/{node_id}`` ("call/session"),
and the node directory ``index/node_ids`` that a paged listing walks (``sessions_page.lua``).
Members whose record expired (a node died) are pruned when read; members lost by the
store (eviction, a manual cleanup) are put back by the next heartbeat of their node (G3).

Sessions of documented-layout (Vision Agents) nodes: written through this store they are
indexed at once (``set_session.lua``). Written by a Vision Agents node's own Redis client
(a plain ``SET ... PX``) no index knows them, so per-call reads and limits have two modes:
*indexed* (one script, O(sessions of the call)) and *exact* (a SCAN of the call's keys
first, O(key space) as in Vision Agents, then the script). ``exact=True`` always scans,
``False`` never; ``None`` (auto) trusts the index while the marker
``index/callboard_only`` says the last foreign scan of the cluster
(:meth:`RedisSessionIndex.index_foreign`) found no foreign session, and scans otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from callboard.errors import MaxSessionsPerCallExceeded
from callboard.registry import _keys as k
from callboard.registry.backends.redis import SCAN_COUNT, _lua, _ms, translate_errors
from callboard.registry.index import (
    LiveRead,
    SessionIndex,
    close_flag,
    close_notice,
    conflict_error,
    deposed_error,
    drain_marked_error,
)
from callboard.registry.models import EndedInfo, NodeInfo, SessionInfo, StartClaim
from callboard.registry.paging import PagePosition

if TYPE_CHECKING:
    from callboard.registry.backends.redis import RedisSessionKVStore

__all__ = ["CALL_INDEX_TTL_FACTOR", "FULL_HEARTBEAT_EVERY", "RedisSessionIndex"]

#: Every Nth heartbeat sends the node's full session list (the others send none and let the
#: node's index set drive the renewal). A cheap heartbeat already falls back to a full one
#: when the digest of the index's members differs from the node's own; the periodic full
#: one is a belt-and-braces check.
FULL_HEARTBEAT_EVERY = 10
#: A call index lives this many TTLs (of the node that renewed it last, never shortened):
#: the cheap heartbeat then need not renew it (one round of PTTL/PEXPIRE per call per beat
#: was a third of its cost); the full heartbeat, every FULL_HEARTBEAT_EVERY beats, does.
#: Members whose record expired are pruned when read, so a longer index costs only memory.
CALL_INDEX_TTL_FACTOR = FULL_HEARTBEAT_EVERY


class RedisSessionIndex(SessionIndex):
    """The accelerated :class:`SessionIndex` of a :class:`RedisSessionKVStore`."""

    def __init__(self, store: RedisSessionKVStore) -> None:
        self.store = store
        self.prefix = store.key_prefix
        client = store.client
        self._register = client.register_script(_lua("register"))
        self._heartbeat = client.register_script(_lua("heartbeat"))
        self._heartbeat_full = client.register_script(_lua("heartbeat_full"))
        self._beats = 0
        self._remove = client.register_script(_lua("remove"))
        self._members = client.register_script(_lua("members"))
        self._request_close = client.register_script(_lua("request_close"))
        self._index_add = client.register_script(_lua("index_add"))
        self._start_claim = client.register_script(_lua("start_claim"))
        self._start_commit = client.register_script(_lua("start_commit"))
        self._start_withdraw = client.register_script(_lua("start_withdraw"))
        self._lease = client.register_script(_lua("lease"))
        self._fence_raise = client.register_script(_lua("fence_raise"))
        self._sessions_page = client.register_script(_lua("sessions_page"))
        self._foreign_page = client.register_script(_lua("foreign_page"))
        self._live_indexed = client.register_script(_lua("live_indexed"))

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def _run(self, script: Any, action: str, keys: list[str], args: list[Any]) -> Any:
        with translate_errors(action):
            return await script(keys=keys, args=args)

    async def _call_members(self, call_id: str) -> list[str]:
        """Session ids of ``call_id`` found by their keys (a SCAN, O(key space))."""
        prefix = f"{k.SESSIONS_PREFIX}{call_id}/"
        return [key[len(prefix) :] for key in await self.store.keys(prefix) if "/" not in key[len(prefix) :]]

    async def _register_many(
        self,
        node_id: str,
        sessions: Sequence[SessionInfo],
        ttl: float,
        limit: int,
        *,
        write_back: bool = False,
        extras: list[str] | None = None,
        auto: bool = False,
        admit: bool = False,
    ) -> list[Any]:
        keys = [self._k(k.node_index_key(node_id)), self._k(k.node_digest_key(node_id))]
        args: list[Any] = [
            _ms(ttl),
            limit,
            self._k(f"{k.SESSIONS_PREFIX}{sessions[0].call_id}/") if sessions else "",
            node_id,
            "1" if write_back else "0",
            self._k(k.ENDED_PREFIX),
            self._k(k.NO_FOREIGN_MARKER) if extras is None and auto else "",
            _ms(ttl * CALL_INDEX_TTL_FACTOR),
            self._k(k.drain_mark_key(node_id)) if admit else "",
            len(extras or ()),
            *(extras or ()),
        ]
        for s in sessions:
            keys += [self._k(k.session_key(s.call_id, s.session_id)), self._k(k.call_index_key(s.call_id))]
            args += [s.session_id, f"{s.call_id}/{s.session_id}", s.to_json()]
        args.append(self._k(k.node_version_key(node_id)))
        result: list[Any] = await self._run(self._register, "register", keys, args)
        return [r.decode() if isinstance(r, bytes) else r for r in result]

    async def register(
        self,
        info: SessionInfo,
        ttl: float,
        *,
        max_sessions_per_call: int | None = None,
        exact: bool | None = None,
        admit: bool = True,
    ) -> None:
        limit = max_sessions_per_call or 0
        extras = await self._call_members(info.call_id) if limit and exact else None
        result = await self._register_many(
            info.node_id, [info], ttl, limit, write_back=False, extras=extras, auto=exact is None, admit=admit
        )
        if result[0] == "exact":  # not known to be callboard-only: count the call's keys too
            extras = await self._call_members(info.call_id)
            result = await self._register_many(
                info.node_id, [info], ttl, limit, write_back=False, extras=extras, admit=admit
            )
        if result[0] == "draining":
            raise drain_marked_error(info.node_id)
        if result[0] == "conflict":
            raise conflict_error(info.call_id, info.session_id, str(result[1]))
        if result[0] == "limit":
            raise MaxSessionsPerCallExceeded(
                f"call {info.call_id!r} already has {result[1]} sessions "
                f"(max_sessions_per_call={max_sessions_per_call})"
            )

    async def _write_back(
        self,
        node_id: str,
        lost: Sequence[SessionInfo],
        ttl: float,
        still_local: Callable[[SessionInfo], bool],
    ) -> int:
        """Write back sessions the store lost that this node still runs now (never ended ones)."""
        lost = [s for s in lost if still_local(s)]
        if not lost:
            return 0
        result = await self._register_many(node_id, lost, ttl, 0, write_back=True, extras=[])
        written: int = result[1]
        return written

    async def heartbeat(
        self,
        node: NodeInfo,
        sessions: Sequence[SessionInfo],
        ttl: float,
        *,
        still_local: Callable[[SessionInfo], bool],
        digest: str,
    ) -> int:
        self._beats += 1
        if self._beats % FULL_HEARTBEAT_EVERY:
            missing: list[bytes] | None = await self._run(
                self._heartbeat,
                "heartbeat",
                self._node_keys(node.node_id),
                [
                    _ms(ttl),
                    node.to_json(),
                    digest,
                    self._k(k.SESSIONS_PREFIX),
                    self._k(k.CALL_INDEX_PREFIX),
                    _ms(ttl * CALL_INDEX_TTL_FACTOR),
                    node.node_id,
                ],
            )
            if missing is not None:
                if not missing:
                    return 0
                by_member = {f"{s.call_id}/{s.session_id}": s for s in sessions}
                lost = [by_member.get(m.decode()) for m in missing]
                if all(s is not None for s in lost):
                    return await self._write_back(node.node_id, [s for s in lost if s], ttl, still_local)
                # A member this node does not run: the set was edited behind its digest.
        return await self._full_heartbeat(node, sessions, ttl, still_local=still_local)

    def _node_keys(self, node_id: str) -> list[str]:
        return [
            self._k(k.node_key(node_id)),
            self._k(k.node_index_key(node_id)),
            self._k(k.node_digest_key(node_id)),
            self._k(k.NODE_DIRECTORY),
            self._k(k.node_version_key(node_id)),
        ]

    async def live_indexed(
        self, *, exact: bool | None = None, known: Mapping[str, bytes] | None = None
    ) -> LiveRead | None:
        if exact:
            return None
        marker = self._k(k.NO_FOREIGN_MARKER) if exact is None else ""
        pairs = [item for node_version in (known or {}).items() for item in node_version]
        result: list[Any] | None = await self._run(
            self._live_indexed,
            "read through the indexes",
            [self._k(k.NODE_DIRECTORY), marker],
            [
                self._k(k.NODES_PREFIX),
                self._k(k.NODE_INDEX_PREFIX),
                self._k(k.SESSIONS_PREFIX),
                self._k(k.NODE_VERSION_PREFIX),
                *pairs,
            ],
        )
        if not result:
            return None
        read = LiveRead(nodes=list(result[0]))
        for entry in result[1]:
            node_id = entry[0].decode()
            if entry[2]:
                read.changed[node_id] = (bytes(entry[1]), list(entry[3]))
            else:
                read.unchanged.append(node_id)
        return read

    async def _full_heartbeat(
        self,
        node: NodeInfo,
        sessions: Sequence[SessionInfo],
        ttl: float,
        *,
        still_local: Callable[[SessionInfo], bool] = lambda s: True,
    ) -> int:
        keys = self._node_keys(node.node_id)
        args: list[Any] = [
            _ms(ttl),
            node.to_json(),
            self._k(k.SESSIONS_PREFIX),
            self._k(k.CALL_INDEX_PREFIX),
            self._k(k.ENDED_PREFIX),
            _ms(ttl * CALL_INDEX_TTL_FACTOR),
            node.node_id,
        ]
        args += [f"{s.call_id}/{s.session_id}" for s in sessions]
        positions: list[int] = await self._run(self._heartbeat_full, "full heartbeat", keys, args)
        if not positions:
            return 0
        return await self._write_back(node.node_id, [sessions[i - 1] for i in positions], ttl, still_local)

    async def remove(self, call_id: str, session_id: str, ended: EndedInfo | None) -> None:
        keys = [
            self._k(k.session_key(call_id, session_id)),
            self._k(k.close_key(call_id, session_id)),
            self._k(k.call_index_key(call_id)),
            self._k(k.ended_key(call_id, session_id)),
        ]
        args = [
            ended.node_id if ended else "",
            session_id,
            self._k(k.NODE_INDEX_PREFIX),
            f"{call_id}/{session_id}",
            ended.to_json() if ended else "",
            _ms(k.ENDED_TTL),
            self._k(k.NODE_DIGEST_PREFIX),
            self._k(k.NODE_VERSION_PREFIX),
        ]
        await self._run(self._remove, "remove", keys, args)

    async def _members_of(self, index_key: str, prefix: str, marker: str, extras: list[str]) -> list[Any]:
        result: list[Any] = await self._run(
            self._members, "sessions of index", [self._k(index_key)], [self._k(prefix), marker, *extras]
        )
        return result

    async def sessions_for_call(self, call_id: str, *, exact: bool | None = None) -> list[bytes]:
        index_key, prefix = k.call_index_key(call_id), f"{k.SESSIONS_PREFIX}{call_id}/"
        if exact:
            result = await self._members_of(index_key, prefix, "", await self._call_members(call_id))
        else:
            marker = self._k(k.NO_FOREIGN_MARKER) if exact is None else ""
            result = await self._members_of(index_key, prefix, marker, [])
            if result[0] == 1:  # not known to be callboard-only: find the call's keys too
                result = await self._members_of(index_key, prefix, "", await self._call_members(call_id))
        return result[1:]

    async def sessions_for_node(self, node_id: str) -> list[bytes]:
        result = await self._members_of(k.node_index_key(node_id), k.SESSIONS_PREFIX, "", [])
        return result[1:]

    async def sessions_page(
        self, after: PagePosition | None, limit: int, *, node_id: str | None = None
    ) -> tuple[list[bytes], PagePosition | None]:
        """One script (``sessions_page.lua``): the node directory, then each node's index."""
        start = after or PagePosition()
        if node_id is not None and start.node != node_id:
            start = PagePosition(node_id)  # a cursor of another listing: this node from its start
        result: list[Any] = await self._run(
            self._sessions_page,
            "page of sessions",
            [self._k(k.NODE_DIRECTORY)],
            [
                self._k(k.NODE_INDEX_PREFIX),
                self._k(k.SESSIONS_PREFIX),
                self._k(k.NODES_PREFIX),
                limit,
                start.node,
                start.member,
                "1" if node_id is not None else "0",
            ],
        )
        node, place = (v.decode() if isinstance(v, bytes) else str(v) for v in result[:2])
        return result[2:], (PagePosition(node, place) if node else None)

    async def foreign_page(
        self, at: PagePosition, limit: int, *, exact: bool | None = None
    ) -> tuple[list[bytes], PagePosition | None]:
        """One SCAN step over ``sessions/*`` (COUNT ``limit``) and one script that keeps the
        records no node index knows; none at all while the fleet is known callboard-only.

        A step may find more than ``limit``: the page then ends inside it, and the next one
        runs the same step again, keeping the keys after the last one returned.
        """
        if exact is False:
            return [], None
        client = self.store.client
        prefix = self._k(k.SESSIONS_PREFIX)
        with translate_errors("page of unindexed sessions"):
            if exact is None and await client.exists(self._k(k.NO_FOREIGN_MARKER)):
                return [], None
            following, found = await client.scan(cursor=at.scan or 0, match=prefix + "*", count=limit)
            keys = [key.decode() if isinstance(key, bytes) else str(key) for key in found]
            places = sorted(key[len(prefix) :] for key in keys)
            places = [place for place in places if place > at.member]
            pairs: list[bytes] = (
                await self._foreign_page(
                    keys=[], args=[prefix, self._k(k.NODE_INDEX_PREFIX), *(prefix + p for p in places)]
                )
                if places
                else []
            )
        records = pairs[1::2][:limit]
        if len(pairs) // 2 > limit:
            return records, PagePosition(scan=at.scan or 0, member=pairs[2 * limit - 2].decode())
        return records, (PagePosition(scan=int(following)) if int(following) else None)

    async def request_close(
        self, call_id: str, session_id: str, ttl: float, *, token: int | None = None
    ) -> str | None:
        status, value = await self._run(
            self._request_close,
            "request close",
            [
                self._k(k.close_key(call_id, session_id)),
                self._k(k.session_key(call_id, session_id)),
                self._k(k.FENCE_KEY),
            ],
            [_ms(ttl), self._k(k.CLOSE_CHANNEL_PREFIX), close_notice(call_id, session_id), close_flag(token)],
        )
        if status == b"fenced":
            assert token is not None
            raise deposed_error(f"close request for {call_id}/{session_id}", token, int(value))
        return value.decode() if value else None

    async def raise_fence(self, token: int) -> int:
        fence: int = await self._run(self._fence_raise, "raise fence", [self._k(k.FENCE_KEY)], [token])
        return fence

    async def claim_start(
        self, request_key: str, claim_key: str, claimant: str, ttl: float, *, token: int | None = None
    ) -> StartClaim:
        return await self._claim_script(
            self._start_claim, "claim start", request_key, claim_key, [claimant, _ms(ttl), _token_arg(token)]
        )

    async def commit_start(
        self, request_key: str, claim_key: str, claimant: str, ttl: float, *, token: int | None = None
    ) -> StartClaim:
        return await self._claim_script(
            self._start_commit,
            "commit start",
            request_key,
            claim_key,
            [claimant, _ms(ttl), _token_arg(token)],
        )

    async def withdraw_start(self, request_key: str, claim_key: str, ttl: float) -> StartClaim:
        return await self._claim_script(
            self._start_withdraw, "withdraw start", request_key, claim_key, [_ms(ttl)]
        )

    async def _claim_script(
        self, script: Any, action: str, request_key: str, claim_key: str, args: list[Any]
    ) -> StartClaim:
        keys = [self._k(request_key), self._k(claim_key), self._k(k.FENCE_KEY)]
        answer: bytes = await self._run(script, action, keys, args)
        return StartClaim(answer.decode())

    async def hold_lease(self, name: str, holder: str, ttl: float) -> bool:
        held: int = await self._run(self._lease, "lease", [self._k(name)], [holder, _ms(ttl)])
        return held == 1

    async def index_foreign(self, keep: float = 120.0) -> int:
        """Scan ``sessions/*``: index every session by call (for ``keep`` s at least), count
        the foreign ones and mark the fleet callboard-only (for ``keep`` s) if there are none.

        One node of the cluster runs it (the registry holds a lease; ``keep`` is two of its
        intervals). A session is foreign when its record names a node without a callboard
        node record; finding one removes the marker, so every node reads exactly.
        """
        client = self.store.client
        pattern = self._k(k.SESSIONS_PREFIX) + "*"
        fixed: list[str | int] = [
            self._k(k.CALL_INDEX_PREFIX),
            self._k(k.NODES_PREFIX),
            self.prefix,
            _ms(keep),
        ]
        foreign = 0
        with translate_errors("scan sessions"):
            batch: list[str] = []
            async for raw_key in client.scan_iter(match=pattern, count=SCAN_COUNT):
                batch.append(raw_key.decode())
                if len(batch) >= SCAN_COUNT:
                    foreign += await self._index_add(keys=[], args=[*fixed, *batch])
                    batch = []
            if batch:
                foreign += await self._index_add(keys=[], args=[*fixed, *batch])
            if foreign:
                await client.delete(self._k(k.NO_FOREIGN_MARKER))
            else:
                await client.set(self._k(k.NO_FOREIGN_MARKER), b"1", px=_ms(keep))
        return foreign


def _token_arg(token: int | None) -> str:
    """A fencing token as a script argument: ``''`` for none (never fenced)."""
    return "" if token is None else str(token)
