"""Running the operator: metrics, liveness, one active replica, a registry outage."""

from __future__ import annotations

import re

import pytest

from callboard.kube.resource.constants import FINALIZER
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

from .conftest import NodeFactory, OperatorFactory
from .harness import OPERATOR_NAMESPACE, Kube

pytestmark = pytest.mark.e2e


def sample(metrics: str, name: str, **labels: str) -> float | None:
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + "$", metrics, re.MULTILINE)
    return None if found is None else float(found.group(1))


async def test_metrics_and_liveness(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    await node_factory("m1", capacity=3, pool="blue")
    operator = await operator_factory()
    await operator.wait_live()

    async def registry_ok() -> bool:  # "connecting" until the registry first answers
        health = await operator.health()
        return health is not None and health["operator"]["registry"] == "ok"

    await wait_until(registry_ok, timeout=10, what="the probe to report the registry ok")

    await kube.apply("measured", "call-measured", pool="blue")
    await kube.wait_phase("measured", "Running")
    await kube.apply("waiting", "call-waiting", pool="red")
    await kube.wait_phase("waiting", "Pending")

    async def counted() -> str | None:
        text = await operator.metrics()
        ok = sample(text, "callboard_operator_sessions", phase="Running") == 1.0
        ok = ok and sample(text, "callboard_operator_sessions", phase="Pending") == 1.0
        return text if ok and sample(text, "callboard_operator_free_slots", pool="blue") == 2.0 else None

    text = await wait_until(counted, timeout=10, what="metrics to count the objects")
    assert sample(text, "callboard_operator_nodes", pool="blue", state="ready") == 1.0
    assert sample(text, "callboard_operator_used_slots", pool="blue") == 1.0
    assert sample(text, "callboard_operator_placement_seconds_count") == 1.0
    assert sample(text, "callboard_operator_start_attempts_total", result="live") == 1.0
    assert sample(text, "callboard_operator_leader") == 1.0


async def test_one_active_replica_and_takeover(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    node = await node_factory("n1")
    leader = await operator_factory(name="replica-a")
    standby = await operator_factory(name="replica-b", leading=False)
    lease_name = standby.env["CALLBOARD_LEASE_NAME"]
    lease = await kube.get(lease_name, namespace=OPERATOR_NAMESPACE, kind="lease")
    assert lease is not None and lease["spec"]["holderIdentity"] == "replica-a"
    assert await standby.health() == {"standby": True}

    await kube.apply("first", "call-first")
    await kube.wait_phase("first", "Running")
    # (Running: a node that confirms within 2 s is never Scheduled.)
    assert "first: Running" not in standby.log()

    # SIGTERM: the leader releases the lease, the standby takes over at once.
    assert await leader.stop() == 0
    await standby.wait_live(leading=True, timeout=10)
    lease = await kube.get(lease_name, namespace=OPERATOR_NAMESPACE, kind="lease")
    assert lease is not None and lease["spec"]["holderIdentity"] == "replica-b"
    await kube.apply("second", "call-second")
    await kube.wait_phase("second", "Running")
    assert len(await node.sessions()) == 2
    assert "second: Running" in standby.log()


async def test_registry_outage_loses_nothing_and_deletes_are_bounded(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory, redis_server: RedisServer
) -> None:
    await node_factory("n1")
    operator = await operator_factory(CALLBOARD_DELETE_TIMEOUT=4)
    await kube.apply("keep", "call-keep")
    await kube.apply("drop", "call-drop")
    await kube.wait_phase("keep", "Running")
    await kube.wait_phase("drop", "Running")
    await kube.wait_finalizer("drop", FINALIZER)  # the delete below goes through its close
    try:
        redis_server.stop()

        async def unreachable() -> bool:
            health = await operator.health()
            return health is not None and health["operator"]["registry"].startswith("unreachable")

        await wait_until(unreachable, timeout=10, what="the probe to report the outage")
        await kube.delete("drop")
        took = await kube.wait_gone("drop", timeout=30)
        assert took < 10, f"delete took {took:.1f}s"
        warning = next(
            e for e in await kube.events("drop", until=("CloseTimedOut",)) if e["reason"] == "CloseTimedOut"
        )
        assert warning["type"] == "Warning" and "registry is unreachable" in warning["message"]
        # Nothing was declared lost because Redis is down.
        keep = await kube.get("keep")
        assert keep is not None and keep["status"]["phase"] == "Running"
    finally:
        redis_server.start()
    # Back: the node writes its sessions again; "keep" still runs, nothing else appears.
    await kube.wait_phase("keep", "Running")
    assert [o["metadata"]["name"] for o in await kube.list()] == ["keep"]


async def test_g10_an_operator_started_while_redis_is_down_leads_bounds_deletes_and_places_once_it_is_back(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory, redis_server: RedisServer
) -> None:
    """Defect 7 of #13: one failed ping at start used to end the term (a crash loop, kopf
    never ran, finalizers hung). Now kopf runs, the registry connects in the background, a
    delete's timeout counts from the delete, and placement starts once Redis answers."""
    redis_server.stop()
    try:
        operator = await operator_factory(CALLBOARD_DELETE_TIMEOUT=4)

        async def unreachable() -> bool:
            health = await operator.health()
            return health is not None and health["operator"]["registry"].startswith("unreachable")

        await wait_until(unreachable, timeout=10, what="the probe to report the registry unreachable")
        await kube.apply("early", "call-early")
        await kube.apply("dropped", "call-dropped")
        await kube.delete("dropped")
        took = await kube.wait_gone("dropped", timeout=30)
        assert took < 10, f"delete took {took:.1f}s with the registry down"
        operator.check_alive()  # still running, not in a crash loop
    finally:
        redis_server.start()
    await node_factory("n1")
    await kube.wait_phase("early", "Running")
    assert [o["metadata"]["name"] for o in await kube.list()] == ["early"]
