"""Two replicas, one leader: a leader cut off from the API server stops before another leads,
and what it might still send after that is refused by the nodes (its term is fenced)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callboard import DeposedLeaderError
from callboard.registry import RedisSessionKVStore, SessionRegistry
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
    redis_url: str,
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
        lease_name = new.env["CALLBOARD_LEASE_NAME"]
        lease = await kube.get(lease_name, namespace=OPERATOR_NAMESPACE, kind="lease")
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-old"
        old_term = int(lease["spec"].get("leaseTransitions") or 0)

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
        lease = await kube.get(lease_name, namespace=OPERATOR_NAMESPACE, kind="lease")
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-new"
        new_term = int(lease["spec"]["leaseTransitions"])
        assert new_term > old_term
        assert "stepping down" in old.log()

        await kube.apply("second", "call-second")
        await kube.wait_phase("second", "Running")
        # One session per object, neither closed by the other replica.
        assert len(await node.sessions()) == 2
        first = await kube.get("first")
        assert first is not None and first["status"]["phase"] == "Running"
        assert "second: Scheduled" not in old.log()
        assert "closing session" not in old.log()

        # The new leader published its term before it placed "second"; what the old one
        # might still send (a request delayed past the takeover: a paused process, a slow
        # network, past its own guard) carries the old term and the real node refuses it.
        delayed = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="deposed-replica", ttl=30)
        await delayed.start()
        try:
            assert await delayed.get_fence() == new_term
            late = await delayed.request_start("n1", "call-late", session_id="late-1", fencing_token=old_term)
            refused = await wait_until(lambda: delayed.get_start_result(late.request_id), what="the refusal")
            assert not refused.accepted and refused.reason is not None
            assert refused.reason.startswith("fenced: ")
            first = await kube.get("first")
            assert first is not None
            with pytest.raises(DeposedLeaderError):
                await delayed.request_close(
                    "call-first", first["status"]["sessionId"], fencing_token=old_term
                )
            assert await delayed.get_close_requests({first["status"]["sessionId"]: "call-first"}) == []
            assert len(await node.sessions()) == 2 and "late-1" not in await node.sessions()
        finally:
            await delayed.stop()
    finally:
        await proxy.aclose()
