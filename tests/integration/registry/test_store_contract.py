"""The SessionKVStore contract, identical for every backend."""

from __future__ import annotations

import asyncio

from callboard.registry import SessionKVStore


async def test_set_get_roundtrip(store: SessionKVStore) -> None:
    await store.set("a/b", b"\x00value\xff", 5)
    assert await store.get("a/b") == b"\x00value\xff"
    assert await store.get("missing") is None


async def test_set_only_if_exists_never_creates(store: SessionKVStore) -> None:
    await store.set("k", b"1", 5, only_if_exists=True)
    assert await store.get("k") is None
    await store.set("k", b"1", 5)
    await store.set("k", b"2", 5, only_if_exists=True)
    assert await store.get("k") == b"2"


async def test_mset_mget_keep_order_and_none(store: SessionKVStore) -> None:
    await store.mset([("x/1", b"1", 5), ("x/2", b"2", 5)])
    assert await store.mget(["x/2", "nope", "x/1"]) == [b"2", None, b"1"]
    assert await store.mget([]) == []


async def test_keys_by_prefix(store: SessionKVStore) -> None:
    await store.mset([("sessions/c1/s1", b"", 5), ("sessions/c1/s2", b"", 5), ("sessions/c2/s3", b"", 5)])
    await store.set("close_requests/c1/s1", b"", 5)
    assert sorted(await store.keys("sessions/c1/")) == ["sessions/c1/s1", "sessions/c1/s2"]
    assert len(await store.keys("sessions/")) == 3


async def test_keys_prefix_is_literal_not_a_glob(store: SessionKVStore) -> None:
    await store.mset([("g/a*b", b"", 5), ("g/aXb", b"", 5), ("g/a?", b"", 5), ("g/[x]", b"", 5)])
    assert await store.keys("g/a*") == ["g/a*b"]
    assert await store.keys("g/a?") == ["g/a?"]
    assert await store.keys("g/[x") == ["g/[x]"]


async def test_ttl_expiry(store: SessionKVStore) -> None:
    await store.set("short", b"1", 0.15)
    await store.set("long", b"1", 5)
    assert await store.get("short") == b"1"
    await asyncio.sleep(0.3)
    assert await store.get("short") is None
    assert await store.keys("") == ["long"]
    assert await store.mget(["short", "long"]) == [None, b"1"]


async def test_expire_extends_and_ignores_missing(store: SessionKVStore) -> None:
    await store.set("k", b"1", 0.2)
    await store.expire("k", "missing", ttl=5)
    await asyncio.sleep(0.35)
    assert await store.get("k") == b"1"
    assert await store.get("missing") is None


async def test_delete(store: SessionKVStore) -> None:
    await store.mset([("d/1", b"", 5), ("d/2", b"", 5)])
    await store.delete(["d/1", "missing"])
    assert await store.keys("d/") == ["d/2"]
    await store.delete([])


async def test_ping_and_context_manager(store: SessionKVStore) -> None:
    await store.ping()
    async with store as same:
        assert same is store
