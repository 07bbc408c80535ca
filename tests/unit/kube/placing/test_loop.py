"""Placing objects over a fake API server and an in-memory registry: node choice, retries, restarts.

The real-cluster versions of these live in tests/e2e/operator; these run in milliseconds
and reach corners that are slow to provoke there (rejections, timeouts, an outage).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from callboard.kube.resource.constants import FINALIZER
from callboard.kube.resource.naming import parse_session_id, session_id_for
from callboard.kube.settings import Settings
from tests.unit.kube.conftest import Harness


async def test_apply_places_on_the_packed_node_and_runs(harness: Harness) -> None:
    await harness.node("idle", capacity=4)
    busy = await harness.node("busy", capacity=4)
    await busy.registry.register("other", "s-other")
    await busy.registry.heartbeat()
    harness.kube.apply("a1", "call-1", params={"greeting": "hi"})
    status = await harness.phase("a1", "Running")
    assert status["nodeId"] == "busy" and status["attempts"] == 1
    placed = parse_session_id(status["sessionId"])
    assert placed is not None and placed.namespace == "ns" and placed.attempt == 1
    assert busy.requests[0].params == {"greeting": "hi"} and busy.requests[0].call_type == "default"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Placed": "True", "Ready": "True"}
    # One Event per placement outcome: no Scheduled one on the way.
    assert await harness.reasons("a1") == ["Started"]


async def test_g9_a_node_marked_draining_by_the_autoscaler_gets_no_placement(harness: Harness) -> None:
    await harness.node("idle", capacity=4)
    busy = await harness.node("busy", capacity=4)  # packed would choose it
    await busy.registry.register("other", "s-other")
    await busy.registry.heartbeat()
    await harness.runtime.registry.mark_draining(["busy"], ttl=60)
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Running")
    assert status["nodeId"] == "idle" and status["attempts"] == 1
    assert busy.requests == []


async def test_no_capacity_waits_pending_then_runs_when_a_node_appears(harness: Harness) -> None:
    harness.kube.apply("a1", "call-1", pool="gpu")
    status = await harness.phase("a1", "Pending")
    placed = next(c for c in status["conditions"] if c["type"] == "Placed")
    assert placed["status"] == "False" and placed["reason"] == "NoCapacity"
    assert "no agent node is registered" in placed["message"]
    await harness.node("cpu-node", pool="cpu")
    for _ in range(2):  # a sync cycle that reads the new node: a change that does not fit
        cycle = harness.runtime.syncer.last_cycle
        await harness.until(lambda: harness.runtime.syncer.last_cycle != cycle)  # noqa: B023
    assert harness.status("a1")["phase"] == "Pending"
    await harness.node("gpu-node", pool="gpu")
    status = await harness.phase("a1", "Running")
    assert status["nodeId"] == "gpu-node"


async def test_rejected_then_retried_elsewhere(harness: Harness) -> None:
    await harness.node("a-rejects", capacity=1, mode="reject")
    good = await harness.node("b-good", capacity=5)
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Running")
    assert status["nodeId"] == "b-good" and status["attempts"] == 2
    assert status["sessionId"].endswith(".2") and good.sessions == [status["sessionId"]]
    assert "NodeRejected" in await harness.reasons("a1")


async def test_unconfirmed_then_failed_after_every_attempt(harness: Harness) -> None:
    for name in ("n1", "n2", "n3"):
        await harness.node(name, mode="ignore" if name != "n2" else "reject")
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Failed", timeout=10)
    assert status["attempts"] == 3 and status["reason"] == "StartFailed"
    assert "refused" in status["message"] and "did not confirm" in status["message"]
    reasons = await harness.reasons("a1")
    assert reasons.count("StartTimeout") == 2 and reasons.count("NodeRejected") == 1
    assert any(e["type"] == "Warning" and e["reason"] == "StartFailed" for e in await harness.events())


async def test_restart_resumes_a_scheduled_attempt_without_a_second_start(harness: Harness) -> None:
    node = await harness.node("n1")
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Running")
    # A fresh operator process sees the object as the previous one left it mid-attempt.
    obj = harness.kube.get_object("a1")
    assert obj is not None
    obj["status"]["phase"] = "Scheduled"
    harness.runtime.cache.remove(("ns", "a1"))
    harness.runtime.observe(None, obj)
    status = await harness.phase("a1", "Running")
    assert status["attempts"] == 1 and len(node.requests) == 1


async def test_a_stale_registry_read_does_not_hide_a_confirmed_start(settings: Settings) -> None:
    from callboard.kube.placing.policy import Strategy
    from callboard.kube.views.registry_snapshot import Snapshot

    settings.placement.strategy = Strategy.SPREAD
    settings.sync.interval = 3600.0  # this test takes the registry reads itself
    h = Harness(settings)
    await h.runtime.start()
    try:
        await h.node("a", capacity=4)
        await h.node("b", capacity=4)
        before = time.time()
        await h.runtime.syncer.cycle()
        h.kube.apply("s1", "call-1")
        assert (await h.phase("s1", "Running"))["nodeId"] == "a"
        # A read that began before "a" registered s1 and ended after: it lists no session.
        nodes = await h.runtime.registry.list_nodes()
        h.runtime.placer.set_snapshot(Snapshot.build(nodes, [], now=before))
        h.kube.apply("s2", "call-2")
        assert (await h.phase("s2", "Running"))["nodeId"] == "b"
    finally:
        await h.kopf.stop()
        for node in h.nodes:
            await node.kill()
        await h.runtime.stop()


# -- G1: one live session per object, through late acceptance, refusals and restarts --------


async def test_g1_a_start_accepted_after_the_timeout_never_runs_beside_the_retry(harness: Harness) -> None:
    # "a-late" accepts each request only after twice the start timeout (an app that joins the
    # call before it registers); being the busier node, packing asks it first.
    late = await harness.node("a-late", capacity=4, accept_delay=1.0)
    await late.registry.register("other", "s-other")
    await late.registry.heartbeat()
    good = await harness.node("b-good", capacity=4)
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Running")
    assert (status["nodeId"], status["attempts"]) == ("b-good", 2)
    await harness.until(lambda: late.not_started)
    [(request, claim)] = late.not_started
    assert request.session_id.endswith(".1") and claim.value == "withdrawn"
    assert late.sessions == ["s-other"] and good.sessions == [status["sessionId"]]
    assert [s.session_id for s in await harness.runtime.registry.get_for_call("call-1")] == [
        status["sessionId"]
    ]
    assert "StartTimeout" in await harness.reasons("a1")


async def test_g1_a_refusal_on_a_one_pod_pool_is_asked_again_once_capacity_frees(harness: Harness) -> None:
    node = await harness.node("only", capacity=1, mode="reject")
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Pending")
    assert "refused" in harness.status("a1")["message"]
    node.mode = "accept"
    # Capacity changes: the pod fills up with a session started outside, which then ends.
    await node.registry.register("other", "s-other")
    await node.registry.heartbeat()
    await harness.until(lambda: harness.runtime.syncer.snapshot is not None and any(
        s.session_id == "s-other" for s in harness.runtime.syncer.snapshot.sessions.values()
    ))  # fmt: skip
    await node.end("s-other")
    status = await harness.phase("a1", "Running")
    assert (status["nodeId"], status["attempts"]) == ("only", 2)


async def test_after_a_capacity_change_an_untried_node_goes_before_one_that_refused(harness: Harness) -> None:
    for name in ("r1", "r2"):
        await harness.node(name, pool="strict", mode="reject")
    harness.kube.apply("a1", "call-1", pool="strict")
    await harness.phase("a1", "Pending")
    await harness.node("r3", pool="strict", mode="reject")
    status = await harness.phase("a1", "Failed")
    assert status["attempts"] == 3
    assert all(f"node {name} refused" in status["message"] for name in ("r1", "r2", "r3"))


async def test_g1_a_restart_during_a_later_attempt_gets_that_attempt_s_full_timeout(
    settings: Settings,
) -> None:
    settings.placement.start_timeout = 5.0
    settings.placement.scheduled_after = 0.5  # the node is slower: Scheduled is written
    h = Harness(settings)
    await h.runtime.start()
    try:
        node = await h.node("slow", accept_delay=2.0)
        h.kube.apply("a1", "call-1")
        await h.until(lambda: h.status("a1").get("phase") == "Scheduled")
        # What an operator that crashed during attempt 2 left: attempt 1 began a minute ago
        # (Placed has been True since), attempt 2 just now.
        obj = h.kube.get_object("a1")
        assert obj is not None
        ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
        for condition in obj["status"]["conditions"]:
            condition["lastTransitionTime"] = ago
        await h.runtime.stop()
        await node.kill()
        node = await h.node("slow-2", accept_delay=2.0)
        obj["status"]["nodeId"] = "slow-2"
        obj["status"]["attempts"] = 2
        session_id = obj["status"]["sessionId"] = obj["status"]["sessionId"][:-2] + ".2"
        request = await node.registry.request_start("slow-2", "call-1", session_id=session_id, expires_in=5.0)
        obj["status"]["requestId"] = request.request_id
        obj["status"]["attemptStartedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        h.runtime = type(h.runtime)(settings=settings, api=h.kube, store=h.store)
        h.kopf.runtime = h.runtime
        await h.runtime.start()
        h.runtime.observe(None, obj)
        status = await h.phase("a1", "Running", timeout=10)
        assert (status["nodeId"], status["attempts"], status["sessionId"]) == ("slow-2", 2, session_id)
    finally:
        await h.kopf.stop()
        for n in h.nodes:
            await n.kill()
        await h.runtime.stop()


async def test_g8_a_claim_on_a_stale_view_is_refused_and_sends_no_start(
    settings: Settings, harness: Harness
) -> None:
    # Claim first (no window): the claim is what refuses the stale replica. With the window
    # (the default) the request goes first and the nodes' fence refuses a deposed leader's.
    settings.placement.scheduled_after = 0.0
    harness.kube.apply("a1", "call-1")
    await harness.phase("a1", "Pending")  # no node yet
    # This replica's watch goes silent (a deposed leader's view): it keeps the Pending copy.
    harness.kube.watchers.remove(harness.kopf.on_event)
    body = harness.kube.get_object("a1")
    assert body is not None
    uid = body["metadata"]["uid"]
    # The new leader claims the object meanwhile.
    await harness.kube.merge_patch(
        "/apis/callboard.dev/v1alpha1/namespaces/ns/agentsessions/a1/status",
        {"status": {"phase": "Scheduled", "sessionId": f"ags.ns.{uid}.1", "nodeId": "n-new", "attempts": 1}},
    )
    node = await harness.node("n1", capacity=4)  # capacity: the stale replica tries to place

    def claims() -> int:
        return sum(
            1
            for method, path, patch in harness.kube.calls
            if method == "PATCH"
            and path.endswith("/a1/status")
            and (patch.get("status") or {}).get("phase") == "Scheduled"
            and (patch.get("metadata") or {}).get("resourceVersion")
        )

    await harness.until(lambda: claims() >= 2)  # refused, retried, refused again
    assert node.requests == []
    assert harness.status("a1")["nodeId"] == "n-new"


async def test_pending_objects_are_counted_per_pool_for_the_autoscaler(harness: Harness) -> None:
    for i in range(3):
        harness.kube.apply(f"d{i}", f"call-{i}", pool="default")
    harness.kube.apply("any", "call-any")
    harness.kube.apply("g", "call-g", pool="gpu")
    for name in ("d0", "d1", "d2", "any", "g"):
        await harness.phase(name, "Pending")
    cache = harness.runtime.cache
    assert cache.pending("default") == 4  # its own and the one of no pool
    assert cache.pending("gpu") == 2
    assert cache.pending("") == 5
    metrics = harness.runtime.metrics.registry

    def gauge(pool: str) -> float | None:
        return metrics.get_sample_value("callboard_operator_pending_sessions", {"pool": pool})

    await harness.until(lambda: gauge("default") == 3 and gauge("gpu") == 1 and gauge("") == 1)


def _changed(old: object, read: Callable[[], object]) -> Callable[[], bool]:
    return lambda: read() != old


async def test_a_capacity_change_places_again_only_as_many_waiting_objects_as_fit(harness: Harness) -> None:
    names = [f"w{i}" for i in range(5)]
    for i, name in enumerate(names):
        harness.kube.apply(name, f"call-{i}")
    for name in names:
        await harness.phase(name, "Pending")

    def version(name: str) -> str:
        obj = harness.kube.get_object(name, "ns")
        assert obj is not None
        return str(obj["metadata"]["resourceVersion"])

    def phases() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for name in names:
            found.setdefault(harness.status(name).get("phase", ""), []).append(name)
        return found

    async def cycles(n: int) -> None:
        syncer = harness.runtime.syncer
        for _ in range(n):
            await harness.until(_changed(syncer.last_cycle, lambda: syncer.last_cycle))

    await cycles(3)
    before = {name: version(name) for name in names}
    node = await harness.node("n1", capacity=2)
    await harness.until(lambda: len(phases().get("Running", [])) == 2)
    await cycles(3)
    waiting = phases()["Pending"]
    assert len(waiting) == 3 and len(node.requests) == 2
    # The three that did not fit were not placed again: not one status write each.
    assert [version(name) for name in waiting] == [before[name] for name in waiting], [
        harness.status(name)["message"] for name in waiting
    ]

    await node.end(harness.status(phases()["Running"][0])["sessionId"])  # one slot frees
    await harness.until(lambda: len(phases().get("Running", [])) == 2 and len(node.requests) == 3)
    await cycles(3)
    assert len(phases()["Pending"]) == 2 and len(node.requests) == 3
    assert all(version(name) == before[name] for name in phases()["Pending"])
    writes = harness.runtime.metrics.registry.get_sample_value
    assert writes("callboard_operator_status_writes_total", {"reason": "Started"}) == 3
    assert writes("callboard_operator_status_writes_total", {"reason": "NoCapacity"}) == 5


# -- non-blocking attempts and status writes on the way to Running (#15) ---------------------


def _status_patches(harness: Harness, name: str) -> list[dict[str, object]]:
    return [
        patch
        for method, path, patch in harness.kube.calls
        if method == "PATCH" and path.endswith(f"/{name}/status")
    ]


async def test_a_node_that_confirms_within_the_window_costs_one_status_write(harness: Harness) -> None:
    await harness.node("n1", capacity=4)
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Running")
    # The one write carries what Scheduled would have: where, which attempt, which request.
    assert (status["nodeId"], status["attempts"]) == ("n1", 1) and status["sessionId"].endswith(".1")
    assert status["requestId"] and status["attemptStartedAt"] and status["startedAt"]
    [patch] = _status_patches(harness, "a1")
    # The first write of an unclaimed attempt is the claim: on the version the decision read.
    assert patch["status"]["phase"] == "Running" and patch["metadata"]["resourceVersion"]  # type: ignore[index]
    writes = harness.runtime.metrics.registry.get_sample_value
    assert writes("callboard_operator_status_writes_total", {"reason": "StartRequested"}) is None


async def test_a_node_slower_than_the_window_gets_scheduled_then_running(settings: Settings) -> None:
    settings.placement.start_timeout = 4.0
    settings.placement.scheduled_after = 0.2
    h = Harness(settings)
    await h.runtime.start()
    try:
        await h.node("slow", accept_delay=1.0)
        h.kube.apply("a1", "call-1")
        status = await h.phase("a1", "Running")
        phases = [p["status"]["phase"] for p in _status_patches(h, "a1")]  # type: ignore[index]
        assert phases == ["Scheduled", "Running"]
        assert status["attempts"] == 1 and status["nodeId"] == "slow"
        assert await h.reasons("a1") == ["Started"]
    finally:
        await h.kopf.stop()
        for n in h.nodes:
            await n.kill()
        await h.runtime.stop()


async def test_a_worker_is_not_held_while_a_node_confirms(settings: Settings) -> None:
    settings.placement.workers = 2
    settings.placement.start_timeout = 20.0
    settings.placement.scheduled_after = 10.0
    h = Harness(settings)
    await h.runtime.start()
    try:
        node = await h.node("slow", capacity=8, accept_delay=3.0)
        names = [f"a{i}" for i in range(8)]
        for i, name in enumerate(names):
            h.kube.apply(name, f"call-{i}")
        # Two workers, eight requests out before the first confirmation: none waits on the node.
        await h.until(lambda: len(node.requests) == 8)
        assert not any(h.status(name).get("phase") == "Running" for name in names)
        for name in names:
            await h.phase(name, "Running", timeout=10)
        assert sorted(node.sessions) == sorted(h.status(name)["sessionId"] for name in names)
    finally:
        await h.kopf.stop()
        for n in h.nodes:
            await n.kill()
        await h.runtime.stop()


async def test_g1_a_request_left_by_an_operator_killed_before_any_status_write_is_not_duplicated(
    settings: Settings,
) -> None:
    settings.placement.start_timeout = 3.0
    h = Harness(settings)
    await h.runtime.start()
    try:
        late = await h.node("late", pool="other", capacity=4, accept_delay=1.0)
        refuses = await h.node("refuses", pool="p", capacity=4, mode="reject")
        await h.runtime.stop()  # the operator is killed...
        h.kube.apply("a1", "call-1", pool="p")
        obj = h.kube.get_object("a1")
        assert obj is not None
        obj["metadata"]["finalizers"] = [FINALIZER]  # kopf's, added before the kill
        session_id = session_id_for("ns", obj["metadata"]["uid"], 1)
        # ...right after its request for attempt 1, before it wrote any status.
        await late.registry.request_start("late", "call-1", session_id=session_id, expires_in=3.0)
        h.runtime = type(h.runtime)(settings=settings, api=h.kube, store=h.store)
        h.kopf.runtime = h.runtime
        await h.runtime.start()
        h.runtime.observe(None, obj)
        # The new process asks the only node of the pool with the same session id; it refuses,
        # and the request left behind starts meanwhile: that session is the object's, no other.
        status = await h.phase("a1", "Running", timeout=10)
        assert (status["nodeId"], status["sessionId"], status["attempts"]) == ("late", session_id, 1)
        assert [r.session_id for r in refuses.requests] == [session_id]
        assert [s.session_id for s in await h.runtime.registry.get_for_call("call-1")] == [session_id]
    finally:
        await h.kopf.stop()
        for n in h.nodes:
            await n.kill()
        await h.runtime.stop()


async def test_a_session_up_before_its_running_write_is_not_closed_as_a_leftover(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No status names the session until Running is written: a slow write (a loaded API
    # server) outlasts the leftover grace (0.1 s here), and several sync cycles run meanwhile.
    node = await harness.node("n1", capacity=4)
    request = harness.kube.request
    cycles_before_write = 5

    async def slow_running(method: str, path: str, **kw: Any) -> Any:
        body = kw.get("body") or {}
        if (
            method == "PATCH"
            and path.endswith("/status")
            and body.get("status", {}).get("phase") == "Running"
        ):
            syncer = harness.runtime.syncer
            for _ in range(cycles_before_write):
                await harness.until(_changed(syncer.last_cycle, lambda: syncer.last_cycle))
        return await request(method, path, **kw)

    monkeypatch.setattr(harness.kube, "request", slow_running)
    harness.kube.apply("a1", "call-1")
    status = await harness.phase("a1", "Running")
    assert node.sessions == [status["sessionId"]] and node.closes == 0
