"""Pure logic of the registry: ids, records, the store factory."""

from __future__ import annotations

import json

import pytest

from callboard import ConfigurationError, InvalidIdError, MalformedRecordError
from callboard.registry import (
    InMemorySessionKVStore,
    NodeInfo,
    RedisSessionKVStore,
    SessionInfo,
    store_from_url,
    validate_id,
)
from callboard.registry import _keys as k
from callboard.registry.models import decode_or_none


@pytest.mark.parametrize("good", ["a", "call-1", "A_b.c:d-9", "x" * 128, "0"])
def test_valid_ids(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "must not be empty"),
        ("x" * 129, "limit is 128"),
        ("a/b", "invalid"),
        ("a*", "invalid"),
        ("-a", "invalid"),
        (42, "must be a string"),
    ],
)
def test_invalid_ids(bad: object, message: str) -> None:
    with pytest.raises(InvalidIdError, match=message):
        validate_id(bad, "call_id")


def test_session_info_ignores_unknown_fields_and_requires_known_ones() -> None:
    raw = json.dumps({"session_id": "s", "call_id": "c", "node_id": "n", "started_at": 1.5, "new_field": [1]})
    info = SessionInfo.from_json(raw)
    assert (info.session_id, info.metrics, info.metrics_updated_at) == ("s", {}, None)
    with pytest.raises(TypeError):
        SessionInfo.from_json(json.dumps({"session_id": "s", "call_id": "c"}))


@pytest.mark.parametrize(
    "raw", [b"{", b"[]", b"\xff", b'{"session_id": 1, "call_id": "c", "node_id": "n", "started_at": 1}']
)
def test_session_info_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedRecordError):
        SessionInfo.from_json(raw)


def test_session_info_roundtrip_has_exactly_the_documented_fields() -> None:
    info = SessionInfo(session_id="s", call_id="c", node_id="n", started_at=2.0, metrics={"a": 1})
    data = json.loads(info.to_json())
    assert set(data) == {"session_id", "call_id", "node_id", "started_at", "metrics_updated_at", "metrics"}
    assert SessionInfo.from_json(info.to_json()) == info


def test_node_free_slots() -> None:
    assert NodeInfo("n", capacity=4, active=1).free_slots == 3
    assert NodeInfo("n", capacity=4, active=9).free_slots == 0
    assert NodeInfo("n", capacity=None).free_slots is None
    assert NodeInfo("n", capacity=4, draining=True).free_slots == 0


def test_key_layout_is_the_documented_one() -> None:
    assert k.session_key("c", "s") == "sessions/c/s"
    assert k.close_key("c", "s") == "close_requests/c/s"
    assert k.split_session_key("sessions/c/s") == ("c", "s")
    assert k.split_session_key("sessions/c/s/x") is None


def test_store_factory() -> None:
    assert isinstance(store_from_url(None), InMemorySessionKVStore)
    assert isinstance(store_from_url("memory://"), InMemorySessionKVStore)
    store = store_from_url("rediss://user:pw@example.com:6380/1", key_prefix="x:")
    assert isinstance(store, RedisSessionKVStore) and store.key_prefix == "x:"
    assert isinstance(store_from_url("unix:///tmp/redis.sock"), RedisSessionKVStore)
    with pytest.raises(ConfigurationError, match="unknown store URL scheme"):
        store_from_url("memcached://x")


def test_memory_store_validates_cleanup_interval() -> None:
    with pytest.raises(ValueError, match="cleanup_interval must be > 0"):
        InMemorySessionKVStore(cleanup_interval=0)


def test_decode_or_none_reads_absent_and_malformed_records_as_none() -> None:
    heard: list[Exception] = []
    good = SessionInfo(session_id="s", call_id="c", node_id="n", started_at=1.0)
    assert decode_or_none(SessionInfo.from_json, good.to_json(), on_error=heard.append) == good
    assert decode_or_none(SessionInfo.from_json, None, on_error=heard.append) is None
    assert heard == []
    assert decode_or_none(SessionInfo.from_json, b"{", on_error=heard.append) is None
    assert decode_or_none(SessionInfo.from_json, b'{"session_id": "s"}', on_error=heard.append) is None
    assert [type(e) for e in heard] == [MalformedRecordError, TypeError]
    assert decode_or_none(SessionInfo.from_json, b"[]") is None  # no listener: silent
