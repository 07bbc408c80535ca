"""The Redis store: many nodes share one Redis (or Valkey, or a managed service).

redis-py (with hiredis) is an optional dependency: importing callboard works without it,
and creating this store then raises ``ModuleNotFoundError`` saying what to install.
Every redis-py error is translated at this boundary into a callboard
:class:`~callboard.errors.StoreError` (``StoreUnavailableError`` for connection failures and
timeouts, and READONLY: after a failover behind a Service or DNS name a pooled connection
may still reach the demoted primary, which answers writes with READONLY while PING works;
the connection is dropped and the command retried on a fresh one, which reaches the new
primary), chained to the original.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from callboard.errors import ConfigurationError, StoreError, StoreUnavailableError
from callboard.registry import _keys as k
from callboard.registry.store import PubSubSupport, SessionIndexSupport, SessionKVStore, Subscription

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from callboard.registry.index import SessionIndex

__all__ = ["DEFAULT_KEY_PREFIX", "RedisSessionKVStore"]

logger = logging.getLogger(__name__)

#: The documented Vision Agents prefix: keep it to share a Redis with Vision Agents nodes.
DEFAULT_KEY_PREFIX = "vision_agents:"
#: Seconds to open a connection. Loopback or in-cluster Redis answers in milliseconds; a
#: longer wait only delays the "unavailable" error a caller needs to see.
CONNECT_TIMEOUT = 2.0
#: Seconds to wait for a reply. A heartbeat of 10,000 sessions runs in well under 100 ms.
SOCKET_TIMEOUT = 5.0
#: Retries of a failed command (connection errors and timeouts only), with exponential
#: backoff from RETRY_BASE up to RETRY_CAP seconds: rides over a failover, bounded.
RETRIES = 2
RETRY_BASE = 0.05
RETRY_CAP = 0.5
#: Connections per store. Callers beyond it wait (up to SOCKET_TIMEOUT) for a free one
#: instead of failing: a burst of concurrent starts queues rather than errors out.
MAX_CONNECTIONS = 64
#: Keys per SCAN step: few round trips, no long block of the server.
SCAN_COUNT = 1000
#: Seconds a pub/sub read waits before looping (lets cancellation and health checks in).
PUBSUB_POLL = 1.0

_GLOB_CHARS = re.compile(r"([*?\[\]\\])")
_INSTALL_HINT = "RedisSessionKVStore needs redis-py: pip install 'callboard[redis]'"


def _import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(_INSTALL_HINT, name=exc.name) from exc
    return aioredis


def _ms(ttl: float) -> int:
    return max(int(ttl * 1000), 1)


#: A script's line ``-- include: NAME ...`` is replaced by ``lua/NAME.lua``: Redis runs each
#: script alone (no ``require``), and four scripts move a node's version the same way.
_INCLUDE = re.compile(r"^-- include: (\w+)\b.*$", re.MULTILINE)


@cache
def _lua(name: str) -> str:
    """A Lua script of ``lua/`` (package data) with its includes inlined, read once."""
    text = resources.files("callboard.registry.backends").joinpath(f"lua/{name}.lua").read_text()
    return _INCLUDE.sub(lambda m: _lua(m.group(1)), text)


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn redis-py errors into callboard store errors, keeping the cause."""
    import redis.exceptions as rexc

    try:
        yield
    except (rexc.AuthenticationError, rexc.AuthorizationError, rexc.NoPermissionError) as exc:
        raise StoreError(f"Redis refused the credentials or permissions ({action}): {exc}") from exc
    except rexc.ReadOnlyError as exc:
        raise StoreUnavailableError(f"Redis is a read-only replica now (READONLY, {action}): {exc}") from exc
    except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
        raise StoreUnavailableError(f"Redis is unreachable ({action}): {exc}") from exc
    except rexc.RedisError as exc:
        raise StoreError(f"Redis failed ({action}): {exc}") from exc


