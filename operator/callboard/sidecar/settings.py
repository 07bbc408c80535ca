"""Settings of the sidecar, grouped by concern, built from ``CALLBOARD_*`` environment variables.

The sidecar runs beside an agent container in a pod, so it is configured the Kubernetes way:
by environment (with the downward API for the pod's name, namespace and IP). Every setting is
a typed dataclass field whose metadata names its variable and documents it (unit, default and
why); :data:`ENV_VARS` is that list, so ``callboard sidecar --help`` and the README table are
generated from the same place and cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self

from callboard.errors import ConfigurationError, InvalidIdError
from callboard.registry import DEFAULT_KEY_PREFIX, generate_node_id, validate_id

__all__ = [
    "DEFAULT_PORT",
    "ENV_VARS",
    "ApiSettings",
    "AppWatchSettings",
    "DrainSettings",
    "EnvVar",
    "NodeSettings",
    "RegistrySettings",
    "SidecarSettings",
]

#: The sidecar's default port: any free port works, this one is simply unassigned by IANA.
DEFAULT_PORT = 8555


def _env(name: str, help: str) -> dict[str, str]:
    return {"env": name, "help": help}


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """Where the session registry lives and how often this node proves it is alive."""

    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata=_env(
            "CALLBOARD_REDIS_URL",
            "Store URL: redis://, rediss:// (TLS), unix:// or memory:// (one process, for trials).",
        ),
    )
    key_prefix: str = field(
        default=DEFAULT_KEY_PREFIX,
        metadata=_env(
            "CALLBOARD_KEY_PREFIX",
            "Prefix of every key. The default is Vision Agents', so both kinds of node share one Redis.",
        ),
    )
    ttl: float = field(
        default=30.0,
        metadata=_env(
            "CALLBOARD_TTL",
            "Seconds a node or session record lives without a heartbeat: how long a dead pod's "
            "sessions stay listed.",
        ),
    )
    heartbeat_interval: float = field(
        default=10.0,
        metadata=_env(
            "CALLBOARD_HEARTBEAT_INTERVAL",
            "Seconds between heartbeats (node and every session, one round trip). A third of the TTL "
            "survives two lost heartbeats.",
        ),
    )


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """Who this node is, as published in its node record (the operator places sessions by it)."""

    node_id: str = field(
        default="",
        metadata=_env(
            "CALLBOARD_NODE_ID",
            "Node id in the registry. Default: the pod name, else the host name plus a random suffix.",
        ),
    )
    pod_name: str | None = field(
        default=None,
        metadata=_env("CALLBOARD_POD_NAME", "Pod name (downward API: metadata.name)."),
    )
    namespace: str | None = field(
        default=None,
        metadata=_env("CALLBOARD_POD_NAMESPACE", "Pod namespace (downward API: metadata.namespace)."),
    )
    pod_ip: str | None = field(
        default=None,
        metadata=_env("CALLBOARD_POD_IP", "Pod IP (downward API: status.podIP)."),
    )
    pool: str | None = field(
        default=None,
        metadata=_env("CALLBOARD_POOL", "Pool name: which AgentSessions (spec.pool) may land on this pod."),
    )
    capacity: int = field(
        default=10,
        metadata=_env(
            "CALLBOARD_CAPACITY",
            "Maximum concurrent sessions; registrations beyond it get 409. Size it to the pod's CPU.",
        ),
    )
    advertise_url: str | None = field(
        default=None,
        metadata=_env(
            "CALLBOARD_ADVERTISE_URL",
            "Address published in the node record. Default: the listen address unless it is loopback "
            "(a loopback address means nothing to other pods).",
        ),
    )


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The local HTTP API the agent app talks to."""

    listen: str = field(
        default=f"127.0.0.1:{DEFAULT_PORT}",
        metadata=_env(
            "CALLBOARD_LISTEN",
            "host:port of the local API. Loopback by default: only containers of the pod reach it.",
        ),
    )
    replay_buffer: int = field(
        default=1024,
        metadata=_env(
            "CALLBOARD_REPLAY_BUFFER",
            "Events kept for clients that resume with Last-Event-ID. Beyond it a client gets the "
            "current state again instead of the missed events.",
        ),
    )

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]


