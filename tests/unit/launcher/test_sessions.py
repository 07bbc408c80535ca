"""AgentLauncher sessions: start, end, close, limits, construction."""

from __future__ import annotations

import asyncio

import pytest

from callboard import (
    MaxConcurrentSessionsExceeded,
    MaxSessionsPerCallExceeded,
    NodeDrainingError,
    SessionStatus,
)
from callboard.launcher import AgentLauncher, AgentStartError, CloseReason
from callboard.registry import InMemorySessionKVStore, SessionRegistry
from tests.support.fake_agents import AgentFactory, FakeAgent, fake_join
from tests.unit.launcher.conftest import MakeLauncher


def test_maintenance_interval_must_be_well_below_ttl() -> None:
    registry = SessionRegistry(ttl=9.0)
    AgentLauncher(AgentFactory(), fake_join, maintenance_interval=3.0, registry=registry)
    with pytest.raises(ValueError, match=r"at most ttl/3 = 3s"):
        AgentLauncher(AgentFactory(), fake_join, maintenance_interval=3.5, registry=registry)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"agent_idle_timeout": -1},
        {"max_concurrent_sessions": 0},
        {"max_sessions_per_call": 0},
        {"max_session_duration_seconds": 0},
        {"maintenance_interval": 0},
    ],
)
def test_invalid_settings_raise_value_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message is specific; the type is the contract
        AgentLauncher(AgentFactory(), fake_join, **kwargs)  # type: ignore[arg-type]


async def test_default_registry_is_in_memory() -> None:
    launcher = AgentLauncher(AgentFactory(), fake_join)
    assert isinstance(launcher.registry.store, InMemorySessionKVStore)
    async with launcher:
        assert launcher.running and launcher.ready
        session = await launcher.start_session("call-1")
        info = await launcher.get_session_info("call-1", session.id)
        assert info is not None and info.node_id == launcher.node_id
    assert not launcher.running
    assert session.close_reason is CloseReason.STOPPED
    assert session.agent.closed == 1


