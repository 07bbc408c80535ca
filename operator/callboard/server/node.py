"""What ``callboard serve`` runs: :class:`ServeSettings` and the launcher they describe.

The settings are the single source of ``callboard serve``'s defaults, ``CALLBOARD_*``
variables, flags and help (:mod:`callboard.config`); :func:`build_launcher` turns them into
an :class:`~callboard.launcher.AgentLauncher` with its registry and store. The CLI only adds
signals and the process exit code.
"""

from __future__ import annotations

import importlib
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from callboard import __version__
from callboard.config import at_least, parse_float, parse_int, setting
from callboard.errors import ConfigurationError
from callboard.launcher import AgentLauncher, LauncherSettings, ShutdownBudget
from callboard.registry import DEFAULT_KEY_PREFIX, SessionRegistry, store_from_url
from callboard.server.settings import ServerSettings

__all__ = ["BUILTIN_AGENT", "ServeSettings", "build_launcher", "load_callable", "redact_url"]

#: ``create_agent`` of the built-in simulated agent: ``callboard serve`` runs without any code.
BUILTIN_AGENT = "callboard.demo.agent:create_agent"


def _port(raw: str) -> int:
    value = parse_int(raw)
    if not 0 <= value < 65536:
        raise ValueError("must be a TCP port, 0-65535")
    return value


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything ``callboard serve`` runs with, grouped by concern."""

    host: str = setting("127.0.0.1", env="CALLBOARD_HOST", help="Interface to listen on.")
    port: int = setting(8080, env="CALLBOARD_PORT", help="HTTP port of the node API.", parse=_port)
    redis_url: str | None = setting(
        None,
        env="CALLBOARD_REDIS_URL",
        help=(
            "Registry: redis://, rediss://, unix://, redis+sentinel:// or memory:// "
            "(the default; one node only)."
        ),
        default_text="memory",
    )
    """Registry store URL; None is memory: fine for one node, invisible to any other."""
    key_prefix: str = setting(
        DEFAULT_KEY_PREFIX,
        env="CALLBOARD_KEY_PREFIX",
        help="Prefix of every registry key (shared with Vision Agents nodes).",
    )
    """The documented Vision Agents prefix, so a node shares its view with theirs."""
    node_id: str | None = setting(
        None, env="CALLBOARD_NODE_ID", help="Node id in the registry.", default_text="host name + suffix"
    )
    """This node's id; None builds one from the host name (the pod name in Kubernetes)."""
    ttl: float = setting(
        30.0, env="CALLBOARD_TTL", help="Seconds a record outlives its last heartbeat.", parse=parse_float
    )
    """How long a dead node's sessions linger."""
    agent: str = setting(
        BUILTIN_AGENT,
        env="CALLBOARD_AGENT",
        help="create_agent(**kwargs); the default is the built-in simulated agent.",
        metavar="MODULE:FUNCTION",
    )
    join_call: str | None = setting(
        None,
        env="CALLBOARD_JOIN_CALL",
        help="join_call(agent, call_type, call_id).",
        metavar="MODULE:FUNCTION",
        default_text="join_call in the --agent module",
    )
    advertise_url: str | None = setting(
        None,
        env="CALLBOARD_ADVERTISE_URL",
        help="URL published for this node (the operator reaches it there).",
        default_text="http://HOST:PORT, the pod IP or host name for 0.0.0.0",
    )
    pod_ip: str | None = setting(None, env="CALLBOARD_POD_IP", help="Pod IP, for the default advertise URL.")
    pool: str | None = setting(None, env="CALLBOARD_POOL", help="Pool of this node (AgentSession spec.pool).")
    pod_name: str | None = setting(
        None, env="CALLBOARD_POD_NAME", help="Pod name, published in the node record."
    )
    namespace: str | None = setting(
        None,
        env="CALLBOARD_POD_NAMESPACE",
        flag="namespace",
        help="Pod namespace, published in the node record.",
    )
    grace_period: float = setting(
        30.0,
        env="CALLBOARD_GRACE_PERIOD",
        help="The pod's terminationGracePeriodSeconds: drain, closes and stop fit in it.",
        parse=at_least(parse_float, 0),
    )
    """Set it to the pod's ``terminationGracePeriodSeconds``. Closing what the drain leaves,
    stopping and exiting take 10 s of it (:class:`~callboard.launcher.ShutdownBudget`); the
    drain gets the rest unless ``drain_timeout`` says less. Checked when the node starts."""
    drain_timeout: float | None = setting(
        None,
        env="CALLBOARD_DRAIN_TIMEOUT",
        help="Seconds sessions get to end on SIGTERM; at most the grace period minus 10.",
        parse=at_least(parse_float, 0),
        default_text="grace period - 10 (20)",
    )
    """What the drain may take; more than the grace period leaves is a configuration error."""
    access_log: bool = setting(False, env="CALLBOARD_ACCESS_LOG", help="Log every HTTP request.")
    launcher: LauncherSettings = field(default_factory=LauncherSettings)
    server: ServerSettings = field(default_factory=ServerSettings)

    def __post_init__(self) -> None:
        self.shutdown.check_drain(self.drain)  # fails at start, not when the pod is killed

    @property
    def shutdown(self) -> ShutdownBudget:
        """The shutdown's budgets within ``grace_period``."""
        return ShutdownBudget(grace_period=self.grace_period)

    @property
    def drain(self) -> float:
        """Seconds the drain waits: ``drain_timeout``, else all the grace period leaves."""
        return self.drain_timeout if self.drain_timeout is not None else self.shutdown.drain


def load_callable(spec: str, what: str) -> Any:
    """Import ``module:function`` and return the function (``ConfigurationError`` if not)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"{what} must be given as module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for {what}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigurationError(f"{module_name!r} has no {attr!r} (for {what})")
    if not callable(target):
        raise ConfigurationError(f"{spec} is not callable (for {what})")
    return target


def redact_url(url: str | None) -> str:
    """The URL without its password, for logs (Sentinel URLs name several hosts)."""
    if not url:
        return "memory://"
    parts = urlsplit(url)
    userinfo, sep, hosts = parts.netloc.rpartition("@")
    if not sep or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hosts}"))


def _advertise(settings: ServeSettings) -> str:
    if settings.advertise_url:
        return settings.advertise_url
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = settings.pod_ip or socket.gethostname()
    return f"http://{host}:{settings.port}"


def build_launcher(settings: ServeSettings) -> AgentLauncher[Any]:
    """The launcher, its registry and store, as the settings describe them."""
    create_agent = load_callable(settings.agent, "--agent")
    join_spec = settings.join_call or f"{settings.agent.partition(':')[0]}:join_call"
    join_call = load_callable(join_spec, "--join-call")
    registry = SessionRegistry(
        store_from_url(settings.redis_url, key_prefix=settings.key_prefix),
        node_id=settings.node_id,
        ttl=settings.ttl,
    )
    registry.set_node_info(
        address=_advertise(settings),
        capacity=settings.launcher.max_concurrent_sessions,
        pool=settings.pool,
        pod_name=settings.pod_name,
        namespace=settings.namespace,
        version=__version__,
    )
    launcher = AgentLauncher.from_settings(create_agent, join_call, settings.launcher, registry=registry)
    launcher.shutdown = settings.shutdown
    return launcher
