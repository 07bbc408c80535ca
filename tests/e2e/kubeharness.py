"""A real Kubernetes API for the e2e tests, without Docker.

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
import ctypes
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tests" / "k8s" / "build-tools.sh"
DEFAULT_TOOLS_DIR = REPO_ROOT / ".cache" / "k8s-tools" / "bin"

#: Binaries the local control plane needs (all built by tests/k8s/build-tools.sh).
TOOLS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)

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
#: Seconds between SIGTERM and SIGKILL when stopping a component.
STOP_GRACE = 10.0

Log = Callable[[str], None]


def _print_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ToolsError(RuntimeError):
    """The control-plane binaries are missing and could not be built."""


class StartupError(RuntimeError):
    """The control plane did not come up; the message carries the components' log tails."""


class CommandError(subprocess.CalledProcessError):
    """A kubectl/helm call failed; unlike CalledProcessError, str() shows its output."""

    def __str__(self) -> str:
        cmd = " ".join(str(a) for a in self.cmd)
        return (
            f"command failed with exit code {self.returncode}: {cmd}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


# --------------------------------------------------------------------------- tools


def tools_dir() -> Path:
    """Folder with the binaries: ``$CALLBOARD_K8S_TOOLS_DIR`` or ``.cache/k8s-tools/bin``."""
    override = os.environ.get("CALLBOARD_K8S_TOOLS_DIR")
    return Path(override).resolve() if override else DEFAULT_TOOLS_DIR


def missing_tools(directory: Path | None = None) -> list[str]:
    directory = directory or tools_dir()
    missing = [t for t in TOOLS if not os.access(directory / t, os.X_OK)]
    if not (directory / "kwok-stages" / ".version").is_file():
        missing.append("kwok-stages/")
    return missing


def ensure_tools(log: Log = _print_log) -> Path:
    """Run the (idempotent) build script; stream its progress lines to ``log``.

    When everything is built at the pinned versions the script only checks versions
    (about a second). Raises :class:`ToolsError` with the build's tail on failure.
    """
    directory = tools_dir()
    if not BUILD_SCRIPT.is_file():
        raise ToolsError(f"{BUILD_SCRIPT} is missing")
    missing = missing_tools(directory)
    if missing:
        log(f"[k8s-tools] missing in {directory}: {', '.join(missing)}; building them now")
    tail: list[str] = []
    proc = subprocess.Popen(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        cwd=REPO_ROOT,
    )
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail = [*tail[-39:], line]
            if line.startswith("[k8s-tools]") or missing:
                log(line)
    if proc.returncode != 0:
        raise ToolsError(
            f"building the Kubernetes test tools failed (exit {proc.returncode}).\n"
            + "\n".join(tail)
            + "\n\nGet the tools with `make k8s-tools` (tests/k8s/build-tools.sh; needs Go"
            " >= 1.26 and the Go module proxy), or point KUBECONFIG to an existing cluster."
        )
    still_missing = missing_tools(directory)
    if still_missing:
        raise ToolsError(
            f"tests/k8s/build-tools.sh succeeded but {', '.join(still_missing)} are missing"
            f" in {directory}; run `make k8s-tools`."
        )
    return directory


def existing_kubeconfig() -> str | None:
    """``$KUBECONFIG`` when it names an existing file (and CALLBOARD_E2E_LOCAL is unset)."""
    if os.environ.get("CALLBOARD_E2E_LOCAL"):
        return None
    value = os.environ.get("KUBECONFIG", "")
    if any(p and Path(p).is_file() for p in value.split(os.pathsep)):
        return value
    return None


# --------------------------------------------------------------------------- kube env


@dataclass
class KubeEnv:
    """How tests reach the cluster: a kubeconfig, CLIs bound to it, an env for subprocesses."""

    kubeconfig: Path
    """The admin kubeconfig (for an existing cluster: the first file in ``$KUBECONFIG``)."""
    env: dict[str, str]
    """Environment for subprocesses (operator, kubectl, helm): KUBECONFIG, PATH, HELM_*."""
    kubectl_bin: str
    helm_bin: str | None
    server: str
    """The API server URL of the current context."""
    local: bool
    """True when this harness started the control plane (kwok nodes, scheduler...)."""
    workdir: Path | None = None
    """Local only: the temp folder with certs, data and the components' logs."""
    node_names: tuple[str, ...] = ()
    """Local only: the fake (kwok) nodes."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
            cwd=REPO_ROOT,
        )
        if check and proc.returncode != 0:
            raise CommandError(proc.returncode, list(argv), proc.stdout, proc.stderr)
        return proc

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster (cwd: the repo root)."""
        return self.run([self.kubectl_bin, *args], check=check, input=input, timeout=timeout)

    def kubectl_json(self, *args: str, timeout: float = 120.0) -> Any:
        """Run ``kubectl ... -o json`` and parse the output."""
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)

    def apply(self, manifest: str | dict[str, Any], *, namespace: str | None = None) -> str:
        """``kubectl apply -f -`` of a YAML/JSON text or an object; returns kubectl's output."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=text).stdout

    def helm(
        self, *args: str, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run helm against the cluster (cwd: the repo root)."""
        if not self.helm_bin:
            raise ToolsError(
                "no helm binary: run `make k8s-tools` (builds helm into .cache/k8s-tools/bin)"
                " or put helm on PATH"
            )
        return self.run([self.helm_bin, *args], check=check, timeout=timeout)


