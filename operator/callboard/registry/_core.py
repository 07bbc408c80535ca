"""The state every part of :class:`~callboard.registry.SessionRegistry` shares.

The registry is one class assembled from one module per protocol (records and heartbeat,
push streams, start requests, fencing, foreign scan); each protocol is a mixin over this core, which
holds the store, the node's identity and record, the local sessions and the stream sets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Callable
from typing import Any

from callboard._aio import LogThrottle
from callboard.errors import ConfigurationError
from callboard.registry.backends.memory import InMemorySessionKVStore
from callboard.registry.ids import validate_id
from callboard.registry.index import KVSessionIndex, MembershipDigest, SessionIndex
from callboard.registry.models import FleetMode, NodeInfo, SessionInfo
from callboard.registry.store import PubSubSupport, SessionIndexSupport, SessionKVStore

__all__ = ["LIST_CHUNK", "LocalSessions", "RegistryCore", "generate_node_id"]

logger = logging.getLogger("callboard.registry.registry")

#: Keys read per MGET when listing the whole cluster: bounded replies, few round trips.
LIST_CHUNK = 1000


def generate_node_id() -> str:
    """A readable unique node id: host name plus a random suffix."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
    host = host.strip("-.")[:48] or "node"
    return f"{host}-{uuid.uuid4().hex[:8]}"


class LocalSessions(dict[tuple[str, str], SessionInfo]):
    """The sessions this node runs, keyed by ``(call_id, session_id)``, with their digest.

    The digest (:class:`~callboard.registry.index.MembershipDigest`) follows every change,
    so the cheap heartbeat compares membership with the store without hashing every session
    on every beat.
    """

    def __init__(self) -> None:
        super().__init__()
        self._digest = MembershipDigest()

    @property
    def digest(self) -> str:
        return str(self._digest)

    def __setitem__(self, key: tuple[str, str], value: SessionInfo) -> None:
        if key not in self:
            self._digest.add(*key)
        super().__setitem__(key, value)

    def __delitem__(self, key: tuple[str, str]) -> None:
        super().__delitem__(key)
        self._digest.discard(*key)

    def pop(self, key: tuple[str, str], *default: Any) -> Any:
        if key in self:
            self._digest.discard(*key)
        return super().pop(key, *default)

    def clear(self) -> None:
        super().clear()
        self._digest = MembershipDigest()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: tuple[str, str], default: SessionInfo) -> SessionInfo:
        if key not in self:
            self[key] = default
        return self[key]

    def popitem(self) -> tuple[tuple[str, str], SessionInfo]:
        key, value = super().popitem()
        self._digest.discard(*key)
        return key, value


class RegistryCore:
    """Shared state and helpers of the registry's protocol mixins (see the module docstring)."""

    def __init__(
        self,
        store: SessionKVStore | None = None,
        *,
        node_id: str | None = None,
        ttl: float = 30.0,
        foreign_scan_interval: float | None = 60.0,
    ) -> None:
        if ttl <= 0:
            raise ConfigurationError("ttl must be > 0")
        if foreign_scan_interval is not None and foreign_scan_interval <= 0:
            raise ConfigurationError("foreign_scan_interval must be > 0 or None")
        self._store: SessionKVStore = store if store is not None else InMemorySessionKVStore()
        self._node_id = validate_id(node_id if node_id is not None else generate_node_id(), "node_id")
        self._ttl = ttl
        self.foreign_scan_interval = foreign_scan_interval
        self.fleet = FleetMode.AUTO
        self._index: SessionIndex = (
            self._store.session_index()
            if isinstance(self._store, SessionIndexSupport)
            else KVSessionIndex(self._store)
        )
        self._node = NodeInfo(node_id=self._node_id)
        self._local = LocalSessions()
        self._local_close: set[tuple[str, str]] = set()
        self._live_copy: dict[str, tuple[bytes, dict[bytes, SessionInfo]]] = {}
        """:meth:`list_live`'s sessions per node (by raw record), with the node's version when read."""
        self._live_sessions: list[SessionInfo] | None = None
        """:meth:`list_live`'s last answer, handed back while nothing changed."""
        self._tasks: list[asyncio.Task[None]] = []
        self._throttle = LogThrottle()
        self._running = False

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
    def _exact(self) -> bool | None:
        """How per-call reads and limits find documented-layout sessions (see FleetMode)."""
        if self.fleet is FleetMode.MIXED:
            return True
        if self.fleet is FleetMode.CALLBOARD_ONLY:
            return False
        return None

    @property
    def supports_push(self) -> bool:
        """Whether close requests reach this node by push (else only by polling)."""
        return isinstance(self._store, PubSubSupport)

    async def _read_prefix(self, prefix: str) -> list[bytes]:
        keys = await self._store.keys(prefix)
        values: list[bytes] = []
        for start in range(0, len(keys), LIST_CHUNK):
            chunk = await self._store.mget(keys[start : start + LIST_CHUNK])
            values.extend(v for v in chunk if v is not None)
        return values

    def _warn_malformed(self, what: str) -> Callable[[Exception], None]:
        """An ``on_error`` for :func:`decode_or_none` that logs a skipped record, rate-limited."""

        def warn(exc: Exception) -> None:
            if (suppressed := self._throttle.allow(f"malformed-{what}")) is not None:
                logger.warning("skipping malformed %s record (%s; %d more not shown)", what, exc, suppressed)

        return warn

    def _log_store_failure(self, what: str, exc: Exception) -> None:
        if (suppressed := self._throttle.allow(what)) is not None:
            logger.warning(
                "registry %s: %s failed: %s (%d similar messages suppressed)",
                self._node_id,
                what,
                exc,
                suppressed,
            )
