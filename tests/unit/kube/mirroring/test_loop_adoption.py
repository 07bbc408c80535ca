"""Adoption: sessions started outside Kubernetes become AgentSessions; deleting one closes it."""

from __future__ import annotations

import pytest

from callboard.kube.settings import AdoptionSettings, Settings
from tests.unit.kube.conftest import Harness, fast_settings


@pytest.fixture
def settings() -> Settings:
    return fast_settings(
        adoption=AdoptionSettings(namespace="adopted", grace=0.1, ttl_seconds_after_finished=0)
    )


async def test_adoption_and_delete_closes_the_adopted_session(harness: Harness) -> None:
    node = await harness.node("n1", pool="blue")
    await node.registry.register("outside-call", "http-session-1")
    await node.registry.heartbeat()
    await harness.until(lambda: any(ns == "adopted" for ns, _ in harness.kube.objects))
    (ns, name), obj = next(((k, o) for k, o in harness.kube.objects.items() if k[0] == "adopted"))
    assert obj["spec"] == {
        "callId": "outside-call",
        "ttlSecondsAfterFinished": 0,
        "pool": "blue",
        "callType": "default",
        "lostPolicy": "Recover",
    }
    status = await harness.phase(name, "Running", namespace=ns)
    assert status["sessionId"] == "http-session-1" and status["reason"] == "Adopted"
    harness.kube.delete_object(name, ns)
    await harness.until(lambda: harness.kube.get_object(name, ns) is None)
    # Deleted right after Running, maybe before its finalizer landed: closed at its DELETED event.
    await harness.until(lambda: node.sessions == [])
    # Not adopted again while it winds down, nor later.
    await harness.until(lambda: harness.runtime.syncer.last_cycle is not None)
    assert not any(k[0] == "adopted" for k in harness.kube.objects)
