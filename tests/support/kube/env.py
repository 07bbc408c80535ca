"""How tests reach a cluster: :class:`KubeEnv` (kubeconfig, kubectl, helm, subprocess env).

With ``KUBECONFIG`` pointing to an existing cluster (kind, k3d, a real one), nothing is
built or started: :func:`for_existing_cluster` binds the tests to that cluster instead.
:class:`ClusterTier` is the one fixture logic of the tiers that need a cluster (the kwok
e2e tier and the real-node tier): build after collection, then the existing or a local
cluster for the session.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support.kube.tools import Log, ToolsError, print_log, tools_dir
from tests.support.paths import REPO_ROOT


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


def helm_dirs(base: Path) -> dict[str, str]:
    """Keep helm's cache/config/data out of the user's home."""
    return {
        "HELM_CACHE_HOME": str(base / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(base / "helm" / "config"),
        "HELM_DATA_HOME": str(base / "helm" / "data"),
    }


def for_existing_cluster(kubeconfig: str, log: Log = print_log) -> KubeEnv:
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
    env = {**os.environ, "KUBECONFIG": kubeconfig, **helm_dirs(scratch)}
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


def random_suffix(n: int = 6) -> str:
    """``n`` random hex characters, for names that must not collide between runs."""
    return secrets.token_hex(n)[:n]


class Progress:
    """Print progress lines live, past pytest's output capturing (set-up steps, timings)."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    def __call__(self, line: str) -> None:
        capman = self._config.pluginmanager.getplugin("capturemanager")
        reporter = self._config.pluginmanager.getplugin("terminalreporter")
        ctx = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with ctx:
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_line(line)
            else:
                print(line, flush=True)


class StartCluster(Protocol):
    """Starts a local cluster: :func:`~tests.support.kube.local_control_plane`, ``real_cluster``."""

    def __call__(self, log: Log, *, bin_dir: Path | None = None) -> AbstractContextManager[KubeEnv]: ...


class ClusterTier:
    """The cluster of one test tier (a folder): built once after collection, one per session.

    ``build(log)`` makes the binaries (and images) and returns their folder; it runs in
    :meth:`build_after_collection`, outside any test's timeout, and only when a test of
    ``folder`` is selected and no ``$KUBECONFIG`` cluster is named. ``start(log, bin_dir)``
    is the context manager of the local cluster. :meth:`session_cluster` is the body of the
    tier's session fixture: the existing cluster or the local one, and a clean test failure
    (no traceback) when it cannot be had. Each tier has its own stash keys, so two tiers in
    one run never read each other's build.
    """

    def __init__(
        self,
        folder: Path,
        *,
        build: Callable[[Log], Path],
        start: StartCluster,
        what: str,
    ) -> None:
        self.folder = folder
        self._build = build
        self._start = start
        self._what = what
        self._error = pytest.StashKey[str]()
        self._bin_dir = pytest.StashKey[Path]()

    def holds(self, item: pytest.Item) -> bool:
        """Whether ``item`` is a test of this tier's folder."""
        return self.folder in Path(str(item.path)).resolve().parents

    def mark(self, items: list[pytest.Item], *marks: pytest.MarkDecorator) -> None:
        """Give every test of this tier ``marks`` (``-m`` selects tiers by them)."""
        for item in items:
            if self.holds(item):
                for mark in marks:
                    item.add_marker(mark)

    def build_after_collection(self, session: pytest.Session) -> None:
        """Build before the tier's first test (a cold build must not eat one test's timeout)."""
        config = session.config
        if config.option.collectonly or not any(self.holds(i) for i in session.items):
            return
        if existing_kubeconfig():
            return
        try:
            config.stash[self._bin_dir] = self._build(Progress(config))
        except ToolsError as err:
            config.stash[self._error] = str(err)

    def session_cluster(self, request: pytest.FixtureRequest) -> Iterator[KubeEnv]:
        """The tier's cluster for the session: ``$KUBECONFIG``'s, or a local one started here."""
        progress = Progress(request.config)
        existing = existing_kubeconfig()
        if existing:
            failure = ""
            try:
                kube = for_existing_cluster(existing, progress)
            except (ToolsError, StartupError) as err:
                failure = str(err)
            if failure:
                pytest.fail(failure, pytrace=False)
            yield kube
            return
        error = request.config.stash.get(self._error, None)
        if error:
            pytest.fail(error, pytrace=False)
        failure = ""
        try:
            ctx = self._start(progress, bin_dir=request.config.stash.get(self._bin_dir, None))
            kube = ctx.__enter__()
        except ToolsError as err:
            failure = str(err)
        except StartupError as err:
            failure = f"{self._what} did not start: {err}"
        if failure:  # outside the except block: no chained traceback
            pytest.fail(failure, pytrace=False)
        try:
            yield kube
        finally:
            ctx.__exit__(None, None, None)
