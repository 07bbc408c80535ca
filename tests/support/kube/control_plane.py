"""A local Kubernetes control plane for the e2e tests, without Docker.

Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (a fake
kubelet that turns scheduled pods Running/Ready on fake nodes) as local processes on free
loopback ports, with generated certificates and an admin kubeconfig. The binaries come
from ``tests/k8s/build-tools.sh`` (cached in ``.cache/k8s-tools/bin``).

With ``KUBECONFIG`` pointing to an existing cluster (kind, k3d, a real one), nothing is
built or started: the tests run against that cluster instead.

Every address the control plane hands out is a loopback address (node IPs, pod IPs,
the apiserver's advertise address), so nothing in the tests can send traffic elsewhere.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.kube.env import KubeEnv, StartupError, helm_dirs
from tests.support.kube.pki import key_pem, make_cert, new_key
from tests.support.kube.probes import api_call, http_ok
from tests.support.kube.tools import Log, ensure_tools, print_log
from tests.support.processes import LoggedProcess, free_port

#: kwok stage files (shipped by build-tools.sh next to the binaries), as kwokctl uses them.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)

#: Fake pod IPs and node IP: loopback only (see the module docstring).
POD_CIDR = "127.64.0.0/16"
NODE_IP = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"

#: Annotation that marks a Node as one kwok manages.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

#: Seconds to wait for the whole control plane to become healthy.
START_TIMEOUT = float(os.environ.get("CALLBOARD_K8S_START_TIMEOUT", "120"))


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, local."""

    bin_dir: Path
    log: Log = print_log
    nodes: int = 2
    keep_workdir: bool = field(default_factory=lambda: bool(os.environ.get("CALLBOARD_K8S_KEEP")))

    workdir: Path = field(init=False)
    kubeconfig: Path = field(init=False)
    server: str = field(init=False)
    processes: list[LoggedProcess] = field(init=False, default_factory=list)
    _ports: dict[str, int] = field(init=False, default_factory=dict)
    _ssl: ssl.SSLContext = field(init=False)
    _stopped: bool = field(init=False, default=False)

    # ---- public

    def start(self) -> KubeEnv:
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="callboard-k8s-"))
        atexit.register(self.stop)
        self.log(f"[k8s] starting a local control plane in {self.workdir}")
        for name in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok"):
            self._ports[name] = free_port()
        self._write_certs()
        self.server = f"https://127.0.0.1:{self._ports['apiserver']}"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self._write_kubeconfig()
        deadline = time.monotonic() + START_TIMEOUT

        self._spawn("etcd", self._etcd_argv())
        self._wait(
            "etcd /health",
            lambda: self._http_ok(f"http://127.0.0.1:{self._ports['etcd']}/health"),
            deadline,
        )
        self.log(f"[k8s] etcd ready on :{self._ports['etcd']} ({time.monotonic() - t0:.1f}s)")

        self._spawn("kube-apiserver", self._apiserver_argv())
        self._wait("kube-apiserver /readyz", lambda: self._api_ok("/readyz"), deadline)
        self.log(f"[k8s] kube-apiserver ready on {self.server} ({time.monotonic() - t0:.1f}s)")

        self._spawn("kube-controller-manager", self._kcm_argv())
        self._spawn("kube-scheduler", self._scheduler_argv())
        self._spawn("kwok", self._kwok_argv())
        node_names = self._create_nodes()
        self._wait(
            "kube-controller-manager /healthz",
            lambda: self._http_ok(f"https://127.0.0.1:{self._ports['kcm']}/healthz"),
            deadline,
        )
        self._wait(
            "kube-scheduler /healthz",
            lambda: self._http_ok(f"https://127.0.0.1:{self._ports['scheduler']}/healthz"),
            deadline,
        )
        self._wait(f"kwok nodes Ready ({', '.join(node_names)})", self._nodes_ready, deadline)
        # The serviceaccount controller runs: namespaces get their "default" ServiceAccount.
        self._wait(
            "ServiceAccount default/default (controller-manager at work)",
            lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
            deadline,
        )
        self.log(
            f"[k8s] control plane ready in {time.monotonic() - t0:.1f}s"
            f" (controller-manager, scheduler, kwok with {len(node_names)} nodes)"
        )
        env = {**os.environ, **helm_dirs(self.workdir)}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.workdir / "kube-cache")
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return KubeEnv(
            kubeconfig=self.kubeconfig,
            env=env,
            kubectl_bin=str(self.bin_dir / "kubectl"),
            helm_bin=str(self.bin_dir / "helm"),
            server=self.server,
            local=True,
            workdir=self.workdir,
            node_names=tuple(node_names),
        )

    def stop(self) -> None:
        """Stop every component (reverse start order); safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        for proc in reversed(self.processes):
            proc.stop()
        if not hasattr(self, "workdir"):
            return
        if self.keep_workdir:
            self.log(f"[k8s] stopped; kept {self.workdir} (CALLBOARD_K8S_KEEP)")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for proc in self.processes:
            code = proc.exited
            state = "running" if code is None else f"exited with {code}"
            parts.append(f"----- {proc.name} ({state}), {proc.log_path} -----\n{proc.tail(lines)}")
        return "\n".join(parts)

    # ---- steps

    def _spawn(self, name: str, argv: list[str]) -> LoggedProcess:
        proc = LoggedProcess(name, argv, self.workdir / "logs" / f"{name}.log")
        proc.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        self.processes.append(proc)
        proc.start(env)
        return proc

    def _wait(self, what: str, check: Callable[[], bool], deadline: float) -> None:
        while True:
            for proc in self.processes:
                if proc.exited is not None:
                    raise StartupError(
                        f"{proc.name} exited with {proc.exited} while waiting for {what}\n" + self.log_tails()
                    )
            if check():
                return
            if time.monotonic() > deadline:
                raise StartupError(
                    f"timed out after {START_TIMEOUT:.0f}s waiting for {what}\n" + self.log_tails()
                )
            time.sleep(0.1)

    def _write_certs(self) -> None:
        from cryptography.hazmat.primitives import serialization

        d = self.workdir / "pki"
        d.mkdir()
        self._pki = d
        ca = make_cert("callboard-e2e-ca")
        serving = make_cert(
            "localhost",
            issuer=ca,
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ips=["127.0.0.1", "::1", str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))],
            server=True,
        )
        admin = make_cert("admin", issuer=ca, orgs=["system:masters"], client=True)
        # Front proxy (aggregation layer): lets controller-manager and scheduler read the
        # requestheader CA, and aggregated API servers work as in a real cluster.
        proxy_ca = make_cert("callboard-e2e-front-proxy-ca")
        proxy_client = make_cert("front-proxy-client", issuer=proxy_ca, client=True)
        sa_key = new_key()
        files = {
            "ca.crt": ca.cert_pem,
            "ca.key": ca.key_pem,
            "serving.crt": serving.cert_pem,
            "serving.key": serving.key_pem,
            "admin.crt": admin.cert_pem,
            "admin.key": admin.key_pem,
            "front-proxy-ca.crt": proxy_ca.cert_pem,
            "front-proxy-client.crt": proxy_client.cert_pem,
            "front-proxy-client.key": proxy_client.key_pem,
            "sa.key": key_pem(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            (d / name).write_bytes(data)
            (d / name).chmod(0o600)
        self._ca, self._admin = ca, admin
        ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
        ctx.load_cert_chain(str(d / "admin.crt"), str(d / "admin.key"))
        self._ssl = ctx

    def _write_kubeconfig(self) -> None:
        import base64

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "callboard-e2e",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self._ca.cert_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(self._admin.cert_pem),
                        "client-key-data": b64(self._admin.key_pem),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "callboard-e2e",
                    "context": {"cluster": "callboard-e2e", "user": "admin"},
                }
            ],
            "current-context": "callboard-e2e",
            "preferences": {},
        }
        # JSON is YAML: kubectl, helm and the Python client all read it.
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def _etcd_argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self._ports['etcd']}"
        peer = f"http://127.0.0.1:{self._ports['etcd-peer']}"
        return [
            str(self.bin_dir / "etcd"),
            "--name=e2e",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=e2e={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        p = self._pki
        port = self._ports["apiserver"]
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self._ports['etcd']}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={p / 'serving.crt'}",
            f"--tls-private-key-file={p / 'serving.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The "kubernetes" Service would point at a loopback address, which
            # Endpoints validation refuses; nothing in the tests dials it.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
            "--profiling=false",
            "--v=0",
        ]

    def _component_kubeconfig_flags(self) -> list[str]:
        kc = str(self.kubeconfig)
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--tls-cert-file={self._pki / 'serving.crt'}",
            f"--tls-private-key-file={self._pki / 'serving.key'}",
        ]

    def _kcm_argv(self) -> list[str]:
        p = self._pki
        return [
            str(self.bin_dir / "kube-controller-manager"),
            *self._component_kubeconfig_flags(),
            f"--secure-port={self._ports['kcm']}",
            # Every default controller (replicaset, deployment, garbage collector,
            # namespace, serviceaccount, node lifecycle, endpoints, ...).
            "--controllers=*",
            # kwok renews the fake nodes' leases; on a loaded 2-core machine a renewal can be
            # late, and with the default grace (50 s) the node lifecycle controller then marks
            # the node NotReady and every pod on it unready mid-test (seen: a rollout going
            # from 2 of 3 available to 0). Nothing here tests Kubernetes node failure.
            "--node-monitor-grace-period=5m",
            f"--service-account-private-key-file={p / 'sa.key'}",
            "--use-service-account-credentials=true",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--v=0",
        ]

    def _scheduler_argv(self) -> list[str]:
        return [
            str(self.bin_dir / "kube-scheduler"),
            *self._component_kubeconfig_flags(),
            f"--secure-port={self._ports['scheduler']}",
            "--v=0",
        ]

    def _kwok_argv(self) -> list[str]:
        stages = self.bin_dir / "kwok-stages"
        configs = ",".join(str(stages / s) for s in KWOK_STAGES)
        return [
            str(self.bin_dir / "kwok"),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={configs}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            f"--node-ip={NODE_IP}",
            f"--server-address=127.0.0.1:{self._ports['kwok']}",
        ]

    def _create_nodes(self) -> list[str]:
        names = [f"kwok-node-{i}" for i in range(self.nodes)]
        for name in names:
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                "status": {
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            }
            status, body = self._api("POST", "/api/v1/nodes", node)
            if status not in (200, 201):
                raise StartupError(f"creating node {name} failed: {status} {body}")
        return names

    def _nodes_ready(self) -> bool:
        status, body = self._api("GET", "/api/v1/nodes")
        if status != 200:
            return False
        ready = 0
        for node in body.get("items", []):
            for cond in node.get("status", {}).get("conditions") or []:
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    ready += 1
        return ready >= self.nodes

    # ---- HTTP

    def _http_ok(self, url: str) -> bool:
        return http_ok(url, context=self._ssl)

    def _api_ok(self, path: str) -> bool:
        return self._http_ok(self.server + path)

    def _api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return api_call(self.server, method, path, body, context=self._ssl)


@contextlib.contextmanager
def local_control_plane(log: Log = print_log, *, bin_dir: Path | None = None) -> Iterator[KubeEnv]:
    """Start a local control plane (building the tools first unless ``bin_dir`` is given)."""
    bin_dir = bin_dir or ensure_tools(log)
    for attempt in (1, 2):
        plane = ControlPlane(bin_dir, log)
        try:
            kube = plane.start()
            break
        except StartupError as err:
            # A free port taken by someone else between picking and binding: try again.
            port_race = "address already in use" in str(err)
            plane.keep_workdir = not port_race
            plane.stop()
            if not port_race or attempt == 2:
                raise
            log("[k8s] a port was taken meanwhile; starting again on other ports")
        except BaseException:
            plane.keep_workdir = True  # keep the logs for a look
            plane.stop()
            raise
    try:
        yield kube
    finally:
        t0 = time.monotonic()
        plane.stop()
        log(f"[k8s] control plane stopped ({time.monotonic() - t0:.1f}s)")
