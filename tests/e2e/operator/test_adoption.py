"""Sessions started outside Kubernetes (the node HTTP API of `callboard serve`) are adopted;
`kubectl delete` closes them on their node. `callboard serve` nodes also take placements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from callboard.kube.resource.constants import FINALIZER
from tests.support.waiting import wait_until

from .conftest import OperatorFactory
from .harness import Kube, ServeNode

pytestmark = pytest.mark.e2e

ServeFactory = Callable[..., Awaitable[ServeNode]]


async def test_http_api_session_is_adopted_and_kubectl_delete_closes_it(
    kube: Kube, operator_factory: OperatorFactory, serve_factory: ServeFactory
) -> None:
    node = await serve_factory("http-node")
    await operator_factory(CALLBOARD_ADOPT_NAMESPACE=kube.ns, CALLBOARD_ADOPT_TTL=0)
    session_id = await node.start_session("web-call-7")

    async def adopted() -> list[dict[str, object]]:
        items = await kube.list()
        return [o for o in items if o.get("status", {}).get("phase") == "Running"]

    [obj] = await wait_until(adopted, timeout=20, what="the adopted AgentSession")
    name = obj["metadata"]["name"]  # type: ignore[index]
    assert obj["metadata"]["labels"]["callboard.dev/adopted"] == "true"  # type: ignore[index]
    assert obj["spec"]["callId"] == "web-call-7"  # type: ignore[index]
    status = obj["status"]
    assert status["sessionId"] == session_id and status["nodeId"] == "http-node"  # type: ignore[index]
    assert status["reason"] == "Adopted"  # type: ignore[index]
    # `kubectl get ags -A` lists it with the others.
    listed = (await kube.run("get", "ags", "-A")).stdout
    assert name in listed and "web-call-7" in listed  # type: ignore[operator]

    await kube.wait_finalizer(name, FINALIZER)  # type: ignore[arg-type]  # the delete waits for the close
    await kube.delete(name)  # type: ignore[arg-type]
    await kube.wait_gone(name)  # type: ignore[arg-type]
    # Closed on its node (so nothing is left to adopt a second time).
    assert not await node.has_session("web-call-7", session_id)
    assert await kube.list() == []


async def test_serve_node_takes_placements(
    kube: Kube, operator_factory: OperatorFactory, serve_factory: ServeFactory
) -> None:
    node = await serve_factory("serve-node")
    await operator_factory(CALLBOARD_ADOPT_NAMESPACE=kube.ns)
    await kube.apply("placed", "call-placed")
    obj = await kube.wait_phase("placed", "Running")
    assert obj["status"]["nodeId"] == "serve-node"
    assert await node.has_session("call-placed", obj["status"]["sessionId"])
    # Placed sessions are never mistaken for sessions to adopt.
    assert [o["metadata"]["name"] for o in await kube.list()] == ["placed"]
    await kube.wait_finalizer("placed", FINALIZER)  # the delete waits for the close
    await kube.delete("placed")
    await kube.wait_gone("placed")
    assert not await node.has_session("call-placed", obj["status"]["sessionId"])
