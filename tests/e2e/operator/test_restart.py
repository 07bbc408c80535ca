"""The operator killed mid-way and restarted: nothing lost, nothing duplicated.

State lives in the registry and the objects: placements in flight are followed by the next
process (a Scheduled status, or, for a request sent before any status write, the attempt's
deterministic session id: the kill below often lands in that window), deletions made while
it was down are finished, objects applied meanwhile are placed, and no object ever gets a
second live session.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.waiting import wait_until

from .conftest import NodeFactory, OperatorFactory
from .harness import Kube

pytestmark = pytest.mark.e2e


def agentsessions(names: list[str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "callboard.dev/v1alpha1",
                    "kind": "AgentSession",
                    "metadata": {"name": name},
                    "spec": {"callId": f"call-{name}"},
                }
                for name in names
            ],
        }
    )


@pytest.mark.timeout(240)
async def test_operator_killed_and_restarted_loses_and_duplicates_nothing(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    nodes = [await node_factory(f"node-{i}", capacity=30) for i in range(3)]
    first = await operator_factory(name="operator-1")
    batch = [f"s{i:02d}" for i in range(60)]
    await kube.run("apply", "-n", kube.ns, "-f", "-", input=agentsessions(batch))

    async def some_running() -> bool:
        items = await kube.list()
        running = sum(1 for o in items if o.get("status", {}).get("phase") == "Running")
        return running >= 3

    await wait_until(some_running, timeout=60, what="the first sessions to run")
    await first.kill()  # mid-way: often some are still Scheduled or not placed yet
    before = {o["metadata"]["name"]: o.get("status", {}).get("phase") for o in await kube.list()}
    # How many were still in flight depends on the machine's speed; the objects applied
    # below while no operator runs are certainly not placed, whatever the timing.
    assert "Running" in before.values(), before

    # While no operator runs: delete two running objects, apply five more.
    gone = [name for name, phase in before.items() if phase == "Running"][:2]
    for name in gone:
        await kube.delete(name)
    late = [f"late{i}" for i in range(5)]
    await kube.run("apply", "-n", kube.ns, "-f", "-", input=agentsessions(late))

    # A different replica takes over once the killed one's lease expires.
    await operator_factory(name="operator-2")
    expected = sorted(set(batch) - set(gone)) + late
    for name in gone:
        await kube.wait_gone(name, timeout=60)

    async def all_running() -> list[dict[str, object]] | None:
        items = await kube.list()
        phases = {o["metadata"]["name"]: o.get("status", {}).get("phase") for o in items}
        return items if sorted(phases) == sorted(expected) and set(phases.values()) == {"Running"} else None

    items = await wait_until(all_running, timeout=90, what="every object Running")
    wanted = {o["status"]["sessionId"] for o in items}  # type: ignore[index]
    assert len(wanted) == len(expected)

    # Exactly one live session per object, on the node its status names: leftovers of
    # interrupted attempts (if any) are closed; nothing else runs.
    async def registry_matches() -> bool:
        live = [s for node in nodes for s in await node.sessions()]
        return sorted(live) == sorted(wanted)

    await wait_until(registry_matches, timeout=30, what="the nodes to run exactly the objects' sessions")
    for obj in items:
        node = next(n for n in nodes if n.node_id == obj["status"]["nodeId"])  # type: ignore[index]
        assert obj["status"]["sessionId"] in await node.sessions()  # type: ignore[index]
    assert await asyncio.gather(*(kube.get(name) for name in gone)) == [None, None]