class RedisSessionKVStore(SessionKVStore, PubSubSupport, SessionIndexSupport):
    """Sessions in Redis, under ``key_prefix``. Give exactly one of ``client`` or ``url``.

    ``url`` accepts ``redis://``, ``rediss://`` (TLS) and ``unix://`` with ACL user and
    password (``redis://user:secret@host:6379/0``), their Valkey aliases and the Sentinel
    forms (``redis+sentinel://h1:26379,h2:26379/master_name/0``; see
    :mod:`~callboard.registry.backends.redis_connect`); the store then owns the client and
    closes it. A ``client`` passed in stays the caller's to close; it must return bytes
    (``decode_responses=False``, the default).
    """

    def __init__(
        self,
        *,
        client: aioredis.Redis | None = None,
        url: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        if (client is None) == (url is None):
            raise ConfigurationError("Pass exactly one of client or url")
        _import_redis()  # a clear ModuleNotFoundError without redis-py
        self.key_prefix = key_prefix
        self._owns_client = client is None
        if client is None:
            import redis.exceptions as rexc
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff

            from callboard.registry.backends import redis_connect

            # READONLY joins the retried errors: redis-py closes the connection before each
            # retry, so the retry reconnects (and resolves the name again) after a failover.
            retried: tuple[type[Exception], ...] = (
                rexc.ConnectionError,
                rexc.TimeoutError,
                socket.timeout,
                rexc.ReadOnlyError,
            )
            client = redis_connect.build_client(
                redis_connect.parse_redis_url(url or ""),
                max_connections=MAX_CONNECTIONS,
                timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=SOCKET_TIMEOUT,
                retry=Retry(
                    ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE),
                    RETRIES,
                    supported_errors=retried,  # type: ignore[arg-type]
                ),
                health_check_interval=30,
            )
        self.client: aioredis.Redis = client
        self._index: SessionIndex | None = None
        self._set_session = client.register_script(_lua("set_session"))

    def __repr__(self) -> str:
        pool = self.client.connection_pool
        return f"<RedisSessionKVStore {pool.connection_kwargs.get('host', '?')} prefix={self.key_prefix!r}>"

    def _k(self, key: str) -> str:
        return self.key_prefix + key

    async def start(self) -> None:
        """Check the connection and the server now, so a wrong setup fails at start-up.

        Refuses a cluster-mode server without a hash-tagged prefix and a user without
        channel rights; warns about an evicting ``maxmemory-policy``.
        """
        from callboard.registry.backends import redis_connect

        with translate_errors("start"):
            await self.client.ping()
            await redis_connect.check_server(self.client, self.key_prefix)

    async def check_ttl(self, ttl: float) -> None:
        """Warn when ``ttl`` cannot outlive one Sentinel failover (see the README)."""
        from callboard.registry.backends import redis_connect

        await redis_connect.check_ttl(self.client, ttl)

    async def close(self) -> None:
        if self._owns_client:
            from callboard.registry.backends import redis_connect

            sentinel = redis_connect.sentinel_of(self.client)
            await self.client.aclose()
            if sentinel is not None:
                await sentinel.aclose()

    async def ping(self) -> None:
        with translate_errors("ping"):
            await self.client.ping()

    def _session_args(
        self, key: str, value: bytes, ttl: float, only_if_exists: bool
    ) -> tuple[list[str], list[Any]] | None:
        """Keys and args of ``set_session.lua`` when ``key`` is a session record, else None.

        A session record written the documented way through this store (by a Vision Agents
        registry on it, say) is indexed by call at once, so per-call reads and limits see it.
        """
        parts = k.split_session_key(key)
        if parts is None:
            return None
        keys = [self._k(key), self._k(k.call_index_key(parts[0]))]
        return keys, [value, _ms(ttl), parts[1], "1" if only_if_exists else "0"]

    async def set(self, key: str, value: bytes, ttl: float, *, only_if_exists: bool = False) -> None:
        session = self._session_args(key, value, ttl, only_if_exists)
        with translate_errors("set"):
            if session is not None:
                await self._set_session(keys=session[0], args=session[1])
            else:
                await self.client.set(self._k(key), value, px=_ms(ttl), xx=only_if_exists)

    async def mset(self, items: list[tuple[str, bytes, float]]) -> None:
        if not items:
            return
        with translate_errors("mset"):
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value, ttl in items:
                    session = self._session_args(key, value, ttl, False)
                    if session is not None:
                        await self._set_session(keys=session[0], args=session[1], client=pipe)
                    else:
                        pipe.set(self._k(key), value, px=_ms(ttl))
                await pipe.execute()

    async def expire(self, *keys: str, ttl: float) -> None:
        if not keys:
            return
        with translate_errors("expire"):
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.pexpire(self._k(key), _ms(ttl))
                await pipe.execute()

    async def get(self, key: str) -> bytes | None:
        with translate_errors("get"):
            value = await self.client.get(self._k(key))
        return value.encode() if isinstance(value, str) else value

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        with translate_errors("mget"):
            values = await self.client.mget([self._k(k) for k in keys])
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def keys(self, prefix: str) -> list[str]:
        pattern = _GLOB_CHARS.sub(r"\\\1", self._k(prefix)) + "*"
        cut = len(self.key_prefix)
        with translate_errors("scan"):
            return [
                key.decode()[cut:] async for key in self.client.scan_iter(match=pattern, count=SCAN_COUNT)
            ]

    async def delete(self, keys: list[str]) -> None:
        if not keys:
            return
        with translate_errors("delete"):
            await self.client.delete(*[self._k(k) for k in keys])

    async def publish(self, channel: str, message: bytes) -> None:
        with translate_errors("publish"):
            await self.client.publish(self._k(channel), message)

    async def subscribers(self, channel: str) -> int | None:
        with translate_errors("pubsub numsub"):
            counts = await self.client.pubsub_numsub(self._k(channel))
        return int(counts[0][1]) if counts else 0

    async def subscribe(self, channel: str) -> Subscription:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        with translate_errors("subscribe"):
            await pubsub.subscribe(self._k(channel))
        return _RedisSubscription(pubsub)

    def session_index(self) -> SessionIndex:
        if self._index is None:
            from callboard.registry.backends.redis_index import RedisSessionIndex

            self._index = RedisSessionIndex(self)
        return self._index


class _RedisSubscription(Subscription):
    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub
        self._reconnect_callbacks: list[Callable[[], None]] = []

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """redis-py reconnects a pub/sub connection inside ``get_message`` and resubscribes
        in a connect callback, without raising: hook that callback (registered after
        redis-py's own, so it runs once the channels are subscribed again)."""
        if not self._reconnect_callbacks and self._pubsub.connection is not None:
            self._pubsub.connection.register_connect_callback(self._reconnected)
        self._reconnect_callbacks.append(callback)

    def _reconnected(self, connection: Any) -> None:
        for callback in list(self._reconnect_callbacks):
            callback()

    async def next_message(self) -> bytes:
        while True:
            with translate_errors("pubsub read"):
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=PUBSUB_POLL)
            if message is not None and message.get("type") == "message":
                data: bytes = message["data"]
                return data

    async def aclose(self) -> None:
        if self._reconnect_callbacks and self._pubsub.connection is not None:
            # The connection goes back to the pool: a later user must not call us.
            self._pubsub.connection.deregister_connect_callback(self._reconnected)
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
