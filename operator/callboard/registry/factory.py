"""Build a store from a URL: ``memory://``, ``redis://``, ``rediss://``, ``unix://``, the
Sentinel forms ``redis+sentinel://`` / ``rediss+sentinel://`` and the Valkey aliases
(``valkey://``, ``valkeys://``, ``valkey+sentinel://``, ``valkeys+sentinel://``).

The one factory the CLI and settings use; an unknown scheme is a configuration error.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from callboard.errors import ConfigurationError
from callboard.registry.backends.memory import InMemorySessionKVStore
from callboard.registry.backends.redis import DEFAULT_KEY_PREFIX, RedisSessionKVStore
from callboard.registry.backends.redis_connect import PLAIN_SCHEMES, SENTINEL_SCHEMES
from callboard.registry.store import SessionKVStore

__all__ = ["REDIS_SCHEMES", "store_from_url"]

REDIS_SCHEMES = frozenset({*PLAIN_SCHEMES, *SENTINEL_SCHEMES})


def store_from_url(url: str | None, *, key_prefix: str = DEFAULT_KEY_PREFIX) -> SessionKVStore:
    """The store named by ``url``; None or ``memory://`` gives a new in-memory store."""
    if not url or url == "memory://":
        return InMemorySessionKVStore()
    scheme = urlsplit(url).scheme.lower()
    if scheme in REDIS_SCHEMES:
        return RedisSessionKVStore(url=url, key_prefix=key_prefix)
    raise ConfigurationError(
        f"unknown store URL scheme {scheme!r}: use memory://, redis://, rediss://, unix://, "
        "redis+sentinel://, rediss+sentinel:// (or valkey:// and the other Valkey aliases)"
    )
