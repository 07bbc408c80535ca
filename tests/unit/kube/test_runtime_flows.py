"""The operator's flows end to end over a fake API server and an in-memory registry.

The real-cluster versions of these live in tests/e2e/operator; these run in milliseconds
and reach corners that are slow to provoke there (rejections, timeouts, an outage).
"""

from __future__ import annotations

import time

import pytest

from callboard.kube.constants import POD_DELETION_COST, SAFE_TO_EVICT
from callboard.kube.naming import parse_session_id
from callboard.kube.settings import Settings

from .conftest import Harness


async def test_apply_places_on_the_packed_node_and_runs(harness: Harness) -> None:
    await harness.node("idle", capacity=4)
    busy = await harness.node("busy", capacity=4)
    await busy.registry.register("other", "s-other")
    await busy.registry.heartbeat()
    harness.kube.apply("a1", "call-1", params={"greeting": "hi"})
    status = await harness.phase("a1", "Running")
    assert status["nodeId"] == "busy" and status["attempts"] == 1
    placed = parse_session_id(status["sessionId"])
    assert placed is not None and placed.namespace == "ns" and placed.attempt == 1
    assert busy.requests[0].params == {"greeting": "hi"} and busy.requests[0].call_type == "default"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Placed": "True", "Ready": "True"}
    assert await harness.reasons("a1") == ["StartRequested", "Started"]


async def test_no_capacity_waits_pending_then_runs_when_a_node_appears(harness: Harness) -> None:
    harness.kube.apply("a1", "call-1", pool="gpu")
    status = await harness.phase("a1", "Pending")
    placed = next(c for c in status["conditions"] if c["type"] == "Placed")
    assert placed["status"] == "False" and placed["reason"] == "NoCapacity"
    assert "no agent node is registered" in placed["message"]
    await harness.node("cpu-node", pool="cpu")
    await harness.until(lambda: "none of 1 agent nodes is in pool 'gpu'" in harness.status("a1")["message"])
    await harness.node("gpu-node", pool="gpu")
    status = await harness.phase("a1", "Running")
    assert status["nodeId"] == "gpu-node"


async def test_rejected_then_retried_elsewhere(harness: Harness) -> None:
    await harness.node("a-rejects", capacity=1, mode="reject")
    good = await harness.node("b-good", capacity=5)
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Running")
    assert status["nodeId"] == "b-good" and status["attempts"] == 2
    assert status["sessionId"].endswith(".2") and good.sessions == [status["sessionId"]]
    assert "NodeRejected" in await harness.reasons("a1")


async def test_unconfirmed_then_failed_after_every_attempt(harness: Harness) -> None:
    for name in ("n1", "n2", "n3"):
        await harness.node(name, mode="ignore" if name != "n2" else "reject")
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Failed", timeout=10)
    assert status["attempts"] == 3 and status["reason"] == "StartFailed"
    assert "refused" in status["message"] and "did not confirm" in status["message"]
    reasons = await harness.reasons("a1")
    assert reasons.count("StartTimeout") == 2 and reasons.count("NodeRejected") == 1
    assert any(e["type"] == "Warning" and e["reason"] == "StartFailed" for e in await harness.events())


async def test_late_confirmation_is_closed_as_a_leftover(harness: Harness) -> None:
    slow = await harness.node("a-slow", mode="ignore")
    await harness.node("b-fast")
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Running")
    # The slow node finally starts attempt 1: a second session for the same object.
    late = slow.requests[0]
    await slow.registry.register(late.call_id, late.session_id)
    await slow.registry.heartbeat()
    slow.mode = "accept"
    slow_closes = slow.registry.close_requests()
    request = await slow_closes.get()
    assert request.session_id == late.session_id


async def test_delete_closes_the_session_then_releases(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Running")
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None)
    assert node.sessions == []
    assert "closed" in harness.kopf.outcomes["a1"]
    assert (await harness.reasons("a1"))[-2:] == ["CloseRequested", "Closed"]
    assert status["sessionId"] not in node.sessions


async def test_delete_of_a_pending_object_releases_at_once(harness: Harness) -> None:
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Pending")
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=1.0)
    assert harness.kopf.outcomes["a1"] == "no session was placed"


async def test_delete_when_the_owner_died_releases_once_its_record_expired(harness: Harness) -> None:
    node = await harness.node("n1", ttl=0.3)
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Running")
    await node.kill()
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=3.0)
    assert "closed (lost)" in harness.kopf.outcomes["a1"] or "is gone" in harness.kopf.outcomes["a1"]


async def test_delete_gives_up_after_the_timeout_with_a_warning(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Running")
    await node.kill()  # alive in the registry (ttl 30 s) but deaf to close requests
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=3.0)
    assert "gave up" in harness.kopf.outcomes["a1"] and "still lists session" in harness.kopf.outcomes["a1"]
    warning = [e for e in await harness.events() if e["reason"] == "CloseTimedOut"]
    assert warning and warning[0]["type"] == "Warning"


