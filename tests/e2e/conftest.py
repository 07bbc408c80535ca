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

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import kube as kh
from tests.support.kube import KubeEnv

E2E_DIR = Path(__file__).resolve().parent
_TIER = kh.ClusterTier(
    E2E_DIR, build=kh.ensure_tools, start=kh.local_control_plane, what="the local Kubernetes control plane"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real Kubernetes API server (started by the suite)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _TIER.mark(items, pytest.mark.e2e)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before the first e2e test runs (outside any test timeout)."""
    _TIER.build_after_collection(session)


@pytest.fixture(scope="session")
def kube_env(request: pytest.FixtureRequest) -> Iterator[KubeEnv]:
    """The cluster for the e2e tests: a local control plane, or $KUBECONFIG's cluster."""
    yield from _TIER.session_cluster(request)


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
