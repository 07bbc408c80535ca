"""Fixtures for the real-node tier: real pods on a real kubelet (or $KUBECONFIG's cluster).

Fixtures:
    real_kube    session  KubeEnv of a real one-node cluster (tests/support/realnode), or of
                          the cluster $KUBECONFIG names (kind, k3d, a real one)
    images       session  Images: the image references the chart is installed with
    progress     session  a callable that prints a line live (timings)

Every test here gets the ``e2e_real`` and ``e2e`` markers (so ``make fast`` leaves them out).
The binaries and images are built (once, with timed progress lines) right after
collection, outside any test's timeout; the cluster comes up in the first test's set-up.

On an existing cluster the images must be there already (``kind load``/a registry); name
them with CALLBOARD_E2E_IMAGE, CALLBOARD_E2E_AGENT_IMAGE and CALLBOARD_E2E_REDIS_IMAGE
(repository:tag).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import kube as kh
from tests.support.realnode import cluster as rn

HERE = Path(__file__).resolve().parent
_TIER = kh.ClusterTier(HERE, build=rn.ensure_everything, start=rn.real_cluster, what="the real node")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e_real: needs real pods (a real node started by the suite, or $KUBECONFIG)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _TIER.mark(items, pytest.mark.e2e_real, pytest.mark.e2e)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build binaries and images before the first real-pod test runs."""
    _TIER.build_after_collection(session)


@dataclass(frozen=True)
class Images:
    """The images of one install (``repository``, ``tag``, pull policy), as chart values."""

    callboard: tuple[str, str]
    agent: tuple[str, str]
    redis: tuple[str, str]
    pull_policy: str

    @staticmethod
    def _split(ref: str) -> tuple[str, str]:
        repo, _, tag = ref.rpartition(":")
        return (repo, tag) if repo and "/" not in tag else (ref, "latest")

    @classmethod
    def from_env(cls, local: bool) -> Images:
        env = os.environ.get
        return cls(
            callboard=cls._split(env("CALLBOARD_E2E_IMAGE", "localhost/callboard:e2e")),
            agent=cls._split(env("CALLBOARD_E2E_AGENT_IMAGE", "localhost/callboard-demo-agent:e2e")),
            redis=cls._split(env("CALLBOARD_E2E_REDIS_IMAGE", "localhost/redis:e2e")),
            # Locally built images are in containerd already; nothing can be pulled here.
            pull_policy="Never" if local else "IfNotPresent",
        )


@pytest.fixture(scope="session")
def real_kube(request: pytest.FixtureRequest) -> Iterator[kh.KubeEnv]:
    """A cluster with real pods: the local real node, or $KUBECONFIG's cluster."""
    yield from _TIER.session_cluster(request)


@pytest.fixture(scope="session")
def progress(request: pytest.FixtureRequest) -> kh.Progress:
    """Print a line live (past output capturing): set-up steps and measured latencies."""
    return kh.Progress(request.config)


@pytest.fixture(scope="session")
def images(real_kube: kh.KubeEnv) -> Images:
    return Images.from_env(real_kube.local)