def wait_for(
    check: Callable[[], Any],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "condition",
) -> Any:
    """Poll ``check`` until it returns a truthy value (which is returned) or time runs out."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def _helm_dirs(base: Path) -> dict[str, str]:
    """Keep helm's cache/config/data out of the user's home."""
    return {
        "HELM_CACHE_HOME": str(base / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(base / "helm" / "config"),
        "HELM_DATA_HOME": str(base / "helm" / "data"),
    }


def for_existing_cluster(kubeconfig: str, log: Log = _print_log) -> KubeEnv:
    """A KubeEnv for the cluster named by ``kubeconfig`` (a KUBECONFIG value); builds nothing."""
    directory = tools_dir()

    def pick(name: str) -> str | None:
        local = directory / name
        if os.access(local, os.X_OK):
            return str(local)
        return shutil.which(name)

    kubectl = pick("kubectl")
    if not kubectl:
        raise ToolsError("KUBECONFIG is set but no kubectl found: put kubectl on PATH")
    scratch = Path(tempfile.mkdtemp(prefix="callboard-e2e-"))
    atexit.register(shutil.rmtree, scratch, True)
    env = {**os.environ, "KUBECONFIG": kubeconfig, **_helm_dirs(scratch)}
    first = next(p for p in kubeconfig.split(os.pathsep) if p and Path(p).is_file())
    kube = KubeEnv(
        kubeconfig=Path(first),
        env=env,
        kubectl_bin=kubectl,
        helm_bin=pick("helm"),
        server="",
        local=False,
    )
    server = kube.kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
    kube.server = server.stdout.strip()
    log(f"[k8s] using the existing cluster from KUBECONFIG ({kube.server})")
    ready = kube.kubectl("get", "--raw", "/readyz", check=False, timeout=30)
    if ready.returncode != 0:
        raise StartupError(
            f"KUBECONFIG={kubeconfig} names a cluster that does not answer /readyz:\n"
            f"{ready.stderr.strip()}\n(unset KUBECONFIG or set CALLBOARD_E2E_LOCAL=1 to start"
            " a local control plane instead)"
        )
    return kube


# --------------------------------------------------------------------------- certificates


@dataclass
class _KeyPair:
    cert_pem: bytes
    key_pem: bytes
    cert: Any
    key: Any


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_cert(
    cn: str,
    *,
    issuer: _KeyPair | None = None,
    orgs: Sequence[str] = (),
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
) -> _KeyPair:
    """A CA (issuer None) or a leaf certificate signed by ``issuer``; ECDSA P-256, 7 days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    subject = x509.Name(attrs)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        signer = key
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), False)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
        signer = issuer.key
    cert = builder.sign(signer, hashes.SHA256())
    return _KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), cert, key)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM the child when the process that started it dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class _Process:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        with self.log_path.open("ab") as logf:
            logf.write(("$ " + " ".join(self.argv) + "\n").encode())
            logf.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: killpg reaches every child
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    @property
    def exited(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def stop(self, grace: float = STOP_GRACE) -> None:
        popen = self.popen
        if popen is None:
            return
        pgid = popen.pid  # start_new_session: the group id is the leader's pid
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=grace)
        # SIGKILL whatever is left in the group (the leader, or children it left behind).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- control plane


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, local."""

    bin_dir: Path
    log: Log = _print_log
    nodes: int = 2
    keep_workdir: bool = field(default_factory=lambda: bool(os.environ.get("CALLBOARD_K8S_KEEP")))

    workdir: Path = field(init=False)
    kubeconfig: Path = field(init=False)
    server: str = field(init=False)
    processes: list[_Process] = field(init=False, default_factory=list)
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
        env = {**os.environ, **_helm_dirs(self.workdir)}
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

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        proc = _Process(name, argv, self.workdir / "logs" / f"{name}.log")
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
        ca = _make_cert("callboard-e2e-ca")
        serving = _make_cert(
            "localhost",
            issuer=ca,
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ips=["127.0.0.1", "::1", str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))],
            server=True,
        )
        admin = _make_cert("admin", issuer=ca, orgs=["system:masters"], client=True)
        # Front proxy (aggregation layer): lets controller-manager and scheduler read the
        # requestheader CA, and aggregated API servers work as in a real cluster.
        proxy_ca = _make_cert("callboard-e2e-front-proxy-ca")
        proxy_client = _make_cert("front-proxy-client", issuer=proxy_ca, client=True)
        sa_key = _new_key()
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
            "sa.key": _key_pem(sa_key),
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


def http_ok(url: str, *, context: ssl.SSLContext | None = None, timeout: float = 2) -> bool:
    """True when ``url`` answers 200; False on any error answer or connection failure.

    An error answer arrives as an ``HTTPError`` that holds the open response: it is closed
    here, not left to the garbage collector (which would report the socket as a
    ``ResourceWarning`` inside whatever test runs then).
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as err:
        err.close()
        return False
    except (OSError, urllib.error.URLError):
        return False


def api_call(
    server: str, method: str, path: str, body: Any = None, *, context: ssl.SSLContext | None = None
) -> tuple[int, Any]:
    """One JSON call: (status, decoded body), (status, error text), or (0, why it failed)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        server + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        with err:  # holds the open response (see http_ok)
            return err.code, err.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as err:
        return 0, str(err)


def random_suffix(n: int = 6) -> str:
    return secrets.token_hex(n)[:n]


@contextlib.contextmanager
def local_control_plane(log: Log = _print_log, *, bin_dir: Path | None = None) -> Iterator[KubeEnv]:
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
