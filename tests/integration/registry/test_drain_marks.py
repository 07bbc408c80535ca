"""The operator's drain marks (:mod:`callboard.registry.drain_marks`) on every backend.

A scale-down victim is marked before the scale patch; while marked its node must take no
new session, and a mark left by a dead operator must go by itself.
"""

from __future__ import annotations

import pytest

from callboard.errors import ConfigurationError, NodeDrainingError
from tests.integration.conftest import Cluster
from tests.support.waiting import wait_until


async def test_g9_a_marked_node_registers_no_new_session(cluster: Cluster) -> None:
    node = await cluster.node("node-a")
    operator = await cluster.node("operator")
    await operator.mark_draining(["node-a"], ttl=60, by="operator")
    assert await node.drain_marked()
    with pytest.raises(NodeDrainingError, match="node-a"):
        await node.register("call-1", "s-1")
    assert await operator.get("call-1", "s-1") is None
    assert node.local_sessions == []


async def test_g9_a_mark_keeps_the_sessions_a_node_runs(cluster: Cluster) -> None:
    node = await cluster.node("node-a")
    operator = await cluster.node("operator")
    before = await node.register("call-1", "s-1")
    await operator.mark_draining(["node-a"], ttl=60)
    await node.heartbeat()
    assert await operator.get("call-1", "s-1") is not None
    # A restore (a sidecar re-asserting what its app runs) is not a new session.
    restored = await node.register("call-1", "s-1", started_at=before.started_at, new=False)
    assert restored.started_at == before.started_at


async def test_g9_a_cleared_mark_lets_the_node_take_sessions_again(cluster: Cluster) -> None:
    node = await cluster.node("node-a")
    operator = await cluster.node("operator")
    await operator.mark_draining(["node-a", "node-b"], ttl=60)
    assert await operator.drain_marks(["node-a", "node-b", "node-c"]) == {"node-a", "node-b"}
    await operator.clear_drain_marks(["node-a"])
    assert await operator.drain_marks(["node-a", "node-b", "node-c"]) == {"node-b"}
    assert not await node.drain_marked()
    await node.register("call-1", "s-1")
    assert await operator.get("call-1", "s-1") is not None


async def test_g9_a_mark_expires_so_a_dead_operator_strands_no_node(cluster: Cluster) -> None:
    node = await cluster.node("node-a")
    operator = await cluster.node("operator")
    await operator.mark_draining(["node-a"], ttl=0.3)
    with pytest.raises(NodeDrainingError):
        await node.register("call-1", "s-1")
    await operator.stop()  # the operator is gone; nobody clears the mark

    async def unmarked() -> bool:
        return not await node.drain_marked()

    await wait_until(unmarked, what="the drain mark to expire")
    await node.register("call-1", "s-1")
    assert [s.session_id for s in await node.get_for_call("call-1")] == ["s-1"]


async def test_a_drain_mark_needs_a_positive_ttl(cluster: Cluster) -> None:
    operator = await cluster.node("operator")
    with pytest.raises(ConfigurationError):
        await operator.mark_draining(["node-a"], ttl=0)
