"""Start requests sent through the registry (the operator's way in), and draining."""

from __future__ import annotations

import asyncio

from callboard.launcher import CloseReason, StartRejection
from callboard.registry import SessionRegistry, StartClaim, StartRequest, StartResult
from tests.support.dict_store import DictStore
from tests.unit.launcher.conftest import MakeLauncher


async def wait_result(operator: SessionRegistry, request_id: str) -> StartResult:
    """The node's answer; it lands in the store, so the operator polls it (as it will)."""
    for _ in range(400):
        result = await operator.get_start_result(request_id)
        if result is not None:
            return result
        await asyncio.sleep(0.005)
    raise AssertionError(f"no answer to start request {request_id} within 2 s")


async def test_start_request_is_accepted_with_the_chosen_id(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher(node_id="node-a")
    operator = SessionRegistry(launcher.registry.store, node_id="operator")
    request = await operator.request_start(
        "node-a", "call-1", session_id="ags-123", call_type="livestream", params={"voice": "calm"}
    )
    result = await wait_result(operator, request.request_id)
    assert result.accepted and result.session_id == "ags-123" and result.node_id == "node-a"
    session = launcher.get_session("ags-123")
    assert session is not None and session.call_type == "livestream"
    assert factory.created[0].params == {"voice": "calm"}
    info = await operator.get("call-1", "ags-123")
    assert info is not None and info.node_id == "node-a"
    assert await operator.pending_start_requests() == []
    assert launcher.stats.start_requests["accepted"] == 1


async def test_start_request_sent_before_the_node_listened_is_answered(make_launcher: MakeLauncher) -> None:
    launcher, _ = await make_launcher(node_id="node-a", start=False)
    operator = SessionRegistry(launcher.registry.store, node_id="operator")
    request = await operator.request_start("node-a", "call-1", session_id="early-1")
    await launcher.start()
    result = await wait_result(operator, request.request_id)
    assert result.accepted and launcher.get_session("early-1") is not None


async def test_start_requests_are_polled_without_push(make_launcher: MakeLauncher) -> None:
    store = DictStore()
    launcher, _ = await make_launcher(registry=SessionRegistry(store, node_id="node-a"))
    operator = SessionRegistry(store, node_id="operator")
    request = await operator.request_start("node-a", "call-1", session_id="polled-1")
    await launcher.maintenance_cycle()
    result = await wait_result(operator, request.request_id)
    assert result.accepted and launcher.get_session("polled-1") is not None


async def test_rejections_say_why(make_launcher: MakeLauncher) -> None:
    full, _ = await make_launcher(node_id="node-full", max_concurrent_sessions=1)
    limited, _ = await make_launcher(node_id="node-limited", max_sessions_per_call=1)
    draining, _ = await make_launcher(node_id="node-draining")
    await full.start_session("call-0")
    await limited.start_session("call-1")
    await draining.drain(0)
    operator = SessionRegistry(full.registry.store, node_id="operator")
    cases = [
        ("node-full", "call-9", StartRejection.AT_CAPACITY),
        ("node-limited", "call-1", StartRejection.CALL_LIMIT),
        ("node-draining", "call-9", StartRejection.DRAINING),
    ]
    for node, call, reason in cases:
        request = await operator.request_start(node, call)
        result = await wait_result(operator, request.request_id)
        assert not result.accepted and result.reason == reason and result.session_id is None
        assert await operator.get(call, request.session_id) is None


async def test_drain_waits_for_sessions_then_closes_the_rest(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher(node_id="node-a")
    ends = await launcher.start_session("call-1")
    stays = await launcher.start_session("call-2")
    ending_agent = factory.created[0]

    async def end_soon() -> None:
        await asyncio.sleep(0.01)
        ending_agent.finish.set()

    ender = asyncio.create_task(end_soon())
    forced = await launcher.drain(timeout=0.2)
    await ender
    assert forced == 1
    assert ends.close_reason is None and stays.close_reason is CloseReason.DRAIN
    assert launcher.sessions == []
    assert launcher.registry.node.draining
    node = await launcher.registry.get_node("node-a")
    assert node is not None and node.draining and node.free_slots == 0
    ended = await launcher.registry.get_ended("call-1", ends.id)
    assert ended is not None and ended.reason == "finished"


async def test_drain_with_no_sessions_returns_at_once(make_launcher: MakeLauncher) -> None:
    launcher, _ = await make_launcher()
    assert await asyncio.wait_for(launcher.drain(timeout=60), 1) == 0


async def test_g7_a_request_withdrawn_while_the_agent_is_created_is_never_started(
    make_launcher: MakeLauncher,
) -> None:
    launcher, factory = await make_launcher(node_id="node-a")
    factory.gate = asyncio.Event()
    operator = SessionRegistry(launcher.registry.store, node_id="operator")
    request = await operator.request_start("node-a", "call-1", session_id="late-1")
    await _until_claimed(launcher, operator, request)
    assert await operator.withdraw_start(request) is StartClaim.WITHDRAWN  # the start timed out
    factory.gate.set()
    for _ in range(400):
        if launcher.stats.start_requests["withdrawn"]:
            break
        await asyncio.sleep(0.005)
    assert launcher.stats.start_requests["withdrawn"] == 1
    assert launcher.get_session("late-1") is None and await operator.get("call-1", "late-1") is None
    assert [agent.closed for agent in factory.created] == [1]
    assert await operator.get_start_result(request.request_id) is None  # a withdrawn request gets no answer


async def test_g7_an_expired_request_is_dropped_unanswered(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher(node_id="node-a", start=False)
    operator = SessionRegistry(launcher.registry.store, node_id="operator")
    request = await operator.request_start("node-a", "call-1", session_id="old-1", expires_in=0.05)
    for _ in range(400):  # until the store dropped it
        if not await launcher.registry.pending_start_requests():
            break
        await asyncio.sleep(0.005)
    assert await launcher.registry.claim_start(request) is StartClaim.EXPIRED
    await launcher.start()
    await launcher.maintenance_cycle()
    assert launcher.get_session("old-1") is None and factory.created == []
    assert await operator.get_start_result(request.request_id) is None


async def _until_claimed(launcher: object, operator: SessionRegistry, request: StartRequest) -> None:
    """Until some node claimed ``request`` (read from the documented claim key)."""
    for _ in range(400):
        if await operator.store.get(f"start_claims/{request.request_id}") is not None:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the launcher never claimed the request")
