"""The Kubernetes half in real pods: the chart, the image, the sidecar and a real agent app.

One release of charts/callboard (agent pool + bundled Redis) in a namespace that enforces
Pod Security ``restricted``; the tests run in file order on it, each as a user would:

1. ``helm install --wait``: every pod Ready, the operator holds its Lease, ``kubectl get ags``;
2. ``kubectl apply`` of an AgentSession: the real sidecar gets the start request, the demo
   agent container accepts, the object is Running with that pod's ``podName``/``nodeId``,
   and ``kubectl logs`` of the agent shows it;
3. a second pod of the namespace (not the release's) tries every attack of issue 14 with the
   chart's defaults (tests/support/attacks.py) and is refused each time; the session stays;
4. ``kubectl delete``: the agent gets ``close_requested`` and ends the session, the object
   goes;
5. scale-down while a pod is busy: ``kubectl scale`` (and, after test 7, the operator's
   autoscaler) removes only the idle pod; a busy pod
   deleted (SIGTERM) drains through its real termination order, the agent's last DELETE
   reaching a live sidecar, and its session ends cleanly (Succeeded, not Lost);
6. the agent container killed (SIGKILL from the node's containerd): the kubelet restarts it
   at once, the sidecar sees the new app instance at its first call and removes the dead
   run's sessions (reason ``app_restarted``), the object says so (Succeeded, ended by its
   node), and the pod takes work again;
7. the bundled Redis pod deleted: it comes back empty and every live session is back within
   one heartbeat, the objects stay Running;
8. ``helm upgrade`` to a changed value and ``helm uninstall`` with live objects: nothing
   hangs, nothing is left behind.

Latencies are printed (``[real-pods] ...``), never asserted.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import KubeEnv, random_suffix
from tests.support.waiting import wait_for

from . import kube
from .conftest import Images
from .kube import Release, timed, write_values

pytestmark = pytest.mark.timeout(600)

#: Seconds between sidecar heartbeats in these installs (the chart's default is 10).
HEARTBEAT = 5
TTL = 20  # at least the operator's start timeout (the chart refuses less)
DRAIN_TIMEOUT = 30
PRESTOP = 3
DEMO_HEALTH_PORT = 8081


def _values(images: Images) -> dict[str, Any]:
    policy = images.pull_policy
    return {
        "image": {"repository": images.callboard[0], "tag": images.callboard[1], "pullPolicy": policy},
        "logFormat": "text",
        "redis": {
            "bundled": {
                "image": {"repository": images.redis[0], "tag": images.redis[1], "pullPolicy": policy},
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
            }
        },
        "operator": {
            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
            "startTimeoutSeconds": 20,
        },
        "agentPool": {
            "enabled": True,
            "replicas": 2,
            "capacity": 4,
            "agent": {
                "image": {"repository": images.agent[0], "tag": images.agent[1], "pullPolicy": policy},
                "env": [{"name": "DEMO_HEALTH_PORT", "value": str(DEMO_HEALTH_PORT)}],
                "health": {"port": DEMO_HEALTH_PORT, "path": "/health"},
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            },
            "sidecar": {
                "ttlSeconds": TTL,
                "heartbeatIntervalSeconds": HEARTBEAT,
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            },
            "drain": {"timeoutSeconds": DRAIN_TIMEOUT, "preStopSleepSeconds": PRESTOP},
            # The tests scale by hand (4) and watch the operator's autoscaler separately.
            "autoscaling": {"mode": "off"},
        },
    }


@pytest.fixture(scope="module")
def release(
    progress: Callable[[str], None],
    real_kube: KubeEnv,
    images: Images,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    kube.REPORT[0] = progress
    ns = f"real-{random_suffix()}"
    real_kube.kubectl("create", "namespace", ns)
    real_kube.kubectl(
        "label", "namespace", ns,
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    values = write_values(tmp_path_factory.mktemp("values") / "values.yaml", _values(images))
    rel = Release(real_kube, ns, "cb", values)
    try:
        yield rel
    finally:
        if rel.figures:
            progress("[real-pods] figures: " + json.dumps({k: round(v, 2) for k, v in rel.figures.items()}))
        real_kube.helm("uninstall", rel.name, "-n", ns, "--wait", "--timeout", "2m", check=False, timeout=180)
        # No operator is left to take its finalizer off the AgentSessions that outlived it.
        for name in rel.kubectl("get", "ags", "-o", "name", check=False).stdout.split():
            rel.kubectl("patch", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False)
        real_kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _pod_of(rel: Release, session: dict[str, Any]) -> str:
    pod = (session.get("status") or {}).get("podName")
    assert pod, session
    return str(pod)


def _events(rel: Release, pod: str, kind: str, **match: Any) -> list[dict[str, Any]]:
    return [
        line
        for line in rel.agent_log(pod)
        if line.get("kind") == kind
        and all(line.get(k) == v or (line.get("data") or {}).get(k) == v for k, v in match.items())
    ]


def test_helm_install_restricted_every_pod_ready_operator_leads(release: Release) -> None:
    release.install()
    rel = release
    pods = rel.kubectl_json("get", "pods")["items"]
    components = sorted(p["metadata"]["labels"].get("app.kubernetes.io/component", "") for p in pods)
    assert components == ["agent", "agent", "operator", "redis"], components
    rel.kubectl("wait", "--for=condition=Ready", "pods", "--all", "--timeout=120s")
    # Restricted really applied: seccomp filter on, no capabilities, read-only root.
    agent = rel.running_pod_names("agent")[0]
    status = rel.kubectl("exec", agent, "-c", "sidecar", "--", "cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Seccomp"].strip() == "2", fields.get("Seccomp")
    assert int(fields["CapEff"].strip(), 16) == 0, fields["CapEff"]
    touch = rel.kubectl("exec", agent, "-c", "sidecar", "--", "touch", "/opt/x", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch.stderr
    # The operator holds its Lease.
    operator = rel.running_pod_names("operator")
    assert len(operator) == 1, operator
    leases = rel.kubectl_json("get", "leases")["items"]
    holders = {lease["metadata"]["name"]: lease["spec"].get("holderIdentity") for lease in leases}
    assert operator[0] in holders.values(), holders
    assert rel.kubectl("get", "ags").returncode == 0
    # The image has nothing to install or build software with (on any cluster; the local
    # build's whole file system is checked in test_image.py).
    tools = "('apt', 'apt-get', 'dpkg', 'pip', 'pip3', 'gcc')"
    which = f"import shutil; print([t for t in {tools} if shutil.which(t)])"
    assert rel.kubectl("exec", operator[0], "--", "python3", "-c", which).stdout.strip() == "[]"


def test_apply_reaches_the_real_sidecar_and_the_agent_runs_it(release: Release) -> None:
    rel = release
    started = time.monotonic()
    rel.apply_session("first", "call-real-1")
    obj = rel.wait_phase("first", "Running")
    rel.figures["apply -> Running"] = timed("kubectl apply -> Running", started)
    pod = _pod_of(rel, obj)
    assert pod in rel.running_pod_names("agent")
    assert obj["status"].get("nodeId"), obj["status"]
    # The demo agent in that pod saw the start request and accepted it; its log says so.
    accepted = _events(rel, pod, "accepted", call_id="call-real-1")
    assert len(accepted) == 1, rel.agent_log(pod)
    sessions = json.loads(
        rel.kubectl("exec", pod, "-c", "sidecar", "--", "python3", "-c", _GET_SESSIONS).stdout
    )
    assert [s["call_id"] for s in sessions] == ["call-real-1"], sessions


#: The sidecar's own view of its sessions, from inside its container (the API is pod-local).
_GET_SESSIONS = (
    "import json,urllib.request;"
    "print(urllib.request.urlopen('http://127.0.0.1:8555/v1/sessions').read().decode())"
)


ATTACKS = Path(__file__).resolve().parents[1] / "support" / "attacks.py"


def _attacker_pod(rel: Release, images: Images, args: list[str]) -> dict[str, Any]:
    """A pod of the namespace that is not the release's (no labels of it), restricted like any."""
    redis_secret = f"{rel.full_name}-redis-auth"
    registry = f"redis://:$(REDIS_PASSWORD)@{rel.full_name}-redis:6379/0"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "attacker", "labels": {"app": "attacker"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "attacker",
                "image": f"{images.callboard[0]}:{images.callboard[1]}",
                "imagePullPolicy": images.pull_policy,
                "command": ["python3", "/attacks/attacks.py", *args],
                "env": [
                    # A compromised node's view: it has the registry's password too.
                    {"name": "REDIS_PASSWORD",
                     "valueFrom": {"secretKeyRef": {"name": redis_secret, "key": "password"}}},
                    {"name": "CALLBOARD_ATTACK_REGISTRY_URL", "value": registry},
                ],
                "securityContext": {
                    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                "volumeMounts": [{"name": "attacks", "mountPath": "/attacks", "readOnly": True}],
            }],
            "volumes": [{"name": "attacks", "configMap": {"name": "attacks"}}],
        },
    }  # fmt: skip


