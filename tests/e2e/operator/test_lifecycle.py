"""delete → closed on its node and gone; owner killed → gone within TTL plus a bounded wait;
node killed → Lost, and back (lostPolicy Recover) or its session closed (Close, the default);
a session that ends by itself → Succeeded, then TTL-deleted."""

from __future__ import annotations

import pytest

from callboard.kube.resource.constants import FINALIZER
from callboard.registry import RedisSessionKVStore, SessionRegistry
from tests.support.waiting import wait_until

from .conftest import NodeFactory, OperatorFactory
from .harness import NODE_TTL, AgentNode, Kube

pytestmark = pytest.mark.e2e


async def test_delete_closes_the_session_on_its_node(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    node = await node_factory("n1")
    await operator_factory()
    await kube.apply("bye", "call-bye")
    sid = (await kube.wait_phase("bye", "Running"))["status"]["sessionId"]
    await kube.wait_finalizer("bye", FINALIZER)  # from here on a delete waits for the close

    await kube.delete("bye")
    await kube.wait_gone("bye")
    assert node.app is not None
    close = await node.app.expect("event", type="close_requested")
    assert close["data"]["session_id"] == sid
    await node.app.expect("ended", session_id=sid)
    assert await node.sessions() == []
    reasons = await kube.reasons("bye", until=("Closed",))
    assert "Closed" in reasons and "CloseRequested" not in reasons  # one Event per delete


async def test_delete_after_the_owner_was_killed_is_bounded(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    node = await node_factory("doomed")
    await operator_factory()
    await kube.apply("orphan", "call-orphan")
    await kube.wait_phase("orphan", "Running")
    await kube.wait_finalizer("orphan", FINALIZER)

    await node.kill()
    await kube.delete("orphan")
    took = await kube.wait_gone("orphan", timeout=30)
    # The node's records expire after its TTL; the delete notices within a sync cycle or two.
    assert took < NODE_TTL + 5, f"delete took {took:.1f}s"
    closed = [e for e in await kube.events("orphan", until=("Closed",)) if e["reason"] == "Closed"]
    assert closed, await kube.events("orphan")


async def test_delete_gives_up_after_the_timeout_when_the_owner_never_closes(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    # The app ignores close requests: its sidecar keeps the session alive forever.
    await node_factory("stubborn", on_close="ignore")
    await operator_factory(CALLBOARD_DELETE_TIMEOUT=4)
    await kube.apply("stuck", "call-stuck")
    await kube.wait_phase("stuck", "Running")
    await kube.wait_finalizer("stuck", FINALIZER)
    await kube.delete("stuck")
    took = await kube.wait_gone("stuck", timeout=30)
    assert 3 < took < 10, f"delete took {took:.1f}s"
    warning = [
        e for e in await kube.events("stuck", until=("CloseTimedOut",)) if e["reason"] == "CloseTimedOut"
    ]
    assert warning and warning[0]["type"] == "Warning"
    assert "still lists session" in warning[0]["message"]


async def _lose_and_revive(
    kube: Kube, node: AgentNode, name: str, call_id: str, redis_url: str
) -> tuple[str, SessionRegistry]:
    """Kill the node of ``name``'s session until the object is Lost, then bring the node back
    (same id, past the TTL) still running the session: the registry sees it live again."""
    running = await kube.wait_phase(name, "Running")
    sid: str = running["status"]["sessionId"]
    await node.kill()
    lost = await kube.wait_phase(name, "Lost", timeout=NODE_TTL + 10)
    assert lost["status"]["reason"] == "NodeLost" and lost["status"]["endedAt"]
    assert {c["type"]: c["status"] for c in lost["status"]["conditions"]}["Ready"] == "False"
    event = next(e for e in await kube.events(name, until=("NodeLost",)) if e["reason"] == "NodeLost")
    assert event["type"] == "Warning"
    revived = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id=node.node_id, ttl=NODE_TTL)
    await revived.start()
    await revived.register(call_id, sid)
    return sid, revived


async def test_node_killed_becomes_lost_and_comes_back_with_lost_policy_recover(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory, redis_url: str
) -> None:
    node = await node_factory("fragile")
    await operator_factory()
    await kube.apply("fragile-job", "call-fragile", lostPolicy="Recover")
    _, revived = await _lose_and_revive(kube, node, "fragile-job", "call-fragile", redis_url)
    try:
        back = await kube.wait_phase("fragile-job", "Running", timeout=15)
        assert back["status"]["reason"] == "Recovered" and "endedAt" not in back["status"]
        assert "Recovered" in await kube.reasons("fragile-job", until=("Recovered",))
    finally:
        await revived.stop()


async def test_a_session_back_after_the_ttl_is_closed_and_its_object_stays_lost(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory, redis_url: str
) -> None:
    # The default lostPolicy (Close): a node partitioned past the TTL comes back, still running
    # the session; the operator asks it to close and the object never goes back to Running.
    node = await node_factory("partitioned")
    await operator_factory()
    await kube.apply("stale-job", "call-stale")
    obj = await kube.get("stale-job")
    assert obj is not None and obj["spec"]["lostPolicy"] == "Close"  # the schema's default
    sid, revived = await _lose_and_revive(kube, node, "stale-job", "call-stale", redis_url)
    try:
        flagged = await wait_until(
            lambda: revived.get_close_requests({sid: "call-stale"}), what="a close request", timeout=20
        )
        assert flagged == [sid]
        reasons = await kube.reasons("stale-job", until=("StaleSessionClosed",))
        assert "Recovered" not in reasons
        status = (await kube.get("stale-job") or {})["status"]
        assert status["phase"] == "Lost" and status["reason"] == "StaleSessionClosed"
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "StaleSessionClosed")
        # The node obeys: the session ends, and the object still has not moved backwards.
        await revived.remove("call-stale", sid, reason="closed-by-request")
        await wait_until(lambda: _gone(revived, "call-stale", sid), what="the session to leave the registry")
        after = await kube.get("stale-job")
        assert after is not None and after["status"]["phase"] == "Lost"
    finally:
        await revived.stop()


async def test_a_replacement_gets_the_stale_copy_closed_even_with_lost_policy_recover(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory, redis_url: str
) -> None:
    lost_node = await node_factory("a-lost")  # packed placement: the first choice of two idle nodes
    await node_factory("b-spare")
    await operator_factory()
    await kube.apply("first", "call-shared", lostPolicy="Recover")
    assert (await kube.wait_phase("first", "Running"))["status"]["nodeId"] == "a-lost"
    await lost_node.kill()
    await kube.wait_phase("first", "Lost", timeout=NODE_TTL + 10)
    # Whoever watched the object started a replacement for the call meanwhile.
    await kube.apply("second", "call-shared")
    replacement = await kube.wait_phase("second", "Running")
    assert replacement["status"]["nodeId"] == "b-spare"

    revived = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="a-lost", ttl=NODE_TTL)
    await revived.start()
    try:
        first = await kube.get("first")
        assert first is not None
        sid = first["status"]["sessionId"]
        await revived.register("call-shared", sid)
        flagged = await wait_until(
            lambda: revived.get_close_requests({sid: "call-shared"}), what="a close request", timeout=20
        )
        assert flagged == [sid]
        await kube.events("first", until=("StaleSessionClosed",))
        status = (await kube.get("first") or {})["status"]
        assert status["phase"] == "Lost" and status["reason"] == "StaleSessionClosed"
        assert replacement["status"]["sessionId"] in status["message"]
        second = await kube.get("second")
        assert second is not None and second["status"]["phase"] == "Running"
    finally:
        await revived.stop()


async def _gone(registry: SessionRegistry, call_id: str, session_id: str) -> bool:
    return await registry.get(call_id, session_id) is None


async def test_session_that_ends_by_itself_succeeds_then_is_deleted_after_its_ttl(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    node = await node_factory("n1")
    await operator_factory()
    await kube.apply("short", "call-short", ttlSecondsAfterFinished=2)
    sid = (await kube.wait_phase("short", "Running"))["status"]["sessionId"]
    assert node.app is not None
    await node.app.send(op="end", call_id="call-short", session_id=sid, reason="call-finished")
    done = await kube.wait_phase("short", "Succeeded")
    assert "call-finished" in done["status"]["message"] and done["status"]["endedAt"]
    await kube.wait_gone("short", timeout=15)


async def test_max_duration_closes_the_session(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    node = await node_factory("n1")
    await operator_factory()
    await kube.apply("capped", "call-capped", maxDurationSeconds=2)
    await kube.wait_phase("capped", "Running")
    done = await kube.wait_phase("capped", "Succeeded", timeout=15)
    assert "closed-by-request" in done["status"]["message"]
    assert "MaxDurationExceeded" in await kube.reasons("capped", until=("MaxDurationExceeded",))
    assert await node.sessions() == []
