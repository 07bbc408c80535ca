"""SessionRegistry over every backend: several registries play several nodes."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from callboard import InvalidIdError, MaxSessionsPerCallExceeded, SessionStatus
from callboard.registry import (
    CloseRequest,
    SessionInfo,
    SessionRegistry,
    StartProgress,
    StartRef,
    StartRejection,
)
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


async def test_cross_node_close_is_pushed_and_polled(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    b = await cluster.node("node-b")
    await a.register("call-1", "sess-1")
    stream = a.close_requests()
    await b.request_close("call-1", "sess-1")
    if cluster.has_push:
        request = await asyncio.wait_for(stream.get(), 2)
        assert request == CloseRequest("call-1", "sess-1")
    assert await a.get_close_requests({"sess-1": "call-1", "other": "call-1"}) == ["sess-1"]
    await a.remove("call-1", "sess-1")
    assert await a.get_close_requests({"sess-1": "call-1"}) == []
    await stream.aclose()


async def test_close_of_local_session_needs_no_store(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    await a.register("call-1", "sess-1")
    async with a.close_requests() as stream:
        await a.request_close("call-1", "sess-1")
        assert await asyncio.wait_for(stream.get(), 1) == CloseRequest("call-1", "sess-1")
    assert await a.get_close_requests({"sess-1": "call-1"}) == ["sess-1"]


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


async def test_foreign_node_interop(cluster: Cluster) -> None:
    """A node that only knows the documented layout (a Vision Agents node) and us."""
    ours = await cluster.node("callboard-node")
    foreign = await cluster.raw_store()
    # The foreign node registers a session by writing the documented key directly.
    record = {
        "session_id": "va-sess",
        "call_id": "call-1",
        "node_id": "va-node",
        "started_at": 1.0,
        "metrics_updated_at": 1.0,
        "metrics": {},
        "some_future_field": True,
    }
    await foreign.set("sessions/call-1/va-sess", json.dumps(record).encode(), 5)
    # We list it at once and, after the foreign scan, find it by call.
    assert [s.session_id for s in await ours.list_sessions()] == ["va-sess"]
    got = await ours.get("call-1", "va-sess")
    assert got is not None and got.node_id == "va-node"
    await ours.index_foreign_sessions()
    assert [s.session_id for s in await ours.get_for_call("call-1")] == ["va-sess"]
    # We close it the documented way: the foreign node polls the flag.
    await ours.request_close("call-1", "va-sess")
    assert await foreign.get("close_requests/call-1/va-sess") == b""
    # The foreign node sees our sessions and can close them by flag.
    await ours.register("call-1", "cb-sess")
    raw = await foreign.get("sessions/call-1/cb-sess")
    assert raw is not None
    decoded = json.loads(raw)
    assert set(decoded) == {"session_id", "call_id", "node_id", "started_at", "metrics_updated_at", "metrics"}
    assert decoded["node_id"] == "callboard-node"
    await foreign.set("close_requests/call-1/cb-sess", b"", 5)
    assert await ours.get_close_requests({"cb-sess": "call-1"}) == ["cb-sess"]
    # And it finds our sessions the documented way: by key prefix.
    assert sorted(await foreign.keys("sessions/call-1/")) == [
        "sessions/call-1/cb-sess",
        "sessions/call-1/va-sess",
    ]


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


async def test_stop_removes_node_record(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    b = await cluster.node("node-b")
    await a.stop()
    assert [n.node_id for n in await b.list_nodes()] == ["node-b"]


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="ttl must be > 0"):
        SessionRegistry(ttl=0)
    with pytest.raises(ValueError, match="node_id"):
        SessionRegistry(node_id="bad/id")
    assert SessionRegistry().node_id


async def test_start_request_accepted_through_the_registry(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    operator = await cluster.node("operator")
    stream = node.start_requests()
    request = await operator.request_start("agent-node", "call-9", call_type="meeting", params={"lang": "fr"})
    if cluster.has_push:
        pushed = await asyncio.wait_for(stream.get(), 2)
        assert pushed == request
    assert await node.pending_start_requests() == [request]
    await node.register(request.call_id, request.session_id)
    await node.answer_start(request, accepted=True)
    result = await operator.get_start_result(request.request_id)
    assert result is not None and result.accepted and result.session_id == request.session_id
    assert await node.pending_start_requests() == []
    info = await operator.get("call-9", request.session_id)
    assert info is not None and info.node_id == "agent-node"
    await stream.aclose()


async def test_start_request_rejected_with_reason(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    operator = await cluster.node("operator")
    request = await operator.request_start("agent-node", "call-9")
    [pending] = await node.pending_start_requests()
    await node.answer_start(pending, accepted=False, reason=StartRejection.CAPACITY)
    result = await operator.get_start_result(request.request_id)
    assert result is not None
    assert (result.accepted, result.reason, result.session_id) == (False, StartRejection.CAPACITY, None)
    assert await operator.get_for_call("call-9") == []


async def test_register_can_restore_start_time_and_metrics(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    before = a.node.heartbeat_at
    await a.register("call-1", "s1", started_at=123.0, metrics={"tokens": 7})
    got = await a.get("call-1", "s1")
    assert got is not None and (got.started_at, got.metrics) == (123.0, {"tokens": 7})
    await asyncio.sleep(0.01)
    await a.heartbeat()
    assert a.node.heartbeat_at > before


async def test_start_progress_reads_records_and_answers_of_many_starts_at_once(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    operator = await cluster.node("operator")
    accepted = await operator.request_start("agent-node", "call-1")
    rejected = await operator.request_start("agent-node", "call-2")
    waiting = await operator.request_start("agent-node", "call-3")
    await node.register(accepted.call_id, accepted.session_id)
    await node.answer_start(accepted, accepted=True)
    await node.answer_start(rejected, accepted=False, reason="capacity")
    progress = await operator.get_start_progress(
        [
            StartRef(accepted.call_id, accepted.session_id, accepted.request_id),
            StartRef(rejected.call_id, rejected.session_id, rejected.request_id),
            StartRef(waiting.call_id, waiting.session_id, waiting.request_id),
            StartRef(accepted.call_id, accepted.session_id),  # no request id: the record only
        ]
    )
    live, refused, pending, by_record = progress
    assert live.live and live.session is not None and live.session.node_id == "agent-node"
    assert live.result is not None and live.result.accepted
    assert not refused.live and refused.result is not None
    assert (refused.result.accepted, refused.result.reason) == (False, "capacity")
    assert pending == StartProgress(live=False, session=None, result=None)
    assert by_record.live and by_record.result is None
    assert await operator.get_start_progress([]) == []


async def test_start_progress_counts_a_malformed_record_as_live(cluster: Cluster) -> None:
    operator = await cluster.node("operator")
    raw = await cluster.raw_store()
    await raw.set("sessions/call-1/s-1", b"not json", 30)
    await raw.set("start_results/r-1", b"[]", 30)
    [progress] = await operator.get_start_progress([StartRef("call-1", "s-1", "r-1")])
    assert progress == StartProgress(live=True, session=None, result=None)
