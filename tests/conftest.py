"""Fixtures shared by every tier: a real redis-server per test session, flushed per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from callboard.registry import RedisSessionKVStore
from tests.support.redis_server import RedisServer

pytest_plugins = ("tests.support.tier_times",)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's Redis, started if a test stopped it, and flushed."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisSessionKVStore]:
    store = RedisSessionKVStore(url=redis_url)
    await store.start()
    try:
        yield store
    finally:
        await store.close()
