"""The sync loop mirroring the registry into running objects, over a fake API server.

Endings, lost nodes, max duration, leftovers and pod annotations; adoption is in
test_loop_adoption.py (it needs other settings).
"""

from __future__ import annotations

import pytest

from callboard.kube.resource.constants import (
    BUSY_LABEL,
    DO_NOT_DISRUPT,
    POD_DELETION_COST,
    POOL_LABEL,
    SAFE_TO_EVICT,
)
from tests.unit.kube.conftest import Harness


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


async def _claim_behind_the_cache(harness: Harness, name: str, node_id: str, attempt: int) -> tuple[str, str]:
    """Another replica places ``name`` (attempt ``attempt`` on ``node_id``) unseen by this one."""
    body = harness.kube.get_object(name)
    assert body is not None
    session_id = f"ags.ns.{body['metadata']['uid']}.{attempt}"
    await harness.kube.merge_patch(
        f"/apis/callboard.dev/v1alpha1/namespaces/ns/agentsessions/{name}/status",
        {"status": {"phase": "Running", "sessionId": session_id, "nodeId": node_id, "attempts": attempt}},
    )
    return body["spec"]["callId"], session_id


def _reread(harness: Harness, name: str | None, *, after: int) -> bool:
    suffix = "/namespaces/ns/agentsessions" if name is None else f"/namespaces/ns/agentsessions/{name}"
    return any(m == "GET" and p.endswith(suffix) for m, p, _ in harness.kube.calls[after:])


async def test_g8_a_session_claimed_behind_a_stale_cache_is_not_closed_as_a_leftover(
    harness: Harness,
) -> None:
    await harness.node("n1")
    other = await harness.node("n2")
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Running")
    harness.kube.watchers.remove(harness.kopf.on_event)  # this replica's view stops here
    after = len(harness.kube.calls)
    call_id, session_id = await _claim_behind_the_cache(harness, "a1", "n2", 2)
    await other.registry.register(call_id, session_id)
    await other.registry.heartbeat()
    await harness.until(lambda: _reread(harness, "a1", after=after))
    await harness.until(lambda: harness.runtime.syncer.last_cycle is not None)
    assert other.closes == 0 and session_id in other.sessions


async def test_g8_a_session_of_an_object_the_cache_never_saw_is_not_closed_as_a_leftover(
    harness: Harness,
) -> None:
    node = await harness.node("n1")
    harness.kube.watchers.remove(harness.kopf.on_event)  # objects applied from now on are unseen
    await harness.until(lambda: harness.runtime.cache.primed.is_set())
    after = len(harness.kube.calls)
    harness.kube.apply("a1", "call-1")
    call_id, session_id = await _claim_behind_the_cache(harness, "a1", "n1", 1)
    await node.registry.register(call_id, session_id)
    await node.registry.heartbeat()
    await harness.until(lambda: _reread(harness, None, after=after))
    assert node.closes == 0 and session_id in node.sessions


async def test_ended_session_succeeds_then_ttl_deletes(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1", ttlSecondsAfterFinished=0)
    status = await harness.phase("a1", "Running")
    await node.end(status["sessionId"], reason="call_ended")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=3.0)
    assert "SessionEnded" in await harness.reasons("a1")
    ended = next(e for e in await harness.events() if e["reason"] == "SessionEnded")
    assert "call_ended" in ended["message"]


async def test_node_lost_then_back_recovers_with_the_recover_policy(harness: Harness) -> None:
    node = await harness.node("n1", ttl=0.3)
    harness.kube.apply("a1", "call-1", lostPolicy="Recover")
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


