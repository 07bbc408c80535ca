"""Fake agents whose clocks and call the test controls, and a store that fails on demand.

Shared by the unit tier (launcher, node API) and the integration tier (the launcher on a
real Redis): no sleeps, no real call.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from callboard.errors import StoreUnavailableError
from callboard.registry import InMemorySessionKVStore

_ids = itertools.count(1)


class FakeAgent:
    """``idle``/``on_call`` are what the agent reports; ``finish`` ends its call."""

    def __init__(self, agent_id: str | None = None, **params: Any) -> None:
        self.id = agent_id or f"agent-{next(_ids)}"
        self.params = params
        self.idle = 0.0
        self.on_call = 0.0
        self.closed = 0
        self.call: tuple[str, str] | None = None
        self.joined = asyncio.Event()
        self.finish = asyncio.Event()
        self.fail_with: BaseException | None = None
        self.timer_error: Exception | None = None
        self.metrics: Any = None

    async def close(self) -> None:
        self.closed += 1

    def idle_for(self) -> float:
        if self.timer_error is not None:
            raise self.timer_error
        return self.idle

    def on_call_for(self) -> float:
        if self.timer_error is not None:
            raise self.timer_error
        return self.on_call


async def fake_join(agent: FakeAgent, call_type: str, call_id: str) -> None:
    agent.call = (call_type, call_id)
    agent.joined.set()
    await agent.finish.wait()
    if agent.fail_with is not None:
        raise agent.fail_with


class AgentFactory:
    """``create_agent``: records every agent it made; ``gate`` holds creation until set."""

    def __init__(self) -> None:
        self.created: list[FakeAgent] = []
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def __call__(self, **kwargs: Any) -> FakeAgent:
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        agent = FakeAgent(**kwargs)
        self.created.append(agent)
        return agent


class FlakyStore(InMemorySessionKVStore):
    """An in-memory store that can be switched off, as if Redis went away."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailableError("store is down (test)")

    async def set(self, key: str, value: bytes, ttl: float, *, only_if_exists: bool = False) -> None:
        self._check()
        await super().set(key, value, ttl, only_if_exists=only_if_exists)

    async def mset(self, items: list[tuple[str, bytes, float]]) -> None:
        self._check()
        await super().mset(items)

    async def get(self, key: str) -> bytes | None:
        self._check()
        return await super().get(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self._check()
        return await super().mget(keys)

    async def keys(self, prefix: str) -> list[str]:
        self._check()
        return await super().keys(prefix)

    async def delete(self, keys: list[str]) -> None:
        self._check()
        await super().delete(keys)
