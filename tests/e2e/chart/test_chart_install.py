"""The chart installed with a real Helm into the real API server.

- an agent pool in a namespace that *enforces* Pod Security "restricted": the ReplicaSet
  controller's pod creations pass admission and kwok runs the pods, so ``--wait`` sees
  every Deployment available; the operator's ServiceAccount can do what the operator
  calls and nothing else (``kubectl auth can-i``); an upgrade keeps the autoscaler's count;
- the third-party kinds (ServiceMonitor, KEDA ScaledObject, from their real CRDs) and the
  HPA, accepted by the API server, and switched over by an upgrade.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import KubeEnv

from .conftest import CHART
from .k8s_schemas import CRD_DIR

PAUSE = {"repository": "registry.k8s.io/pause", "tag": "3.10"}


def _values(path: Path, values: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _release(ns: str) -> str:
    return "cb-" + ns.rsplit("-", 1)[-1]


def _can(kube: KubeEnv, sa: str, *args: str) -> bool:
    proc = kube.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
    assert proc.stdout.strip() in ("yes", "no"), proc.stderr
    return proc.stdout.strip() == "yes"


def test_install_agent_pool_restricted(kube_env: KubeEnv, kube_namespace: str, tmp_path: Path) -> None:
    ns = kube_namespace
    release = _release(ns)
    kube_env.kubectl(
        "label", "namespace", ns,
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    kube_env.kubectl(
        "create", "secret", "generic", "redis-password", "-n", ns, "--from-literal=password=s3cret-pass"
    )
    values = _values(
        tmp_path / "values.yaml",
        {
            "redis": {"auth": {"existingSecret": "redis-password"}},
            "agentPool": {
                "enabled": True,
                "capacity": 3,
                "agent": {"image": PAUSE, "ports": [{"name": "http", "containerPort": 8080}]},
                "autoscaling": {"mode": "operator", "minReplicas": 1, "maxReplicas": 4},
            },
            "networkPolicy": {"enabled": True},
        },
    )
    agents = f"{release}-callboard-agents-default"
    try:
        proc = kube_env.helm(
            "install", release, str(CHART), "-n", ns, "-f", values, "--wait", "--timeout", "120s",
            "--take-ownership",
        )  # fmt: skip
        assert "PodSecurity" not in proc.stderr, proc.stderr
        notes = proc.stdout[proc.stdout.index("NOTES:") :]
        assert "kubectl get agentsessions -A" in notes
        assert f"kubectl delete ags my-call -n {ns}" in notes
        assert f"kubectl exec -n {ns} deploy/{release}-callboard-operator -- callboard sessions list" in notes
        assert "callboard sessions close <call-id> <session-id>" in notes

        deployments = {
            d["metadata"]["name"]: d for d in kube_env.kubectl_json("get", "deployments", "-n", ns)["items"]
        }
        assert set(deployments) == {f"{release}-callboard-operator", f"{release}-callboard-redis", agents}
        if kube_env.local:  # kwok ran the pods: admission let every one of them in
            for name, d in deployments.items():
                assert d["status"].get("availableReplicas") == 1, name
            pods = kube_env.kubectl_json("get", "pods", "-n", ns)["items"]
            assert len(pods) == 3
            assert all(p["status"]["phase"] == "Running" for p in pods)
        events = kube_env.kubectl_json("get", "events", "-n", ns)["items"]
        assert not [e for e in events if "violates PodSecurity" in e.get("message", "")]

        sa = f"system:serviceaccount:{ns}:{release}-callboard"
        allowed = [
            ("list", "agentsessions.callboard.dev", "-A"),
            ("watch", "agentsessions.callboard.dev", "-A"),
            ("patch", "agentsessions.callboard.dev", "-n", "default"),
            ("create", "agentsessions.callboard.dev", "-n", ns),
            ("delete", "agentsessions.callboard.dev", "-n", ns),
            ("patch", "agentsessions.callboard.dev", "--subresource=status", "-n", ns),
            ("patch", "pods", "-n", ns),
            ("get", "pods", "-n", ns),  # the pool-label check (G11)
            ("list", "pods", "-n", ns),
            ("create", "events", "-n", ns),
            ("get", f"leases.coordination.k8s.io/{release}-callboard-operator", "-n", ns),
            ("update", f"leases.coordination.k8s.io/{release}-callboard-operator", "-n", ns),
            ("get", f"deployments.apps/{agents}", "--subresource=scale", "-n", ns),
            ("patch", f"deployments.apps/{agents}", "--subresource=scale", "-n", ns),
        ]
        denied = [
            ("get", "secrets", "-n", ns),
            ("delete", "pods", "-n", ns),
            ("create", "pods", "-n", ns),
            ("list", "pods", "-n", "default"),
            ("watch", "pods", "-n", ns),
            ("patch", f"deployments.apps/{agents}", "-n", ns),
            ("patch", f"deployments.apps/{release}-callboard-operator", "--subresource=scale", "-n", ns),
            ("update", "agentsessions.callboard.dev", "-n", ns),
            ("get", "customresourcedefinitions.apiextensions.k8s.io"),
            ("list", "namespaces"),
            ("update", "leases.coordination.k8s.io", "-n", "default"),
            ("update", "leases.coordination.k8s.io/someone-elses", "-n", ns),
            ("get", "leases.coordination.k8s.io", "-n", ns),
            ("create", "leases.coordination.k8s.io", "-n", ns),
        ]
        assert [a for a in allowed if not _can(kube_env, sa, *a)] == []
        assert [d for d in denied if _can(kube_env, sa, *d)] == []
        agent_sa = f"system:serviceaccount:{ns}:{release}-callboard-agent"
        assert not _can(kube_env, agent_sa, "list", "pods", "-n", ns)

        # The autoscaler owns the replica count: an upgrade must not reset it.
        kube_env.kubectl("scale", f"deployment/{agents}", "-n", ns, "--replicas=3")
        kube_env.helm(
            "upgrade", release, str(CHART), "-n", ns, "--reuse-values",
            "--set", "agentPool.capacity=4", "--wait", "--timeout", "120s",
        )  # fmt: skip
        upgraded = kube_env.kubectl_json("get", "deployment", agents, "-n", ns)
        assert upgraded["spec"]["replicas"] == 3
        sidecar = upgraded["spec"]["template"]["spec"]["containers"][1]
        assert {"name": "CALLBOARD_CAPACITY", "value": "4"} in sidecar["env"]
    finally:
        kube_env.helm("uninstall", release, "-n", ns, "--wait", check=False)


def test_install_third_party_kinds_and_hpa(kube_env: KubeEnv, kube_namespace: str, tmp_path: Path) -> None:
    ns = kube_namespace
    release = _release(ns)
    kube_env.kubectl("apply", "-f", str(CRD_DIR))
    for path in sorted(CRD_DIR.glob("*.yaml")):
        name = path.name.removesuffix(".yaml")
        kube_env.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    base: dict[str, Any] = {
        "agentPool": {
            "enabled": True,
            "agent": {"image": PAUSE},
            "autoscaling": {
                "mode": "keda",
                "minReplicas": 1,
                "maxReplicas": 8,
                "keda": {"serverAddress": "http://prometheus.monitoring.svc:9090"},
            },
        },
        "metrics": {"serviceMonitor": {"enabled": True}, "grafanaDashboard": {"enabled": True}},
    }
    agents = f"{release}-callboard-agents-default"
    try:
        kube_env.helm(
            "install", release, str(CHART), "-n", ns, "-f", _values(tmp_path / "keda.yaml", base),
            "--take-ownership",
        )  # fmt: skip
        scaled = kube_env.kubectl_json("get", "scaledobjects.keda.sh", agents, "-n", ns)
        assert scaled["spec"]["scaleTargetRef"]["name"] == agents
        trigger = scaled["spec"]["triggers"][0]
        assert trigger["metadata"]["query"] == (
            f'max(callboard_autoscaler_desired_replicas{{namespace="{ns}",deployment="{agents}"}})'
        )
        monitors = kube_env.kubectl_json("get", "servicemonitors.monitoring.coreos.com", "-n", ns)["items"]
        assert sorted(m["metadata"]["name"] for m in monitors) == sorted(
            [agents, f"{release}-callboard-operator"]
        )
        dashboard = kube_env.kubectl_json("get", "configmap", f"{release}-callboard-dashboard", "-n", ns)
        assert json.loads(dashboard["data"]["callboard.json"])["uid"] == "callboard"

        base["agentPool"]["autoscaling"]["mode"] = "hpa"
        kube_env.helm("upgrade", release, str(CHART), "-n", ns, "-f", _values(tmp_path / "hpa.yaml", base))
        hpa = kube_env.kubectl_json("get", "hpa", agents, "-n", ns)
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 8)
        assert (
            hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "callboard_autoscaler_desired_replicas"
        )
        gone = kube_env.kubectl("get", "scaledobjects.keda.sh", agents, "-n", ns, check=False)
        assert "NotFound" in gone.stderr
        operator = kube_env.kubectl_json("get", "deployment", f"{release}-callboard-operator", "-n", ns)
        env = {
            e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["CALLBOARD_AUTOSCALE"] == "metrics"
        role = kube_env.kubectl_json("get", "role", f"{release}-callboard-operator", "-n", ns)
        scale_rule = next(r for r in role["rules"] if r["resources"] == ["deployments/scale"])
        assert scale_rule["verbs"] == ["get"]
    finally:
        kube_env.helm("uninstall", release, "-n", ns, "--wait", check=False)


def test_g11_bundled_redis_password_is_generated_once_and_kept(
    kube_env: KubeEnv, kube_namespace: str, tmp_path: Path
) -> None:
    """The default install generates the Redis password; an upgrade keeps it (``lookup``)."""
    ns = kube_namespace
    release = _release(ns)
    secret = f"{release}-callboard-redis-auth"
    try:
        kube_env.helm("install", release, str(CHART), "-n", ns, "--take-ownership")
        first = kube_env.kubectl_json("get", "secret", secret, "-n", ns)["data"]["password"]
        assert len(first) >= 32
        kube_env.helm("upgrade", release, str(CHART), "-n", ns, "--reuse-values", "--set", "logLevel=debug")
        assert kube_env.kubectl_json("get", "secret", secret, "-n", ns)["data"]["password"] == first
        redis = kube_env.kubectl_json("get", "deployment", f"{release}-callboard-redis", "-n", ns)
        container = redis["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
        assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == secret
    finally:
        kube_env.helm("uninstall", release, "-n", ns, "--wait", check=False)
