"""Settings of the sidecar, grouped by concern, built from ``CALLBOARD_*`` environment variables.

The sidecar runs beside an agent container in a pod, so it is configured the Kubernetes way:
by environment (with the downward API for the pod's name, namespace and IP). Every setting is
a typed dataclass field declared with :func:`callboard.config.setting`, which names its variable
and documents it (unit, default and why); :func:`callboard.config.options` lists them, so
``callboard sidecar --help`` and the README table are generated from the same place and cannot
drift from the code.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

from callboard._http import DEFAULT_MAX_BODY_BYTES
from callboard.config import build, from_environ, read_token, setting
from callboard.errors import ConfigurationError, InvalidIdError
from callboard.launcher.shutdown import ShutdownBudget
from callboard.registry import DEFAULT_KEY_PREFIX, generate_node_id, validate_id

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_PROBE_PORT",
    "ApiSettings",
    "AppWatchSettings",
    "DrainSettings",
    "NodeSettings",
    "SidecarRegistrySettings",
    "SidecarSettings",
]

#: The sidecar's default port: any free port works, this one is simply unassigned by IANA.
DEFAULT_PORT = 8555
#: The probe and metrics port: the next one, also unassigned.
DEFAULT_PROBE_PORT = 8556


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_probe_listen(raw: str) -> str | None:
    return None if raw.strip().lower() in ("off", "none", "0") else raw.strip()


@dataclass(frozen=True, slots=True)
class SidecarRegistrySettings:
    """Where the session registry lives and how often this node proves it is alive."""

    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        env="CALLBOARD_REDIS_URL",
        help=(
            "Store URL: redis://, rediss:// (TLS), unix://, redis+sentinel:// or memory:// "
            "(one process, for trials)."
        ),
    )
    key_prefix: str = setting(
        DEFAULT_KEY_PREFIX,
        env="CALLBOARD_KEY_PREFIX",
        help=("Prefix of every key. The default is Vision Agents', so both kinds of node share one Redis."),
    )
    ttl: float = setting(
        30.0,
        env="CALLBOARD_TTL",
        help=(
            "Seconds a node or session record lives without a heartbeat: how long a dead pod's "
            "sessions stay listed."
        ),
    )
    heartbeat_interval: float = setting(
        10.0,
        env="CALLBOARD_HEARTBEAT_INTERVAL",
        help=(
            "Seconds between heartbeats (node and every session, one round trip). A third of the TTL "
            "survives two lost heartbeats."
        ),
    )


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """Who this node is, as published in its node record (the operator places sessions by it)."""

    node_id: str = setting(
        "",
        env="CALLBOARD_NODE_ID",
        default_text="the pod name",
        help=("Node id in the registry. Default: the pod name, else the host name plus a random suffix."),
    )
    pod_name: str | None = setting(
        None,
        env="CALLBOARD_POD_NAME",
        help="Pod name (downward API: metadata.name).",
    )
    namespace: str | None = setting(
        None,
        env="CALLBOARD_POD_NAMESPACE",
        help="Pod namespace (downward API: metadata.namespace).",
    )
    pod_ip: str | None = setting(
        None,
        env="CALLBOARD_POD_IP",
        help="Pod IP (downward API: status.podIP), for logs; never published.",
    )
    pool: str | None = setting(
        None,
        env="CALLBOARD_POOL",
        help="Pool name: which AgentSessions (spec.pool) may land on this pod.",
    )
    capacity: int = setting(
        10,
        env="CALLBOARD_CAPACITY",
        help=("Maximum concurrent sessions; registrations beyond it get 409. Size it to the pod's CPU."),
    )
    advertise_url: str | None = setting(
        None,
        env="CALLBOARD_ADVERTISE_URL",
        help=(
            "Address published in the node record, for an app that serves its own API there. "
            "Never the sidecar's session API, which is for its pod only."
        ),
    )


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The local HTTP API the agent app talks to."""

    listen: str = setting(
        f"127.0.0.1:{DEFAULT_PORT}",
        env="CALLBOARD_LISTEN",
        help=(
            "host:port of the session API. Loopback only (127.0.0.1, ::1, localhost): only "
            "containers of the pod reach it; any other address is refused."
        ),
    )
    probe_listen: str | None = setting(
        f"0.0.0.0:{DEFAULT_PROBE_PORT}",
        env="CALLBOARD_PROBE_LISTEN",
        parse=_parse_probe_listen,
        help=(
            "host:port of /healthz, /readyz and /metrics (read-only, counts only: safe to expose "
            "to the kubelet and Prometheus); off: none."
        ),
    )
    token: str | None = setting(
        None,
        env="CALLBOARD_API_TOKEN",
        flag="api-token",
        default_text="off",
        help="Bearer token the session API requires (probes never need it).",
    )
    token_file: str | None = setting(
        None,
        env="CALLBOARD_API_TOKEN_FILE",
        flag="api-token-file",
        help="File holding that token (a mounted Secret); read at start.",
    )
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted (422 beyond): registrations and metrics are small."""
    replay_buffer: int = setting(
        1024,
        env="CALLBOARD_REPLAY_BUFFER",
        help=(
            "Events kept for clients that resume with Last-Event-ID. Beyond it a client gets the "
            "current state again instead of the missed events."
        ),
    )

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]

    @property
    def bearer_token(self) -> str | None:
        """The token the session API requires, from ``token`` or ``token_file``; None: none."""
        return read_token(self.token, self.token_file, "CALLBOARD_API_TOKEN")


@dataclass(frozen=True, slots=True)
class AppWatchSettings:
    """How the sidecar notices that the app died, to clean up its sessions before the TTL."""

    health_url: str | None = setting(
        None,
        env="CALLBOARD_APP_HEALTH_URL",
        help=(
            "The app's health URL (any 2xx is healthy), e.g. http://127.0.0.1:8080/health. Unset: no probe."
        ),
    )
    health_interval: float = setting(
        5.0,
        env="CALLBOARD_APP_HEALTH_INTERVAL",
        help="Seconds between probes of the app's health URL.",
    )
    health_timeout: float = setting(
        2.0,
        env="CALLBOARD_APP_HEALTH_TIMEOUT",
        help=("Seconds one probe may take before it counts as failed."),
    )
    failure_threshold: int = setting(
        3,
        env="CALLBOARD_APP_FAILURE_THRESHOLD",
        help=(
            "Consecutive failed probes after which the app counts as dead and its sessions are removed "
            "(reason app_unhealthy). 3 rides over one slow garbage collection."
        ),
    )
    consumer_grace: float = setting(
        30.0,
        env="CALLBOARD_EVENT_GRACE",
        help=(
            "Seconds the event stream may go without a consumer (while sessions exist) before the "
            "app counts as dead and its sessions are removed (reason app_unhealthy). 0 turns it off."
        ),
    )


@dataclass(frozen=True, slots=True)
class DrainSettings:
    """What SIGTERM does: mark draining, tell the app, wait for sessions to end, exit."""

    timeout: float = setting(
        20.0,
        env="CALLBOARD_DRAIN_TIMEOUT",
        help=(
            "Seconds to wait on SIGTERM for live sessions to end. At most the grace period minus "
            "10 (closing what is left, stopping, exiting), checked at start."
        ),
    )
    grace_period: float = setting(
        30.0,
        env="CALLBOARD_GRACE_PERIOD",
        help=(
            "The pod's terminationGracePeriodSeconds: the drain, removing the sessions left and "
            "stopping fit in it, so the sidecar deregisters before it is killed."
        ),
    )

    @property
    def shutdown(self) -> ShutdownBudget:
        """The shutdown's budgets within the grace period."""
        return ShutdownBudget(grace_period=self.grace_period)


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """Every setting of ``callboard sidecar``; build it with :meth:`from_env` or by hand."""

    registry: SidecarRegistrySettings = field(default_factory=SidecarRegistrySettings)
    node: NodeSettings = field(default_factory=NodeSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    app: AppWatchSettings = field(default_factory=AppWatchSettings)
    drain: DrainSettings = field(default_factory=DrainSettings)

    def __post_init__(self) -> None:
        if not self.node.node_id:
            node_id = self.node.pod_name or generate_node_id()
            object.__setattr__(self, "node", dataclasses.replace(self.node, node_id=node_id))
        _validate(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        """Settings from ``CALLBOARD_*`` variables in ``environ``; unset or empty ones keep defaults.

        Raises :class:`~callboard.errors.ConfigurationError` naming the variable at fault.
        """
        return build(cls, from_environ(cls, environ))

    @property
    def advertised_address(self) -> str | None:
        """The address to publish in the node record: only one given explicitly.

        The session API is never published (G11): it listens on loopback, and the node record
        is readable by every client of the registry.
        """
        return self.node.advertise_url or None


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen address {listen!r} must be host:port")
    host = host.strip("[]")  # [::1]:8555
    port_number = int(port)
    if not 0 < port_number < 65536:
        raise ValueError(f"port {port_number} is out of range")
    return host, port_number


def _validate(settings: SidecarSettings) -> None:
    reg, node, api, app = settings.registry, settings.node, settings.api, settings.app

    def fail(var: str, problem: str) -> None:
        raise ConfigurationError(f"{var}: {problem}")

    if reg.ttl <= 0:
        fail("CALLBOARD_TTL", "must be > 0")
    if not 0 < reg.heartbeat_interval < reg.ttl:
        fail("CALLBOARD_HEARTBEAT_INTERVAL", f"must be > 0 and below the TTL ({reg.ttl}s)")
    try:
        validate_id(node.node_id, "node_id")
    except InvalidIdError as exc:
        fail("CALLBOARD_NODE_ID", str(exc))
    if node.capacity < 1:
        fail("CALLBOARD_CAPACITY", "must be >= 1")
    try:
        host, _ = _split_listen(api.listen)
    except ValueError as exc:
        fail("CALLBOARD_LISTEN", str(exc))
    if not _is_loopback(host):
        fail(
            "CALLBOARD_LISTEN",
            f"{api.listen} is not a loopback address: the session API serves only its own pod "
            "(use 127.0.0.1:PORT); probes and /metrics have their own CALLBOARD_PROBE_LISTEN",
        )
    if api.probe_listen is not None:
        try:
            probe_host, probe_port = _split_listen(api.probe_listen)
        except ValueError as exc:
            fail("CALLBOARD_PROBE_LISTEN", str(exc))
        if probe_port == api.port and (probe_host == host or not _is_loopback(probe_host)):
            fail("CALLBOARD_PROBE_LISTEN", f"port {probe_port} is the session API's (CALLBOARD_LISTEN)")
    if api.token is not None and api.token_file is not None:
        fail("CALLBOARD_API_TOKEN", "set either it or CALLBOARD_API_TOKEN_FILE, not both")
    api.bearer_token  # noqa: B018 - reads the file now, so a missing one is a start-up error
    if api.replay_buffer < 1:
        fail("CALLBOARD_REPLAY_BUFFER", "must be >= 1")
    if app.health_url is not None and not app.health_url.startswith(("http://", "https://")):
        fail("CALLBOARD_APP_HEALTH_URL", "must be an http:// or https:// URL")
    if app.health_interval <= 0:
        fail("CALLBOARD_APP_HEALTH_INTERVAL", "must be > 0")
    if app.health_timeout <= 0:
        fail("CALLBOARD_APP_HEALTH_TIMEOUT", "must be > 0")
    if app.failure_threshold < 1:
        fail("CALLBOARD_APP_FAILURE_THRESHOLD", "must be >= 1")
    if app.consumer_grace < 0:
        fail("CALLBOARD_EVENT_GRACE", "must be >= 0 (0 turns it off)")
    if settings.drain.timeout < 0:
        fail("CALLBOARD_DRAIN_TIMEOUT", "must be >= 0")
    try:
        settings.drain.shutdown.check_drain(settings.drain.timeout)
    except ConfigurationError as exc:
        fail("CALLBOARD_DRAIN_TIMEOUT", str(exc))
