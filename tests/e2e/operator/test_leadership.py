"""Two replicas, one leader: a leader cut off from the API server stops before another leads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.waiting import wait_until

from .blackhole import BlackHoleProxy
from .conftest import NodeFactory, OperatorFactory
from .harness import OPERATOR_NAMESPACE, Kube

pytestmark = pytest.mark.e2e


def _leader(metrics: str) -> float | None:
    found = re.search(r"^callboard_operator_leader (\S+)$", metrics, re.MULTILINE)
    return None if found is None else float(found.group(1))


async def test_g8_a_black_holed_leader_steps_down_and_the_standby_carries_on(
    kube: Kube,
    operator_factory: OperatorFactory,
    node_factory: NodeFactory,
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    node = await node_factory("n1")
    proxy = BlackHoleProxy(kube.env.server)
    await proxy.start()
    try:
        via_proxy = proxy.kubeconfig(operator_kubeconfig, tmp_path / "kubeconfig-via-proxy")
        old = await operator_factory(name="replica-old", KUBECONFIG=str(via_proxy))
        new = await operator_factory(name="replica-new", leading=False)
        await kube.apply("first", "call-first")
        await kube.wait_phase("first", "Running")

        # The old leader's packets to the API server are dropped from now on (its Redis
        # path still works, so anything it still did would reach the nodes).
        proxy.cut()

        async def stepped_down() -> bool:
            try:
                return _leader(await old.metrics()) == 0.0
            except Exception:
                return not old.running  # it exited: stepped down too
            return False

        # The old leader's own clock says stop (renew deadline: 2 s of the 3 s lease); on
        # main it kept leading until its renewals' 30 s call timeouts ran out, retried.
        await wait_until(stepped_down, timeout=12, what="the black-holed leader to step down")
        await new.wait_live(leading=True, timeout=15)
        lease_name = new.env["CALLBOARD_LEASE_NAME"]
        lease = await kube.get(lease_name, namespace=OPERATOR_NAMESPACE, kind="lease")
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-new"
        assert "stepping down" in old.log()

        await kube.apply("second", "call-second")
        await kube.wait_phase("second", "Running")
        # One session per object, neither closed by the other replica.
        assert len(await node.sessions()) == 2
        first = await kube.get("first")
        assert first is not None and first["status"]["phase"] == "Running"
        assert "second: Scheduled" not in old.log()
        assert "closing session" not in old.log()
    finally:
        await proxy.aclose()
