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
import base64
import contextlib
import ipaddress
import json
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.kube.env import KubeEnv, StartupError, helm_dirs
from tests.support.kube.pki import KeyPair, write_control_plane_pki
from tests.support.kube.probes import api_call, http_ok
from tests.support.kube.tools import Log, ensure_tools, print_log
from tests.support.processes import STOP_GRACE, LoggedProcess, free_port

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


# --------------------------------------------------------------------------- shared parts
# The kwok control plane here and the real node (tests/support/realnode) run the same
# components the same way; what differs is passed in.


@dataclass
class Components:
    """A control plane's processes: each with its own log, watched while waiting, stopped in reverse.

    A component that exits while the harness waits for something fails the start at once,
    with every component's log tail, instead of waiting out the deadline.
    """

    logs_dir: Path
    timeout: float
    """Seconds of the whole start (named in the error when a wait runs out)."""
    path: Path | None = None
    """Put first on the components' PATH (the real node's containerd finds its shim there)."""
    processes: list[LoggedProcess] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str]) -> LoggedProcess:
        """Start ``argv`` as ``name``, logging to ``<logs_dir>/<name>.log``; never with $KUBECONFIG."""
        proc = LoggedProcess(name, argv, self.logs_dir / f"{name}.log")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        if self.path is not None:
            env["PATH"] = f"{self.path}{os.pathsep}{env.get('PATH', '')}"
        self.processes.append(proc)
        proc.start(env)
        return proc

    def wait(self, what: str, check: Callable[[], bool], deadline: float) -> None:
        """Poll ``check`` until true; StartupError when a component exits or ``deadline`` passes."""
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
                    f"timed out after {self.timeout:.0f}s waiting for {what}\n" + self.log_tails()
                )
            time.sleep(0.1)

    def log_tails(self, lines: int = 30) -> str:
        """Each component's state and last ``lines`` log lines, for a failure message."""
        parts = []
        for proc in self.processes:
            code = proc.exited
            state = "running" if code is None else f"exited with {code}"
            parts.append(f"----- {proc.name} ({state}), {proc.log_path} -----\n{proc.tail(lines)}")
        return "\n".join(parts)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop every component, last started first."""
        for proc in reversed(self.processes):
            proc.stop(grace)


def local_kube_env(
    bin_dir: Path,
    workdir: Path,
    *,
    kubeconfig: Path,
    server: str,
    node_names: Sequence[str],
    extra_env: Mapping[str, str] | None = None,
) -> KubeEnv:
    """The :class:`KubeEnv` of a cluster this harness started: its kubeconfig, its binaries
    first on PATH, helm's and kubectl's caches in ``workdir`` (never the user's home)."""
    env = {**os.environ, **helm_dirs(workdir)}
    env["KUBECONFIG"] = str(kubeconfig)
    env["KUBECACHEDIR"] = str(workdir / "kube-cache")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra_env or {})
    return KubeEnv(
        kubeconfig=kubeconfig,
        env=env,
        kubectl_bin=str(bin_dir / "kubectl"),
        helm_bin=str(bin_dir / "helm"),
        server=server,
        local=True,
        workdir=workdir,
        node_names=tuple(node_names),
    )


def kubeconfig_text(*, server: str, ca: KeyPair, cluster: str, user: str, cert: KeyPair) -> str:
    """A kubeconfig with one cluster, one user (client certificate) and one context named ``cluster``.

    JSON is YAML: kubectl, helm, the Python client and CoreDNS all read it.
    """

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca.cert_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert.cert_pem), "client-key-data": b64(cert.key_pem)},
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    return json.dumps(config, indent=2)


def etcd_argv(bin_dir: Path, *, name: str, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    """A one-member etcd on loopback, without fsync (test data; speed over durability)."""
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(bin_dir / "etcd"),
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={name}={peer}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_argv(
    bin_dir: Path,
    pki: Path,
    *,
    cert_dir: Path,
    etcd_port: int,
    port: int,
    bind: str,
    advertise: str,
    service_account_issuer: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """kube-apiserver with the files of :func:`write_control_plane_pki`: client certificates,
    RBAC, service-account tokens and the front proxy's request-header authentication.

    ``bind``/``advertise``: loopback for the kwok plane; the machine's interface for the
    real node, whose pods reach the API server through the ``kubernetes`` Service.
    """
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki / 'serving.crt'}",
        f"--tls-private-key-file={pki / 'serving.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--bind-address={bind}",
        f"--advertise-address={advertise}",
        f"--secure-port={port}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={service_account_issuer}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        *extra,
        # The bench's CALLBOARD_BENCH_APISERVER_PROFILE needs /debug/pprof; tests never do.
        f"--profiling={'true' if os.environ.get('CALLBOARD_BENCH_APISERVER_PROFILE') else 'false'}",
        "--v=0",
    ]


