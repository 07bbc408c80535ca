"""A bench agent that takes a second to be ready, like a real agent that connects to a call.

The launcher registers a session after ``create_agent`` returns and before ``join_call``
runs, so the delay goes into ``create_agent``: the node confirms a start request (its
session record appears) :data:`CONFIRM_DELAY` seconds after it claimed it. The operator
bench's slow row uses it (``CALLBOARD_AGENT=bench.slow_agent:create_agent``) to show
whether waiting for a node's confirmation holds placement workers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from callboard.demo.agent import SimulatedAgent, join_call

__all__ = ["CONFIRM_DELAY", "create_agent", "join_call"]

#: Seconds between a start request's claim and the session's registration.
CONFIRM_DELAY = 1.0


async def create_agent(**params: Any) -> SimulatedAgent:
    """The built-in simulated agent, :data:`CONFIRM_DELAY` seconds later."""
    await asyncio.sleep(CONFIRM_DELAY)
    return SimulatedAgent(**params)