async def test_start_session_runs_join_call_and_registers(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher()
    session = await launcher.start_session("call-1", "livestream")
    agent = factory.created[0]
    assert session.id == agent.id and session.call_id == "call-1" and session.call_type == "livestream"
    assert session.started_at.tzinfo is not None
    await asyncio.wait_for(agent.joined.wait(), 1)
    assert agent.call == ("livestream", "call-1")
    assert launcher.get_session(session.id) is session
    assert [s.session_id for s in await launcher.registry.get_for_call("call-1")] == [session.id]
    assert not session.finished


async def test_call_that_ends_removes_the_session(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher()
    session = await launcher.start_session("call-1")
    factory.created[0].finish.set()
    await asyncio.wait_for(session.wait(), 1)
    assert session.finished
    assert launcher.get_session(session.id) is None
    assert factory.created[0].closed == 1
    ended = await launcher.registry.get_ended("call-1", session.id)
    assert ended is not None and ended.reason == "finished"
    assert launcher.stats.closed["finished"] == 1


async def test_failing_call_is_logged_and_cleaned(
    make_launcher: MakeLauncher, caplog: pytest.LogCaptureFixture
) -> None:
    launcher, factory = await make_launcher()
    session = await launcher.start_session("call-1")
    factory.created[0].fail_with = RuntimeError("edge went away")
    factory.created[0].finish.set()
    await asyncio.wait_for(session.wait(), 1)
    ended = await launcher.registry.get_ended("call-1", session.id)
    assert ended is not None and ended.reason == "failed"
    assert "edge went away" in caplog.text


async def test_close_session(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher()
    session = await launcher.start_session("call-1")
    assert await launcher.close_session(session.id, wait=True)
    assert session.close_reason is CloseReason.CLOSED
    assert await launcher.registry.get("call-1", session.id) is None
    assert factory.created[0].closed == 1
    assert not await launcher.close_session(session.id)
    assert not await launcher.close_session("no-such-session")


async def test_close_right_after_start_still_cleans_up(make_launcher: MakeLauncher) -> None:
    """The task is cancelled before it ever ran: clean-up must not depend on its body."""
    launcher, _ = await make_launcher()
    session = await launcher.start_session("call-1")
    assert await launcher.close_session(session.id)
    await asyncio.wait_for(session.wait(), 1)
    status = await launcher.registry.session_status("call-1", session.id)
    assert status is SessionStatus.ENDED


async def test_max_concurrent_sessions_counts_starts_in_flight(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher(max_concurrent_sessions=2)
    factory.gate = asyncio.Event()
    first = asyncio.create_task(launcher.start_session("call-1"))
    second = asyncio.create_task(launcher.start_session("call-2"))
    await asyncio.sleep(0)  # both are past the capacity check, waiting in create_agent
    with pytest.raises(MaxConcurrentSessionsExceeded):
        await launcher.start_session("call-3")
    factory.gate.set()
    await asyncio.gather(first, second)
    with pytest.raises(MaxConcurrentSessionsExceeded):
        await launcher.start_session("call-3")
    assert launcher.stats.rejected["max_concurrent"] == 2
    assert launcher.registry.node.capacity == 2


async def test_max_sessions_per_call_counts_every_node(make_launcher: MakeLauncher) -> None:
    a, _ = await make_launcher(node_id="node-a", max_sessions_per_call=2)
    b, factory_b = await make_launcher(node_id="node-b", max_sessions_per_call=2)
    await a.start_session("call-1")
    await b.start_session("call-1")
    with pytest.raises(MaxSessionsPerCallExceeded):
        await b.start_session("call-1")
    assert factory_b.created[-1].closed == 1  # the refused agent never joined, and was closed
    assert factory_b.created[-1].call is None
    await a.start_session("call-2")


async def test_create_agent_failures(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher()
    factory.error = RuntimeError("no GPU")
    with pytest.raises(AgentStartError, match="no GPU"):
        await launcher.start_session("call-1")
    bad = AgentLauncher(lambda: object(), fake_join, registry=SessionRegistry())  # type: ignore[arg-type,misc]
    async with bad:
        with pytest.raises(AgentStartError, match="not an agent"):
            await bad.start_session("call-1")
    assert await launcher.registry.list_sessions() == []


async def test_sync_create_agent_is_accepted() -> None:
    async with AgentLauncher(FakeAgent, fake_join) as launcher:
        session = await launcher.start_session("call-1")
        assert isinstance(session.agent, FakeAgent)


async def test_start_with_chosen_session_id_is_idempotent(make_launcher: MakeLauncher) -> None:
    launcher, factory = await make_launcher()
    first = await launcher.start_session("call-1", session_id="chosen-1", agent_kwargs={"voice": "calm"})
    again = await launcher.start_session("call-1", session_id="chosen-1")
    assert again is first and first.id == "chosen-1"
    assert len(factory.created) == 1 and factory.created[0].params == {"voice": "calm"}


async def test_not_running_and_draining_refuse(make_launcher: MakeLauncher) -> None:
    launcher, _ = await make_launcher(start=False)
    with pytest.raises(RuntimeError, match="not running"):
        await launcher.start_session("call-1")
    await launcher.start()
    await launcher.drain(0)
    assert not launcher.ready
    with pytest.raises(NodeDrainingError):
        await launcher.start_session("call-1")


async def test_start_twice_is_an_error(make_launcher: MakeLauncher) -> None:
    launcher, _ = await make_launcher()
    with pytest.raises(RuntimeError, match="already running"):
        await launcher.start()


async def test_request_close_of_local_session_closes_at_once(make_launcher: MakeLauncher) -> None:
    launcher, _ = await make_launcher()
    session = await launcher.start_session("call-1")
    await launcher.request_close_session("call-1", session.id)
    assert launcher.get_session(session.id) is None
    await asyncio.wait_for(session.wait(), 1)
    assert session.close_reason is CloseReason.CLOSE_REQUESTED
