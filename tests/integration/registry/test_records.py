"""SessionRegistry records.py: registration, heartbeat, node records and reads, over every backend.

Several registries sharing one backend play several nodes (see ``tests/integration/conftest.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from callboard import (
    InvalidIdError,
    InvalidValueError,
    MaxSessionsPerCallExceeded,
    NodeIdInUseError,
    SessionConflictError,
    SessionStatus,
)
from callboard.registry import NodeInfo, SessionInfo
from tests.integration.conftest import Cluster


async def test_register_get_remove(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    info = await a.register("call-1", "sess-1")
    assert info.node_id == "node-a"
    got = await a.get("call-1", "sess-1")
    assert got is not None
    assert (got.session_id, got.call_id, got.node_id) == ("sess-1", "call-1", "node-a")
    assert [s.session_id for s in await a.get_for_call("call-1")] == ["sess-1"]
    await a.remove("call-1", "sess-1")
    assert await a.get("call-1", "sess-1") is None
    assert await a.get_for_call("call-1") == []
    assert await a.session_status("call-1", "sess-1") is SessionStatus.ENDED
    ended = await a.get_ended("call-1", "sess-1")
    assert ended is not None and ended.reason == "closed"


async def test_three_nodes_see_each_other(cluster: Cluster) -> None:
    a, b, c = [await cluster.node(n) for n in ("node-a", "node-b", "node-c")]
    await a.register("call-1", "s-a")
    await b.register("call-1", "s-b")
    await c.register("call-2", "s-c")
    for reg in (a, b, c):
        assert sorted(s.session_id for s in await reg.get_for_call("call-1")) == ["s-a", "s-b"]
        assert sorted(s.session_id for s in await reg.list_sessions()) == ["s-a", "s-b", "s-c"]
        assert [s.session_id for s in await reg.list_sessions(node_id="node-b")] == ["s-b"]
        assert sorted(n.node_id for n in await reg.list_nodes()) == ["node-a", "node-b", "node-c"]
    await a.heartbeat()
    node_a = await c.get_node("node-a")
    assert node_a is not None and node_a.active == 1


async def test_update_metrics_only_if_session_exists(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    b = await cluster.node("node-b")
    await a.update_metrics("call-1", "ghost", {"x": 1})
    assert await a.get("call-1", "ghost") is None
    await a.register("call-1", "sess-1")
    await a.update_metrics("call-1", "sess-1", {"latency_ms": 120.5, "tokens": 42})
    got = await b.get("call-1", "sess-1")
    assert got is not None and got.metrics == {"latency_ms": 120.5, "tokens": 42}
    assert got.metrics_updated_at is not None


async def test_node_that_stops_heartbeating_expires_and_its_sessions_are_lost(cluster: Cluster) -> None:
    a = await cluster.node("node-a", ttl=0.3)
    b = await cluster.node("node-b", ttl=5)
    await a.register("call-1", "sess-1")
    assert await b.session_status("call-1", "sess-1", "node-a") is SessionStatus.LIVE
    await asyncio.sleep(0.5)  # node-a never heartbeats again: a crash
    assert await b.get("call-1", "sess-1") is None
    assert await b.get_for_call("call-1") == []
    assert [n.node_id for n in await b.list_nodes()] == ["node-b"]
    assert await b.session_status("call-1", "sess-1", "node-a") is SessionStatus.LOST


async def test_heartbeat_keeps_sessions_beyond_ttl(cluster: Cluster) -> None:
    a = await cluster.node("node-a", ttl=0.4)
    await a.register("call-1", "sess-1")
    for _ in range(5):
        await asyncio.sleep(0.15)
        await a.heartbeat()
    assert await a.get("call-1", "sess-1") is not None
    assert len(await a.get_for_call("call-1")) == 1


async def test_heartbeat_upserts_what_the_store_lost(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    await a.register("call-1", "sess-1")
    await a.register("call-2", "sess-2")
    raw = await cluster.raw_store()
    await raw.delete(await raw.keys(""))  # like FLUSHALL or a restarted, empty Redis
    assert await a.list_sessions() == []
    await a.heartbeat()
    assert sorted(s.session_id for s in await a.list_sessions()) == ["sess-1", "sess-2"]
    assert [s.session_id for s in await a.get_for_call("call-2")] == ["sess-2"]
    assert sorted(s.session_id for s in await a.list_sessions(node_id="node-a")) == ["sess-1", "sess-2"]


async def test_malformed_records_are_skipped_with_a_warning(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    a = await cluster.node("node-a")
    await a.register("call-1", "good")
    raw = await cluster.raw_store()
    await raw.set("sessions/call-1/garbage", b"{not json", 5)
    await raw.set("sessions/call-1/array", b"[1, 2]", 5)
    await raw.set("sessions/call-1/partial", json.dumps({"session_id": "partial"}).encode(), 5)
    await raw.set("nodes/broken", b"\xff\xfe", 5)
    await a.index_foreign_sessions()
    with caplog.at_level(logging.WARNING):
        assert [s.session_id for s in await a.list_sessions()] == ["good"]
        assert [s.session_id for s in await a.get_for_call("call-1")] == ["good"]
        assert await a.get("call-1", "garbage") is None
        assert [n.node_id for n in await a.list_nodes()] == ["node-a"]
    assert "malformed" in caplog.text


@pytest.mark.parametrize(
    "bad", ["", "a/b", "a*", "a?", "[ab]", "x" * 129, "sp ace", "-lead", "new\nline", "é"]
)
async def test_invalid_ids_are_refused_clearly(cluster: Cluster, bad: str) -> None:
    a = await cluster.node("node-a")
    with pytest.raises(InvalidIdError, match="call_id"):
        await a.register(bad, "ok")
    with pytest.raises(ValueError, match="session_id"):
        await a.request_close("ok", bad)
    with pytest.raises(ValueError, match="call_id"):
        await a.get_for_call(bad)


async def test_max_sessions_per_call_holds_across_racing_nodes(cluster: Cluster) -> None:
    nodes = [await cluster.node(f"node-{i}") for i in range(3)]
    attempts = [nodes[i % 3].register("busy-call", f"s-{i}", max_sessions_per_call=4) for i in range(30)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    accepted = [r for r in results if isinstance(r, SessionInfo)]
    refused = [r for r in results if isinstance(r, MaxSessionsPerCallExceeded)]
    assert len(accepted) == 4 and len(refused) == 26
    assert len(await nodes[0].get_for_call("busy-call")) == 4


async def test_concurrent_registrations_are_all_kept(cluster: Cluster) -> None:
    nodes = [await cluster.node(f"node-{i}") for i in range(3)]
    await asyncio.gather(*(nodes[i % 3].register(f"call-{i % 7}", f"s-{i}") for i in range(300)))
    assert len(await nodes[1].list_sessions()) == 300
    per_call = [len(await nodes[2].get_for_call(f"call-{c}")) for c in range(7)]
    assert sum(per_call) == 300


async def test_draining_and_node_info_are_published(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    b = await cluster.node("node-b")
    a.set_node_info(address="http://127.0.0.1:9000", capacity=4, pool="default")
    await a.register("call-1", "s1")
    await a.set_draining(True)
    node = await b.get_node("node-a")
    assert node is not None
    assert (node.capacity, node.active, node.draining, node.free_slots) == (4, 1, True, 0)
    assert node.address == "http://127.0.0.1:9000"


async def test_register_can_restore_start_time_and_metrics(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    before = a.node.heartbeat_at
    await a.register("call-1", "s1", started_at=123.0, metrics={"tokens": 7})
    got = await a.get("call-1", "s1")
    assert got is not None and (got.started_at, got.metrics) == (123.0, {"tokens": 7})
    await asyncio.sleep(0.01)
    await a.heartbeat()
    assert a.node.heartbeat_at > before


async def test_g4_status_is_unknown_not_ended_while_the_node_lives_without_a_tombstone(
    cluster: Cluster,
) -> None:
    a = await cluster.node("node-a")
    b = await cluster.node("node-b")
    await a.register("call-1", "sess-1")
    raw = await cluster.raw_store()
    await raw.delete(["sessions/call-1/sess-1"])  # a flush, an eviction: no tombstone
    assert await b.session_status("call-1", "sess-1", "node-a") is SessionStatus.UNKNOWN
    await a.heartbeat()  # the write-back
    assert await b.session_status("call-1", "sess-1", "node-a") is SessionStatus.LIVE
    await a.remove("call-1", "sess-1")
    assert await b.session_status("call-1", "sess-1", "node-a") is SessionStatus.ENDED


@pytest.mark.parametrize(
    "metrics",
    [{"x": object()}, {"x": float("nan")}, {"x": float("inf")}, {"x": 10**400}, {"blob": "x" * 70_000}],
    ids=["not-json", "nan", "inf", "huge-int", "too-big"],
)
async def test_g12_bad_metrics_are_refused_and_the_heartbeat_goes_on(
    cluster: Cluster, metrics: dict[str, object]
) -> None:
    a = await cluster.node("node-a")
    await a.register("call-1", "sess-1", metrics={"ok": 1})
    with pytest.raises(InvalidValueError, match="metrics"):
        await a.update_metrics("call-1", "sess-1", metrics)
    with pytest.raises(InvalidValueError, match="metrics"):
        await a.register("call-1", "sess-2", metrics=metrics)
    raw = await cluster.raw_store()
    await raw.delete(await raw.keys(""))  # the next heartbeat must write the session back
    await a.heartbeat()
    got = await a.get("call-1", "sess-1")
    assert got is not None and got.metrics == {"ok": 1}


@pytest.mark.parametrize("started_at", [float("nan"), float("inf"), -1.0, 1e300], ids=str)
async def test_g12_bad_started_at_is_refused(cluster: Cluster, started_at: float) -> None:
    a = await cluster.node("node-a")
    with pytest.raises(InvalidValueError, match="started_at"):
        await a.register("call-1", "sess-1", started_at=started_at)
    assert await a.get("call-1", "sess-1") is None


async def test_g12_records_with_nan_or_huge_numbers_read_as_malformed(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    await a.register("call-1", "good")
    raw = await cluster.raw_store()
    base = {"call_id": "call-1", "node_id": "va", "metrics_updated_at": None, "metrics": {}}
    await raw.set(
        "sessions/call-1/nan", b'{"session_id":"nan","started_at":NaN,' + json.dumps(base).encode()[1:], 5
    )
    await raw.set(
        "sessions/call-1/huge", json.dumps({**base, "session_id": "huge", "started_at": 1e300}).encode(), 5
    )
    await raw.set(
        "sessions/call-1/text", json.dumps({**base, "session_id": "text", "started_at": "x"}).encode(), 5
    )
    await a.index_foreign_sessions()
    assert [s.session_id for s in await a.list_sessions()] == ["good"]
    assert [s.session_id for s in await a.get_for_call("call-1")] == ["good"]


async def test_g11_register_refuses_to_take_over_another_nodes_live_session(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    b = await cluster.node("node-b")
    await a.register("call-1", "sess-1")
    with pytest.raises(SessionConflictError, match="node-a"):
        await b.register("call-1", "sess-1")
    got = await b.get("call-1", "sess-1")
    assert got is not None and got.node_id == "node-a"
    await a.register("call-1", "sess-1")  # its own: a restore, allowed
    await a.remove("call-1", "sess-1")
    await b.register("call-1", "sess-2")
    raw = await cluster.raw_store()
    await raw.delete(["sessions/call-1/sess-2"])  # gone (expired): anyone may register it
    await a.register("call-1", "sess-2")


async def test_concurrent_register_of_one_session_from_two_nodes_has_one_winner(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    b = await cluster.node("node-b")
    results = await asyncio.gather(
        *(node.register("call-1", f"s-{i}") for i in range(20) for node in (a, b)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, SessionInfo)]
    lost = [r for r in results if isinstance(r, SessionConflictError)]
    assert (len(won), len(lost)) == (20, 20)
    for info in won:
        stored = await a.get(info.call_id, info.session_id)
        assert stored is not None and stored.node_id == info.node_id
    for _ in range(3):
        await a.heartbeat()
        await b.heartbeat()
    owners = {s.session_id: s.node_id for s in await a.list_sessions()}
    assert owners == {info.session_id: info.node_id for info in won}


async def test_g11_a_second_process_with_a_live_node_id_is_refused_at_start(cluster: Cluster) -> None:
    first = await cluster.node("node-a")

    async def keep_alive() -> None:  # what the first process's maintenance loop does
        while True:
            await first.heartbeat()
            await asyncio.sleep(0.05)

    beating = asyncio.create_task(keep_alive())
    second = await cluster.node("node-a", start=False)
    try:
        with pytest.raises(NodeIdInUseError, match="node-a"):
            await second.start()
    finally:
        beating.cancel()
    assert not second.running
    assert [n.node_id for n in await first.list_nodes()] == ["node-a"]
    await first.stop()
    again = await cluster.node("node-a")  # the first one deregistered: the id is free
    assert again.running


async def test_g11_a_record_left_by_a_dead_process_does_not_hold_its_node_id(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await cluster.raw_store()
    await raw.set("nodes/node-a", NodeInfo(node_id="node-a").to_json(), 1.0)  # its process died
    registry = await cluster.node("node-a", ttl=1.0, start=False)
    with caplog.at_level(logging.WARNING):
        await registry.start()
    assert registry.running
    if cluster.has_push:  # nobody listens on its channel: the id is free at once
        assert "waiting up to" not in caplog.text
    else:  # no way to tell but to wait for the record to expire
        assert "waiting up to" in caplog.text
