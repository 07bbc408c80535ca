"""The Agent protocol, metrics extraction, and the built-in simulated agent (fake clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from callboard.demo.agent import SimulatedAgent, create_agent, join_call
from callboard.launcher import Agent, AgentLauncher, agent_metrics
from tests.support.fake_agents import FakeAgent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ToDict:
    def to_dict(self) -> Mapping[str, Any]:
        return {"latency_ms": 12.5}


def test_agent_metrics_accepts_mappings_and_to_dict() -> None:
    agent = FakeAgent()
    assert agent_metrics(agent) is None
    agent.metrics = {"tokens": 3}
    assert agent_metrics(agent) == {"tokens": 3}
    agent.metrics = ToDict()
    assert agent_metrics(agent) == {"latency_ms": 12.5}
    agent.metrics = 42
    with pytest.raises(TypeError, match="mapping or have to_dict"):
        agent_metrics(agent)


def test_protocol_is_structural() -> None:
    assert isinstance(FakeAgent(), Agent)
    assert isinstance(SimulatedAgent(), Agent)
    assert not isinstance(object(), Agent)


def test_simulated_agent_reports_time_on_call_and_alone() -> None:
    clock = Clock()
    agent = SimulatedAgent(seed=7, participants=1, may_empty=True, clock=clock)
    assert agent.on_call_for() == 0.0 and agent.idle_for() == 0.0
    agent._joined_at = clock.now  # as run() does when it joins
    clock.now += 10
    assert agent.on_call_for() == 10.0
    while agent.participants:  # everyone leaves, sooner or later
        agent.step()
    left_at = clock.now
    clock.now += 4
    agent.step()
    assert agent.idle_for() >= 4.0 and agent._alone_since == left_at


def test_simulated_agent_talks_and_counts() -> None:
    agent = SimulatedAgent(seed=1, participants=2)
    for _ in range(200):
        agent.step()
    m = agent.metrics
    assert m["turns"] > 10 and m["tokens_out"] > m["turns"] * 19
    assert 100 < m["latency_ms_avg"] < 2000 and m["participants"] >= 1
    assert SimulatedAgent(seed=1, participants=2).metrics["turns"] == 0


async def test_simulated_call_ends_by_itself_and_launcher_runs_it() -> None:
    async with AgentLauncher(create_agent, join_call) as launcher:
        session = await launcher.start_session("call-1", agent_kwargs={"call_duration": 0.05, "tick": 0.01})
        await asyncio.wait_for(session.wait(), 2)
        ended = await launcher.registry.get_ended("call-1", session.id)
        assert ended is not None and ended.reason == "finished"
        assert session.agent.closed and session.agent.call_id == "call-1"


async def test_a_closed_simulated_agent_cannot_join() -> None:
    agent = SimulatedAgent()
    await agent.close()
    with pytest.raises(RuntimeError, match="closed"):
        await join_call(agent, "default", "call-1")


def test_params_are_kept() -> None:
    agent = create_agent(voice="calm", seed=3)
    assert agent.params == {"voice": "calm"}
