"""delete → closed on its node and gone; owner killed → gone within TTL plus a bounded wait;
node killed → Lost (and back); a session that ends by itself → Succeeded, then TTL-deleted."""

from __future__ import annotations

import pytest

from .conftest import NodeFactory, OperatorFactory
from .harness import NODE_TTL, Kube

pytestmark = pytest.mark.e2e


async def test_delete_closes_the_session_on_its_node(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    node = await node_factory("n1")
    await operator_factory()
    await kube.apply("bye", "call-bye")
    sid = (await kube.wait_phase("bye", "Running"))["status"]["sessionId"]

    await kube.delete("bye")
    await kube.wait_gone("bye")
    assert node.app is not None
    close = await node.app.expect("event", type="close_requested")
    assert close["data"]["session_id"] == sid
    await node.app.expect("ended", session_id=sid)
    assert await node.sessions() == []
    assert {"CloseRequested", "Closed"} <= set(await kube.reasons("bye", until=("CloseRequested", "Closed")))


async def test_delete_after_the_owner_was_killed_is_bounded(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    node = await node_factory("doomed")
    await operator_factory()
    await kube.apply("orphan", "call-orphan")
    await kube.wait_phase("orphan", "Running")

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
    await kube.delete("stuck")
    took = await kube.wait_gone("stuck", timeout=30)
    assert 3 < took < 10, f"delete took {took:.1f}s"
    warning = [
        e for e in await kube.events("stuck", until=("CloseTimedOut",)) if e["reason"] == "CloseTimedOut"
    ]
    assert warning and warning[0]["type"] == "Warning"
    assert "still lists session" in warning[0]["message"]


async def test_node_killed_becomes_lost_and_comes_back(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory, redis_url: str
) -> None:
    node = await node_factory("fragile")
    await operator_factory()
    await kube.apply("fragile-job", "call-fragile")
    running = await kube.wait_phase("fragile-job", "Running")
    sid = running["status"]["sessionId"]

    await node.kill()
    lost = await kube.wait_phase("fragile-job", "Lost", timeout=NODE_TTL + 10)
    assert lost["status"]["reason"] == "NodeLost" and lost["status"]["endedAt"]
    assert {c["type"]: c["status"] for c in lost["status"]["conditions"]}["Ready"] == "False"
    event = next(
        e for e in await kube.events("fragile-job", until=("NodeLost",)) if e["reason"] == "NodeLost"
    )
    assert event["type"] == "Warning"

    # The node comes back (same id) and still runs the session: Running again.
    from callboard.registry import RedisSessionKVStore, SessionRegistry

    revived = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="fragile", ttl=NODE_TTL)
    await revived.start()
    try:
        await revived.register("call-fragile", sid)
        back = await kube.wait_phase("fragile-job", "Running", timeout=15)
        assert back["status"]["reason"] == "Recovered" and "endedAt" not in back["status"]
        assert "Recovered" in await kube.reasons("fragile-job", until=("Recovered",))
    finally:
        await revived.stop()


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
