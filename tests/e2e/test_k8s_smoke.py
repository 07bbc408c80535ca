"""Smoke tests that prove the e2e tier talks to a real Kubernetes API.

CRD schema validation and printer columns, finalizers and deletionTimestamp, the status
subresource, the ReplicaSet controller honouring pod-deletion-cost, and a real Helm.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.support.kube import REPO_ROOT, KubeEnv
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

CRD_NAME = "agentsessions.callboard.dev"
CHART = "charts/callboard"


def agentsession(name: str, call_id: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "callboard.dev/v1alpha1",
        "kind": "AgentSession",
        "metadata": {"name": name},
        "spec": {"callId": call_id, **spec},
    }


def _crd_spec_schema() -> dict[str, Any]:
    """The spec properties of manifests/agentsession-crd.yaml."""
    crd = yaml.safe_load((REPO_ROOT / "manifests/agentsession-crd.yaml").read_text())
    version = crd["spec"]["versions"][0]
    props: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return props


def test_crd_apply_and_printer_columns(kube_env: KubeEnv, kube_namespace: str) -> None:
    out = kube_env.kubectl("apply", "-f", "manifests/").stdout
    assert f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME}" in out
    kube_env.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")

    ns = kube_namespace
    kube_env.kubectl("apply", "-n", ns, "-f", "manifests/examples/agentsession.yaml")
    kube_env.kubectl(
        "patch", "ags", "demo-call-1", "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {
            "phase": "Running", "podName": "agent-pod-0", "reason": "Started", "attempts": 1,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Started", "message": "runs",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        }}),
    )  # fmt: skip

    lines = kube_env.kubectl("get", "ags", "-n", ns).stdout.splitlines()
    assert lines[0].split() == ["NAME", "CALL", "PHASE", "POD", "READY", "REASON", "AGE"]
    assert len(lines) == 2
    assert lines[1].split()[:6] == ["demo-call-1", "demo-call-1", "Running", "agent-pod-0", "True", "Started"]
    wide = kube_env.kubectl("get", "ags", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "CALL", "PHASE", "POD", "READY", "REASON", "ATTEMPTS", "NODE", "AGE"]

    # The schema's default was applied by the API server.
    obj = kube_env.kubectl_json("get", "agentsession", "demo-call-1", "-n", ns)
    assert obj["spec"]["callType"] == "default"


def test_schema_violation_rejected(kube_env: KubeEnv, agentsession_crd: str, kube_namespace: str) -> None:
    ns = kube_namespace
    bad = agentsession("bad", "not a valid id!", maxDurationSeconds=0)
    proc = kube_env.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert 'spec.callId: Invalid value: "not a valid id!"' in proc.stderr
    assert f"should match '{_crd_spec_schema()['callId']['pattern']}'" in proc.stderr
    assert "spec.maxDurationSeconds: Invalid value: 0" in proc.stderr
    assert "should be greater than or equal to 1" in proc.stderr

    missing = agentsession("missing", "x")
    del missing["spec"]["callId"]
    proc = kube_env.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(missing), check=False)
    assert proc.returncode != 0
    assert "spec.callId: Required value" in proc.stderr

    # Nothing was stored.
    listed = kube_env.kubectl_json("get", "agentsessions", "-n", ns)
    assert listed["items"] == []

    # The status schema is enforced through the subresource as well.
    kube_env.apply(agentsession("good", "good-call"), namespace=ns)
    proc = kube_env.kubectl(
        "patch", "ags", "good", "-n", ns, "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Bogus"}}', check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert 'status.phase: Unsupported value: "Bogus"' in proc.stderr
    # Size limits: at most 64 metrics (as many params, see tests/e2e/operator/test_schema_pods).
    metrics = {f"m{i}": i for i in range(65)}
    proc = kube_env.kubectl(
        "patch", "ags", "good", "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"metrics": metrics}}), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "status.metrics: Too many: 65: must have at most 64 items" in proc.stderr
    metrics.pop("m64")
    kube_env.kubectl(
        "patch", "ags", "good", "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"metrics": metrics}}),
    )  # fmt: skip


def test_finalizer_holds_deleted_object(
    kube_env: KubeEnv, agentsession_crd: str, kube_namespace: str
) -> None:
    ns = kube_namespace
    obj = agentsession("held", "held-call")
    obj["metadata"]["finalizers"] = ["callboard.dev/test-finalizer"]
    kube_env.apply(obj, namespace=ns)

    kube_env.kubectl("delete", "ags", "held", "-n", ns, "--wait=false")
    held = kube_env.kubectl_json("get", "ags", "held", "-n", ns)
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == ["callboard.dev/test-finalizer"]

    # Still there a moment later: only removing the finalizer releases it.
    kube_env.kubectl("wait", "ags/held", "-n", ns, "--for=delete", "--timeout=2s", check=False)
    assert kube_env.kubectl("get", "ags", "held", "-n", ns, check=False).returncode == 0

    kube_env.kubectl(
        "patch", "ags", "held", "-n", ns, "--type=json",
        "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]',
    )  # fmt: skip
    kube_env.kubectl("wait", "ags/held", "-n", ns, "--for=delete", "--timeout=30s")
    gone = kube_env.kubectl("get", "ags", "held", "-n", ns, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr


def test_status_subresource_leaves_spec_alone(
    kube_env: KubeEnv, kube_api: Any, agentsession_crd: str, kube_namespace: str
) -> None:
    ns = kube_namespace
    kube_env.apply(agentsession("s1", "call-s1", pool="blue"), namespace=ns)
    before = kube_env.kubectl_json("get", "ags", "s1", "-n", ns)

    patch = {
        "spec": {"callId": "changed-through-status", "pool": "red"},
        "status": {"phase": "Running", "podName": "agent-7", "observedGeneration": 1},
    }
    kube_env.kubectl(
        "patch", "ags", "s1", "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps(patch),
    )  # fmt: skip
    after = kube_env.kubectl_json("get", "ags", "s1", "-n", ns)
    assert after["status"]["phase"] == "Running"
    assert after["status"]["podName"] == "agent-7"
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]

    # And the other way round: the main resource ignores status.
    kube_env.kubectl(
        "patch", "ags", "s1", "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"maxDurationSeconds": 600}, "status": {"phase": "Failed"}}),
    )  # fmt: skip
    last = kube_env.kubectl_json("get", "ags", "s1", "-n", ns)
    # (maxDurationSeconds: the pool of a Running object is immutable, see test_schema_pods.)
    assert last["spec"]["maxDurationSeconds"] == 600
    assert last["status"]["phase"] == "Running"
    assert last["metadata"]["generation"] == before["metadata"]["generation"] + 1

    # The same through the Python client, as an operator patches it.
    from kubernetes import client

    api = client.CustomObjectsApi(kube_api)
    patched = api.patch_namespaced_custom_object_status(
        "callboard.dev", "v1alpha1", ns, "agentsessions", "s1",
        {"spec": {"callId": "changed-again"}, "status": {"phase": "Closing"}},
    )  # fmt: skip
    assert patched["status"]["phase"] == "Closing"
    assert patched["status"]["podName"] == "agent-7"
    assert patched["spec"]["callId"] == "call-s1"


def _pods(kube_env: KubeEnv, ns: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube_env.kubectl_json("get", "pods", "-n", ns, "-l", selector)["items"]
    return items


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def test_deployment_scale_down_honours_pod_deletion_cost(kube_env: KubeEnv, kube_namespace: str) -> None:
    ns = kube_namespace
    selector = "app=cost-demo"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cost-demo"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "cost-demo"}},
            "template": {
                "metadata": {"labels": {"app": "cost-demo"}},
                "spec": {
                    "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }
    kube_env.apply(deployment, namespace=ns)
    kube_env.kubectl("rollout", "status", "deployment/cost-demo", "-n", ns, "--timeout=90s")

    # Rules 1-3 of the ReplicaSet controller's ranking (assigned, phase, ready) come
    # before the cost, so every pod must be scheduled, Running and Ready first.
    def all_ready() -> list[dict[str, Any]] | None:
        pods = _pods(kube_env, ns, selector)
        ok = len(pods) == 3 and all(
            p["spec"].get("nodeName") and p["status"].get("phase") == "Running" and _is_ready(p) for p in pods
        )
        return pods if ok else None

    pods = wait_for(all_ready, timeout=90, what="3 Running and Ready pods")

    # Without the cost, the controller would prefer pods sharing a node with more of their
    # siblings, then the newest. Give the lowest cost to the pod it would keep longest:
    # alone on its node if there is one, else the oldest.
    per_node: dict[str, int] = {}
    for p in pods:
        per_node[p["spec"]["nodeName"]] = per_node.get(p["spec"]["nodeName"], 0) + 1
    ranked = sorted(
        pods,
        key=lambda p: (per_node[p["spec"]["nodeName"]], p["metadata"]["creationTimestamp"]),
    )
    victim = ranked[0]["metadata"]["name"]
    costs = {victim: -10}
    costs.update({p["metadata"]["name"]: c for p, c in zip(ranked[1:], (100, 50), strict=True)})
    for name, cost in costs.items():
        kube_env.kubectl(
            "annotate", "pod", name, "-n", ns, "--overwrite",
            f"controller.kubernetes.io/pod-deletion-cost={cost}",
        )  # fmt: skip

    kube_env.kubectl("scale", "deployment/cost-demo", "-n", ns, "--replicas=2")

    def scaled_down() -> set[str] | None:
        live = {
            p["metadata"]["name"]
            for p in _pods(kube_env, ns, selector)
            if not p["metadata"].get("deletionTimestamp")
        }
        return live if len(live) == 2 else None

    survivors = wait_for(scaled_down, timeout=60, what="the Deployment to scale down to 2")
    assert victim not in survivors, f"costs {costs}; survivors {sorted(survivors)}"
    assert survivors == set(costs) - {victim}
    # The pod is really going away (kwok completes the deletion).
    kube_env.kubectl("wait", f"pod/{victim}", "-n", ns, "--for=delete", "--timeout=60s")


def test_helm_lint_and_template(kube_env: KubeEnv) -> None:
    lint = kube_env.helm("lint", CHART, "--strict")
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout

    rendered = kube_env.helm(
        "template", "cb", CHART, "--namespace", "callboard-system", "--include-crds"
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = sorted(d["kind"] for d in docs)
    # The default install: the operator and its leader Lease, a bundled Redis with its
    # generated password, and the NetworkPolicies that are on by default (tests/e2e/chart
    # covers the rest).
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Deployment",
        "FlowSchema",
        "FlowSchema",
        "Lease",
        "NetworkPolicy",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "Service",
        "ServiceAccount",
    ]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == "callboard-system"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "cb-callboard"

    # The chart ships the same CRD as manifests/, with the release's labels and kept on uninstall.
    crd = next(d for d in docs if d["kind"] == "CustomResourceDefinition")
    manifest = yaml.safe_load((REPO_ROOT / "manifests/agentsession-crd.yaml").read_text())
    assert crd["spec"] == manifest["spec"]
    assert crd["metadata"]["name"] == manifest["metadata"]["name"]
    assert crd["metadata"]["labels"].items() >= manifest["metadata"]["labels"].items()
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_helm_install(kube_env: KubeEnv, kube_namespace: str) -> None:
    ns = kube_namespace
    release = "cb-" + ns.rsplit("-", 1)[-1]
    try:
        kube_env.helm(
            "install", release, CHART, "--namespace", ns, "--wait", "--timeout", "120s",
            "--take-ownership",
        )  # fmt: skip
        status = json.loads(kube_env.helm("status", release, "-n", ns, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"

        deploy = kube_env.kubectl_json("get", "deployment", f"{release}-callboard-operator", "-n", ns)
        assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == f"{release}-callboard"
        if kube_env.local:
            # kwok ran the operator pod: --wait saw it Available.
            assert deploy["status"].get("availableReplicas") == 1
        crd = kube_env.kubectl_json("get", "crd", CRD_NAME)
        assert crd["spec"]["names"]["shortNames"] == ["ags"]
    finally:
        kube_env.helm("uninstall", release, "-n", ns, "--wait", check=False)
