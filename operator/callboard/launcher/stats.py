"""What a launcher counts: read at scrape time by the node's Prometheus metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from callboard.launcher.maintenance import FixedRateStats

__all__ = ["LauncherStats"]


@dataclass
class LauncherStats:
    """Counters of one launcher (plain numbers: no clock, no I/O)."""

    started: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    """Refused starts by reason: ``max_concurrent``, ``max_per_call``, ``draining``, ``failed``."""
    closed: Counter[str] = field(default_factory=Counter)
    """Ended sessions by :class:`~callboard.launcher.CloseReason`."""
    start_requests: Counter[str] = field(default_factory=Counter)
    """Answers to start requests: ``accepted`` or the rejection reason."""
    maintenance: FixedRateStats = field(default_factory=FixedRateStats)
    heartbeat: FixedRateStats = field(default_factory=FixedRateStats)
    """The heartbeat's own lane (it never waits behind the rest of the maintenance)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Failed maintenance steps and agent calls, by step."""
    registry_ok: bool = True
    """Whether the last heartbeat reached the store."""
    last_heartbeat_at: float | None = None
    """Unix time of the last successful heartbeat."""
