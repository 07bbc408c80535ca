"""Deleting an object closes its session, over a fake API server and an in-memory registry."""

from __future__ import annotations

from typing import Any

import jsonpatch  # type: ignore[import-untyped]  # kopf's dependency
import pytest

from callboard.kube.deleting import finalizer as finalizer_module
from callboard.kube.deleting.finalizer import FinalizerStep, adding_patch, finalizer_step, removing_patch
from callboard.kube.resource.objects import AgentSessionObject
from callboard.kube.running.wiring import Runtime
from callboard.kube.settings import AdoptionSettings, Settings
from tests.unit.kube.conftest import Harness, fast_settings, running


async def test_delete_closes_the_session_then_releases(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    status = await harness.held("a1", "Running")
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None)
    assert node.sessions == []
    assert "closed" in harness.kopf.outcomes["a1"]
    reasons = await harness.reasons("a1")
    assert reasons[-1] == "Closed" and "CloseRequested" not in reasons  # one Event per delete
    assert status["sessionId"] not in node.sessions


async def test_delete_of_a_pending_object_releases_at_once(harness: Harness) -> None:
    harness.kube.apply("a1", "call-1")
    await harness.held("a1", "Pending")
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=1.0)
    assert harness.kopf.outcomes["a1"] == "no session was placed"


async def test_delete_when_the_owner_died_releases_once_its_record_expired(harness: Harness) -> None:
    node = await harness.node("n1", ttl=0.3)
    harness.kube.apply("a1", "call-1")
    await harness.held("a1", "Running")
    await node.kill()
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=3.0)
    assert "closed (lost)" in harness.kopf.outcomes["a1"] or "is gone" in harness.kopf.outcomes["a1"]


async def test_delete_gives_up_after_the_timeout_with_a_warning(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    await harness.held("a1", "Running")
    await node.kill()  # alive in the registry (ttl 30 s) but deaf to close requests
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=3.0)
    assert "gave up" in harness.kopf.outcomes["a1"] and "still lists session" in harness.kopf.outcomes["a1"]
    warning = [e for e in await harness.events() if e["reason"] == "CloseTimedOut"]
    assert warning and warning[0]["type"] == "Warning"


async def test_g1_deleting_a_failed_object_still_closes_a_late_session(harness: Harness) -> None:
    for name in ("n1", "n2", "n3"):
        await harness.node(name, mode="reject")
    harness.kube.apply("a1", "call-1")
    status = await harness.held("a1", "Failed")
    # Only the finalizer acts from here: the sync loop (which closes such sessions too) stops.
    [sync] = [t for t in harness.runtime._tasks if t.get_name() == "sync"]
    sync.cancel()
    late = harness.nodes[0]  # committed the last attempt as it timed out, registers it now
    await late.registry.register("call-1", status["sessionId"])
    await late.registry.heartbeat()
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.kube.get_object("a1") is None)
    assert "closed" in harness.kopf.outcomes["a1"] and late.sessions == []
    assert await harness.runtime.registry.get_for_call("call-1") == []
    assert "OrphanClosed" in await harness.reasons("a1")


# -- the operator's own finalizer: the pure parts ------------------------------------------

OURS = "callboard.dev/close-session"


def _obj(
    finalizers: list[str], *, deleting: bool = False, rv: str = "7", phase: str | None = "Running"
) -> AgentSessionObject:
    meta: dict[str, Any] = {"name": "a", "namespace": "ns", "uid": "u", "resourceVersion": rv}
    if finalizers:
        meta["finalizers"] = finalizers
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"phase": phase} if phase else {}
    return AgentSessionObject.from_body({"metadata": meta, "spec": {"callId": "c"}, "status": status})


def test_the_finalizer_follows_the_first_status_write_so_placement_never_waits_for_it() -> None:
    assert finalizer_step(_obj([], phase=None)) is FinalizerStep.NONE
    assert finalizer_step(_obj([], phase="Pending")) is FinalizerStep.ADD


