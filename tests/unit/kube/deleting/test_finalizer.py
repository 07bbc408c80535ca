"""Deleting an object closes its session, over a fake API server and an in-memory registry."""

from __future__ import annotations

from tests.unit.kube.conftest import Harness


async def test_delete_closes_the_session_then_releases(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Running")
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None)
    assert node.sessions == []
    assert "closed" in harness.kopf.outcomes["a1"]
    assert (await harness.reasons("a1"))[-2:] == ["CloseRequested", "Closed"]
    assert status["sessionId"] not in node.sessions


async def test_delete_of_a_pending_object_releases_at_once(harness: Harness) -> None:
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Pending")
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=1.0)
    assert harness.kopf.outcomes["a1"] == "no session was placed"


async def test_delete_when_the_owner_died_releases_once_its_record_expired(harness: Harness) -> None:
    node = await harness.node("n1", ttl=0.3)
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Running")
    await node.kill()
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=3.0)
    assert "closed (lost)" in harness.kopf.outcomes["a1"] or "is gone" in harness.kopf.outcomes["a1"]


async def test_delete_gives_up_after_the_timeout_with_a_warning(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Running")
    await node.kill()  # alive in the registry (ttl 30 s) but deaf to close requests
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=3.0)
    assert "gave up" in harness.kopf.outcomes["a1"] and "still lists session" in harness.kopf.outcomes["a1"]
    warning = [e for e in await harness.events() if e["reason"] == "CloseTimedOut"]
    assert warning and warning[0]["type"] == "Warning"
