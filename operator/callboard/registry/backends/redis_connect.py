"""Where the Redis store connects, and the checks it runs against that server at start.

One URL names the server (limits' style: a small parser returns a dataclass, a bad URL is a
:class:`~callboard.errors.ConfigurationError` that says what is wrong):

- ``redis://``, ``rediss://`` (TLS), ``unix://``: one server, parsed by redis-py itself;
  ``valkey://`` and ``valkeys://`` are aliases of the first two;
- ``redis+sentinel://[user:password@]host:port[,host:port...]/master_name[/db]`` (and
  ``rediss+sentinel://``, ``valkey+sentinel://``, ``valkeys+sentinel://``): the master that
  the sentinels name, followed through failovers by redis-py's Sentinel support. The user and
  password are the master's; ``?sentinel_username=&sentinel_password=`` authenticate to the
  sentinels when they require it. A READONLY reply from a demoted master drops the
  connection (redis-py raises ``ConnectionError``, so the store reports it unavailable and the
  retry asks the sentinels again); scripts missing on a new master are reloaded (redis-py's
  ``Script`` answers NOSCRIPT by loading the script).

The checks (:func:`check_server`, :func:`check_ttl`) look for setups that work until the
first failure and then lose data: a cluster-mode server with keys of many slots, an ACL user
without channel rights, an eviction policy that may drop registry keys, and a TTL shorter than
a Sentinel failover.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from callboard.errors import ConfigurationError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "EXPECTED_FAILOVER_MARGIN",
    "PLAIN_SCHEMES",
    "SENTINEL_DEFAULT_DOWN_AFTER_MS",
    "SENTINEL_SCHEMES",
    "RedisEndpoint",
    "SentinelEndpoint",
    "build_client",
    "check_server",
    "check_ttl",
    "has_hash_tag",
    "parse_redis_url",
    "sentinel_of",
]

logger = logging.getLogger(__name__)

#: Single-server schemes and what redis-py calls them (Valkey speaks the same protocol).
PLAIN_SCHEMES = {"redis": "redis", "rediss": "rediss", "unix": "unix", "valkey": "redis", "valkeys": "rediss"}
#: Sentinel schemes; the value says whether the connections use TLS.
SENTINEL_SCHEMES = {
    "redis+sentinel": False,
    "rediss+sentinel": True,
    "valkey+sentinel": False,
    "valkeys+sentinel": True,
}
#: The port a sentinel listens on when the URL gives none (Redis' own default).
SENTINEL_DEFAULT_PORT = 26379
#: Sentinel's default ``down-after-milliseconds``: assumed when a sentinel will not tell.
SENTINEL_DEFAULT_DOWN_AFTER_MS = 30_000
#: Seconds a failover takes beyond ``down-after-milliseconds``: the vote, the promotion and
#: the clients' reconnect (about 1-2 s on loopback; more across zones).
EXPECTED_FAILOVER_MARGIN = 3.0
#: Query options of a Sentinel URL: TLS files for the connections, auth for the sentinels.
_SENTINEL_QUERY = frozenset(
    {"sentinel_username", "sentinel_password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"}
)
_HASH_TAG = re.compile(r"\{([^}]+)\}")


@dataclass(frozen=True, slots=True)
class RedisEndpoint:
    """One server: the URL redis-py parses (Valkey aliases already turned into Redis)."""

    url: str


@dataclass(frozen=True, slots=True)
class SentinelEndpoint:
    """The master ``master_name`` as the sentinels at ``sentinels`` name it."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls_options: tuple[tuple[str, str], ...] = ()


