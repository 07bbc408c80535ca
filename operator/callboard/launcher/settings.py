"""Typed settings of an :class:`~callboard.launcher.AgentLauncher`, for callers that build
one from configuration (the CLI) rather than from keyword arguments."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["LauncherSettings"]


@dataclass(frozen=True, slots=True)
class LauncherSettings:
    """The launcher's limits and pacing; defaults are the documented Vision Agents ones."""

    agent_idle_timeout: float = 60.0
    """Seconds an agent may stay alone on its call before the session closes; 0 disables.
    A minute lets a participant who dropped reconnect without losing the agent."""
    max_concurrent_sessions: int | None = None
    """Sessions this node runs at most; None is unlimited. Size it to CPU/memory per agent.
    Published as the node's capacity, so the operator places no more than this here."""
    max_sessions_per_call: int | None = None
    """Sessions one call may have on all nodes together; None is unlimited. Atomic in Redis."""
    max_session_duration_seconds: float | None = None
    """Seconds after which a session is closed whatever it does; None is unlimited."""
    maintenance_interval: float = 5.0
    """Seconds between maintenance cycles (heartbeat, polled closes, idle checks). Must be
    at most a third of the registry TTL so two failed heartbeats in a row lose nothing."""

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of ``AgentLauncher(...)``."""
        return dataclasses.asdict(self)
