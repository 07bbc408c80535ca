"""Fixtures for the e2e tier: a real Kubernetes API (local control plane or $KUBECONFIG).

Fixtures:
    kube_env         session  KubeEnv: .kubeconfig, .env, .kubectl(), .kubectl_json(),
                              .apply(), .helm(), .server, .local, .workdir, .node_names
    kube_api         session  kubernetes.client.ApiClient bound to the same cluster
    kube_namespace   function a fresh namespace (name), deleted after the test
    agentsession_crd session  the AgentSession CRD applied from manifests/ and Established

Every test under tests/e2e gets the ``e2e`` marker. The binaries are built (once, with
progress lines) right after collection when any e2e test is selected, so a long cold
build does not count against a single test's timeout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import kube as kh
from tests.support.kube import KubeEnv

E2E_DIR = Path(__file__).resolve().parent
_TOOLS_ERROR = pytest.StashKey[str]()
_TOOLS_DIR = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real Kubernetes API server (started by the suite)")


def _is_e2e(item: pytest.Item) -> bool:
    return E2E_DIR in Path(str(item.path)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_e2e(item):
            item.add_marker(pytest.mark.e2e)


class _Progress:
    """Print progress lines live, past pytest's output capturing."""

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


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before the first e2e test runs (outside any test timeout)."""
    config = session.config
    if config.option.collectonly or not any(_is_e2e(i) for i in session.items):
        return
    if kh.existing_kubeconfig():
        return
    try:
        config.stash[_TOOLS_DIR] = kh.ensure_tools(_Progress(config))
    except kh.ToolsError as err:
        config.stash[_TOOLS_ERROR] = str(err)


@pytest.fixture(scope="session")
def kube_env(request: pytest.FixtureRequest) -> Iterator[KubeEnv]:
    """The cluster for the e2e tests: a local control plane, or $KUBECONFIG's cluster."""
    progress = _Progress(request.config)
    existing = kh.existing_kubeconfig()
    if existing:
        failure = ""
        try:
            kube = kh.for_existing_cluster(existing, progress)
        except (kh.ToolsError, kh.StartupError) as err:
            failure = str(err)
        if failure:
            pytest.fail(failure, pytrace=False)
        yield kube
        return
    error = request.config.stash.get(_TOOLS_ERROR, None)
    if error:
        pytest.fail(error, pytrace=False)
    failure = ""
    try:
        plane = kh.local_control_plane(progress, bin_dir=request.config.stash.get(_TOOLS_DIR, None))
        kube = plane.__enter__()
    except kh.ToolsError as err:
        failure = str(err)
    except kh.StartupError as err:
        failure = f"the local Kubernetes control plane did not start: {err}"
    if failure:  # outside the except block: no chained traceback
        pytest.fail(failure, pytrace=False)
    try:
        yield kube
    finally:
        plane.__exit__(None, None, None)


@pytest.fixture(scope="session")
def kube_api(kube_env: KubeEnv) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` for the same cluster (admin credentials)."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kube_env.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kube_namespace(kube_env: KubeEnv, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; deleted (without waiting) afterwards."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    name = f"e2e-{base.strip('-')[:40].strip('-')}-{kh.random_suffix()}"
    kube_env.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube_env.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def agentsession_crd(kube_env: KubeEnv) -> str:
    """Apply manifests/agentsession-crd.yaml and wait until the API serves it."""
    name = "agentsessions.callboard.dev"
    kube_env.kubectl("apply", "-f", "manifests/agentsession-crd.yaml")
    kube_env.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return name
