"""The chart, offline: lint, render several values sets, validate them against the Kubernetes
API's schemas, Pod Security "restricted", least-privilege RBAC, the wiring of the operator
and the sidecars (every variable set is one they read), clear failures for bad values.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from callboard import config
from callboard.kube.autoscaling.policy import AutoscaleSettings, Buffer, ScalingMode
from callboard.sidecar.settings import SidecarSettings

from .conftest import (
    CHART,
    VALUE_SETS,
    Render,
    containers,
    env_of,
    find,
    run_helm,
    values_args,
)
from .k8s_schemas import ManifestValidator

#: Kinds each values set renders (the defaults: operator + bundled Redis).
EXPECTED_KINDS = {
    "default": {
        "ClusterRole": 1, "ClusterRoleBinding": 1, "Deployment": 2, "FlowSchema": 2, "Lease": 1,
        "NetworkPolicy": 2,
        "Role": 1, "RoleBinding": 1, "Secret": 1, "Service": 2, "ServiceAccount": 1,
    },
    "full": {
        "ClusterRole": 1, "ClusterRoleBinding": 1, "ConfigMap": 1, "Deployment": 2, "FlowSchema": 2,
        "Lease": 1,
        "NetworkPolicy": 2, "PodDisruptionBudget": 2, "Role": 1, "RoleBinding": 1, "Service": 2,
        "ServiceAccount": 2, "ServiceMonitor": 2,
    },
    "hpa": {
        "Deployment": 2, "HorizontalPodAutoscaler": 1, "FlowSchema": 2, "Lease": 1,
        "NetworkPolicy": 2,
        "PodDisruptionBudget": 3, "Role": 3, "RoleBinding": 3, "Service": 2, "ServiceAccount": 2,
    },
    "keda": {
        "ClusterRole": 1, "ClusterRoleBinding": 1, "Deployment": 3, "FlowSchema": 2, "Lease": 1,
        "NetworkPolicy": 3,
        "PodDisruptionBudget": 2, "Role": 1, "RoleBinding": 1, "ScaledObject": 1, "Service": 3,
        "ServiceAccount": 2, "ServiceMonitor": 2,
    },
    "fixed": {"Deployment": 1, "NetworkPolicy": 1, "Service": 1},
    "sentinel": {
        "ClusterRole": 1, "ClusterRoleBinding": 1, "Deployment": 2, "FlowSchema": 2, "Lease": 1,
        "NetworkPolicy": 2,
        "PodDisruptionBudget": 2, "Role": 1,
        "RoleBinding": 1, "Service": 2, "ServiceAccount": 2,
    },
}  # fmt: skip

#: Kinds without a namespace.
CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "FlowSchema")

#: Volume types Pod Security "restricted" allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def test_value_sets_are_all_covered() -> None:
    assert set(VALUE_SETS) == set(EXPECTED_KINDS)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_strict(helm_bin: str, value_set: str) -> None:
    out = run_helm(helm_bin, "lint", str(CHART), "--strict", *values_args(value_set)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_render_is_valid_kubernetes(render: Render, validator: ManifestValidator, value_set: str) -> None:
    docs = render(*values_args(value_set), crds=True)
    kinds: dict[str, int] = {}
    for d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    assert kinds.pop("CustomResourceDefinition") == 1
    assert kinds == EXPECTED_KINDS[value_set]
    errors = [e for d in docs for e in validator.errors(d)]
    assert errors == []
    # Namespaced objects land in the release namespace (the dashboard may go elsewhere).
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"].get("namespace") in ("ns", "monitoring", "agents", "tenants"), d["metadata"]


def test_the_validator_catches_mistakes(validator: ManifestValidator, render: Render) -> None:
    """The offline check is not a rubber stamp: typical template slips are reported."""
    deployment = find(
        render("-f", "tests/e2e/chart/values/full.yaml"), "Deployment", "cb-callboard-agents-voice"
    )
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"][1]["readinessProbe"]["httpGet"]["prot"] = 8555
    pod["containers"][0]["securityContext"]["capabilities"]["drop"] = "ALL"
    pod["terminationGracePeriodSeconds"] = "1820"
    errors = validator.errors(deployment)
    assert len(errors) == 3, errors
    assert any("'prot' was unexpected" in e for e in errors)
    assert any("drop" in e and 'not of type "array"' in e for e in errors)
    assert any("terminationGracePeriodSeconds" in e for e in errors)
    scaled = find(render("-f", "tests/e2e/chart/values/keda.yaml"), "ScaledObject")
    scaled["spec"]["triggers"][0]["metaData"] = scaled["spec"]["triggers"][0].pop("metadata")
    scaled["spec"]["minReplicaCount"] = "1"
    errors = validator.errors(scaled)
    assert len(errors) == 3, errors  # metaData unknown, metadata missing, a string count
    assert any("'metaData' was unexpected" in e for e in errors)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_pod_security_restricted(render: Render, value_set: str) -> None:
    docs = render(*values_args(value_set))
    for name, pod, c in containers(docs):
        where = f"{name}/{c['name']}"
        psc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key), where
        assert {next(iter(v.keys() - {"name"})) for v in pod.get("volumes", [])} <= RESTRICTED_VOLUMES, where
        assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", psc.get("runAsUser")) != 0, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert not sc.get("privileged"), where
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
        assert not sc.get("capabilities", {}).get("add"), where
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        assert seccomp == "RuntimeDefault", where
        assert all("hostPort" not in p for p in c.get("ports", [])), where
        # Beyond "restricted": a read-only root filesystem and resources everywhere.
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert {"cpu", "memory"} <= c["resources"].get("requests", {}).keys(), where
        assert "memory" in c["resources"].get("limits", {}), where


def test_agent_pool(render: Render) -> None:
    docs = render("-f", "tests/e2e/chart/values/full.yaml")
    deployment = find(docs, "Deployment", "cb-callboard-agents-voice")
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    pod = deployment["spec"]["template"]["spec"]
    agent, sidecar = pod["containers"]
    assert agent["image"] == "registry.example.com/voice-agent:1.2.3"
    assert sidecar["image"] == "callboard:0.1.0"
    assert sidecar["command"] == ["callboard", "sidecar"]
    env = env_of(sidecar)
    assert env["CALLBOARD_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["CALLBOARD_POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["CALLBOARD_POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["CALLBOARD_POOL"] == "voice"
    assert env["CALLBOARD_CAPACITY"] == "4"
    # G11: the session API on loopback, the probes and metrics on their own port.
    assert env["CALLBOARD_LISTEN"] == "127.0.0.1:8555"
    assert env["CALLBOARD_PROBE_LISTEN"] == "0.0.0.0:8556"
    assert sidecar["ports"] == [{"name": "probes", "containerPort": 8556}]
    assert env["CALLBOARD_APP_HEALTH_URL"] == "http://127.0.0.1:8080/healthz"
    assert env_of(agent)["CALLBOARD_SIDECAR_URL"] == "http://127.0.0.1:8555"
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    # Drain: the agent's SIGTERM waits for the sidecar's drain event; the grace period covers
    # the pause, the sidecar's whole drain timeout and a margin for its exit.
    assert agent["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert env["CALLBOARD_DRAIN_TIMEOUT"] == "1800"
    assert pod["terminationGracePeriodSeconds"] == 5 + 1800 + 15
    # The sidecar is told the grace period, and checks at start that its drain fits in it.
    assert env["CALLBOARD_GRACE_PERIOD"] == str(pod["terminationGracePeriodSeconds"])
    assert pod["automountServiceAccountToken"] is False
    assert find(docs, "ServiceAccount", pod["serviceAccountName"])["automountServiceAccountToken"] is False
    selected = deployment["spec"]["selector"]["matchLabels"]
    pdb = find(docs, "PodDisruptionBudget", deployment["metadata"]["name"])
    assert pdb["spec"]["selector"]["matchLabels"] == selected
    # G9: busy pods (labelled by the operator) are in the other budget only: never evicted.
    assert pdb["spec"]["selector"]["matchExpressions"] == [
        {"key": "callboard.dev/busy", "operator": "DoesNotExist"}
    ]
    busy = find(docs, "PodDisruptionBudget", deployment["metadata"]["name"] + "-busy")
    assert busy["spec"]["maxUnavailable"] == 0
    assert busy["spec"]["selector"] == {"matchLabels": {**selected, "callboard.dev/busy": "true"}}
    service = find(docs, "Service", "cb-callboard-agents-voice")
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]

    fixed = find(render("-f", "tests/e2e/chart/values/fixed.yaml"), "Deployment")
    assert fixed["spec"]["replicas"] == 3
    assert fixed["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_operator_with_a_standby_is_spread_and_budgeted(render: Render) -> None:
    """Two replicas: a PodDisruptionBudget (a drain evicts one at a time) and anti-affinity
    (one node going down does not take the leader and the standby); one replica: neither."""
    single = render()
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]
    assert "affinity" not in find(single, "Deployment", "cb-callboard-operator")["spec"]["template"]["spec"]
    docs = render("--set", "operator.replicas=2")
    deployment = find(docs, "Deployment", "cb-callboard-operator")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pdb = find(docs, "PodDisruptionBudget", "cb-callboard-operator")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti == {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": selector},
                },
            }
        ]
    }
    hard = find(
        render("--set", "operator.replicas=2", "--set", "operator.podAntiAffinity=hard"),
        "Deployment",
        "cb-callboard-operator",
    )
    required = hard["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert list(required) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    own = render("--set", "operator.replicas=2", "--set", "operator.affinity.nodeAffinity.x=1")
    assert find(own, "Deployment", "cb-callboard-operator")["spec"]["template"]["spec"]["affinity"] == {
        "nodeAffinity": {"x": 1}
    }
    off = render("--set", "operator.replicas=2", "--set", "operator.podDisruptionBudget.enabled=false")
    assert not [d for d in off if d["kind"] == "PodDisruptionBudget"]


def test_g8_operator_requests_have_their_own_api_priority(render: Render) -> None:
    """The operator's ServiceAccount is matched before the built-in ``service-accounts``
    FlowSchema (workload-low, shared with every workload): its Lease at ``leader-election``,
    the rest at ``workload-high``; cluster-scoped names carry the namespace."""
    docs = render()
    flows = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "FlowSchema"}
    assert set(flows) == {"ns-cb-callboard-operator-lease", "ns-cb-callboard-operator"}
    lease, rest = flows["ns-cb-callboard-operator-lease"], flows["ns-cb-callboard-operator"]
    subject = {"kind": "ServiceAccount", "serviceAccount": {"name": "cb-callboard", "namespace": "ns"}}
    for flow in (lease, rest):
        assert flow["rules"][0]["subjects"] == [subject]
        assert flow["matchingPrecedence"] < 9000  # the built-in service-accounts FlowSchema
    assert lease["priorityLevelConfiguration"] == {"name": "leader-election"}
    assert lease["matchingPrecedence"] < rest["matchingPrecedence"]
    assert lease["rules"][0]["resourceRules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "update"],
            "namespaces": ["ns"],
        }
    ]
    assert rest["priorityLevelConfiguration"] == {"name": "workload-high"}
    other_ns = {d["metadata"]["name"] for d in render(namespace="other") if d["kind"] == "FlowSchema"}
    assert not other_ns & set(flows)
    assert not [d for d in render("--set", "operator.apiPriority.enabled=false") if d["kind"] == "FlowSchema"]


def test_agent_grace_period_fits_the_cluster_autoscaler(render: Render) -> None:
    """By default the agent pods' grace period, with the whole drain inside it, is at most 600 s:
    the Cluster Autoscaler's default ``--max-graceful-termination-sec``, after which it kills a
    pod of a node it drains (a longer drain would be cut off before the sidecar ends its sessions).
    """
    image = ["--set", "agentPool.enabled=true", "--set", "agentPool.agent.image.repository=a"]
    pod = find(render(*image), "Deployment", "cb-callboard-agents-default")["spec"]["template"]["spec"]
    sidecar = pod["containers"][1]
    assert pod["terminationGracePeriodSeconds"] == 600
    assert env_of(sidecar)["CALLBOARD_DRAIN_TIMEOUT"] == "580"
    assert pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] + 580 + 15 == 600
    # A given grace period of 600 is accepted; more only when explicitly allowed.
    given = render(*image, "--set", "agentPool.terminationGracePeriodSeconds=600")
    assert (
        find(given, "Deployment", "cb-callboard-agents-default")["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
        == 600
    )
    allowed = render(
        *image, "--set", "agentPool.allowLongTerminationGracePeriod=true",
        "--set", "agentPool.drain.timeoutSeconds=3600",
    )  # fmt: skip
    long_pod = find(allowed, "Deployment", "cb-callboard-agents-default")["spec"]["template"]["spec"]
    assert long_pod["terminationGracePeriodSeconds"] == 5 + 3600 + 15


def test_operator(render: Render) -> None:
    docs = render()
    deployment = find(docs, "Deployment", "cb-callboard-operator")
    pod = deployment["spec"]["template"]["spec"]
    (operator,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 1
    assert operator["command"] == ["callboard", "operator"]
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in operator["ports"]} == {"healthz": 8080, "metrics": 9090}
    env = env_of(operator)
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["CALLBOARD_ADOPT_NAMESPACE"] == "ns"
    assert env["CALLBOARD_TTL"] == "30"  # the nodes' TTL (agentPool.sidecar.ttlSeconds)
    assert env["CALLBOARD_NAMESPACES"] == ""
    assert env["CALLBOARD_AUTOSCALE"] == "off"  # no agent pool by default
    metrics = find(docs, "Service", "cb-callboard-operator-metrics")
    assert metrics["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]


def _operator_env_vars() -> set[str]:
    from callboard.cli import main
    from callboard.cli.operator import command

    names = {p.envvar for p in command.params if isinstance(p.envvar, str)}
    names |= {name for p in command.params if isinstance(p.envvar, list) for name in p.envvar}
    names |= {f"CALLBOARD_{p.name.upper()}" for p in main.params if p.name}  # auto_envvar_prefix
    return names | {"POD_NAME", "POD_NAMESPACE"}


def _autoscale_settings(env: dict[str, str]) -> AutoscaleSettings:
    return config.build(AutoscaleSettings, config.from_environ(AutoscaleSettings, env))


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_variable_set_is_one_the_program_reads(render: Render, value_set: str) -> None:
    operator_vars = _operator_env_vars()
    sidecar_vars = {name for opt in config.options(SidecarSettings) for name in opt.env}
    sidecar_vars |= {"CALLBOARD_LOG_LEVEL", "CALLBOARD_LOG_FORMAT"}
    # Read by nobody: only expanded into CALLBOARD_REDIS_URL as $(CALLBOARD_REDIS_PASSWORD).
    helpers = {"CALLBOARD_REDIS_PASSWORD", "CALLBOARD_REDIS_SENTINEL_PASSWORD"}
    for name, _, c in containers(render(*values_args(value_set))):
        env = set(env_of(c))
        if c["name"] == "operator":
            assert env - helpers <= operator_vars, f"{name}: {sorted(env - helpers - operator_vars)}"
        elif c["name"] == "sidecar":
            assert env - helpers <= sidecar_vars, f"{name}: {sorted(env - helpers - sidecar_vars)}"


def test_autoscaler_settings_from_the_chart(render: Render) -> None:
    docs = render("-f", "tests/e2e/chart/values/full.yaml")
    operator = find(docs, "Deployment", "cb-callboard-operator")["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in env_of(operator).items() if isinstance(v, str)}
    settings = _autoscale_settings(env)
    assert settings == AutoscaleSettings(
        mode=ScalingMode.SCALE,
        namespace="ns",
        deployment=find(docs, "Deployment", "cb-callboard-agents-voice")["metadata"]["name"],
        pool="voice",
        min_replicas=2,
        max_replicas=40,
        buffer=Buffer(percent=20),
        capacity=4,
        interval=5.0,
        scale_down_window=120.0,
    )
    for value_set, mode in (("hpa", ScalingMode.METRICS), ("keda", ScalingMode.METRICS), ("fixed", None)):
        docs = render(*values_args(value_set))
        ops = [c for _, _, c in containers(docs) if c["name"] == "operator"]
        if mode is None:
            assert ops == []
            continue
        env = {k: v for k, v in env_of(ops[0]).items() if isinstance(v, str)}
        assert _autoscale_settings(env).mode is mode


def _redis_url(docs: list[dict[str, Any]], deployment: str, container: str) -> tuple[list[str], Any]:
    d = find(docs, "Deployment", deployment)
    c = next(c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    names = [e["name"] for e in c["env"]]
    return names, env_of(c)["CALLBOARD_REDIS_URL"]


def test_redis_urls(render: Render) -> None:
    # The bundled Redis by default: a password generated into a Secret, given to every component.
    default = render()
    names, url = _redis_url(default, "cb-callboard-operator", "operator")
    assert url == "redis://:$(CALLBOARD_REDIS_PASSWORD)@cb-callboard-redis.ns.svc:6379/0"
    assert names.index("CALLBOARD_REDIS_PASSWORD") < names.index("CALLBOARD_REDIS_URL")
    generated = {"secretKeyRef": {"name": "cb-callboard-redis-auth", "key": "password"}}
    assert (
        env_of(
            find(default, "Deployment", "cb-callboard-operator")["spec"]["template"]["spec"]["containers"][0]
        )["CALLBOARD_REDIS_PASSWORD"]
        == generated
    )
    bundled = find(default, "Deployment", "cb-callboard-redis")["spec"]["template"]["spec"]["containers"][0]
    assert bundled["command"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert env_of(bundled)["REDIS_PASSWORD"] == generated
    secret = find(default, "Secret", "cb-callboard-redis-auth")
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) == 32 and password.isalnum()  # URL-safe: it goes into redis:// URLs

    # External, with a password from a Secret and a private CA.
    full = render("-f", "tests/e2e/chart/values/full.yaml")
    for deployment, container in (
        ("cb-callboard-operator", "operator"),
        ("cb-callboard-agents-voice", "sidecar"),
    ):
        names, url = _redis_url(full, deployment, container)
        assert url == (
            "rediss://callboard:$(CALLBOARD_REDIS_PASSWORD)@redis.example.internal:6380/2"
            "?ssl_ca_certs=/etc/callboard/redis-tls/ca.crt"
        )
        # Dependent expansion only sees variables defined before.
        assert names.index("CALLBOARD_REDIS_PASSWORD") < names.index("CALLBOARD_REDIS_URL")
        pod = find(full, "Deployment", deployment)["spec"]["template"]["spec"]
        assert {"name": "redis-tls", "secret": {"secretName": "redis-ca"}} in pod["volumes"]

    # The whole URL from a Secret.
    _, url = _redis_url(render("-f", "tests/e2e/chart/values/hpa.yaml"), "cb-callboard-operator", "operator")
    assert url == {"secretKeyRef": {"name": "redis-url", "key": "url"}}

    # The bundled Redis with a password: required by the server, given to the clients.
    keda = render("-f", "tests/e2e/chart/values/keda.yaml")
    _, url = _redis_url(keda, "cb-callboard-operator", "operator")
    assert url == "redis://:$(CALLBOARD_REDIS_PASSWORD)@cb-callboard-redis.ns.svc:6379/0"
    redis = find(keda, "Deployment", "cb-callboard-redis")["spec"]["template"]["spec"]["containers"][0]
    assert redis["command"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert env_of(redis)["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-password", "key": "password"}}

    # Redis Sentinel: every sentinel, the master name and db, both passwords, TLS with the CA.
    sentinel = render("-f", "tests/e2e/chart/values/sentinel.yaml")
    assert not [
        d for d in sentinel if d["kind"] == "Deployment" and d["metadata"]["name"] == "cb-callboard-redis"
    ]
    for deployment, container in (
        ("cb-callboard-operator", "operator"),
        ("cb-callboard-agents-default", "sidecar"),
    ):
        names, url = _redis_url(sentinel, deployment, container)
        assert url == (
            "rediss+sentinel://callboard:$(CALLBOARD_REDIS_PASSWORD)@redis-sentinel-0.redis-sentinel:26379,"
            "redis-sentinel-1.redis-sentinel:26379,redis-sentinel-2.redis-sentinel:26379/mymaster/1"
            "?sentinel_password=$(CALLBOARD_REDIS_SENTINEL_PASSWORD)&ssl_ca_certs=/etc/callboard/redis-tls/ca.crt"
        )
        assert names.index("CALLBOARD_REDIS_SENTINEL_PASSWORD") < names.index("CALLBOARD_REDIS_URL")
        pod = find(sentinel, "Deployment", deployment)["spec"]["template"]["spec"]
        assert {"name": "redis-tls", "secret": {"secretName": "redis-ca"}} in pod["volumes"]
    from callboard.registry.backends.redis_connect import SentinelEndpoint, parse_redis_url

    parsed = parse_redis_url(
        url.replace("$(CALLBOARD_REDIS_PASSWORD)", "pw").replace("$(", "").replace(")", "")
    )
    assert isinstance(parsed, SentinelEndpoint) and parsed.master_name == "mymaster" and parsed.db == 1


def _rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_least_privilege(render: Render) -> None:
    docs = render("-f", "tests/e2e/chart/values/full.yaml")
    cluster_role = find(docs, "ClusterRole")
    # Exactly what the operator calls (the e2e operator tier runs as this RBAC: it is enough).
    assert _rules(cluster_role) == {
        ("callboard.dev", "agentsessions", verb)
        for verb in ("get", "list", "watch", "patch", "create", "delete")
    } | {
        ("callboard.dev", "agentsessions/status", "patch"),
        ("", "pods", "get"),
        ("", "pods", "patch"),
        ("", "events", "create"),
    }
    role = find(docs, "Role", "cb-callboard-operator")
    assert _rules(role) == {
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "update"),
        ("apps", "deployments/scale", "get"),
        ("apps", "deployments/scale", "patch"),
        ("", "pods", "list"),
    }
    # G8: only its own Lease can be read or renewed; the chart renders it, so no create
    # (which cannot be limited by name) and nothing brings it back after an uninstall.
    lease_rules = [r for r in role["rules"] if r["resources"] == ["leases"]]
    assert {tuple(r["verbs"]): r.get("resourceNames") for r in lease_rules} == {
        ("get", "update"): ["cb-callboard-operator"],
    }
    (lease,) = [d for d in docs if d["kind"] == "Lease"]
    assert lease["metadata"]["name"] == "cb-callboard-operator" and lease["spec"] == {}
    scale_rule = next(r for r in role["rules"] if r["resources"] == ["deployments/scale"])
    assert scale_rule["resourceNames"] == ["cb-callboard-agents-voice"]
    for d in docs:
        for rule in d.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    binding = find(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cb-callboard", "namespace": "ns"}]
    # Cluster-scoped names carry the namespace: release "cb" in two namespaces does not collide.
    assert cluster_role["metadata"]["name"] == binding["metadata"]["name"] == "ns-cb-callboard"
    assert binding["roleRef"]["name"] == "ns-cb-callboard"
    elsewhere = render("-f", "tests/e2e/chart/values/full.yaml", namespace="other")
    cluster_names = {d["metadata"]["name"] for d in elsewhere if d["kind"].startswith("Cluster")}
    assert cluster_names == {"other-cb-callboard"}

    # Watching some namespaces: Roles there instead of a ClusterRole; metrics mode reads the scale only.
    hpa = render("-f", "tests/e2e/chart/values/hpa.yaml")
    assert not [d for d in hpa if d["kind"].startswith("Cluster")]
    assert {d["metadata"]["namespace"] for d in hpa if d["kind"] == "Role"} == {"agents", "tenants", "ns"}
    own = find(hpa, "Role", "cb-callboard-operator")
    assert ("apps", "deployments/scale", "patch") not in _rules(own)
    assert ("", "pods", "patch") in _rules(own)  # the agent pods live in the release namespace
    # G11: pods are read one by one (the pool-label check) and listed only in the release namespace.
    assert ("", "pods", "get") in _rules(own)
    assert ("", "pods", "get") in _rules(cluster_role)
    assert ("", "pods", "list") not in _rules(cluster_role) and ("", "pods", "watch") not in _rules(
        cluster_role
    )
    for d in hpa:
        if d["kind"] == "Role" and d["metadata"]["name"] == "cb-callboard":
            assert {v for g, r, v in _rules(d) if r == "pods"} == {"get", "patch"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "agentPool.enabled=true"],
            "set agentPool.agent.image.repository to your agent server's image",
        ),
        (
            ["--set", "redis.mode=external"],
            "set redis.external.url (redis://host:6379/0) or redis.external.urlSecret",
        ),
        (
            ["--set", "redis.mode=cluster"],
            "at '/redis/mode': value must be one of 'bundled', 'external', 'sentinel'",
        ),
        (["--set", "redis.mode=sentinel"], "list the sentinels in redis.sentinel.addresses"),
        (
            ["--set", "redis.mode=external", "--set", "redis.external.url=redis://u:p@host:6379"],
            "redis.external.url must not carry credentials",
        ),
        (["--set", "redis.external.url=http://x"], "at '/redis/external/url'"),
        (["--set", "agentPool.autoscaling.buffer=lots"], "'lots' does not match pattern"),
        (
            ["--set", "agentPool.autoscaling.mode=auto"],
            "value must be one of 'operator', 'hpa', 'keda', 'off'",
        ),
        (["--set", "agentPool.capacity=0"], "at '/agentPool/capacity': minimum: got 0, want 1"),
        (["--set", "agentPool.name=Voice_Pool"], "at '/agentPool/name'"),
        (["--set", "operator.replica=2"], "additional properties 'replica' not allowed"),
        (["--set", "operator.replicas=3"], "at '/operator/replicas': maximum: got 3, want 2"),
        (["--set", "logFormat=xml"], "at '/logFormat'"),
        (
            [
                "--set", "agentPool.enabled=true", "--set", "agentPool.agent.image.repository=a",
                "--set", "agentPool.autoscaling.minReplicas=5",
                "--set", "agentPool.autoscaling.maxReplicas=2",
            ],
            "minReplicas (5) is above maxReplicas (2)",
        ),
        (
            [
                "--set", "agentPool.enabled=true", "--set", "agentPool.agent.image.repository=a",
                "--set", "agentPool.autoscaling.mode=keda",
            ],
            "set agentPool.autoscaling.keda.serverAddress",
        ),
        (
            [
                "--set", "agentPool.enabled=true", "--set", "agentPool.agent.image.repository=a",
                "--set", "operator.enabled=false",
            ],
            "needs the operator (operator.enabled)",
        ),
        (["--set", "operator.watchNamespaces={a,b}"], "operator.adoption.namespace \"ns\" must be one of"),
        (
            [
                "--set", "agentPool.enabled=true", "--set", "agentPool.agent.image.repository=a",
                "--set", "agentPool.terminationGracePeriodSeconds=900",
            ],
            "at '/agentPool/terminationGracePeriodSeconds': maximum: got 900, want 600",
        ),
        (
            ["--set", "agentPool.drain.timeoutSeconds=600"],
            "at '/agentPool/drain/timeoutSeconds': maximum: got 600, want 585",
        ),
        (
            [
                "--set", "agentPool.enabled=true", "--set", "agentPool.agent.image.repository=a",
                "--set", "agentPool.drain.preStopSleepSeconds=30",
            ],
            "terminationGracePeriodSeconds would be 625 (preStopSleepSeconds + drain.timeoutSeconds + 15",
        ),
        (
            ["--set", "operator.startTimeoutSeconds=45", "--set", "agentPool.sidecar.ttlSeconds=30"],
            "operator.startTimeoutSeconds (45) must not exceed agentPool.sidecar.ttlSeconds (30)",
        ),
    ],
)  # fmt: skip
def test_bad_values_fail_clearly(helm_bin: str, args: list[str], message: str) -> None:
    proc = run_helm(helm_bin, "template", "cb", str(CHART), "--namespace", "ns", *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


_METRIC = re.compile(r"\b(callboard_[a-z_]+?)(?:_bucket|_total)?\b")


def test_dashboard_uses_metrics_that_exist(render: Render) -> None:
    from prometheus_client import CollectorRegistry

    from callboard.kube.autoscaling.loop import AutoscalerMetrics
    from callboard.kube.views.metrics import OperatorMetrics

    config_map = find(render("-f", "tests/e2e/chart/values/full.yaml"), "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["callboard.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in _METRIC.findall(e)}
    registry = CollectorRegistry()
    OperatorMetrics(registry)
    AutoscalerMetrics(registry)
    known = {m.name for m in registry.collect()}
    # The sidecar's gauges are built at scrape time (callboard.sidecar.metrics).
    known |= {"callboard_sidecar_sessions"}
    assert used - known == set(), used - known
    assert {"callboard_autoscaler_desired_replicas", "callboard_operator_sessions"} <= used


#: A minimal agent pool with the chart's defaults otherwise.
POOL = ("--set", "agentPool.enabled=true", "--set", "agentPool.agent.image.repository=agent")


def test_g11_nothing_outside_the_agent_pod_reaches_the_session_api(render: Render) -> None:
    """Defaults: no port, Service, ServiceMonitor or NetworkPolicy names the session API."""
    for docs in (render("-f", "tests/e2e/chart/values/full.yaml"), render(*POOL)):
        deployment = next(d for d in docs if d["kind"] == "Deployment" and "agents" in d["metadata"]["name"])
        sidecar = deployment["spec"]["template"]["spec"]["containers"][1]
        assert env_of(sidecar)["CALLBOARD_LISTEN"].startswith("127.0.0.1:")
        assert [p["containerPort"] for p in sidecar["ports"]] == [8556]
        service = find(docs, "Service", deployment["metadata"]["name"])
        assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("probes", 8556)]
        policy = find(docs, "NetworkPolicy", deployment["metadata"]["name"])  # on by default
        ports = [p["port"] for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])]
        assert 8555 not in ports
    monitors = [d for d in render("-f", "tests/e2e/chart/values/full.yaml") if d["kind"] == "ServiceMonitor"]
    agent_monitor = next(m for m in monitors if "agents" in m["metadata"]["name"])
    assert agent_monitor["spec"]["endpoints"][0]["port"] == "probes"


def test_sidecar_token_from_a_secret(render: Render) -> None:
    docs = render(*POOL, "--set", "agentPool.sidecar.apiToken.enabled=true")
    deployment = find(docs, "Deployment", "cb-callboard-agents-default")
    pod = deployment["spec"]["template"]["spec"]
    agent, sidecar = pod["containers"]
    secret = find(docs, "Secret", "cb-callboard-agents-default-sidecar-token")
    assert len(base64.b64decode(secret["data"]["token"])) == 40
    ref = {"secretKeyRef": {"name": "cb-callboard-agents-default-sidecar-token", "key": "token"}}
    assert env_of(agent)["CALLBOARD_SIDECAR_TOKEN"] == ref
    assert env_of(sidecar)["CALLBOARD_API_TOKEN_FILE"] == "/etc/callboard/sidecar-token/token"
    assert {
        "name": "sidecar-token",
        "mountPath": "/etc/callboard/sidecar-token",
        "readOnly": True,
    } in sidecar["volumeMounts"]
    own = render(
        *POOL, "--set", "agentPool.sidecar.apiToken.enabled=true",
        "--set", "agentPool.sidecar.apiToken.existingSecret=mine",
    )  # fmt: skip
    assert not [d for d in own if d["kind"] == "Secret" and "sidecar-token" in d["metadata"]["name"]]
    pod = find(own, "Deployment", "cb-callboard-agents-default")["spec"]["template"]["spec"]
    assert {
        "name": "sidecar-token",
        "secret": {"secretName": "mine", "items": [{"key": "token", "path": "token"}]},
    } in pod["volumes"]
