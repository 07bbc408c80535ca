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

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import kube as kh
from tests.support.realnode import cluster as rn

HERE = Path(__file__).resolve().parent
_BUILD_ERROR = pytest.StashKey[str]()
_BIN_DIR = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e_real: needs real pods (a real node started by the suite, or $KUBECONFIG)"
    )


def _is_real(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_real(item):
            item.add_marker(pytest.mark.e2e_real)
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
    """Build binaries and images before the first real-pod test runs."""
    config = session.config
    if config.option.collectonly or not any(_is_real(i) for i in session.items):
        return
    if kh.existing_kubeconfig():
        return
    try:
        config.stash[_BIN_DIR] = rn.ensure_everything(_Progress(config))
    except kh.ToolsError as err:
        config.stash[_BUILD_ERROR] = str(err)


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
    error = request.config.stash.get(_BUILD_ERROR, None)
    if error:
        pytest.fail(error, pytrace=False)
    failure = ""
    try:
        ctx = rn.real_cluster(progress, bin_dir=request.config.stash.get(_BIN_DIR, None))
        kube = ctx.__enter__()
    except kh.ToolsError as err:
        failure = str(err)
    except kh.StartupError as err:
        failure = f"the real node did not start: {err}"
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield kube
    finally:
        ctx.__exit__(None, None, None)


@pytest.fixture(scope="session")
def progress(request: pytest.FixtureRequest) -> _Progress:
    """Print a line live (past output capturing): set-up steps and measured latencies."""
    return _Progress(request.config)


@pytest.fixture(scope="session")
def images(real_kube: kh.KubeEnv) -> Images:
    return Images.from_env(real_kube.local)
