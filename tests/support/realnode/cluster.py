"""A real one-node Kubernetes cluster on this machine: real pods, no Docker.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler (as the e2e tier's
control plane, but with the API server on the machine's own interface so pods reach it
through the ``kubernetes`` Service), plus a real node: containerd 2.x with runc, CNI
bridge networking, kubelet, kube-proxy (iptables) and CoreDNS. The recipe and the reason
for each setting are in ``/work/shared/K8S_REALNODE.md``'s field guide; the binaries come
from ``tests/k8s/build-tools.sh real``, the images from ``images.sh`` beside this file.

Needs Linux, root (NET_ADMIN, SYS_ADMIN), cgroups, iptables. One real node per machine at a
time (a lock file): the kubelet's ports, the bridge, iptables and sysctls are host-wide.
Everything is stopped by PID and undone (mounts, bridge, rules, routes, sysctls, cgroups)
when the context exits, also on failure. Every set-up step prints its time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.kube import control_plane as cp
from tests.support.kube.env import KubeEnv, StartupError
from tests.support.kube.pki import KeyPair, make_cert, write_control_plane_pki
from tests.support.kube.probes import api_call, http_ok
from tests.support.kube.tools import ToolsError, run_build, tools_dir
from tests.support.paths import REPO_ROOT
from tests.support.processes import LoggedProcess, free_port

from . import network

Log = Callable[[str], None]

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = REPO_ROOT / "tests" / "k8s" / "build-tools.sh"
IMAGES_SCRIPT = HERE / "images.sh"

NODE_NAME = "realnode"
POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = cp.SERVICE_CIDR
#: First address of the service range: the ``kubernetes`` Service.
API_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
BRIDGE = "cb0"
#: CoreDNS runs on the host beside the kubelet; the kube-dns Service points at it.
COREDNS_PORT = 1053
#: Sandbox image (tests/support/realnode/images.sh builds it from Kubernetes' pause.c).
PAUSE_IMAGE = "localhost/pause:3.10"
#: The images the tier imports into containerd (images.sh names).
IMAGES = ("pause", "redis", "callboard", "demo-agent")

#: Binaries a real node needs besides the control plane's (build-tools.sh `real`).
TOOLS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "helm",
    "kubelet",
    "kube-proxy",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "coredns",
)
HOST_TOOLS = ("runc", "iptables", "ip", "conntrack", "mount")
CNI_DIR = Path("/usr/lib/cni")
#: Debian packages of the host tools (installed when missing, as root).
HOST_PACKAGES = ("runc", "containernetworking-plugins", "iptables", "conntrack", "iproute2", "buildah")

START_TIMEOUT = float(os.environ.get("CALLBOARD_REALNODE_START_TIMEOUT", "240"))


def images_dir() -> Path:
    """Where images.sh puts the OCI archives (beside the tools: one cache to keep in CI)."""
    override = os.environ.get("CALLBOARD_REALNODE_CACHE")
    base = Path(override) if override else tools_dir().parent / "realnode"
    return base / "images"


def unsupported_reason() -> str | None:
    """Why a real node cannot run here (None: it can)."""
    if os.uname().sysname != "Linux":
        return "a real node needs Linux"
    if os.geteuid() != 0:
        return "a real node needs root (NET_ADMIN, SYS_ADMIN): run as root or set KUBECONFIG to a cluster"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no cgroup filesystem"
    return None


def _stream(argv: list[str], log: Log, what: str) -> None:
    """Run a build script, passing its progress lines on; raise ToolsError with its tail."""
    code, tail = run_build(argv, log, show=lambda line: line.startswith("["))
    if code != 0:
        raise ToolsError(f"{what} failed (exit {code}):\n" + "\n".join(tail))


def ensure_host_packages(log: Log) -> None:
    missing = [t for t in HOST_TOOLS if not shutil.which(t)]
    if missing or not (CNI_DIR / "bridge").exists() or not shutil.which("buildah"):
        log(f"[realnode] installing {' '.join(HOST_PACKAGES)} from Debian (missing: {missing or 'cni'})")
        t0 = time.monotonic()
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        res = subprocess.run(
            ["apt-get", "install", "-y", "-q", *HOST_PACKAGES],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if res.returncode != 0:
            raise ToolsError(f"apt-get install {' '.join(HOST_PACKAGES)} failed:\n{res.stdout[-2000:]}")
        log(f"[realnode] host packages installed ({time.monotonic() - t0:.1f}s)")


def ensure_everything(log: Log) -> Path:
    """Host packages, binaries (build-tools.sh real) and images (images.sh): cached, timed."""
    t0 = time.monotonic()
    ensure_host_packages(log)
    _stream(["bash", str(BUILD_SCRIPT), "real"], log, "tests/k8s/build-tools.sh real")
    log(f"[realnode] binaries ready ({time.monotonic() - t0:.1f}s)")
    t1 = time.monotonic()
    _stream(["bash", str(IMAGES_SCRIPT)], log, "tests/support/realnode/images.sh")
    log(f"[realnode] images ready ({time.monotonic() - t1:.1f}s)")
    bin_dir = tools_dir()
    missing = [t for t in TOOLS if not os.access(bin_dir / t, os.X_OK)]
    missing += [f"{n}.tar" for n in IMAGES if not (images_dir() / f"{n}.tar").is_file()]
    if missing:
        raise ToolsError(f"still missing after the builds: {', '.join(missing)}")
    return bin_dir


@dataclass
class RealCluster:
    """The control plane and one real node; :meth:`start` returns a :class:`KubeEnv`."""

    bin_dir: Path
    log: Log
    keep_workdir: bool = field(default_factory=lambda: bool(os.environ.get("CALLBOARD_K8S_KEEP")))

    workdir: Path = field(init=False)
    node_ip: str = field(init=False)
    server: str = field(init=False)
    components: cp.Components = field(init=False)
    net: network.HostNetwork = field(init=False)
    _ports: dict[str, int] = field(init=False, default_factory=dict)
    _ssl: ssl.SSLContext = field(init=False)
    _t0: float = field(init=False, default=0.0)
    _step: float = field(init=False, default=0.0)

    # ---- public

    def start(self) -> KubeEnv:
        self._t0 = self._step = time.monotonic()
        # Short: unix socket paths (containerd's, the shims') must stay under 108 bytes.
        self.workdir = Path(tempfile.mkdtemp(prefix="cb-rn-", dir="/tmp"))
        self.components = cp.Components(self.workdir / "logs", START_TIMEOUT, path=self.bin_dir)
        self.node_ip = network.node_ip()
        self.net = network.HostNetwork(POD_CIDR, SERVICE_CIDR, BRIDGE, self.log)
        self.log(f"[realnode] starting a real one-node cluster in {self.workdir} (node IP {self.node_ip})")
        for name in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler"):
            self._ports[name] = free_port()
        self._write_certs()
        self.server = f"https://{self.node_ip}:{self._ports['apiserver']}"
        self._write_kubeconfigs()
        self.net.setup()
        self._done("host network (sysctls, blackhole routes, forward guard)")
        deadline = time.monotonic() + START_TIMEOUT

        self._spawn("etcd", self._etcd_argv())
        self._wait(
            "etcd /health", lambda: self._http_ok(f"http://127.0.0.1:{self._ports['etcd']}/health"), deadline
        )
        self._done("etcd")
        self._spawn("kube-apiserver", self._apiserver_argv())
        self._wait("kube-apiserver /readyz", lambda: self._http_ok(self.server + "/readyz"), deadline)
        self._done("kube-apiserver")
        self._spawn("kube-controller-manager", self._kcm_argv())
        self._spawn("kube-scheduler", self._scheduler_argv())

        self._write_containerd_config()
        self._spawn(
            "containerd", [str(self.bin_dir / "containerd"), f"--config={self.workdir / 'containerd.toml'}"]
        )
        sock = self.workdir / "containerd" / "containerd.sock"
        self._wait("containerd socket", sock.exists, deadline)
        self._done("containerd")
        self._import_images()
        self._done(f"images imported ({', '.join(IMAGES)})")

        self._write_kubelet_config()
        self._spawn("kubelet", self._kubelet_argv())
        self._write_kube_proxy_config()
        self._spawn(
            "kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={self.workdir / 'kube-proxy.yaml'}"]
        )
        self._spawn("coredns", self._coredns_argv())
        self._wait(f"node {NODE_NAME} Ready", self._node_ready, deadline)
        self._done(f"kubelet: node {NODE_NAME} Ready")
        self._create_dns_service()
        self._wait(
            "ServiceAccount default/default (controller-manager at work)",
            lambda: self._api("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            deadline,
        )
        self._done("kube-dns Service, default ServiceAccount")
        self.log(f"[realnode] cluster ready in {time.monotonic() - self._t0:.1f}s")
        return cp.local_kube_env(
            self.bin_dir,
            self.workdir,
            kubeconfig=self.kubeconfig,
            server=self.server,
            node_names=[NODE_NAME],
            extra_env={"CONTAINERD_ADDRESS": str(sock)},
        )

    def stop(self) -> None:
        """Stop every process by PID (reverse start order) and undo every host change."""
        t0 = time.monotonic()
        if hasattr(self, "components"):
            self.components.stop(grace=10.0)
        # The containers outlive kubelet, containerd and their shims: end them by PID.
        for _ in range(50):
            if network.kill_cgroup_processes("kubepods") == 0:
                break
            time.sleep(0.1)
        if hasattr(self, "workdir"):
            self._kill_shims()
            network.unmount_under(self.workdir, self.log)
        if hasattr(self, "net"):
            if hasattr(self, "workdir") and (self.workdir / "kube-proxy.yaml").exists():
                subprocess.run(
                    [
                        str(self.bin_dir / "kube-proxy"),
                        "--cleanup",
                        f"--config={self.workdir / 'kube-proxy.yaml'}",
                    ],
                    capture_output=True,
                    check=False,
                    timeout=60,
                )
            self.net.restore()
        network.remove_cgroups("kubepods")
        if hasattr(self, "workdir"):
            if self.keep_workdir:
                self.log(f"[realnode] kept {self.workdir} (CALLBOARD_K8S_KEEP or a failed start)")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
        self.log(f"[realnode] torn down ({time.monotonic() - t0:.1f}s)")

    def log_tails(self, lines: int = 25) -> str:
        return self.components.log_tails(lines)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    # ---- steps

    def _done(self, what: str) -> None:
        now = time.monotonic()
        self.log(f"[realnode] {what}: {now - self._step:.1f}s (total {now - self._t0:.1f}s)")
        self._step = now

    def _spawn(self, name: str, argv: list[str]) -> LoggedProcess:
        return self.components.spawn(name, argv)

    def _wait(self, what: str, check: Callable[[], bool], deadline: float) -> None:
        self.components.wait(what, check, deadline)

    def _write_certs(self) -> None:
        ca = make_cert("callboard-realnode-ca")
        api_names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        api_names.append(f"kubernetes.default.svc.{CLUSTER_DOMAIN}")
        hostname = socket.gethostname()
        node = make_cert(f"system:node:{NODE_NAME}", issuer=ca, orgs=["system:nodes"], client=True)
        extra = {
            "kubelet": make_cert(
                f"system:node:{NODE_NAME}",
                issuer=ca,
                dns=[NODE_NAME, hostname, "localhost"],
                ips=[self.node_ip, "127.0.0.1"],
                server=True,
            ),
            "node": node,
            # logs / exec / port-forward: the API server calls the kubelet with this identity.
            "apiserver-kubelet-client": make_cert(
                "kube-apiserver-kubelet-client", issuer=ca, orgs=["system:masters"], client=True
            ),
        }
        pki = write_control_plane_pki(
            self.workdir / "pki",
            name="callboard-realnode",
            serving_cn="kube-apiserver",
            serving_dns=api_names,
            serving_ips=["127.0.0.1", self.node_ip, API_SERVICE_IP],
            extra=extra,
            ca=ca,
        )
        self._pki = pki.directory
        self._ca, self._admin, self._node, self._ssl = ca, pki.admin, node, pki.context

    def _kubeconfig_text(self, user: str, cert: KeyPair) -> str:
        return cp.kubeconfig_text(
            server=self.server, ca=self._ca, cluster="callboard-realnode", user=user, cert=cert
        )

    def _write_kubeconfigs(self) -> None:
        for name, user, cert in (
            ("admin.kubeconfig", "admin", self._admin),
            ("kubelet.kubeconfig", f"system:node:{NODE_NAME}", self._node),
        ):
            path = self.workdir / name
            path.write_text(self._kubeconfig_text(user, cert))
            path.chmod(0o600)

    def _etcd_argv(self) -> list[str]:
        return cp.etcd_argv(
            self.bin_dir,
            name="realnode",
            data_dir=self.workdir / "etcd",
            client_port=self._ports["etcd"],
            peer_port=self._ports["etcd-peer"],
        )

    def _apiserver_argv(self) -> list[str]:
        p = self._pki
        return cp.apiserver_argv(
            self.bin_dir,
            p,
            cert_dir=self.workdir / "apiserver-certs",
            etcd_port=self._ports["etcd"],
            port=self._ports["apiserver"],
            # The machine's own interface: pods reach it through the `kubernetes` Service,
            # whose endpoint the default reconciler keeps at the advertise address.
            bind="0.0.0.0",
            advertise=self.node_ip,
            service_account_issuer=f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
            extra=[
                # logs / exec / port-forward: the API server calls the kubelet with this identity.
                f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
            ],
        )

    def _kcm_argv(self) -> list[str]:
        return cp.kcm_argv(
            self.bin_dir,
            self._pki,
            kubeconfig=self.kubeconfig,
            port=self._ports["kcm"],
            # The node gets its pod subnet from here (the CNI config uses the same /24).
            extra=["--allocate-node-cidrs=true", f"--cluster-cidr={POD_CIDR}", "--node-cidr-mask-size=24"],
        )

    def _scheduler_argv(self) -> list[str]:
        return cp.scheduler_argv(
            self.bin_dir, self._pki, kubeconfig=self.kubeconfig, port=self._ports["scheduler"]
        )

    def _write_containerd_config(self) -> None:
        c = self.workdir / "containerd"
        (self.workdir / "cni").mkdir()
        net = ipaddress.ip_network(POD_CIDR)
        subnet = next(net.subnets(new_prefix=24))
        conflist = {
            "cniVersion": "1.0.0",
            "name": "callboard-realnode",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    # No masquerade: pod traffic never leaves the machine (see network.py).
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(subnet)}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (self.workdir / "cni" / "10-callboard.conflist").write_text(json.dumps(conflist, indent=2))
        config = f"""
