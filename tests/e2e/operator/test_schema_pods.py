"""The CRD rejects bad specs; agent pods' annotations follow their session counts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.kube import KubeEnv
from tests.support.waiting import wait_until

from .conftest import NodeFactory, OperatorFactory
from .harness import AgentNode, Kube

pytestmark = pytest.mark.e2e

COST = "controller.kubernetes.io/pod-deletion-cost"
EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
#: The label of agent pods (the chart's agent Deployment sets it): only such pods are annotated.
POOL = "callboard.dev/pool"


def manifest(name: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "callboard.dev/v1alpha1",
            "kind": "AgentSession",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({}, "spec.callId: Required value"),
        ({"callId": "has space"}, "spec.callId: Invalid value"),
        ({"callId": "-leading-dash"}, "spec.callId: Invalid value"),
        ({"callId": "x" * 129}, "spec.callId: Invalid value"),
        ({"callId": "ok", "callType": "bad/type"}, "spec.callType: Invalid value"),
        ({"callId": "ok", "params": "not-an-object"}, "spec.params: Invalid value"),
        (
            {"callId": "ok", "params": {f"k{i}": i for i in range(65)}},
            "spec.params: Too many: 65: must have at most 64 items",
        ),
        ({"callId": "ok", "maxDurationSeconds": 0}, "spec.maxDurationSeconds: Invalid value"),
        ({"callId": "ok", "idleTimeoutSeconds": -5}, "spec.idleTimeoutSeconds: Invalid value"),
        # Not enforced anywhere, so refused with a message instead of silently accepted.
        ({"callId": "ok", "idleTimeoutSeconds": 300}, "idleTimeoutSeconds is not supported"),
        ({"callId": "ok", "lostPolicy": "Maybe"}, "spec.lostPolicy: Unsupported value"),
        ({"callId": "ok", "ttlSecondsAfterFinished": -1}, "spec.ttlSecondsAfterFinished: Invalid value"),
        ({"callId": "ok", "maxDurationSeconds": "soon"}, "spec.maxDurationSeconds: Invalid value"),
    ],
)
async def test_schema_rejects_bad_specs(kube: Kube, spec: dict[str, Any], error: str) -> None:
    proc = await kube.run("apply", "-n", kube.ns, "-f", "-", input=manifest("bad", **spec), check=False)
    assert proc.returncode != 0
    assert error in proc.stderr, proc.stderr
    assert await kube.list() == []


async def test_schema_accepts_registry_ids_and_keeps_the_call_immutable(kube: Kube) -> None:
    await kube.run("apply", "-n", kube.ns, "-f", "-", input=manifest("good", callId="Room_7:eu.west-1"))
    proc = await kube.run(
        "patch",
        "ags",
        "good",
        "-n",
        kube.ns,
        "--type=merge",
        "-p",
        '{"spec": {"callId": "other"}}',
        check=False,
    )
    assert proc.returncode != 0 and "callId is immutable" in proc.stderr
    # The pool may change (it re-targets a session still Pending).
    await kube.run("patch", "ags", "good", "-n", kube.ns, "--type=merge", "-p", '{"spec": {"pool": "gpu"}}')
    obj = await kube.get("good")
    assert obj is not None and obj["spec"]["pool"] == "gpu" and obj["spec"]["callId"] == "Room_7:eu.west-1"


async def wait_annotation(kube: Kube, pod: str, key: str, value: str) -> None:
    escaped = key.replace(".", "\\.")
    await kube.run(
        "wait", f"pod/{pod}", "-n", kube.ns, f"--for=jsonpath={{.metadata.annotations.{escaped}}}={value}",
        "--timeout=30s",
    )  # fmt: skip


async def annotations(kube: Kube, pod: str) -> dict[str, str]:
    obj = await kube.get(pod, kind="pod")
    assert obj is not None
    result: dict[str, str] = obj["metadata"].get("annotations") or {}
    return result


async def _count(node: AgentNode, expected: int) -> bool:
    return len(await node.sessions()) == expected


async def test_pod_annotations_follow_session_counts(
    kube: Kube, kube_env: KubeEnv, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "agent-0", "labels": {"app": "agent", POOL: "default"}},
        "spec": {"containers": [{"name": "agent", "image": "agent:fake"}]},
    }
    await kube.run("apply", "-n", kube.ns, "-f", "-", input=json.dumps(pod))
    node = await node_factory("agent-0-node", pod=(kube.ns, "agent-0"), capacity=4)
    await operator_factory()

    await wait_annotation(kube, "agent-0", COST, "0")
    assert EVICT not in await annotations(kube, "agent-0")

    await kube.apply("one", "call-1")
    await kube.apply("two", "call-2")
    await kube.wait_phase("one", "Running")
    await kube.wait_phase("two", "Running")
    assert (await kube.get("one"))["status"]["podName"] == "agent-0"  # type: ignore[index]
    await wait_annotation(kube, "agent-0", COST, "2")
    assert (await annotations(kube, "agent-0"))[EVICT] == "false"

    await kube.delete("one")
    await wait_until(lambda: _count(node, 1), what="one session left on agent-0")
    # Still busy: its cost is never lowered (nothing confirms an HPA's scale-down, so a busy
    # pod stays well above the idle ones), and it stays protected from eviction.
    assert (await annotations(kube, "agent-0"))[COST] == "2"
    assert (await annotations(kube, "agent-0"))[EVICT] == "false"
    await kube.delete("two")
    await wait_annotation(kube, "agent-0", COST, "0")
    assert EVICT not in await annotations(kube, "agent-0")
    assert await node.sessions() == []


async def test_g11_a_node_record_naming_a_pod_outside_the_pool_leaves_it_alone(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    """A node record (forgeable by anyone who can write the registry) names a pod that is not
    an agent pod of its pool: the operator does not patch it, and patches the real agent pod."""

    def pod(name: str, labels: dict[str, str]) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": labels},
                "spec": {"containers": [{"name": "c", "image": "fake:1"}]},
            }
        )

    await kube.run("apply", "-n", kube.ns, "-f", "-", input=pod("agent-0", {POOL: "voice"}))
    await kube.run("apply", "-n", kube.ns, "-f", "-", input=pod("database-0", {"app": "postgres"}))
    await kube.run("apply", "-n", kube.ns, "-f", "-", input=pod("gpu-0", {POOL: "gpu"}))
    await node_factory("real-node", pod=(kube.ns, "agent-0"), pool="voice", capacity=4)
    await node_factory("forged-db", pod=(kube.ns, "database-0"), pool="voice", capacity=4)
    await node_factory("forged-gpu", pod=(kube.ns, "gpu-0"), pool="voice", capacity=4)
    await operator_factory()
    # One cycle patches every pod it accepts at once: the agent pod's annotation means the
    # others were looked at and refused.
    await wait_annotation(kube, "agent-0", COST, "0")
    for name in ("database-0", "gpu-0"):
        got = await annotations(kube, name)
        assert COST not in got and EVICT not in got, (name, got)
        obj = await kube.get(name, kind="pod")
        assert obj is not None and "callboard.dev/busy" not in obj["metadata"].get("labels", {})


@pytest.mark.timeout(180)
async def test_scale_down_removes_the_idlest_pods(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    """A ReplicaSet scaling agent pods down keeps the busiest one (the operator's costs)."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "agents"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "agents"}},
            "template": {
                "metadata": {"labels": {"app": "agents", POOL: "default"}},
                "spec": {
                    "containers": [{"name": "agent", "image": "agent:fake"}],
                    "tolerations": [{"operator": "Exists"}],
                },
            },
        },
    }
    await kube.run("apply", "-n", kube.ns, "-f", "-", input=json.dumps(deployment))
    await kube.run("rollout", "status", "deployment/agents", "-n", kube.ns, "--timeout=90s", timeout=120)
    pods = [p for p in await kube.list(kind="pod") if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 3

    # The busiest node goes on the pod the ReplicaSet would otherwise remove first
    # (more co-located pods, then the newest): only its deletion cost can save it.
    def colocated(p: dict[str, Any]) -> int:
        return sum(1 for q in pods if q["spec"].get("nodeName") == p["spec"].get("nodeName"))

    pods.sort(key=lambda p: (colocated(p), p["metadata"]["creationTimestamp"]), reverse=True)
    names = [p["metadata"]["name"] for p in pods]
    for node_id, pod in zip(("node-a", "node-b", "node-c"), names, strict=True):
        await node_factory(node_id, pod=(kube.ns, pod), capacity=2)
    await operator_factory()
    for i in range(3):
        await kube.apply(f"s{i}", f"call-{i}")
        await kube.wait_phase(f"s{i}", "Running")
    # Packed: node-a takes two, node-b one, node-c none.
    for pod, cost in zip(names, ("2", "1", "0"), strict=True):
        await wait_annotation(kube, pod, COST, cost)

    await kube.run("scale", "deployment/agents", "-n", kube.ns, "--replicas=1")

    # The two idle pods go (watched, not polled); the busy one stays.
    for idle in names[1:]:
        await kube.run("wait", f"pod/{idle}", "-n", kube.ns, "--for=delete", "--timeout=90s", timeout=120)
    alive = [
        p["metadata"]["name"]
        for p in await kube.list(kind="pod")
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert alive == [names[0]]


async def test_g1_the_pool_of_a_placed_session_is_immutable_and_objects_select_by_field(kube: Kube) -> None:
    await kube.run("apply", "-n", kube.ns, "-f", "-", input=manifest("placed", callId="c-placed", pool="cpu"))
    await kube.run(
        "apply", "-n", kube.ns, "-f", "-", input=manifest("waiting", callId="c-waiting", pool="cpu")
    )
    for name, phase in (("placed", "Running"), ("waiting", "Pending")):
        status = json.dumps({"status": {"phase": phase, "reason": "Test", "attempts": 1}})
        await kube.run(
            "patch", "ags", name, "-n", kube.ns, "--subresource=status", "--type=merge", "-p", status
        )
    proc = await kube.run(
        "patch",
        "ags",
        "placed",
        "-n",
        kube.ns,
        "--type=merge",
        "-p",
        '{"spec": {"pool": "gpu"}}',
        check=False,
    )
    assert proc.returncode != 0 and "spec.pool is immutable once the session is placed" in proc.stderr
    # A Pending object is still re-targeted; other fields of a placed one may change.
    await kube.run(
        "patch", "ags", "waiting", "-n", kube.ns, "--type=merge", "-p", '{"spec": {"pool": "gpu"}}'
    )
    await kube.run(
        "patch", "ags", "placed", "-n", kube.ns, "--type=merge", "-p", '{"spec": {"maxDurationSeconds": 60}}'
    )
    selected = await kube.run(
        "get", "ags", "-n", kube.ns, "--field-selector", "spec.pool=gpu,status.phase=Pending", "-o", "name"
    )
    assert selected.stdout.split() == ["agentsession.callboard.dev/waiting"]
    wide = await kube.run("get", "ags", "placed", "-n", kube.ns, "-o", "wide")
    header = wide.stdout.splitlines()[0].split()
    assert {"READY", "REASON", "ATTEMPTS"} <= set(header)
