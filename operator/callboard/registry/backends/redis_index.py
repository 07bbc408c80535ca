"""Registry operations as Lua scripts run inside Redis: one round trip each.

The heartbeat sends nothing per session in the steady state: the node's index set names
the sessions to renew. Besides the documented keys, it keeps two sets (see
:mod:`callboard.registry._keys`):
``index/calls/{call_id}`` (session ids) and ``index/nodes/{node_id}`` ("call/session").
Members whose record expired (a node died) are pruned when read. Sessions written by
Vision Agents nodes are not in these sets until :meth:`RedisSessionIndex.index_foreign`
finds them by a scan (the registry runs it periodically).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from callboard.errors import MaxSessionsPerCallExceeded
from callboard.registry import _keys as k
from callboard.registry.backends.redis import SCAN_COUNT, _ms, translate_errors
from callboard.registry.index import SessionIndex, close_notice
from callboard.registry.models import EndedInfo, NodeInfo, SessionInfo, StartClaim

if TYPE_CHECKING:
    from callboard.registry.backends.redis import RedisSessionKVStore

__all__ = ["FULL_HEARTBEAT_EVERY", "RedisSessionIndex"]

#: Every Nth heartbeat sends the node's full session list (the others send none and let the
#: node's index set drive the renewal). A cheap heartbeat already falls back to a full one
#: when the index count differs; the periodic full one also repairs the rare index that has
#: the right count but the wrong members.
FULL_HEARTBEAT_EVERY = 10


@cache
def _lua(name: str) -> str:
    return resources.files("callboard.registry.backends").joinpath(f"lua/{name}.lua").read_text()


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

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def _run(self, script: Any, action: str, keys: list[str], args: list[Any]) -> Any:
        with translate_errors(action):
            return await script(keys=keys, args=args)

    async def _register_many(
        self, node_id: str, sessions: Sequence[SessionInfo], ttl: float, limit: int
    ) -> int:
        keys = [self._k(k.node_index_key(node_id))]
        args: list[Any] = [
            _ms(ttl),
            limit,
            self._k(f"{k.SESSIONS_PREFIX}{sessions[0].call_id}/") if sessions else "",
        ]
        for s in sessions:
            keys += [self._k(k.session_key(s.call_id, s.session_id)), self._k(k.call_index_key(s.call_id))]
            args += [s.session_id, f"{s.call_id}/{s.session_id}", s.to_json()]
        result: int = await self._run(self._register, "register", keys, args)
        return result

    async def register(
        self, info: SessionInfo, ttl: float, *, max_sessions_per_call: int | None = None
    ) -> None:
        result = await self._register_many(info.node_id, [info], ttl, max_sessions_per_call or 0)
        if result < 0:
            raise MaxSessionsPerCallExceeded(
                f"call {info.call_id!r} already has {-1 - result} sessions "
                f"(max_sessions_per_call={max_sessions_per_call})"
            )

    async def heartbeat(self, node: NodeInfo, sessions: Sequence[SessionInfo], ttl: float) -> int:
        self._beats += 1
        if self._beats % FULL_HEARTBEAT_EVERY:
            missing: list[bytes] | None = await self._run(
                self._heartbeat,
                "heartbeat",
                [self._k(k.node_key(node.node_id)), self._k(k.node_index_key(node.node_id))],
                [
                    _ms(ttl),
                    node.to_json(),
                    len(sessions),
                    self._k(k.SESSIONS_PREFIX),
                    self._k(k.CALL_INDEX_PREFIX),
                ],
            )
            if missing is not None:
                if missing:
                    by_member = {f"{s.call_id}/{s.session_id}": s for s in sessions}
                    lost = [by_member[m.decode()] for m in missing if m.decode() in by_member]
                    await self._register_many(node.node_id, lost, ttl, 0)
                return len(missing)
        return await self._full_heartbeat(node, sessions, ttl)

    async def _full_heartbeat(self, node: NodeInfo, sessions: Sequence[SessionInfo], ttl: float) -> int:
        keys = [self._k(k.node_key(node.node_id)), self._k(k.node_index_key(node.node_id))]
        args: list[Any] = [_ms(ttl), node.to_json()]
        for s in sessions:
            keys += [self._k(k.session_key(s.call_id, s.session_id)), self._k(k.call_index_key(s.call_id))]
            args.append(f"{s.call_id}/{s.session_id}")
        positions: list[int] = await self._run(self._heartbeat_full, "full heartbeat", keys, args)
        if positions:
            await self._register_many(node.node_id, [sessions[i - 1] for i in positions], ttl, 0)
        return len(positions)

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
        ]
        await self._run(self._remove, "remove", keys, args)

    async def sessions_for_call(self, call_id: str) -> list[bytes]:
        records: list[bytes] = await self._run(
            self._members,
            "sessions of call",
            [self._k(k.call_index_key(call_id))],
            [self._k(f"{k.SESSIONS_PREFIX}{call_id}/")],
        )
        return records

    async def sessions_for_node(self, node_id: str) -> list[bytes]:
        records: list[bytes] = await self._run(
            self._members,
            "sessions of node",
            [self._k(k.node_index_key(node_id))],
            [self._k(k.SESSIONS_PREFIX)],
        )
        return records

    async def request_close(self, call_id: str, session_id: str, ttl: float) -> str | None:
        owner: bytes | None = await self._run(
            self._request_close,
            "request close",
            [self._k(k.close_key(call_id, session_id)), self._k(k.session_key(call_id, session_id))],
            [_ms(ttl), self._k(k.CLOSE_CHANNEL_PREFIX), close_notice(call_id, session_id)],
        )
        return owner.decode() if owner else None

    async def claim_start(self, request_key: str, claim_key: str, claimant: str, ttl: float) -> StartClaim:
        return await self._claim_script(
            self._start_claim, "claim start", request_key, claim_key, [claimant, _ms(ttl)]
        )

    async def commit_start(self, request_key: str, claim_key: str, claimant: str, ttl: float) -> StartClaim:
        return await self._claim_script(
            self._start_commit, "commit start", request_key, claim_key, [claimant, _ms(ttl)]
        )

    async def withdraw_start(self, request_key: str, claim_key: str, ttl: float) -> StartClaim:
        return await self._claim_script(
            self._start_withdraw, "withdraw start", request_key, claim_key, [_ms(ttl)]
        )

    async def _claim_script(
        self, script: Any, action: str, request_key: str, claim_key: str, args: list[Any]
    ) -> StartClaim:
        answer: bytes = await self._run(script, action, [self._k(request_key), self._k(claim_key)], args)
        return StartClaim(answer.decode())

    async def index_foreign(self) -> int:
        """Scan ``sessions/*`` and add every session found to its call's index set."""
        client = self.store.client
        pattern = self._k(k.SESSIONS_PREFIX) + "*"
        cut = len(self._k(k.SESSIONS_PREFIX))
        added = 0
        with translate_errors("scan sessions"):
            batch: list[str] = []
            async for raw_key in client.scan_iter(match=pattern, count=SCAN_COUNT):
                batch.append(raw_key.decode())
                if len(batch) >= SCAN_COUNT:
                    added += await self._index_batch(batch, cut)
                    batch = []
            if batch:
                added += await self._index_batch(batch, cut)
        return added

    async def _index_batch(self, raw_keys: list[str], cut: int) -> int:
        client = self.store.client
        async with client.pipeline(transaction=False) as pipe:
            for key in raw_keys:
                pipe.pttl(key)
            ttls: list[int] = await pipe.execute()
        keys: list[str] = []
        args: list[Any] = []
        for raw_key, pttl in zip(raw_keys, ttls, strict=True):
            parts = raw_key[cut:].split("/")
            if len(parts) != 2 or pttl <= 0:
                continue
            keys.append(self._k(k.call_index_key(parts[0])))
            args += [parts[1], pttl]
        if not keys:
            return 0
        added: int = await self._index_add(keys=keys, args=args)
        return added
