"""What the sidecar reports about itself: counters for Prometheus, views for the local API."""

from __future__ import annotations

from dataclasses import dataclass, field

from callboard.registry import SessionInfo

__all__ = ["NodeStatus", "SessionView", "SidecarStats"]


@dataclass(slots=True)
class SidecarStats:
    """Counters since start, exported by :class:`~callboard.sidecar.metrics.SidecarCollector`."""

    registered: int = 0
    restored: int = 0
    ended: dict[str, int] = field(default_factory=dict)
    """By who ended the session: ``app``, ``app_unhealthy``, ``drain_timeout`` (EndReason)."""
    refused: dict[str, int] = field(default_factory=dict)
    """Registrations refused, by reason: ``capacity``, ``draining``, ``call_limit`` (StartRejection)."""
    events: dict[str, int] = field(default_factory=dict)
    heartbeats: int = 0
    heartbeat_failures: int = 0
    app_probes: int = 0
    app_probe_failures: int = 0
    app_unhealthy_cleanups: int = 0
    """Times the sessions of an app that looked dead were removed (probe or empty stream)."""
    app_restarts: int = 0
    """Times a new app instance replaced the previous one (``Callboard-App-Instance``)."""

    @staticmethod
    def bump(counter: dict[str, int], key: str, n: int = 1) -> None:
        counter[key] = counter.get(key, 0) + n


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session of this node as the local API shows it."""

    info: SessionInfo
    close_requested: bool


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """This node as the local API shows it."""

    node_id: str
    pod_name: str | None
    namespace: str | None
    pool: str | None
    capacity: int
    active: int
    draining: bool
    drain_deadline: float | None
    connected: bool
    last_heartbeat_at: float | None
    app_healthy: bool
    event_consumers: int
    last_event_id: int
    pending_start_requests: int
    version: str