def test_a_live_object_without_the_finalizer_gets_it_and_a_deleted_one_with_it_is_closed() -> None:
    assert finalizer_step(_obj([])) is FinalizerStep.ADD
    assert finalizer_step(_obj(["other.io/x"])) is FinalizerStep.ADD
    assert finalizer_step(_obj([OURS])) is FinalizerStep.NONE
    assert finalizer_step(_obj([OURS], deleting=True)) is FinalizerStep.CLOSE
    # Deleted before it got ours (never placed): nothing to release, the leftover closer ends
    # any session; a deleted object is never given the finalizer again.
    assert finalizer_step(_obj([], deleting=True)) is FinalizerStep.NONE
    assert finalizer_step(_obj(["other.io/x"], deleting=True)) is FinalizerStep.NONE


def test_adding_the_finalizer_never_loses_a_concurrent_one() -> None:
    patch = adding_patch([], "7", OURS)
    assert patch is not None
    assert jsonpatch.apply_patch({"metadata": {"resourceVersion": "7"}}, patch)["metadata"]["finalizers"] == [
        OURS
    ]
    # Someone else's first finalizer came in between (the version moved): the write fails.
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch({"metadata": {"resourceVersion": "8", "finalizers": ["other.io/x"]}}, patch)
    patch = adding_patch(["other.io/x"], "7", OURS)
    assert patch is not None
    body = {"metadata": {"resourceVersion": "9", "finalizers": ["other.io/x"]}}  # a status write: ok
    assert jsonpatch.apply_patch(body, patch)["metadata"]["finalizers"] == ["other.io/x", OURS]
    # Ours added by an earlier write, or the list changed: the test fails, nothing is doubled.
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch({"metadata": {"finalizers": ["other.io/x", OURS]}}, patch)
    assert adding_patch([OURS], "7", OURS) is None


def test_removing_the_finalizer_removes_our_entry_only() -> None:
    patch = removing_patch(["other.io/x", OURS, "third.io/y"], OURS)
    assert patch is not None
    body = {"metadata": {"finalizers": ["other.io/x", OURS, "third.io/y", "late.io/z"]}}
    assert jsonpatch.apply_patch(body, patch)["metadata"]["finalizers"] == [
        "other.io/x",
        "third.io/y",
        "late.io/z",
    ]
    # The entry before ours was released meanwhile: the index moved, the test fails (re-read).
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch({"metadata": {"finalizers": [OURS, "third.io/y"]}}, patch)
    assert removing_patch(["other.io/x"], OURS) is None
    assert removing_patch(["tenant-b." + OURS], OURS) is None  # another class's: never ours


# -- the operator's own finalizer over the fake API server ---------------------------------


def _patches(harness: Harness, name: str) -> list[Any]:
    return [
        body
        for method, path, body in harness.kube.calls
        if method == "PATCH" and path.endswith(f"/agentsessions/{name}")
    ]


async def test_the_finalizer_is_added_once_and_released_once_keeping_the_others(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    # Another controller adds its first finalizer before ours: ours (after the Running write)
    # is appended behind it, on the newest body the cache holds.
    obj = harness.kube.objects[("ns", "a1")]
    obj["metadata"]["finalizers"] = ["other.io/x"]
    harness.kube._bump(obj, "MODIFIED")
    await harness.held("a1", "Running")
    assert harness.kube.objects[("ns", "a1")]["metadata"]["finalizers"] == ["other.io/x", OURS]
    harness.kube.delete_object("a1")
    await harness.until(lambda: OURS not in harness.kube.objects[("ns", "a1")]["metadata"]["finalizers"])
    assert harness.kube.objects[("ns", "a1")]["metadata"]["finalizers"] == ["other.io/x"]
    assert node.sessions == []
    # The add and the release: no progress records, no second add for the MODIFIED events
    # (Running, the add's own echo) that came while the first add was in flight.
    assert len(_patches(harness, "a1")) == 2


async def test_a_delete_in_flight_is_not_started_again_by_later_watch_events(harness: Harness) -> None:
    node = await harness.node("n1", deaf=True)  # the close waits for its timeout (1 s)
    harness.kube.apply("a1", "call-1")
    await harness.held("a1", "Running")
    calls = 0
    close = harness.runtime.finalizers.close

    async def counting(obj: Any) -> str:
        nonlocal calls
        calls += 1
        return await close(obj)

    harness.runtime.finalizers.close = counting
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.runtime.finalizers.deletions == 1)
    body = harness.kube.get_object("a1")
    assert body is not None
    for _ in range(5):  # relists, status writes: each is a watch event of the deleting object
        harness.runtime.observe("MODIFIED", body)
    assert harness.runtime.finalizers.deletions == 1
    await harness.until(lambda: harness.kube.get_object("a1") is None, timeout=5.0)
    assert calls == 1 and node.closes >= 1


