"""Real processes for the operator's e2e tests: ``callboard operator`` and agent nodes.

- :class:`OperatorProcess` runs the real command against the test cluster, authenticated as
  the ServiceAccount the chart installs, bound by the chart's RBAC and leading through the
  Lease the chart renders (:func:`install_operator_identity`: so every test also proves the
  chart's least privilege is enough, Lease without ``create`` included), with short timings;
- :class:`AgentNode` is an agent pod's pair of processes: ``callboard sidecar`` and the
  Python agent app of the sidecar tier (accepts start requests, ends sessions on close);
- :class:`Kube` wraps kubectl for async tests (each call runs in a thread, so the event loop
  keeps reading the processes' output) and waits with ``kubectl wait`` (a watch, not a poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.kube import KubeEnv
from tests.support.processes import ChildProcess, free_port
from tests.support.sidecar import AppProcess, SidecarProcess, callboard_command, python_app
from tests.support.waiting import wait_until

#: Operator timings for tests: seconds, not minutes (see `callboard operator --help`).
FAST_OPERATOR = {
    "CALLBOARD_TTL": "10",
    # As long as the ttl allows (a start request must outlive its wait). A refusal or an
    # acceptance ends its attempt the moment it is read, so this only bounds a node that never
    # answers, and only test_late_start is about that (it sets its own). With 3 s, a loaded
    # node's answer (start request -> sidecar -> app -> answer) came after the deadline and
    # the attempt counted as "no answer" (seen: test_every_node_refuses_then_failed,
    # test_no_capacity_stays_pending_then_runs_when_a_node_appears, test_g10_...).
    "CALLBOARD_START_TIMEOUT": "10",
    "CALLBOARD_MAX_START_ATTEMPTS": "3",
    "CALLBOARD_DELETE_TIMEOUT": "10",
    "CALLBOARD_SYNC_INTERVAL": "0.25",
    "CALLBOARD_LOST_GRACE": "1",
    "CALLBOARD_ADOPT_GRACE": "1",
    "CALLBOARD_POD_ANNOTATION_INTERVAL": "0.5",
    # 3 s (renew deadline 2 s): the Lease is renewed from a thread of its own, so a start-up
    # that holds the operator's event loop on a loaded machine no longer costs it its term.
    "CALLBOARD_LEASE_DURATION": "3",
    "CALLBOARD_LISTEN_HOST": "127.0.0.1",
}
#: Node timings: a 3 s TTL (the issue's "ttl 3 s"), heartbeats every 0.5 s.
NODE_TTL = 3.0
FAST_NODE = {"CALLBOARD_TTL": str(NODE_TTL), "CALLBOARD_HEARTBEAT_INTERVAL": "0.5"}

OPERATOR_NAMESPACE = "callboard-system"
#: The release the operator's identity is rendered for (as `charts/render-manifests.sh` does).
RELEASE = "callboard"
#: What the chart installs for the operator to run as (default values otherwise).
IDENTITY_TEMPLATES = ("serviceaccount.yaml", "rbac.yaml", "operator-lease.yaml")


@dataclass(frozen=True)
class OperatorIdentity:
    """One release's operator identity in the test cluster, exactly as the chart installs it."""

    kubeconfig: Path
    """Authenticates as the release's ServiceAccount (a TokenRequest token)."""
    lease: dict[str, Any]
    """The chart's Lease (``spec: {}``): the only one the RBAC lets the operator touch."""

    @property
    def lease_name(self) -> str:
        name: str = self.lease["metadata"]["name"]
        return name

    def reset_lease(self, kube: KubeEnv) -> None:
        """The Lease as `helm install` leaves it (no holder): a test that killed its operator
        leaves the next test's operator no term to wait out."""
        kube.kubectl("delete", "lease", self.lease_name, "-n", OPERATOR_NAMESPACE, "--ignore-not-found")
        kube.apply(self.lease)


