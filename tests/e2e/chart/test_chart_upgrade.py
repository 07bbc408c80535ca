"""``helm upgrade`` brings CRD changes; ``helm uninstall`` keeps the CRD and does not hang.

Helm installs a chart's ``crds/`` once and never upgrades them: a chart version that adds an
AgentSession field would leave the old schema in place, and the API server would prune the
new field from every object. The chart renders the CRD as a template instead
(``templates/crd.yaml``, ``helm.sh/resource-policy: keep``). Here a copy of the chart adds a
field to the CRD; ``helm upgrade`` to it makes the API server store that field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import KubeEnv
from tests.support.waiting import wait_for

from .conftest import CHART

CRD = "agentsessions.callboard.dev"
#: Light: no operator and no Redis are needed to see what the API server stores.
LIGHT = ("--set", "operator.enabled=false", "--set", "redis.mode=external",
         "--set", "redis.external.url=redis://redis.invalid:6379/0")  # fmt: skip


def _chart_with_a_new_field(target: Path) -> Path:
    """A copy of the chart whose CRD has ``spec.priorityHint`` (a new chart version)."""
    shutil.copytree(CHART, target)
    path = target / "files" / "agentsession-crd.yaml"
    crd = yaml.safe_load(path.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["priorityHint"] = {"type": "string", "maxLength": 63}
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return target


def _session(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "callboard.dev/v1alpha1",
            "kind": "AgentSession",
            "metadata": {"name": name},
            "spec": {"callId": name, "priorityHint": "high"},
        }
    )


def _stored_spec(kube: KubeEnv, ns: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = kube.kubectl_json("get", "ags", name, "-n", ns)["spec"]
    return spec


def test_helm_upgrade_brings_a_new_crd_field(kube_env: KubeEnv, kube_namespace: str, tmp_path: Path) -> None:
    ns = kube_namespace
    release = "cb-" + ns.rsplit("-", 1)[-1]
    new_chart = _chart_with_a_new_field(tmp_path / "callboard")
    # A CRD this release does not own (kubectl apply, an older chart's crds/, another release)
    # is not taken silently: the install says so, and --take-ownership (the README) takes it.
    kube_env.kubectl("apply", "-f", "manifests/agentsession-crd.yaml")
    refused = kube_env.helm("install", release, str(CHART), "-n", ns, *LIGHT, check=False)
    assert refused.returncode != 0
    assert f'CustomResourceDefinition "{CRD}"' in refused.stderr and "exists" in refused.stderr, (
        refused.stderr
    )
    try:
        kube_env.helm("install", release, str(CHART), "-n", ns, *LIGHT, "--take-ownership")
        crd = kube_env.kubectl_json("get", "crd", CRD)
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        # The current chart's schema: the field is unknown (refused strictly, else pruned).
        strict = kube_env.kubectl("create", "-n", ns, "-f", "-", input=_session("before"), check=False)
        assert 'unknown field "spec.priorityHint"' in strict.stderr, strict.stderr
        kube_env.kubectl("create", "-n", ns, "--validate=false", "-f", "-", input=_session("before"))
        assert "priorityHint" not in _stored_spec(kube_env, ns, "before")

        kube_env.helm("upgrade", release, str(new_chart), "-n", ns, "--reuse-values")
        served = kube_env.kubectl_json("get", "crd", CRD)["spec"]["versions"][0]["schema"]
        assert "priorityHint" in served["openAPIV3Schema"]["properties"]["spec"]["properties"]

        tries = iter(range(1_000))

        def stored() -> bool:
            name = f"after-{next(tries)}"
            created = kube_env.kubectl("create", "-n", ns, "-f", "-", input=_session(name), check=False)
            if created.returncode != 0:
                assert "unknown field" in created.stderr, created.stderr
                return False
            return _stored_spec(kube_env, ns, name).get("priorityHint") == "high"

        # The API server serves the new schema once its CRD handler reloaded (moments).
        wait_for(stored, timeout=60, interval=1.0, what="the new field stored")
        # Back to the current chart: the field is gone from the schema again.
        kube_env.helm("upgrade", release, str(CHART), "-n", ns, "--reuse-values")
        served = kube_env.kubectl_json("get", "crd", CRD)["spec"]["versions"][0]["schema"]
        assert "priorityHint" not in served["openAPIV3Schema"]["properties"]["spec"]["properties"]
    finally:
        kube_env.helm("uninstall", release, "-n", ns, "--wait", check=False)
    # helm uninstall keeps the CRD (deleting it would delete every AgentSession in the cluster).
    assert kube_env.kubectl_json("get", "crd", CRD)["metadata"]["name"] == CRD
    assert kube_env.kubectl_json("get", "ags", "before", "-n", ns)["spec"]["callId"] == "before"


def test_helm_uninstall_with_live_objects_does_not_hang(kube_env: KubeEnv, kube_namespace: str) -> None:
    """``helm uninstall`` with AgentSessions that still carry the operator's finalizer returns
    (the kept CRD keeps them; nothing waits on the gone operator). Deleting their namespace
    then waits on the finalizer, as the README says, and its documented command ends that."""
    ns = kube_namespace
    release = "cb-" + ns.rsplit("-", 1)[-1]
    kube_env.helm("install", release, str(CHART), "-n", ns, *LIGHT, "--take-ownership")
    for name in ("live-0", "live-1"):
        body = json.loads(_session(name))
        del body["spec"]["priorityHint"]
        body["metadata"]["finalizers"] = ["callboard.dev/close-session"]  # as the operator adds it
        kube_env.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(body))
    uninstalled = kube_env.helm("uninstall", release, "-n", ns, "--wait", "--timeout", "120s", timeout=150)
    assert f'release "{release}" uninstalled' in uninstalled.stdout
    assert kube_env.kubectl("get", "deployments", "-n", ns, "-o", "name").stdout.strip() == ""
    left = kube_env.kubectl_json("get", "ags", "-n", ns)["items"]
    assert sorted(o["metadata"]["name"] for o in left) == ["live-0", "live-1"]

    # No operator releases the finalizer any more: the namespace stays Terminating on it.
    kube_env.kubectl("delete", "namespace", ns, "--wait=false")

    def stuck_on_finalizers() -> bool:
        status = kube_env.kubectl_json("get", "namespace", ns)["status"]
        return any(
            c["type"] == "NamespaceFinalizersRemaining" and c["status"] == "True"
            and "callboard.dev/close-session" in c.get("message", "")
            for c in status.get("conditions", [])
        )  # fmt: skip

    wait_for(stuck_on_finalizers, timeout=60, interval=1.0, what="the namespace waiting on the finalizer")
    # The README's way out (their sessions, if any, run on until the call ends).
    for name in ("live-0", "live-1"):
        kube_env.kubectl(
            "patch", "agentsession", name, "-n", ns, "--type", "merge",
            "-p", '{"metadata":{"finalizers":null}}',
        )  # fmt: skip
    kube_env.kubectl("wait", "--for=delete", f"namespace/{ns}", "--timeout=120s", timeout=150)