def parse_redis_url(url: str) -> RedisEndpoint | SentinelEndpoint:
    """Parse a store URL into where to connect; :class:`ConfigurationError` names the fault."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed Redis URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme in PLAIN_SCHEMES:
        return RedisEndpoint(PLAIN_SCHEMES[scheme] + url[len(parts.scheme) :])
    if scheme not in SENTINEL_SCHEMES:
        raise ConfigurationError(
            f"unknown Redis URL scheme {scheme!r}: use {', '.join([*PLAIN_SCHEMES, *SENTINEL_SCHEMES])}"
        )
    return _parse_sentinel(url, parts.netloc, parts.path, parts.query, tls=SENTINEL_SCHEMES[scheme])


def _parse_sentinel(url: str, netloc: str, path: str, query: str, *, tls: bool) -> SentinelEndpoint:
    shown = _redact(url)
    userinfo, _, hostlist = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    sentinels = tuple(_host_port(item, shown) for item in hostlist.split(","))
    segments = [unquote(s) for s in path.split("/")[1:]]
    if not segments or not segments[0]:
        raise ConfigurationError(
            f"Sentinel URL {shown!r} names no master: use redis+sentinel://host:port[,host:port]/master_name[/db]"
        )
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ConfigurationError(
            f"Sentinel URL {shown!r}: after the master name only a database number may follow"
        )
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - _SENTINEL_QUERY)
    if unknown:
        raise ConfigurationError(
            f"Sentinel URL {shown!r}: unknown option(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_SENTINEL_QUERY))})"
        )
    return SentinelEndpoint(
        sentinels=sentinels,
        master_name=segments[0],
        db=int(segments[1]) if len(segments) == 2 else 0,
        username=username,
        password=password,
        tls=tls,
        sentinel_username=options.pop("sentinel_username", None),
        sentinel_password=options.pop("sentinel_password", None),
        tls_options=tuple(sorted(options.items())),
    )


def _host_port(item: str, shown: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    if not sep:
        host, port = port, str(SENTINEL_DEFAULT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"Sentinel URL {shown!r}: {item!r} is not host:port")
    return host, int(port)


def _redact(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def build_client(endpoint: RedisEndpoint | SentinelEndpoint, **options: Any) -> aioredis.Redis:
    """A client whose pool blocks (up to its ``timeout``) when all connections are busy.

    ``options`` are redis-py connection options (timeouts, retry, ``max_connections``).
    """
    import redis.asyncio as aioredis

    if isinstance(endpoint, RedisEndpoint):
        pool = aioredis.BlockingConnectionPool.from_url(endpoint.url, **options)
        pool.connection_class = keeping_new_streams(pool.connection_class)
        return aioredis.Redis.from_pool(pool)
    auth = {"username": endpoint.username, "password": endpoint.password}
    tls: dict[str, Any] = {"ssl": True, **dict(endpoint.tls_options)} if endpoint.tls else {}
    sentinel_kwargs = {
        "socket_timeout": options.get("socket_timeout"),
        "socket_connect_timeout": options.get("socket_connect_timeout"),
        "username": endpoint.sentinel_username,
        "password": endpoint.sentinel_password,
        **tls,
    }
    sentinel: Any = _keeping_sentinel()(list(endpoint.sentinels), sentinel_kwargs=sentinel_kwargs)
    client: aioredis.Redis = sentinel.master_for(
        endpoint.master_name,
        redis_class=aioredis.Redis,
        connection_pool_class=_blocking_sentinel_pool(),
        db=endpoint.db,
        **auth,
        **tls,
        **options,
    )
    client.connection_pool.connection_class = keeping_new_streams(client.connection_pool.connection_class)
    return client


_KEEPING: dict[type[Any], type[Any]] = {}


def keeping_new_streams(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` whose ``disconnect`` never drops a stream it did not close.

    redis-py's ``disconnect`` closes the stream, awaits the close and only then, in a
    ``finally``, clears the connection's reader and writer. When another task reconnects
    the same connection meanwhile (its read failed: it drops the stream at once, without
    waiting, and connects again), that ``finally`` clears the *new* stream, whose socket is
    then left to the garbage collector: the ResourceWarning seen after failovers, where a
    Sentinel pool disconnects its idle connections when the master changes while commands
    reconnect them. Here the old stream is cleared at once and its close awaited after.
    """
    if connection_class in _KEEPING.values():
        return connection_class
    if connection_class in _KEEPING:
        return _KEEPING[connection_class]
    import redis.exceptions as rexc

    class KeepingNewStreams(connection_class):  # type: ignore[misc]
        async def disconnect(self, nowait: bool = False, **kwargs: Any) -> None:
            writer = self._writer
            if nowait or writer is None or asyncio.current_task() is None:
                await super().disconnect(nowait=nowait, **kwargs)
                return
            await super().disconnect(nowait=True, **kwargs)  # closes and clears, no await between
            try:
                async with asyncio.timeout(self.socket_connect_timeout):
                    await writer.wait_closed()
            except OSError:
                pass
            except TimeoutError:
                raise rexc.TimeoutError(
                    f"Timed out closing connection after {self.socket_connect_timeout}"
                ) from None

    KeepingNewStreams.__name__ = KeepingNewStreams.__qualname__ = (
        f"KeepingNewStreams{connection_class.__name__}"
    )
    _KEEPING[connection_class] = KeepingNewStreams
    return KeepingNewStreams


