"""apply → Running on a node with room; no room → Pending, then Running when a node appears."""

from __future__ import annotations

import pytest

from callboard.kube.resource.naming import parse_session_id

from .conftest import NodeFactory, OperatorFactory
from .harness import Kube

pytestmark = pytest.mark.e2e


async def test_apply_runs_on_the_node_with_capacity(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    full = await node_factory("node-full", capacity=1)
    assert full.app is not None
    await full.app.send(op="register", call_id="busy-call", session_id="busy-1")
    await full.app.expect("registered")
    roomy = await node_factory("node-roomy", capacity=2)
    await operator_factory()

    await kube.apply("greeter", "call-1", params={"instructions": "say hi"})
    obj = await kube.wait_phase("greeter", "Running")
    status = obj["status"]
    assert status["nodeId"] == "node-roomy"
    assert status["attempts"] == 1
    placed = parse_session_id(status["sessionId"])
    assert placed is not None and placed.namespace == kube.ns and placed.uid == obj["metadata"]["uid"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Placed": "True", "Ready": "True"}
    assert status["startedAt"] and "lastHeartbeatAt" not in status  # liveness is not status
    # The finalizer follows the Running write (placement does not wait for it).
    obj = await kube.wait_finalizer("greeter", "callboard.dev/close-session")
    assert obj["metadata"]["finalizers"] == ["callboard.dev/close-session"]

    # The agent app of that node got the start request with the params, and runs the session.
    assert roomy.app is not None
    event = await roomy.app.expect("event", type="start_requested")
    assert event["data"]["call_id"] == "call-1" and event["data"]["params"] == {"instructions": "say hi"}
    assert await roomy.sessions() == [status["sessionId"]]
    assert await full.sessions() == ["busy-1"]
    reasons = await kube.reasons("greeter", until=("Started",))
    assert "Started" in reasons and "StartRequested" not in reasons  # one Event per outcome

    # kubectl get shows it in the printer columns.
    table = (await kube.run("get", "ags", "-n", kube.ns)).stdout.splitlines()
    assert table[1].split()[:3] == ["greeter", "call-1", "Running"]


async def test_no_capacity_stays_pending_then_runs_when_a_node_appears(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    await node_factory("cpu-node", pool="cpu")
    await operator_factory()
    await kube.apply("gpu-job", "call-gpu", pool="gpu")
    obj = await kube.wait_phase("gpu-job", "Pending")
    placed = next(c for c in obj["status"]["conditions"] if c["type"] == "Placed")
    assert placed["status"] == "False" and placed["reason"] == "NoCapacity"
    assert "pool 'gpu'" in placed["message"]

    node = await node_factory("gpu-node", pool="gpu")
    obj = await kube.wait_phase("gpu-job", "Running")
    assert obj["status"]["nodeId"] == "gpu-node"
    assert await node.sessions() == [obj["status"]["sessionId"]]
    reasons = await kube.reasons("gpu-job", until=("NoCapacity", "Started"))
    assert {"NoCapacity", "Started"} <= set(reasons) and "StartRequested" not in reasons


async def test_rejected_then_retried_elsewhere(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    # Both nodes are empty; the tie goes to "a-refuses", which refuses.
    await node_factory("a-refuses", on_start="reject")
    good = await node_factory("b-accepts")
    await operator_factory()
    await kube.apply("picky", "call-picky")
    obj = await kube.wait_phase("picky", "Running")
    assert obj["status"]["nodeId"] == "b-accepts" and obj["status"]["attempts"] == 2
    assert obj["status"]["sessionId"].endswith(".2")
    assert await good.sessions() == [obj["status"]["sessionId"]]
    rejected = [
        e for e in await kube.events("picky", until=("NodeRejected",)) if e["reason"] == "NodeRejected"
    ]
    assert len(rejected) == 1 and rejected[0]["type"] == "Warning"
    assert "a-refuses refused attempt 1: not-today" in rejected[0]["message"]


async def test_every_node_refuses_then_failed(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    for name in ("r1", "r2"):
        await node_factory(name, pool="strict", on_start="reject")
    await node_factory("elsewhere", pool="lenient")
    await operator_factory()
    await kube.apply("doomed", "call-doomed", pool="strict")
    # Two refusals and nothing else in the pool: Pending, saying what happened so far.
    obj = await kube.wait_phase("doomed", "Pending")
    await node_factory("r3", pool="strict", on_start="reject")
    obj = await kube.wait_phase("doomed", "Failed")
    status = obj["status"]
    assert status["reason"] == "StartFailed" and status["attempts"] == 3
    for name in ("r1", "r2", "r3"):
        assert f"node {name} refused" in status["message"]
    reasons = await kube.reasons("doomed", until=("StartFailed",))
    assert reasons.count("NodeRejected") == 3 and "StartFailed" in reasons


async def test_spread_strategy_uses_the_emptiest_node(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    nodes = [await node_factory(f"n{i}", capacity=4) for i in range(2)]
    await operator_factory(CALLBOARD_PLACEMENT="spread")
    for i in range(4):
        await kube.apply(f"s{i}", f"call-{i}")
    for i in range(4):
        await kube.wait_phase(f"s{i}", "Running")
    counts = sorted([len(await n.sessions()) for n in nodes])
    assert counts == [2, 2]