async def test_ended_session_succeeds_then_ttl_deletes(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1", ttlSecondsAfterFinished=0)
    status = await harness.phase("a1", "Running")
    await node.end(status["sessionId"], reason="call_ended")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=3.0)
    assert "SessionEnded" in await harness.reasons("a1")
    ended = next(e for e in await harness.events() if e["reason"] == "SessionEnded")
    assert "call_ended" in ended["message"]


async def test_node_lost_then_back(harness: Harness) -> None:
    node = await harness.node("n1", ttl=0.3)
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Running")
    await node.kill()
    status = await harness.phase("a1", "Lost", timeout=3.0)
    assert status["reason"] == "NodeLost" and status["endedAt"]
    await node.registry.heartbeat()  # the node comes back: its heartbeat writes the session back
    status = await harness.phase("a1", "Running", timeout=3.0)
    assert status["reason"] == "Recovered" and "endedAt" not in status
    assert [e["type"] for e in await harness.events() if e["reason"] in ("NodeLost", "Recovered")] == [
        "Warning",
        "Normal",
    ]


async def test_max_duration_closes_and_succeeds(harness: Harness) -> None:
    await harness.node("n1")
    harness.kube.apply("a1", "call-1", maxDurationSeconds=1)
    await harness.phase("a1", "Running")
    status = await harness.phase("a1", "Succeeded", timeout=4.0)
    assert "close_requested" in status["message"]
    assert "MaxDurationExceeded" in await harness.reasons("a1")


async def test_a_session_that_does_not_close_is_asked_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callboard.kube import sync

    monkeypatch.setattr(sync, "RECENT", 0.2)
    node = await harness.node("n1", deaf=True)
    harness.kube.apply("a1", "call-1", maxDurationSeconds=1)
    await harness.phase("a1", "Closing", timeout=4.0)
    await harness.until(lambda: node.closes >= 3, timeout=3.0)
    assert harness.status("a1")["phase"] == "Closing"


async def test_pod_annotations_follow_the_session_count(harness: Harness) -> None:
    harness.kube.add_pod("agent-0")
    node = await harness.node("n1", pod="agent-0", capacity=5)
    annotations = lambda: harness.kube.pods[("agents", "agent-0")]["metadata"]["annotations"]  # noqa: E731
    await harness.until(lambda: annotations().get(POD_DELETION_COST) == "0")
    assert SAFE_TO_EVICT not in annotations()
    harness.kube.apply("a1", "call-1")
    harness.kube.apply("a2", "call-2")
    await harness.until(lambda: annotations().get(POD_DELETION_COST) == "2")
    assert annotations()[SAFE_TO_EVICT] == "false"
    for s in node.sessions:
        await node.end(s)
    await harness.until(lambda: annotations().get(POD_DELETION_COST) == "0")
    assert SAFE_TO_EVICT not in annotations()


async def test_restart_resumes_a_scheduled_attempt_without_a_second_start(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Running")
    # A fresh operator process sees the object as the previous one left it mid-attempt.
    obj = harness.kube.get_object("a1")
    assert obj is not None
    obj["status"]["phase"] = "Scheduled"
    harness.runtime.cache.remove(("ns", "a1"))
    harness.runtime.observe(None, obj)
    status = await harness.phase("a1", "Running")
    assert status["attempts"] == 1 and len(node.requests) == 1


async def test_a_stale_registry_read_does_not_hide_a_confirmed_start(settings: Settings) -> None:
    from callboard.kube.placement import Strategy
    from callboard.kube.snapshot import Snapshot

    settings.placement.strategy = Strategy.SPREAD
    settings.sync.interval = 3600.0  # this test takes the registry reads itself
    h = Harness(settings)
    await h.runtime.start()
    try:
        await h.node("a", capacity=4)
        await h.node("b", capacity=4)
        before = time.time()
        await h.runtime.syncer.cycle()
        h.kube.apply("s1", "call-1")
        assert (await h.phase("s1", "Running"))["nodeId"] == "a"
        # A read that began before "a" registered s1 and ended after: it lists no session.
        nodes = await h.runtime.registry.list_nodes()
        h.runtime.placer.set_snapshot(Snapshot.build(nodes, [], now=before))
        h.kube.apply("s2", "call-2")
        assert (await h.phase("s2", "Running"))["nodeId"] == "b"
    finally:
        await h.kopf.stop()
        for node in h.nodes:
            await node.kill()
        await h.runtime.stop()


async def test_g4_a_session_the_store_lost_while_its_node_lives_keeps_running(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Running")
    await harness.store.delete([f"sessions/call-1/{status['sessionId']}"])  # a flush: no tombstone
    # The operator notices the gap and waits (a record without tombstone is not an end)...
    await harness.until(lambda: harness.runtime.syncer._missing_since, timeout=3.0)
    assert harness.status("a1")["phase"] == "Running"
    await node.registry.heartbeat()  # ...until the node's heartbeat writes the record back.
    await harness.until(lambda: not harness.runtime.syncer._missing_since, timeout=3.0)
    assert harness.status("a1")["phase"] == "Running"
    assert "SessionEnded" not in await harness.reasons("a1")
