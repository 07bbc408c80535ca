"""AgentSession: one agent on one call, as this node runs it.

The session's ``task`` runs ``join_call``. When the task ends, for whatever reason, the
launcher closes the agent and removes the session from the registry; :meth:`wait` returns
once that clean-up is done, so "wait" means "the cluster no longer sees it".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic

from callboard.launcher.agent import AgentT
from callboard.registry import EndReason

__all__ = ["AgentSession", "CloseReason"]


CloseReason = EndReason
"""Why a session ended: the registry's :class:`~callboard.registry.EndReason` (one vocabulary
for every runtime), under the name the documented Vision Agents launcher API uses."""


@dataclass(eq=False)
class AgentSession(Generic[AgentT]):
    """A live session of this node (documented Vision Agents shape, plus ``call_type``)."""

    id: str
    """Session id: the agent's id unless a start request chose it."""
    call_id: str
    call_type: str
    agent: AgentT
    started_at: datetime
    """When the session was registered (UTC)."""
    task: asyncio.Task[None]
    """Runs ``join_call``; cancelled to close the session early."""
    close_reason: CloseReason | None = None
    """Set when the launcher decided to close it (see :class:`CloseReason`)."""
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set once the agent is closed and the session left the registry."""

    @property
    def finished(self) -> bool:
        """True once ``join_call`` is over (clean-up may still be running)."""
        return self.task.done()

    async def wait(self) -> None:
        """Wait until the session ended and was cleaned up (never raises the agent's error)."""
        await self.ended.wait()

    def idle_for(self) -> float:
        return self.agent.idle_for()

    def on_call_for(self) -> float:
        return self.agent.on_call_for()
