"""A simulated voice agent: the built-in agent of ``callboard serve`` and of the demo.

It joins a fake call, takes turns talking and listening at random, sees participants come
and go, and reports the metrics a real agent would (latency, tokens). Nothing leaves the
process, so the whole system runs with no external service.

``create_agent(**params)`` and ``join_call(agent, call_type, call_id)`` are the two
callbacks an :class:`~callboard.launcher.AgentLauncher` takes.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["SimulatedAgent", "create_agent", "join_call"]

#: Seconds between two moves of the simulation: fast enough to look alive in a live table.
DEFAULT_TICK = 0.25
#: Median model latency in ms and its spread (log-normal): a realtime voice model answers
#: in a few hundred milliseconds with a long tail.
LATENCY_MEDIAN_MS = 420.0
LATENCY_SIGMA = 0.35


class SimulatedAgent:
    """An agent that pretends: talks, listens and idles on a call that does not exist.

    ``seed`` makes a run repeatable; ``participants`` is how many others are on the call
    at first (random 1-3 by default); ``call_duration`` ends the call after that many
    seconds (None: until closed); ``may_empty`` lets every participant leave, so the
    launcher's idle timeout can kick in. Other keyword arguments are kept as ``params``.
    """

    def __init__(
        self,
        *,
        agent_id: str | None = None,
        seed: int | None = None,
        participants: int | None = None,
        call_duration: float | None = None,
        may_empty: bool = False,
        tick: float = DEFAULT_TICK,
        clock: Callable[[], float] = time.monotonic,
        **params: Any,
    ) -> None:
        self.id = agent_id or str(uuid.uuid4())
        self.params = params
        self._rng = random.Random(seed)
        self._clock = clock
        self.tick = tick
        self.call_duration = call_duration
        self.may_empty = may_empty
        self.participants = participants if participants is not None else self._rng.randint(1, 3)
        self.call_id: str | None = None
        self.call_type: str | None = None
        self.closed = False
        self._joined_at: float | None = None
        self._alone_since: float | None = None
        self._turns = 0
        self._tokens_in = 0
        self._tokens_out = 0
        self._latency_last = 0.0
        self._latency_sum = 0.0

    async def close(self) -> None:
        self.closed = True

    def idle_for(self) -> float:
        if self._alone_since is None:
            return 0.0
        return self._clock() - self._alone_since

    def on_call_for(self) -> float:
        if self._joined_at is None:
            return 0.0
        return self._clock() - self._joined_at

    @property
    def metrics(self) -> dict[str, float | int]:
        return {
            "turns": self._turns,
            "tokens_in": self._tokens_in,
            "tokens_out": self._tokens_out,
            "latency_ms_last": round(self._latency_last, 1),
            "latency_ms_avg": round(self._latency_sum / self._turns, 1) if self._turns else 0.0,
            "participants": self.participants,
        }

    def step(self) -> None:
        """One move: maybe someone joins or leaves, maybe a turn is taken."""
        roll = self._rng.random()
        if roll < 0.05 and (self.participants > 1 or self.may_empty):
            self.participants -= 1
        elif roll < 0.08:
            self.participants += 1
        now = self._clock()
        if self.participants == 0:
            self._alone_since = self._alone_since if self._alone_since is not None else now
            return
        self._alone_since = None
        if self._rng.random() < 0.4:  # somebody spoke and the agent answered
            self._turns += 1
            self._tokens_in += self._rng.randint(8, 60)
            self._tokens_out += self._rng.randint(20, 160)
            self._latency_last = self._rng.lognormvariate(0.0, LATENCY_SIGMA) * LATENCY_MEDIAN_MS
            self._latency_sum += self._latency_last

    async def run(self, call_type: str, call_id: str) -> None:
        """Be on the call until it ends (``call_duration``) or the task is cancelled."""
        if self.closed:
            raise RuntimeError(f"agent {self.id} is closed and cannot join a call")
        self.call_type, self.call_id = call_type, call_id
        self._joined_at = self._clock()
        while not self.closed:
            if self.call_duration is not None and self.on_call_for() >= self.call_duration:
                return
            await asyncio.sleep(self.tick)
            self.step()


def create_agent(**params: Any) -> SimulatedAgent:
    """The ``create_agent`` callback: start-request params become constructor arguments."""
    return SimulatedAgent(**params)


async def join_call(agent: SimulatedAgent, call_type: str, call_id: str) -> None:
    """The ``join_call`` callback: the session lasts as long as this coroutine."""
    await agent.run(call_type, call_id)