version = 3
root = "{c}/root"
state = "{c}/state"

[grpc]
  address = "{c}/containerd.sock"

[ttrpc]
  address = "{c}/containerd.sock.ttrpc"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # The machine lacks CAP_SYS_RESOURCE: runc cannot set the pause container's oom_score_adj
  # of -998 ("can't get final child's PID from pipe: EOF" on every sandbox).
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{shutil.which("runc") or "runc"}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{CNI_DIR}"]
    conf_dir = "{self.workdir / "cni"}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true"""
        (self.workdir / "containerd.toml").write_text(config)

    def _ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        sock = self.workdir / "containerd" / "containerd.sock"
        return subprocess.run(
            [str(self.bin_dir / "ctr"), f"--address={sock}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def _import_images(self) -> None:
        directory = images_dir()
        for name in IMAGES:
            tar = directory / f"{name}.tar"
            res = self._ctr("images", "import", "--no-unpack=false", "--snapshotter=overlayfs", str(tar))
            if res.returncode != 0:
                # Older ctr: no --no-unpack flag.
                res = self._ctr("images", "import", str(tar))
            if res.returncode != 0:
                raise StartupError(f"ctr images import {tar} failed:\n{res.stdout}\n{res.stderr}")
        listed = self._ctr("images", "list", "-q").stdout.split()
        if PAUSE_IMAGE not in listed:
            raise StartupError(f"{PAUSE_IMAGE} not in containerd after the import: {listed}")

    def _write_kubelet_config(self) -> None:
        (self.workdir / "resolv.conf").write_text("# no upstream DNS: nothing leaves the machine\n")
        p = self._pki
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(p / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(p / "kubelet.crt"),
            "tlsPrivateKeyFile": str(p / "kubelet.key"),
            "containerRuntimeEndpoint": f"unix://{self.workdir / 'containerd' / 'containerd.sock'}",
            # This machine has the cgroup v1 hierarchy, which 1.35 refuses unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "clusterDNS": [DNS_SERVICE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(self.workdir / "resolv.conf"),
            "address": self.node_ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "serializeImagePulls": False,
            # A busy shared disk must not evict the test pods.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "maxPods": 60,
            "nodeStatusUpdateFrequency": "5s",
        }
        (self.workdir / "kubelet.yaml").write_text(json.dumps(config, indent=2))

    def _kubelet_argv(self) -> list[str]:
        return [
            str(self.bin_dir / "kubelet"),
            f"--config={self.workdir / 'kubelet.yaml'}",
            f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
            f"--root-dir={self.workdir / 'kubelet'}",
            f"--cert-dir={self.workdir / 'kubelet-certs'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.node_ip}",
            "--v=1",
        ]

    def _write_kube_proxy_config(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_CIDR,
            "mode": "iptables",
            # Leave the host's conntrack table settings alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
            "iptables": {"localhostNodePorts": False},
        }
        (self.workdir / "kube-proxy.yaml").write_text(json.dumps(config, indent=2))

    def _coredns_argv(self) -> list[str]:
        # Cluster names only, no `forward`: a name outside the cluster never leaves the machine.
        corefile = f"""
.:{COREDNS_PORT} {{
    bind {self.node_ip}
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.kubeconfig} callboard-realnode
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
        (self.workdir / "Corefile").write_text(corefile)
        return [str(self.bin_dir / "coredns"), "-conf", str(self.workdir / "Corefile")]

    def _create_dns_service(self) -> None:
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": COREDNS_PORT},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": COREDNS_PORT},
                ],
            },
        }
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-host",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "callboard-realnode",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [self.node_ip], "conditions": {"ready": True}}],
            "ports": [
                {"name": "dns", "port": COREDNS_PORT, "protocol": "UDP"},
                {"name": "dns-tcp", "port": COREDNS_PORT, "protocol": "TCP"},
            ],
        }
        for path, body in (
            ("/api/v1/namespaces/kube-system/services", service),
            ("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices", slice_),
        ):
            status, answer = self._api("POST", path, body)
            if status not in (200, 201):
                raise StartupError(f"creating {body['kind']} kube-dns failed: {status} {answer}")

    def _node_ready(self) -> bool:
        status, body = self._api("GET", f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False
        conds = body.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

    def _kill_shims(self) -> None:
        """SIGKILL the containerd shims (and so the containers) this run started."""
        marker = str(self.workdir / "containerd")
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "containerd-shim" in cmdline and marker in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(pid_dir.name), 9)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid_dir.name), 9)

    # ---- HTTP

    def _http_ok(self, url: str) -> bool:
        return http_ok(url, context=self._ssl)

    def _api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return api_call(self.server, method, path, body, context=self._ssl)


@contextlib.contextmanager
def real_cluster(log: Log, *, bin_dir: Path | None = None) -> Iterator[KubeEnv]:
    """Build what is missing, start a real one-node cluster, and tear it all down afterwards."""
    reason = unsupported_reason()
    if reason:
        raise ToolsError(reason)
    bin_dir = bin_dir or ensure_everything(log)
    with network.lock(log):
        cluster = RealCluster(bin_dir, log)
        try:
            kube = cluster.start()
        except BaseException:
            cluster.keep_workdir = True  # keep the logs for a look
            cluster.stop()
            raise
        try:
            yield kube
        finally:
            cluster.stop()
