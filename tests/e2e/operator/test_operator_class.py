"""Two operators in one cluster (two releases), each with its own registry and nodes: each
reconciles only the AgentSessions of its class (``spec.operatorClass``, ``--operator-class``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.kube import KubeEnv

from .conftest import NodeFactory, OperatorFactory
from .harness import AgentNode, Kube, OperatorIdentity, install_operator_identity

pytestmark = pytest.mark.e2e

FINALIZER = "callboard.dev/close-session"
#: Each class its own: an operator adds and releases only its class's.
FINALIZER_B = "tenant-b.callboard.dev/close-session"


@pytest.fixture(scope="module")
def tenant_b(
    kube_env: KubeEnv, operator_identity: OperatorIdentity, tmp_path_factory: pytest.TempPathFactory
) -> OperatorIdentity:
    """Release B's own ServiceAccount, RBAC and Lease, as the chart installs a second release."""
    return install_operator_identity(kube_env, tmp_path_factory.mktemp("tenant-b") / "kubeconfig", "tenant-b")


def _other_db(redis_url: str) -> str:
    """The same Redis, another database: release B's registry."""
    base, _, db = redis_url.rpartition("/")
    assert db.isdigit(), redis_url
    return f"{base}/{int(db) + 1}"


@pytest.mark.timeout(180)
async def test_g8_two_operators_each_reconcile_only_their_own_class(
    kube: Kube,
    operator_factory: OperatorFactory,
    node_factory: NodeFactory,
    redis_url: str,
    tmp_path: Path,
    tenant_b: OperatorIdentity,
) -> None:
    other_registry = _other_db(redis_url)
    await node_factory("node-a", capacity=4)
    node_b = AgentNode(redis_url=other_registry, node_id="node-b", log_dir=tmp_path / "b", capacity=4)
    (tmp_path / "b").mkdir()
    await node_b.start()
    try:
        # The harness's 3 s lease: two operators starting at once on a loaded machine used to
        # miss its 2 s renew deadline while their start-up held the event loop; the Lease now
        # renews from a thread of its own (kube/k8s/lease_thread.py).
        await operator_factory(name="operator-a")  # class default
        await operator_factory(
            name="operator-b",
            CALLBOARD_OPERATOR_CLASS="tenant-b",
            CALLBOARD_REDIS_URL=other_registry,
            identity=tenant_b,
        )
        await kube.apply("plain", "call-a")
        await kube.apply("tenant", "call-b", operatorClass="tenant-b")
        plain = await kube.wait_phase("plain", "Running", timeout=60)
        tenant = await kube.wait_phase("tenant", "Running", timeout=60)
        # Each placed by its own operator, on its own registry's node, with one finalizer.
        assert plain["status"]["nodeId"] == "node-a"
        assert tenant["status"]["nodeId"] == "node-b"
        for name, finalizer in (("plain", FINALIZER), ("tenant", FINALIZER_B)):
            obj = await kube.wait_finalizer(name, finalizer)  # it follows the Running write
            assert obj["metadata"]["finalizers"] == [finalizer], obj
        assert len(await node_b.sessions()) == 1
        # The class cannot be changed (it would hand a running session to the other operator).
        proc = await kube.run(
            "patch", "ags", "tenant", "-n", kube.ns, "--type", "merge",
            "-p", '{"spec": {"operatorClass": "default"}}', check=False,
        )  # fmt: skip
        assert proc.returncode != 0 and "spec.operatorClass is immutable" in proc.stderr
        # Delete: each operator closes its own session and releases its finalizer.
        await kube.delete("tenant")
        await kube.delete("plain")
        await kube.wait_gone("tenant", timeout=60)
        await kube.wait_gone("plain", timeout=60)
        assert await node_b.sessions() == []
    finally:
        await node_b.aclose()
