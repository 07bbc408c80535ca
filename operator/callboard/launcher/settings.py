"""Typed settings of an :class:`~callboard.launcher.AgentLauncher`, for callers that build
one from configuration (the CLI) rather than from keyword arguments."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from callboard.config import at_least, parse_float, parse_int, setting

__all__ = ["LauncherSettings"]


@dataclass(frozen=True, slots=True)
class LauncherSettings:
    """The launcher's limits and pacing; defaults are the documented Vision Agents ones.

    Each field is also a setting of ``callboard serve`` (:func:`callboard.config.setting`).
    """

    agent_idle_timeout: float = setting(
        60.0,
        env="CALLBOARD_IDLE_TIMEOUT",
        help="Seconds alone on a call before the agent leaves; 0 never.",
        parse=at_least(parse_float, 0),
    )
    """Seconds an agent may stay alone on its call before the session closes; 0 disables.
    A minute lets a participant who dropped reconnect without losing the agent."""
    max_concurrent_sessions: int | None = setting(
        None,
        env=("CALLBOARD_MAX_CONCURRENT_SESSIONS", "CALLBOARD_CAPACITY"),
        help="Sessions this node runs at most.",
        parse=at_least(parse_int, 1),
        default_text="unlimited",
    )
    """Sessions this node runs at most; None is unlimited. Size it to CPU/memory per agent.
    Published as the node's capacity, so the operator places no more than this here."""
    max_sessions_per_call: int | None = setting(
        None,
        env="CALLBOARD_MAX_SESSIONS_PER_CALL",
        help="Sessions one call may have on all nodes.",
        parse=at_least(parse_int, 1),
        default_text="unlimited",
    )
    """Sessions one call may have on all nodes together; None is unlimited. Atomic in Redis."""
    max_session_duration_seconds: float | None = setting(
        None,
        env="CALLBOARD_MAX_SESSION_DURATION",
        help="Seconds after which any session is closed.",
        parse=at_least(parse_float, 0, exclusive=True),
        default_text="unlimited",
    )
    """Seconds after which a session is closed whatever it does; None is unlimited."""
    maintenance_interval: float = setting(
        5.0,
        env="CALLBOARD_MAINTENANCE_INTERVAL",
        help="Seconds between heartbeats/idle checks; at most TTL/3.",
    )
    """Seconds between maintenance cycles (heartbeat, polled closes, idle checks). Must be
    at most a third of the registry TTL so two failed heartbeats in a row lose nothing."""

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of ``AgentLauncher(...)``."""
        return dataclasses.asdict(self)