def component_flags(kubeconfig: Path, pki: Path) -> list[str]:
    """The flags controller-manager and scheduler share: the admin kubeconfig, no election, loopback TLS."""
    kc = str(kubeconfig)
    return [
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--tls-cert-file={pki / 'serving.crt'}",
        f"--tls-private-key-file={pki / 'serving.key'}",
    ]


def kcm_argv(
    bin_dir: Path, pki: Path, *, kubeconfig: Path, port: int, extra: Sequence[str] = ()
) -> list[str]:
    """kube-controller-manager with every default controller, signing with the CA of ``pki``."""
    return [
        str(bin_dir / "kube-controller-manager"),
        *component_flags(kubeconfig, pki),
        f"--secure-port={port}",
        # Every default controller (replicaset, deployment, garbage collector,
        # namespace, serviceaccount, node lifecycle, endpoints, ...).
        "--controllers=*",
        *extra,
        f"--service-account-private-key-file={pki / 'sa.key'}",
        "--use-service-account-credentials=true",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--v=0",
    ]


def scheduler_argv(bin_dir: Path, pki: Path, *, kubeconfig: Path, port: int) -> list[str]:
    """kube-scheduler with the shared component flags."""
    return [
        str(bin_dir / "kube-scheduler"),
        *component_flags(kubeconfig, pki),
        f"--secure-port={port}",
        "--v=0",
    ]


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
    components: Components = field(init=False)
    _ports: dict[str, int] = field(init=False, default_factory=dict)
    _ssl: ssl.SSLContext = field(init=False)
    _stopped: bool = field(init=False, default=False)

    # ---- public

    def start(self) -> KubeEnv:
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="callboard-k8s-"))
        self.components = Components(self.workdir / "logs", START_TIMEOUT)
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
        return local_kube_env(
            self.bin_dir, self.workdir, kubeconfig=self.kubeconfig, server=self.server, node_names=node_names
        )

    def stop(self) -> None:
        """Stop every component (reverse start order); safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        if not hasattr(self, "workdir"):
            return
        self.components.stop()
        if self.keep_workdir:
            self.log(f"[k8s] stopped; kept {self.workdir} (CALLBOARD_K8S_KEEP)")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tails(self, lines: int = 30) -> str:
        return self.components.log_tails(lines)

    # ---- steps

    def _spawn(self, name: str, argv: list[str]) -> LoggedProcess:
        return self.components.spawn(name, argv)

    def _wait(self, what: str, check: Callable[[], bool], deadline: float) -> None:
        self.components.wait(what, check, deadline)

    def _write_certs(self) -> None:
        pki = write_control_plane_pki(
            self.workdir / "pki",
            name="callboard-e2e",
            serving_cn="localhost",
            serving_dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            serving_ips=["127.0.0.1", "::1", str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))],
        )
        self._pki = pki.directory
        self._ca, self._admin, self._ssl = pki.ca, pki.admin, pki.context

    def _write_kubeconfig(self) -> None:
        text = kubeconfig_text(
            server=self.server, ca=self._ca, cluster="callboard-e2e", user="admin", cert=self._admin
        )
        self.kubeconfig.write_text(text)
        self.kubeconfig.chmod(0o600)

    def _etcd_argv(self) -> list[str]:
        return etcd_argv(
            self.bin_dir,
            name="e2e",
            data_dir=self.workdir / "etcd",
            client_port=self._ports["etcd"],
            peer_port=self._ports["etcd-peer"],
        )

    def _apiserver_argv(self) -> list[str]:
        port = self._ports["apiserver"]
        return apiserver_argv(
            self.bin_dir,
            self._pki,
            cert_dir=self.workdir / "apiserver-certs",
            etcd_port=self._ports["etcd"],
            port=port,
            bind="127.0.0.1",
            advertise="127.0.0.1",
            service_account_issuer=f"https://127.0.0.1:{port}",
            # The "kubernetes" Service would point at a loopback address, which
            # Endpoints validation refuses; nothing in the tests dials it.
            extra=["--endpoint-reconciler-type=none"],
        )

    def _kcm_argv(self) -> list[str]:
        return kcm_argv(
            self.bin_dir,
            self._pki,
            kubeconfig=self.kubeconfig,
            port=self._ports["kcm"],
            # kwok renews the fake nodes' leases; on a loaded 2-core machine a renewal can be
            # late, and with the default grace (50 s) the node lifecycle controller then marks
            # the node NotReady and every pod on it unready mid-test (seen: a rollout going
            # from 2 of 3 available to 0). Nothing here tests Kubernetes node failure.
            extra=["--node-monitor-grace-period=5m"],
        )

    def _scheduler_argv(self) -> list[str]:
        return scheduler_argv(
            self.bin_dir, self._pki, kubeconfig=self.kubeconfig, port=self._ports["scheduler"]
        )

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