def test_g11_another_pod_of_the_namespace_is_refused_every_attack_and_the_agent_keeps_working(
    release: Release, images: Images
) -> None:
    """Issue 14 with the chart's defaults: a second pod tries the sidecar's session API (its
    pod IP), the probe port, Redis without the password, the operator's ports, and, with the
    password, a take-over of the victim's session in the registry as another node."""
    rel = release
    obj = rel.session("first")
    assert obj is not None and obj["status"]["phase"] == "Running", obj
    pod, session_id = _pod_of(rel, obj), obj["status"]["sessionId"]
    pod_ip = rel.kubectl_json("get", "pod", pod)["status"]["podIP"]
    (operator,) = rel.running_pod_names("operator")
    operator_ip = rel.kubectl_json("get", "pod", operator)["status"]["podIP"]
    args = [
        "--pod-ip", pod_ip, "--session-port", "8555", "--probe-port", "8556",
        "--redis-url", f"redis://{rel.full_name}-redis:6379/0",
        "--victim", f"call-real-1/{session_id}", "--operator-ip", operator_ip,
    ]  # fmt: skip
    rel.kubectl("create", "configmap", "attacks", f"--from-file=attacks.py={ATTACKS}")
    rel.kube.kubectl(
        "apply", "-n", rel.namespace, "-f", "-", input=json.dumps(_attacker_pod(rel, images, args))
    )
    try:

        def finished() -> str | None:
            phase = (rel.kubectl_json("get", "pod", "attacker").get("status") or {}).get("phase")
            return phase if phase in ("Succeeded", "Failed") else None

        phase = wait_for(finished, timeout=180, what="the attacker pod to finish")
        lines = rel.kubectl("logs", "attacker").stdout.splitlines()
    finally:
        rel.kubectl("delete", "pod", "attacker", "--wait=false", check=False)
        rel.kubectl("delete", "configmap", "attacks", check=False)
    attempts = [json.loads(line) for line in lines if line.startswith("{")]
    kube.REPORT[0](
        f"[real-pods] attacks: {len(attempts)} tried, {sum(a['refused'] for a in attempts)} refused"
    )
    names = {a["name"] for a in attempts}
    assert (
        len(attempts) == 25 and "take over the victim's session through the registry as another node" in names
    )
    assert [a for a in attempts if not a["refused"]] == [], lines
    assert phase == "Succeeded"
    # The agent kept working: its session is untouched, it was asked to close nothing.
    assert rel.session("first")["status"]["phase"] == "Running"  # type: ignore[index]
    sessions = json.loads(
        rel.kubectl("exec", pod, "-c", "sidecar", "--", "python3", "-c", _GET_SESSIONS).stdout
    )
    assert [(s["call_id"], s["session_id"], s["node_id"]) for s in sessions] == [
        ("call-real-1", session_id, obj["status"]["nodeId"])
    ], sessions
    assert not _events(rel, pod, "event", type="close_requested"), rel.agent_log(pod)


