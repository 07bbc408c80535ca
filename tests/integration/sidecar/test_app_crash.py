"""An app that dies has its sessions removed at once (reason app-unhealthy), not after the TTL.

While the sidecar lives it keeps heartbeating the sessions, so without these watchdogs a dead
app's sessions would stay listed for ever.
"""

from __future__ import annotations

from pathlib import Path

from callboard.registry import EndReason, SessionRegistry
from tests.integration.sidecar.conftest import AppFactory, SidecarFactory
from tests.support.redis_server import free_port
from tests.support.sidecar import SidecarProcess, metric, python_app
from tests.support.waiting import wait_until


async def gone(peer: SessionRegistry, call_id: str, session_id: str) -> bool:
    return await peer.get(call_id, session_id) is None


async def test_no_event_consumer_for_the_grace_period_removes_the_sessions(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    sidecar = await sidecar_factory(env={"CALLBOARD_EVENT_GRACE": "1"})
    app = await app_factory(python_app(sidecar, log_dir=tmp_path))
    for session_id in ("s-1", "s-2"):
        await app.send(op="register", call_id="call-1", session_id=session_id)
        await app.expect("registered", session_id=session_id)
    # A connected app keeps its sessions: wait out more than two grace periods, by the
    # sidecar's own heartbeat count (0.3 s apart).
    await wait_until(lambda: _at_least(sidecar, "heartbeats_total", 9), what="nine heartbeats")
    assert await sidecar.session_ids() == ["s-1", "s-2"]

    await app.kill()
    await wait_until(lambda: gone(peer, "call-1", "s-1"), timeout=5, what="the sessions to be removed")
    for session_id in ("s-1", "s-2"):
        ended = await peer.get_ended("call-1", session_id)
        assert ended is not None and (ended.reason, ended.node_id) == (EndReason.APP_UNHEALTHY, "node-a")
    assert await sidecar.session_ids() == []
    assert await metric(sidecar, "app_unhealthy_cleanups_total") == 1
    node = await wait_until(lambda: peer.get_node("node-a"), what="the node record")
    assert not node.draining  # the sidecar stays: a restarted app registers again
    assert (await sidecar.http.get("/readyz")).status_code == 200


async def test_failing_health_url_removes_the_sessions(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    port = free_port()
    sidecar = await sidecar_factory(
        env={
            "CALLBOARD_APP_HEALTH_URL": f"http://127.0.0.1:{port}/health",
            "CALLBOARD_APP_HEALTH_INTERVAL": "0.1",
            "CALLBOARD_APP_FAILURE_THRESHOLD": "3",
            "CALLBOARD_EVENT_GRACE": "0",  # only the probe may notice
        },
        ready=False,  # not ready until the app answers its probe
    )
    app = await app_factory(python_app(sidecar, "--health-port", str(port), log_dir=tmp_path))
    await sidecar.wait_ready()
    await app.send(op="register", call_id="call-1", session_id="s-1")
    await app.expect("registered", session_id="s-1")
    probes = await metric(sidecar, "app_probes_total")
    await wait_until(lambda: _at_least(sidecar, "app_probes_total", probes + 6), what="six more probes")
    assert await sidecar.session_ids() == ["s-1"]  # a healthy app keeps its sessions

    await app.kill()
    await wait_until(lambda: gone(peer, "call-1", "s-1"), timeout=5, what="the session to be removed")
    ended = await peer.get_ended("call-1", "s-1")
    assert ended is not None and ended.reason == EndReason.APP_UNHEALTHY
    ready = await sidecar.http.get("/readyz")
    assert ready.status_code == 503 and "health" in ready.json()["reason"]
    assert (await sidecar.get("/v1/node"))["app_healthy"] is False

    await app_factory(python_app(sidecar, "--health-port", str(port), log_dir=tmp_path, name="py-2"))
    await sidecar.wait_ready()  # the restarted app is healthy again
    assert (await sidecar.get("/v1/node"))["app_healthy"] is True


async def _at_least(sidecar: SidecarProcess, name: str, value: float) -> bool:
    return await metric(sidecar, name) >= value


async def test_restarted_app_has_the_sessions_of_its_previous_run_removed_at_its_first_call(
    sidecar_factory: SidecarFactory, app_factory: AppFactory, peer: SessionRegistry, tmp_path: Path
) -> None:
    """A container restart is quicker than both watchdogs (the kubelet restarts a killed app
    within a second): the new process's instance id is what tells the sidecar."""
    # Watchdogs that cannot fire during the test: only the instance id may notice.
    sidecar = await sidecar_factory(env={"CALLBOARD_EVENT_GRACE": "600"})
    app = await app_factory(python_app(sidecar, log_dir=tmp_path))
    for session_id in ("s-1", "s-2"):
        await app.send(op="register", call_id="call-1", session_id=session_id)
        await app.expect("registered", session_id=session_id)
    # A session the app did not register (no instance: curl, another language) is not its own.
    assert (await sidecar.http.post("/v1/sessions", json={"call_id": "call-2", "session_id": "x"})).is_success

    await app.kill()
    assert await sidecar.session_ids() == ["s-1", "s-2", "x"]  # nothing noticed the death
    restarted = await app_factory(python_app(sidecar, log_dir=tmp_path, name="py-2"))
    # The sidecar removes the stale sessions concurrently: wait for both, not the first one.
    for session_id in ("s-1", "s-2"):
        await wait_until(
            lambda sid=session_id: gone(peer, "call-1", sid), timeout=10, what=f"{session_id} removed"
        )
    for session_id in ("s-1", "s-2"):
        ended = await peer.get_ended("call-1", session_id)
        assert ended is not None and (ended.reason, ended.node_id) == (EndReason.APP_RESTARTED, "node-a")
    assert await sidecar.session_ids() == ["x"]
    assert await metric(sidecar, "app_restarts_total") == 1
    assert await metric(sidecar, "app_unhealthy_cleanups_total") == 0
    assert (await sidecar.http.get("/readyz")).status_code == 200
    # The new run takes work as usual.
    await restarted.send(op="register", call_id="call-3", session_id="s-3")
    await restarted.expect("registered", session_id="s-3")
    assert await sidecar.session_ids() == ["s-3", "x"]
