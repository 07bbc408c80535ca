"""Fixtures of the operator's e2e tests: the cluster's CRD, a namespace, Redis, processes.

``operator_factory`` and ``node_factory`` start real processes and stop them after the
test; ``kube`` is kubectl bound to the test's namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import KubeEnv

from .harness import (
    AgentNode,
    Kube,
    OperatorIdentity,
    OperatorProcess,
    ServeNode,
    install_operator_identity,
)

OperatorFactory = Callable[..., Awaitable[OperatorProcess]]
NodeFactory = Callable[..., Awaitable[AgentNode]]


@pytest.fixture(scope="session")
def operator_identity(
    kube_env: KubeEnv, agentsession_crd: str, tmp_path_factory: pytest.TempPathFactory
) -> OperatorIdentity:
    """The chart's operator ServiceAccount, RBAC and Lease (release ``callboard``)."""
    return install_operator_identity(kube_env, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture(scope="session")
def operator_kubeconfig(operator_identity: OperatorIdentity) -> Path:
    """Credentials of the operator's ServiceAccount, bound by the chart's RBAC."""
    return operator_identity.kubeconfig


@pytest.fixture
def kube(kube_env: KubeEnv, kube_namespace: str, agentsession_crd: str) -> Kube:
    return Kube(kube_env, kube_namespace)


@pytest.fixture
async def operator_factory(
    operator_identity: OperatorIdentity,
    kube_env: KubeEnv,
    redis_url: str,
    kube_namespace: str,
    tmp_path: Path,
) -> AsyncIterator[OperatorFactory]:
    """Start ``callboard operator`` processes (stopped after the test). ``identity`` is the
    release it runs as (default: ``callboard``); the first operator of a release in a test
    finds that release's Lease fresh, with no holder left over from an earlier test."""
    started: list[OperatorProcess] = []
    fresh: set[str] = set()

    async def make(
        *,
        name: str = "operator",
        namespaces: list[str] | None = None,
        leading: bool = True,
        identity: OperatorIdentity = operator_identity,
        **env: Any,
    ) -> OperatorProcess:
        if identity.lease_name not in fresh:
            await asyncio.to_thread(identity.reset_lease, kube_env)
            fresh.add(identity.lease_name)
        process = OperatorProcess(
            kubeconfig=identity.kubeconfig,
            redis_url=redis_url,
            namespaces=namespaces or [kube_namespace],
            log_dir=tmp_path,
            name=name,
            env={"CALLBOARD_LEASE_NAME": identity.lease_name}
            | {key: str(value) for key, value in env.items()},
        )
        started.append(process)
        await process.start(leading=leading)
        return process

    yield make
    for process in reversed(started):
        await process.aclose()


@pytest.fixture
async def node_factory(redis_url: str, tmp_path: Path) -> AsyncIterator[NodeFactory]:
    started: list[AgentNode] = []

    async def make(node_id: str, **kw: Any) -> AgentNode:
        node = AgentNode(redis_url=redis_url, node_id=node_id, log_dir=tmp_path, **kw)
        started.append(node)
        await node.start()
        return node

    yield make
    for node in started:
        await node.aclose()


@pytest.fixture
async def serve_factory(redis_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ServeNode]]]:
    started: list[ServeNode] = []

    async def make(node_id: str, **kw: Any) -> ServeNode:
        node = ServeNode(redis_url=redis_url, node_id=node_id, log_dir=tmp_path, **kw)
        started.append(node)
        await node.start()
        return node

    yield make
    for node in started:
        await node.aclose()