def _keeping_sentinel() -> type[Any]:
    from redis.asyncio.sentinel import Sentinel

    class KeepingSentinel(Sentinel):
        """redis-py's ``Sentinel`` whose list of sentinel clients survives concurrent lookups.

        ``discover_master`` moves the sentinel that answered to the front by the index it
        had when asked. Two lookups in flight at once (every pooled connection reconnecting
        after a failover) swap by stale indexes: one client ends up twice in the list and
        another drops out. The dropped one is never asked again and never closed, so its
        open connections were left to the garbage collector (issue 11). Here the list is
        rebuilt from the clients made at start after each lookup, the answering one first.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
            self._clients = list(self.sentinels)

        async def discover_master(self, service_name: str) -> Any:
            try:
                return await super().discover_master(service_name)
            finally:
                first = self.sentinels[0]
                self.sentinels[:] = [first, *(c for c in self._clients if c is not first)]

        async def aclose(self) -> None:
            self.sentinels[:] = self._clients
            await super().aclose()

    return KeepingSentinel


def _blocking_sentinel_pool() -> type[Any]:
    from redis.asyncio.connection import BlockingConnectionPool
    from redis.asyncio.sentinel import SentinelConnectionPool

    class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
        """Sentinel's pool with the store's queueing: a burst waits for a connection."""

    return BlockingSentinelConnectionPool


def sentinel_of(client: aioredis.Redis) -> Any | None:
    """The redis-py ``Sentinel`` behind ``client``, or None for a single server."""
    return getattr(client.connection_pool, "sentinel_manager", None)


def has_hash_tag(prefix: str) -> bool:
    """Whether every key under ``prefix`` hashes to one cluster slot (``{tag}`` in front)."""
    match = _HASH_TAG.search(prefix)
    return match is not None and "{" not in prefix[: match.start()]


async def check_server(client: aioredis.Redis, key_prefix: str) -> None:
    """Refuse a cluster-mode server the key layout cannot use; warn about unsafe settings.

    Raises :class:`ConfigurationError` for a cluster without a hash-tagged prefix and for a
    user who may not publish on the prefix's channels (pushes would fail while requests are
    stored). Call inside the store's error translation.
    """
    import redis.exceptions as rexc

    try:
        info = await client.info("cluster")
    except rexc.NoPermissionError as exc:  # INFO is @dangerous: a narrow user may lack it
        logger.debug("cannot ask whether Redis runs in cluster mode (%s)", exc)
        info = {}
    if info.get("cluster_enabled") in (1, "1"):
        await _pin_cluster_slot(client, key_prefix)
    try:
        await client.publish(f"{key_prefix}channels/probe", b"")
    except rexc.NoPermissionError as exc:
        raise ConfigurationError(
            f"the Redis user may not publish on {key_prefix}* channels ({exc}): close and start "
            f"requests would be stored but never pushed. Grant the channel pattern: "
            f"ACL SETUSER <user> &{key_prefix}* (Redis 7 gives new users resetchannels)"
        ) from exc
    try:
        policy = await client.config_get("maxmemory-policy")
    except rexc.ResponseError as exc:  # managed services and least-privilege users refuse CONFIG
        logger.debug("cannot read maxmemory-policy (%s); make sure it is noeviction", exc)
        return
    raw: dict[Any, Any] = dict(policy)
    value = raw.get("maxmemory-policy") or raw.get(b"maxmemory-policy")
    if isinstance(value, bytes):
        value = value.decode()
    if value and value != "noeviction":
        logger.warning(
            "Redis maxmemory-policy is %s: under memory pressure it may evict registry keys "
            "(sessions reappear only at the next heartbeat, close requests and tombstones are lost). "
            "Use noeviction, or a Redis of its own for callboard",
            value,
        )


async def _pin_cluster_slot(redis_client: aioredis.Redis, key_prefix: str) -> None:
    client: Any = redis_client  # redis-py's cluster commands are untyped
    if not has_hash_tag(key_prefix):
        raise ConfigurationError(
            f"the Redis server runs in cluster mode, and the key prefix {key_prefix!r} spreads "
            "the registry's keys over many slots (its scripts touch several keys at once: "
            "CROSSSLOT/MOVED). Use a prefix with a hash tag, e.g. --key-prefix '{callboard}:' "
            "(CALLBOARD_KEY_PREFIX), so every key lives in one slot; Vision Agents nodes then "
            "need the same prefix"
        )
    slot = int(await client.execute_command("CLUSTER", "KEYSLOT", key_prefix))
    for first, last, owner, *_ in await client.execute_command("CLUSTER", "SLOTS"):
        if int(first) <= slot <= int(last):
            host = owner[0].decode() if isinstance(owner[0], bytes) else str(owner[0])
            port = int(owner[1])
            break
    else:
        raise ConfigurationError(f"no cluster node serves slot {slot} (of prefix {key_prefix!r})")
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if "host" not in kwargs:
        raise ConfigurationError("a cluster-mode server must be reached over TCP (redis:// or rediss://)")
    if host and (kwargs.get("host"), kwargs.get("port")) != (host, port):
        logger.info(
            "cluster mode: slot %d of prefix %r is served by %s:%d; connecting there",
            slot,
            key_prefix,
            host,
            port,
        )
        kwargs.update(host=host, port=port, orig_host_address=host)
        await pool.disconnect()
        pool.reset()  # idle connections keep their address: drop them, new ones use kwargs


async def check_ttl(client: aioredis.Redis, ttl: float) -> None:
    """Warn when ``ttl`` cannot outlive one Sentinel failover (TTL >= 2 x failover time).

    The failover time is ``down-after-milliseconds`` (asked of a sentinel; Sentinel's default
    of 30 s when none tells) plus :data:`EXPECTED_FAILOVER_MARGIN`.
    """
    sentinel = sentinel_of(client)
    if sentinel is None:
        return
    import redis.exceptions as rexc

    pool: Any = client.connection_pool
    name: str = pool.service_name
    down_after_ms = SENTINEL_DEFAULT_DOWN_AFTER_MS
    source = "Sentinel's default"
    for node in sentinel.sentinels:
        try:
            state = await node.sentinel_master(name)
        except (rexc.RedisError, OSError):
            continue
        down_after_ms = int(state.get("down-after-milliseconds", down_after_ms))
        source = "as a sentinel reports"
        break
    failover = down_after_ms / 1000 + EXPECTED_FAILOVER_MARGIN
    if ttl < 2 * failover:
        logger.warning(
            "ttl %gs cannot survive a Sentinel failover of master %r: down-after-milliseconds is %d (%s), "
            "so a failover takes about %gs and every session expires before the new master is "
            "found. Use ttl >= %gs (2 x failover time) or lower down-after-milliseconds",
            ttl,
            name,
            down_after_ms,
            source,
            failover,
            2 * failover,
        )