def chart_identity(kube: KubeEnv, release: str = RELEASE) -> list[dict[str, Any]]:
    """The chart's ServiceAccount, RBAC and Lease of the operator for ``release`` in
    :data:`OPERATOR_NAMESPACE`: the one source of the operator's permissions."""
    shown = [arg for name in IDENTITY_TEMPLATES for arg in ("--show-only", f"templates/{name}")]
    rendered = kube.helm(
        "template", release, "charts/callboard", "--namespace", OPERATOR_NAMESPACE, *shown
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def install_operator_identity(kube: KubeEnv, path: Path, release: str = RELEASE) -> OperatorIdentity:
    """Apply :func:`chart_identity` and write a kubeconfig for its ServiceAccount to ``path``."""
    docs = chart_identity(kube, release)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    for doc in docs:
        kube.apply(doc)
    (account,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    (lease,) = [d for d in docs if d["kind"] == "Lease"]
    token = kube.kubectl(
        "create", "token", account, "-n", OPERATOR_NAMESPACE, "--duration=12h"
    ).stdout.strip()
    admin = kube.kubectl_json("config", "view", "--raw", "--minify")
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": account}}],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    return OperatorIdentity(kubeconfig=path, lease=lease)


class OperatorProcess:
    """One ``callboard operator``; :meth:`restart` keeps its settings and ports."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        redis_url: str,
        namespaces: list[str],
        log_dir: Path,
        name: str = "operator",
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        while self.metrics_port == self.liveness_port:  # free_port() may name a port twice
            self.metrics_port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CALLBOARD_", "POD_"))},
            **FAST_OPERATOR,
            "KUBECONFIG": str(kubeconfig),
            "CALLBOARD_REDIS_URL": redis_url,
            "CALLBOARD_NAMESPACES": ",".join(namespaces),
            "CALLBOARD_LEASE_NAMESPACE": OPERATOR_NAMESPACE,
            "CALLBOARD_LIVENESS_PORT": str(self.liveness_port),
            "CALLBOARD_METRICS_PORT": str(self.metrics_port),
            "CALLBOARD_LOG_LEVEL": "debug",
            "POD_NAME": name,
            **(env or {}),
        }
        self.process = ChildProcess(
            [*callboard_command(), "operator"], name=name, log_path=self.log_path, env=self.env
        )
        # No keep-alive: an idle kept-alive connection is a task kopf waits 5 s for at exit.
        self.http = httpx.AsyncClient(timeout=5, headers={"Connection": "close"})

    async def start(self, *, leading: bool = True) -> None:
        await self.process.start()
        await self.wait_live(leading=leading)

    async def health(self) -> dict[str, Any] | None:
        try:
            response = await self.http.get(f"http://127.0.0.1:{self.liveness_port}/healthz")
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    async def wait_live(self, *, leading: bool = True, timeout: float = 30.0) -> dict[str, Any]:
        async def live() -> dict[str, Any] | None:
            self.check_alive()
            health = await self.health()
            if health is None:
                return None
            return health if ("standby" in health) != leading else None

        result: dict[str, Any] = await wait_until(live, timeout=timeout, what=f"{self.name} live")
        return result

    async def metrics(self) -> str:
        response = await self.http.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        response.raise_for_status()
        return response.text

    def check_alive(self) -> None:
        self.process.check_alive()

    @property
    def running(self) -> bool:
        return self.process.running

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: kopf stops, the Lease is released."""
        return await self.process.stop(timeout)

    async def kill(self) -> None:
        """SIGKILL: no goodbye, the Lease stays until it expires."""
        await self.process.kill()

    def log(self) -> str:
        return self.process.log()

    async def aclose(self) -> None:
        if self.running:
            with contextlib.suppress(BaseException):
                await self.stop(timeout=10)
            await self.kill()
        await self.http.aclose()


class AgentNode:
    """An agent pod: a sidecar (the node in the registry) and the agent app beside it."""

    def __init__(
        self,
        *,
        redis_url: str,
        node_id: str,
        log_dir: Path,
        capacity: int = 4,
        pool: str | None = None,
        pod: tuple[str, str] | None = None,
        on_start: str = "accept",
        on_close: str = "end",
        accept_delay: float = 0.0,
    ) -> None:
        env = {**FAST_NODE, "CALLBOARD_CAPACITY": str(capacity)}
        if pool is not None:
            env["CALLBOARD_POOL"] = pool
        if pod is not None:
            env["CALLBOARD_POD_NAMESPACE"], env["CALLBOARD_POD_NAME"] = pod
        self.node_id = node_id
        self.sidecar = SidecarProcess(redis_url=redis_url, node_id=node_id, log_dir=log_dir, env=env)
        self._app_args = [
            "--on-start",
            on_start,
            "--on-close",
            on_close,
            "--close-reason",
            "closed-by-request",
            "--accept-delay",
            str(accept_delay),
        ]
        self._log_dir = log_dir
        self.app: AppProcess | None = None

    async def start(self) -> None:
        await self.sidecar.start()
        self.app = python_app(self.sidecar, *self._app_args, log_dir=self._log_dir, name=self.node_id)
        await self.app.start()
        await self.app.expect("started")

    async def sessions(self) -> list[str]:
        return await self.sidecar.session_ids()

    async def kill(self) -> None:
        """Both processes die at once (a pod lost with its node)."""
        if self.app is not None:
            await self.app.kill()
        await self.sidecar.kill()

    async def aclose(self) -> None:
        if self.app is not None:
            await self.app.aclose()
        await self.sidecar.aclose()


class Kube:
    """kubectl for async tests, in one namespace."""

    def __init__(self, env: KubeEnv, namespace: str) -> None:
        self.env = env
        self.ns = namespace

    async def run(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120.0
    ) -> Any:
        return await asyncio.to_thread(self.env.kubectl, *args, check=check, input=input, timeout=timeout)

    async def apply(self, name: str, call_id: str, *, namespace: str | None = None, **spec: Any) -> None:
        manifest = {
            "apiVersion": "callboard.dev/v1alpha1",
            "kind": "AgentSession",
            "metadata": {"name": name},
            "spec": {"callId": call_id, **spec},
        }
        await self.run("apply", "-n", namespace or self.ns, "-f", "-", input=json.dumps(manifest))

    async def get(
        self, name: str, *, namespace: str | None = None, kind: str = "ags"
    ) -> dict[str, Any] | None:
        proc = await self.run("get", kind, name, "-n", namespace or self.ns, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    async def list(self, *, namespace: str | None = None, kind: str = "ags") -> list[dict[str, Any]]:
        proc = await self.run("get", kind, "-n", namespace or self.ns, "-o", "json")
        items: list[dict[str, Any]] = json.loads(proc.stdout)["items"]
        return items

    async def wait_phase(
        self, name: str, phase: str, *, timeout: float = 30.0, namespace: str | None = None
    ) -> dict[str, Any]:
        """Watch until ``status.phase`` is ``phase`` (kubectl wait); the object then."""
        return await self._wait_for(name, "{.status.phase}", phase, timeout=timeout, namespace=namespace)

    async def wait_finalizer(
        self, name: str, finalizer: str, *, timeout: float = 30.0, namespace: str | None = None
    ) -> dict[str, Any]:
        """Watch until the object's first finalizer is ``finalizer`` (the operator adds it after
        its first status write); the object then."""
        return await self._wait_for(
            name, "{.metadata.finalizers[0]}", finalizer, timeout=timeout, namespace=namespace
        )

    async def _wait_for(
        self, name: str, path: str, value: str, *, timeout: float, namespace: str | None
    ) -> dict[str, Any]:
        """``kubectl wait`` until the JSONPath ``path`` of the object is ``value``; the object then."""
        ns = namespace or self.ns
        proc = await self.run(
            "wait", f"ags/{name}", "-n", ns, f"--for=jsonpath={path}={value}",
            f"--timeout={timeout:.0f}s", check=False, timeout=timeout + 30,
        )  # fmt: skip
        obj = await self.get(name, namespace=ns)
        if proc.returncode != 0:
            raise AssertionError(f"ags/{name}: {path} not {value} in {timeout}s: {proc.stderr}\nnow: {obj}")
        assert obj is not None
        return obj

    async def wait_gone(self, name: str, *, timeout: float = 30.0, namespace: str | None = None) -> float:
        """Watch until the object is deleted; the seconds it took."""
        started = time.monotonic()
        ns = namespace or self.ns
        proc = await self.run(
            "wait", f"ags/{name}", "-n", ns, "--for=delete", f"--timeout={timeout:.0f}s",
            check=False, timeout=timeout + 30,
        )  # fmt: skip
        if proc.returncode != 0 and "NotFound" not in proc.stderr:
            raise AssertionError(
                f"ags/{name} still there after {timeout}s: {await self.get(name, namespace=ns)}"
            )
        return time.monotonic() - started

    async def delete(self, name: str, *, namespace: str | None = None) -> None:
        await self.run("delete", "ags", name, "-n", namespace or self.ns, "--wait=false")

    async def events(
        self, name: str, *, namespace: str | None = None, until: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Events about ``name``; first waits (10 s at most) until each reason in ``until`` is
        there: the operator posts Events in the background, a moment after the status."""
        deadline = time.monotonic() + 10.0
        while True:
            proc = await self.run(
                "get", "events", "-n", namespace or self.ns, "--field-selector",
                f"involvedObject.name={name}", "-o", "json",
            )  # fmt: skip
            items: list[dict[str, Any]] = json.loads(proc.stdout)["items"]
            missing = set(until) - {e["reason"] for e in items}
            if not missing or time.monotonic() > deadline:
                return sorted(items, key=lambda e: e.get("firstTimestamp") or "")
            await asyncio.sleep(0.2)

    async def reasons(
        self, name: str, *, namespace: str | None = None, until: tuple[str, ...] = ()
    ) -> list[str]:
        return [e["reason"] for e in await self.events(name, namespace=namespace, until=until)]


class ServeNode:
    """``callboard serve``: an in-process node with the HTTP API and the simulated agent."""

    def __init__(self, *, redis_url: str, node_id: str, log_dir: Path, capacity: int = 4) -> None:
        self.node_id = node_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"serve-{node_id}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CALLBOARD_", "POD_"))},
            "CALLBOARD_REDIS_URL": redis_url,
            "CALLBOARD_NODE_ID": node_id,
            "CALLBOARD_PORT": str(self.port),
            "CALLBOARD_TTL": str(NODE_TTL),
            "CALLBOARD_MAINTENANCE_INTERVAL": "0.5",
            "CALLBOARD_IDLE_TIMEOUT": "0",
            "CALLBOARD_CAPACITY": str(capacity),
            "CALLBOARD_DRAIN_TIMEOUT": "1",
        }
        self.process = ChildProcess(
            [*callboard_command(), "serve"], name=f"serve {node_id}", log_path=self.log_path, env=self.env
        )
        self.http = httpx.AsyncClient(base_url=self.url, timeout=10, headers={"Connection": "close"})

    async def start(self) -> None:
        await self.process.start()

        async def ready() -> bool:
            self.process.check_alive()
            try:
                return (await self.http.get("/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, timeout=30, what=f"callboard serve {self.node_id}")

    async def start_session(self, call_id: str) -> str:
        response = await self.http.post(f"/calls/{call_id}/sessions", json={"call_type": "default"})
        response.raise_for_status()
        session_id: str = response.json()["session_id"]
        return session_id

    async def has_session(self, call_id: str, session_id: str) -> bool:
        response = await self.http.get(f"/calls/{call_id}/sessions/{session_id}")
        return response.status_code == 200

    def log(self) -> str:
        return self.process.log()

    async def aclose(self) -> None:
        await self.process.kill()
        await self.http.aclose()