def test_delete_closes_the_session_in_the_agent_and_the_object_goes(release: Release) -> None:
    rel = release
    obj = rel.session("first")
    assert obj is not None
    pod = _pod_of(rel, obj)
    started = time.monotonic()
    rel.kubectl("delete", "ags", "first", "--wait=false")
    rel.wait_gone("ags/first")
    rel.figures["delete -> gone"] = timed("kubectl delete -> object gone", started)
    closes = _events(rel, pod, "event", type="close_requested")
    assert [c["data"]["call_id"] for c in closes] == ["call-real-1"], rel.agent_log(pod)
    ended = _events(rel, pod, "ended", call_id="call-real-1")
    assert [e["reason"] for e in ended] == ["closed"], ended
    sessions = json.loads(
        rel.kubectl("exec", pod, "-c", "sidecar", "--", "python3", "-c", _GET_SESSIONS).stdout
    )
    assert sessions == []


def _deletion_cost(pod: dict[str, Any]) -> int | None:
    value = (pod["metadata"].get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost")
    return int(value) if value is not None else None


class _LogFollower:
    """``kubectl logs -f`` of one container, kept after the pod is gone."""

    def __init__(self, rel: Release, pod: str, container: str) -> None:
        self.proc = subprocess.Popen(
            [rel.kube.kubectl_bin, "logs", "-f", pod, "-c", container, "-n", rel.namespace],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=rel.kube.env,
        )

    def lines(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        result = []
        for line in out.splitlines():
            try:
                result.append(json.loads(line))
            except ValueError:
                continue
        return result


def test_scale_down_removes_only_idle_pods_and_a_deleted_busy_pod_drains(release: Release) -> None:
    rel = release
    rel.apply_session("busy", "call-busy")
    busy_pod = _pod_of(rel, rel.wait_phase("busy", "Running"))
    pods = rel.running_pod_names("agent")
    assert len(pods) == 2 and busy_pod in pods, pods
    (idle_pod,) = [p for p in pods if p != busy_pod]

    # The operator ranks the pods for the ReplicaSet controller: busy costs more.
    def ranked() -> bool:
        costs = {p["metadata"]["name"]: _deletion_cost(p) for p in rel.pods("agent")}
        busy, idle = costs.get(busy_pod), costs.get(idle_pod)
        return busy is not None and (idle is None or busy > idle)

    wait_for(ranked, timeout=60, what="pod-deletion-cost of the busy pod above the idle one's")
    deploy = rel.agent_deployment
    started = time.monotonic()
    rel.kubectl("scale", f"deploy/{deploy}", "--replicas=1")
    rel.wait_gone(f"pod/{idle_pod}")
    rel.figures["kubectl scale: idle pod gone"] = timed("kubectl scale 2->1: idle pod gone", started)
    assert rel.running_pod_names("agent") == [busy_pod]
    assert rel.session("busy")["status"]["phase"] == "Running"  # type: ignore[index]

    # SIGTERM to the busy pod (kubectl delete pod): it drains through its termination order.
    logs = _LogFollower(rel, busy_pod, "agent")
    time.sleep(1)  # let `kubectl logs -f` attach before the container starts to end
    started = time.monotonic()
    rel.kubectl("delete", "pod", busy_pod, "--wait=false")
    ended = rel.wait_phase("busy", "Succeeded", timeout=DRAIN_TIMEOUT + PRESTOP + 60)
    rel.figures["busy pod SIGTERM -> session ended"] = timed(
        "busy pod deleted -> its session Succeeded", started
    )
    rel.wait_gone(f"pod/{busy_pod}", timeout=DRAIN_TIMEOUT + PRESTOP + 60)
    rel.figures["busy pod drain (delete -> pod gone)"] = timed("busy pod deleted -> pod gone", started)
    lines = logs.lines()
    kinds = [line["kind"] for line in lines]
    assert "sigterm" in kinds and "exiting" in kinds, lines
    # The termination order the chart sets up: the sidecar drains first (SIGTERM at once)
    # and tells the app; the app's own SIGTERM comes preStopSleepSeconds later.
    drains = [i for i, line in enumerate(lines) if line["kind"] == "event" and line["type"] == "drain"]
    assert drains and drains[0] < kinds.index("sigterm"), lines
    # The app's last DELETE reached a live sidecar (known=True) before the app exited.
    last = [line for line in lines if line["kind"] == "ended" and line["call_id"] == "call-busy"]
    assert [(e["reason"], e["known"]) for e in last] == [("shutdown", True)], lines
    conds = {c["type"]: c for c in ended["status"].get("conditions", [])}
    assert ended["status"]["phase"] == "Succeeded", ended["status"]
    assert conds.get("Ready", {}).get("status") == "False", conds
    # The Deployment (1 replica) replaces the pod; it takes work again below.
    wait_for(lambda: len(rel.running_pod_names("agent")) == 1, timeout=120, what="a replacement agent pod")
    rel.kubectl("delete", "ags", "busy", "--wait=false")
    rel.wait_gone("ags/busy")


def test_killed_agent_container_is_noticed_restarts_and_takes_work(release: Release) -> None:
    rel = release
    if not rel.kube.local:
        pytest.skip("SIGKILL of a container goes through the node's containerd (the local real node only)")
    (pod,) = rel.running_pod_names("agent")
    rel.apply_session("victim", "call-victim")
    assert _pod_of(rel, rel.wait_phase("victim", "Running")) == pod
    status = rel.kubectl_json("get", "pod", pod)["status"]
    agent = next(c for c in status["containerStatuses"] if c["name"] == "agent")
    container_id = agent["containerID"].split("://", 1)[1]
    restarts = agent["restartCount"]
    started = time.monotonic()
    killed = subprocess.run(
        [str(Path(rel.kube.kubectl_bin).parent / "ctr"), "--address", rel.kube.env["CONTAINERD_ADDRESS"],
         "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", container_id],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert killed.returncode == 0, killed.stderr

    def left_running() -> dict[str, Any] | None:
        obj = rel.session("victim")
        return obj if obj is not None and obj["status"].get("phase") != "Running" else None

    obj = wait_for(left_running, timeout=120, what="ags/victim to leave Running after the agent died")
    rel.figures["agent SIGKILL -> object reports it"] = timed("agent killed -> object left Running", started)
    kube.REPORT[0](
        f"[real-pods] after the agent died: {obj['status']['phase']} {obj['status'].get('conditions')}"
    )
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    # The sidecar removed the dead run's session when the restarted app first called.
    conds = obj["status"].get("conditions") or []
    assert any("app_restarted" in (c.get("message") or "") for c in conds), conds
    restarted = [line for line in rel.agent_log(pod) if line["kind"] == "started"]
    assert len(restarted) == 1 and restarted[0]["instance"], restarted  # the new run's log
    assert not _events(rel, pod, "ended", call_id="call-victim"), rel.agent_log(pod)

    def restarted() -> bool:
        st = rel.kubectl_json("get", "pod", pod)["status"]
        c = next(c for c in st["containerStatuses"] if c["name"] == "agent")
        return bool(c["restartCount"] > restarts and c.get("ready")) and pod in rel.running_pod_names("agent")

    wait_for(restarted, timeout=120, what="the agent container restarted and the pod Ready")
    rel.figures["agent SIGKILL -> pod Ready again"] = timed("agent killed -> restarted, pod Ready", started)
    rel.apply_session("after-restart", "call-after-restart")
    assert _pod_of(rel, rel.wait_phase("after-restart", "Running")) == pod
    rel.kubectl("delete", "ags", "victim", "--wait=false")
    rel.wait_gone("ags/victim")


def _registry_keys(rel: Release) -> str:
    (redis,) = rel.running_pod_names("redis") or [""]
    if not redis:
        return ""
    # The bundled Redis requires its generated password (the container has it as REDIS_PASSWORD).
    scan = 'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli --scan'
    proc = rel.kubectl("exec", redis, "--", "sh", "-c", scan, check=False)
    return str(proc.stdout) if proc.returncode == 0 else ""


def test_redis_pod_killed_comes_back_empty_and_sessions_are_back_within_a_heartbeat(release: Release) -> None:
    rel = release
    assert rel.session("after-restart")["status"]["phase"] == "Running"  # type: ignore[index]
    assert "call-after-restart" in _registry_keys(rel)
    (old,) = rel.running_pod_names("redis")
    started = time.monotonic()
    rel.kubectl("delete", "pod", old, "--wait=false")
    phases: list[str] = []

    def back() -> bool:
        obj = rel.session("after-restart")
        phases.append(obj["status"]["phase"] if obj else "gone")
        pods = rel.running_pod_names("redis")
        return bool(pods) and old not in pods and "call-after-restart" in _registry_keys(rel)

    wait_for(back, timeout=120, interval=0.5, what="a new Redis pod holding the live session again")
    rel.figures["redis pod deleted -> session back"] = timed(
        "Redis pod deleted -> live session back", started
    )
    for _ in range(2 * HEARTBEAT):
        obj = rel.session("after-restart")
        phases.append(obj["status"]["phase"] if obj else "gone")
        time.sleep(1)
    assert set(phases) == {"Running"}, phases


def _autoscale(buffer: int) -> list[str]:
    settings = {"mode": "operator", "minReplicas": 1, "maxReplicas": 3, "buffer": buffer}
    settings |= {"scaleDownWindowSeconds": 5, "intervalSeconds": 2}
    return ["--set", ",".join(f"agentPool.autoscaling.{k}={v}" for k, v in settings.items())]


def test_operator_autoscaler_scales_up_for_the_buffer_and_down_to_the_busy_pod(release: Release) -> None:
    rel = release
    busy_pod = _pod_of(rel, rel.wait_phase("after-restart", "Running"))
    assert rel.running_pod_names("agent") == [busy_pod]
    # One live session + a buffer of 5 free slots, 4 per pod: two pods.
    rel.upgrade(*_autoscale(buffer=5))
    wait_for(
        lambda: len(rel.running_pod_names("agent")) == 2, timeout=120, what="the autoscaler's second pod"
    )
    # No buffer: one pod is enough, and it must be the busy one.
    rel.upgrade(*_autoscale(buffer=0))
    started = time.monotonic()
    wait_for(
        lambda: rel.running_pod_names("agent") == [busy_pod] and len(rel.pods("agent")) == 1,
        timeout=120,
        what="the autoscaler removing the idle pod",
    )
    rel.figures["autoscaler scale-down (after the upgrade)"] = timed(
        "autoscaler 2->1: idle pod gone", started
    )
    assert rel.session("after-restart")["status"]["phase"] == "Running"  # type: ignore[index]


def test_helm_upgrade_and_uninstall_with_live_objects_leave_nothing(release: Release) -> None:
    rel = release
    before = rel.running_pod_names("agent")
    # A changed value rolls the agent pods: the busy one drains, a new one takes over.
    rel.upgrade("--set", "agentPool.capacity=3")
    after = rel.running_pod_names("agent")
    assert after and not set(after) & set(before), (before, after)
    env = rel.kubectl_json("get", "deploy", rel.agent_deployment)["spec"]["template"]["spec"]["containers"]
    sidecar = next(c for c in env if c["name"] == "sidecar")
    assert {"name": "CALLBOARD_CAPACITY", "value": "3"} in sidecar["env"]
    rel.apply_session("live-at-uninstall", "call-uninstall")
    rel.wait_phase("live-at-uninstall", "Running")
    started = time.monotonic()
    rel.kube.helm("uninstall", rel.name, "-n", rel.namespace, "--wait", "--timeout", "3m", timeout=240)
    rel.figures["helm uninstall --wait"] = timed("helm uninstall --wait (live objects)", started)
    # The pods go by themselves within their grace period: the busy agent pod drains first.
    wait_for(
        lambda: rel.kubectl_json("get", "pods")["items"] == [],
        timeout=DRAIN_TIMEOUT + PRESTOP + 60,
        what="every pod of the release gone",
    )
    rel.figures["helm uninstall -> every pod gone"] = timed("helm uninstall -> every pod gone", started)
    kinds = "all,pdb,sa,roles,rolebindings,configmaps,secrets,networkpolicies"
    left = rel.kubectl("get", kinds, "-o", "name").stdout.split()
    ours = [name for name in left if "cb-" in name or "callboard" in name]
    assert ours == [], ours
    # AgentSessions are the user's objects (the CRD stays too): still listed, not stuck in
    # deletion by anything the release left running.
    remaining = rel.kubectl_json("get", "ags")["items"]
    phases = [(o["metadata"]["name"], o["status"].get("phase")) for o in remaining]
    kube.REPORT[0](f"[real-pods] after uninstall: {phases}")
    assert sorted(o["metadata"]["name"] for o in remaining) == ["after-restart", "live-at-uninstall"]
    assert not any(o["metadata"].get("deletionTimestamp") for o in remaining)


def test_helm_uninstall_leaves_no_operator_lease(release: Release) -> None:
    """The chart renders the leader Lease (helm owns it and deletes it); the operator may not
    create one, so a replica still stopping after the uninstall cannot bring it back."""
    leases = [lease["metadata"]["name"] for lease in release.kubectl_json("get", "leases")["items"]]
    assert leases == []