async def test_a_delete_interrupted_by_a_restart_resumes_from_the_relist(settings: Settings) -> None:
    first = Harness(settings)
    await first.runtime.start()
    await first.node("n1", deaf=True)
    first.kube.apply("a1", "call-1")
    await first.held("a1", "Running")
    first.kube.delete_object("a1")
    await first.until(lambda: first.runtime.finalizers.deletions == 1)
    await first.runtime.stop()  # the process goes mid-delete: the finalizer stays
    body = first.kube.get_object("a1")
    assert body is not None and OURS in body["metadata"]["finalizers"]
    second = Runtime(settings=settings, api=first.kube, store=first.store)
    first.kube.watchers.append(second.observe)
    await second.start()
    try:
        second.observe(None, body)  # kopf's initial listing
        await first.until(lambda: first.kube.get_object("a1") is None, timeout=5.0)
    finally:
        await second.stop()
        for node in first.nodes:
            await node.kill()


async def test_a_watch_event_that_left_the_queue_after_the_release_starts_no_second_delete(
    harness: Harness,
) -> None:
    """Seen in the 1,000-object bench: 12 % of the deletes were run twice (a 404 PATCH each),
    for an event of the deleting object that kopf delivered after the finalizer was gone."""
    await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    await harness.held("a1", "Running")
    harness.kube.delete_object("a1")
    await harness.until(lambda: harness.runtime.finalizers.deletions == 1)
    stale = harness.runtime.cache.get(("ns", "a1"))
    assert stale is not None and stale.deleting and stale.has_finalizer
    await harness.until(lambda: harness.kube.get_object("a1") is None)
    await harness.until(lambda: harness.runtime.finalizers.deletions == 0)
    harness.runtime.finalizers.observe(stale)
    assert harness.runtime.finalizers.deletions == 0
    assert len(harness.kopf.outcomes) == 1


# -- deleted before the finalizer: it follows the first status write -------------------------


def _no_leftover_closer() -> Settings:
    """The sync loop's leftover closer would close a forgotten session after its grace: with
    a minute of grace, only the paths under test can close it within a test's seconds."""
    settings = fast_settings(adoption=AdoptionSettings(namespace=None, grace=60.0, prime_timeout=1.0))
    settings.placement.start_timeout = 5.0
    return settings


async def test_an_object_deleted_while_its_start_is_in_flight_has_its_session_closed() -> None:
    async with running(_no_leftover_closer()) as h:
        node = await h.node("n1", accept_delay=0.5)  # confirms within the 2 s window: no write before
        h.kube.apply("a1", "call-1")
        await h.until(lambda: node.requests)
        assert "phase" not in h.status("a1")  # no status yet, so no finalizer either
        h.kube.delete_object("a1")
        assert h.kube.get_object("a1") is None
        await h.until(lambda: node.closes >= 1 and node.sessions == [])


async def test_an_object_deleted_before_its_finalizer_landed_has_its_session_closed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(finalizer_module, "ADDS_IN_FLIGHT", 0)  # every add waits: none lands
    async with running(_no_leftover_closer()) as h:
        node = await h.node("n1")
        h.kube.apply("a1", "call-1")
        status = await h.phase("a1", "Running")
        assert node.sessions == [status["sessionId"]]
        assert "finalizers" not in h.kube.objects[("ns", "a1")]["metadata"]
        h.kube.delete_object("a1")
        assert h.kube.get_object("a1") is None  # nothing held it
        await h.until(lambda: node.closes >= 1 and node.sessions == [])