async def test_a_lost_session_that_comes_back_is_closed_and_its_object_stays_lost(harness: Harness) -> None:
    node = await harness.node("n1", ttl=0.3)
    harness.kube.apply("a1", "call-1")  # lostPolicy defaults to Close
    sid = (await harness.phase("a1", "Running"))["sessionId"]
    await node.kill()
    await harness.phase("a1", "Lost", timeout=3.0)
    await node.registry.heartbeat()  # back after the TTL, still running the session
    await harness.until(lambda: harness.status("a1").get("reason") == "StaleSessionClosed", timeout=3.0)
    flagged = await node.registry.get_close_requests({sid: "call-1"})
    assert flagged == [sid]
    status = harness.status("a1")
    assert status["phase"] == "Lost" and status["endedAt"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "StaleSessionClosed"
    reasons = await harness.reasons("a1")
    assert "StaleSessionClosed" in reasons and "Recovered" not in reasons
    # Its node ends the session as asked: the object still never moves back.
    await node.end(sid, reason="close_requested")
    await harness.until(lambda: harness.runtime.syncer.snapshot is not None and not any(
        s.session_id == sid for s in harness.runtime.syncer.snapshot.sessions.values()
    ))  # fmt: skip
    assert harness.status("a1")["phase"] == "Lost"


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
    from callboard.kube.mirroring import loop as sync

    monkeypatch.setattr(sync, "RECENT", 0.2)
    node = await harness.node("n1", deaf=True)
    harness.kube.apply("a1", "call-1", maxDurationSeconds=1)
    await harness.phase("a1", "Closing", timeout=4.0)
    await harness.until(lambda: node.closes >= 3, timeout=3.0)
    assert harness.status("a1")["phase"] == "Closing"


async def test_pod_annotations_follow_the_session_count(harness: Harness) -> None:
    harness.kube.add_pod("agent-0", labels={POOL_LABEL: "default"})
    node = await harness.node("n1", pod="agent-0", capacity=5)
    annotations = lambda: harness.kube.pods[("agents", "agent-0")]["metadata"]["annotations"]  # noqa: E731
    labels = lambda: harness.kube.pods[("agents", "agent-0")]["metadata"].get("labels") or {}  # noqa: E731
    await harness.until(lambda: annotations().get(POD_DELETION_COST) == "0")
    assert SAFE_TO_EVICT not in annotations()
    harness.kube.apply("a1", "call-1")
    harness.kube.apply("a2", "call-2")
    await harness.until(lambda: annotations().get(POD_DELETION_COST) == "2")
    assert annotations()[SAFE_TO_EVICT] == "false"
    assert annotations()[DO_NOT_DISRUPT] == "true"
    assert labels()[BUSY_LABEL] == "true"
    for s in node.sessions:
        await node.end(s)
    await harness.until(lambda: annotations().get(POD_DELETION_COST) == "0")
    assert SAFE_TO_EVICT not in annotations()
    assert DO_NOT_DISRUPT not in annotations()
    assert BUSY_LABEL not in labels()


async def test_g1_a_session_that_shows_up_for_a_failed_object_is_closed(harness: Harness) -> None:
    for name in ("n1", "n2", "n3"):
        await harness.node(name, mode="reject")
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Failed")
    # A node that committed the last attempt as it timed out registers it afterwards.
    late = harness.nodes[0]
    await late.registry.register("call-1", status["sessionId"])
    await late.registry.heartbeat()
    await harness.until(lambda: late.closes >= 1 and late.sessions == [])
    assert await harness.runtime.registry.get_for_call("call-1") == []
    assert harness.status("a1")["phase"] == "Failed"
    assert "OrphanClosed" in await harness.reasons("a1")


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


async def test_g4_a_spec_edit_is_observed_without_a_phase_change(harness: Harness) -> None:
    await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    harness.kube.apply("waiting", "call-2", pool="none-such")
    assert (await harness.phase("a1", "Running"))["observedGeneration"] == 1
    assert (await harness.phase("waiting", "Pending"))["observedGeneration"] == 1
    for name in ("a1", "waiting"):
        await harness.kube.merge_patch(
            f"/apis/callboard.dev/v1alpha1/namespaces/ns/agentsessions/{name}",
            {"spec": {"maxDurationSeconds": 3600}},
        )
    await harness.until(lambda: harness.status("a1").get("observedGeneration") == 2)
    await harness.until(lambda: harness.status("waiting").get("observedGeneration") == 2)
    assert harness.status("a1")["phase"] == "Running"
    assert harness.status("waiting")["phase"] == "Pending"


async def test_a_quiet_running_object_still_gets_the_pod_its_node_names_later(harness: Harness) -> None:
    """The sync loop skips deciding an object whose object, session and pod did not change:
    a pod its node names afterwards is still one of those inputs."""
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Running")
    assert "podName" not in status
    uid = harness.kube.get_object("a1")["metadata"]["uid"]  # type: ignore[index]
    await harness.until(lambda: uid in harness.runtime.syncer._quiet)  # decided once, then skipped
    node.registry.set_node_info(pod_name="agent-0", namespace="agents")
    await node.registry.heartbeat()
    await harness.until(lambda: harness.status("a1").get("podName") == "agent-0")


async def test_a_quiet_running_object_whose_session_ended_succeeds(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Running")
    uid = harness.kube.get_object("a1")["metadata"]["uid"]  # type: ignore[index]
    await harness.until(lambda: uid in harness.runtime.syncer._quiet)
    await node.end(node.sessions[0])
    await harness.phase("a1", "Succeeded")
    assert uid not in harness.runtime.syncer._quiet