@dataclass(frozen=True, slots=True)
class AppWatchSettings:
    """How the sidecar notices that the app died, to clean up its sessions before the TTL."""

    health_url: str | None = field(
        default=None,
        metadata=_env(
            "CALLBOARD_APP_HEALTH_URL",
            "The app's health URL (any 2xx is healthy), e.g. http://127.0.0.1:8080/health. Unset: no probe.",
        ),
    )
    health_interval: float = field(
        default=5.0,
        metadata=_env("CALLBOARD_APP_HEALTH_INTERVAL", "Seconds between probes of the app's health URL."),
    )
    health_timeout: float = field(
        default=2.0,
        metadata=_env(
            "CALLBOARD_APP_HEALTH_TIMEOUT", "Seconds one probe may take before it counts as failed."
        ),
    )
    failure_threshold: int = field(
        default=3,
        metadata=_env(
            "CALLBOARD_APP_FAILURE_THRESHOLD",
            "Consecutive failed probes after which the app counts as dead and its sessions are removed "
            "(reason app_unhealthy). 3 rides over one slow garbage collection.",
        ),
    )
    consumer_grace: float = field(
        default=30.0,
        metadata=_env(
            "CALLBOARD_EVENT_GRACE",
            "Seconds the event stream may go without a consumer (while sessions exist) before the "
            "app counts as dead and its sessions are removed (reason app_unhealthy). 0 turns it off.",
        ),
    )


@dataclass(frozen=True, slots=True)
class DrainSettings:
    """What SIGTERM does: mark draining, tell the app, wait for sessions to end, exit."""

    timeout: float = field(
        default=25.0,
        metadata=_env(
            "CALLBOARD_DRAIN_TIMEOUT",
            "Seconds to wait on SIGTERM for live sessions to end. Keep it below the pod's "
            "terminationGracePeriodSeconds (default 30) so the sidecar exits before it is killed.",
        ),
    )


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """Every setting of ``callboard sidecar``; build it with :meth:`from_env` or by hand."""

    registry: RegistrySettings = field(default_factory=RegistrySettings)
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
        groups: dict[str, dict[str, Any]] = {}
        for var in ENV_VARS:
            raw = environ.get(var.name, "").strip()
            if not raw:
                continue
            try:
                value = var.parse(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"{var.name}={raw!r}: {exc}") from exc
            groups.setdefault(var.group, {})[var.attr] = value
        return cls(**{name: _GROUPS[name](**values) for name, values in groups.items()})

    @property
    def advertised_address(self) -> str | None:
        """The address to publish in the node record (None for a loopback listener)."""
        if self.node.advertise_url:
            return self.node.advertise_url
        host = self.api.host
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            if host == "localhost":
                return None
        if host in ("0.0.0.0", "::"):
            if not self.node.pod_ip:
                return None
            host = self.node.pod_ip
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.api.port}"


class EnvVar(NamedTuple):
    """One environment variable: where its value goes and how it is read."""

    name: str
    group: str
    attr: str
    type_name: str
    default: object
    help: str
    parse: Callable[[str], object]


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen address {listen!r} must be host:port")
    host = host.strip("[]")  # [::1]:8555
    port_number = int(port)
    if not 0 < port_number < 65536:
        raise ValueError(f"port {port_number} is out of range")
    return host, port_number


def _parse_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _parser(type_name: str) -> Callable[[str], object]:
    if type_name == "float":
        return _parse_float
    if type_name == "int":
        return int
    return str


#: The settings groups by field name of :class:`SidecarSettings`, in documentation order.
_GROUPS: dict[str, Callable[..., Any]] = {
    "registry": RegistrySettings,
    "node": NodeSettings,
    "api": ApiSettings,
    "app": AppWatchSettings,
    "drain": DrainSettings,
}


def _iter_env_vars() -> Iterator[EnvVar]:
    assert list(_GROUPS) == [f.name for f in dataclasses.fields(SidecarSettings)]
    for group_name, group_type in _GROUPS.items():
        default_group = group_type()
        for f in dataclasses.fields(default_group):
            type_name = str(f.type).split(" ")[0]  # "str | None" -> "str"
            yield EnvVar(
                name=f.metadata["env"],
                group=group_name,
                attr=f.name,
                type_name=type_name,
                default=getattr(default_group, f.name),
                help=f.metadata["help"],
                parse=_parser(type_name),
            )


#: Every variable the sidecar reads, in documentation order.
ENV_VARS: tuple[EnvVar, ...] = tuple(_iter_env_vars())


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
        _split_listen(api.listen)
    except ValueError as exc:
        fail("CALLBOARD_LISTEN", str(exc))
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
