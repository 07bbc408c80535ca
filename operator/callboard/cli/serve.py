"""``callboard serve``: one node, an AgentLauncher behind the node HTTP API.

Flags map into typed settings (:class:`~callboard.launcher.LauncherSettings`,
:class:`~callboard.server.ServerSettings`, :class:`NodeSettings`); each flag falls back to
one ``CALLBOARD_*`` environment variable, shown in ``--help``. Signals are handled here and
nowhere else: the first SIGTERM/SIGINT drains (new starts refused, ``/ready`` 503, live
sessions get ``--drain-timeout`` seconds, then are closed), a second one stops at once.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click

from callboard import __version__
from callboard.errors import ConfigurationError, StoreError
from callboard.launcher import AgentLauncher, LauncherSettings
from callboard.registry import DEFAULT_KEY_PREFIX, SessionRegistry, store_from_url
from callboard.server import NodeServer, ServerSettings

__all__ = ["NodeSettings", "command", "load_callable", "redact_url"]

logger = logging.getLogger(__name__)

BUILTIN_AGENT = "callboard.demo.agent:create_agent"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """Everything ``callboard serve`` runs with, grouped by concern."""

    redis_url: str | None = None
    """Registry store URL (``redis://``, ``rediss://``, ``unix://``, ``memory://``); None is
    memory: fine for one node, invisible to any other."""
    key_prefix: str = DEFAULT_KEY_PREFIX
    """Prefix of every registry key; the documented Vision Agents one shares its nodes' view."""
    node_id: str | None = None
    """This node's id; None builds one from the host name (the pod name in Kubernetes)."""
    ttl: float = 30.0
    """Seconds a record outlives its last heartbeat: how long a dead node's sessions linger."""
    host: str = "127.0.0.1"
    port: int = 8080
    advertise_url: str | None = None
    """How others reach this API, published in the node record (the operator uses it)."""
    pool: str | None = None
    pod_name: str | None = None
    namespace: str | None = None
    drain_timeout: float = 25.0
    """Seconds live sessions get on SIGTERM; keep it under terminationGracePeriodSeconds
    (30 s by default) minus the time to close agents and deregister."""
    access_log: bool = False
    agent: str = BUILTIN_AGENT
    """``module:function`` of ``create_agent``."""
    join_call: str | None = None
    """``module:function`` of ``join_call``; None is ``join_call`` in the agent's module."""
    launcher: LauncherSettings = field(default_factory=LauncherSettings)
    server: ServerSettings = field(default_factory=ServerSettings)


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
    """The URL without its password, for logs."""
    if not url:
        return "memory://"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _advertise(settings: NodeSettings, pod_ip: str | None) -> str:
    if settings.advertise_url:
        return settings.advertise_url
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = pod_ip or socket.gethostname()
    return f"http://{host}:{settings.port}"


def build_launcher(settings: NodeSettings, *, pod_ip: str | None = None) -> AgentLauncher[Any]:
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
        address=_advertise(settings, pod_ip),
        capacity=settings.launcher.max_concurrent_sessions,
        pool=settings.pool,
        pod_name=settings.pod_name,
        namespace=settings.namespace,
        version=__version__,
    )
    return AgentLauncher.from_settings(create_agent, join_call, settings.launcher, registry=registry)


async def serve(settings: NodeSettings, *, pod_ip: str | None = None) -> int:
    """Run the node until signalled; returns the exit code."""
    launcher = build_launcher(settings, pod_ip=pod_ip)
    node = NodeServer(
        launcher,
        host=settings.host,
        port=settings.port,
        settings=settings.server,
        drain_timeout=settings.drain_timeout,
        access_log=settings.access_log,
    )
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            logger.info("%s: draining (up to %gs)", sig.name, settings.drain_timeout)
            shutdown.set()
        elif main_task is not None:
            logger.warning("%s again: stopping now", sig.name)
            main_task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    logger.info(
        "node %s starting on http://%s:%d (registry %s, ttl %gs, agent %s)",
        launcher.node_id,
        settings.host,
        settings.port,
        redact_url(settings.redis_url),
        settings.ttl,
        settings.agent,
    )
    try:
        await node.run(shutdown)
    except asyncio.CancelledError:
        return 130
    except StoreError as exc:
        logger.error("registry unreachable at %s: %s", redact_url(settings.redis_url), exc)
        return 1
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    logger.info(
        "node %s stopped (%d sessions closed at the drain deadline)", launcher.node_id, node.forced_closes
    )
    return 0


_F = TypeVar("_F", bound=Callable[..., Any])


def _opt(*names: str, env: str | list[str], **kwargs: Any) -> Callable[[_F], _F]:
    """A click option that falls back to (and shows) its environment variable."""
    return click.option(*names, envvar=env, show_envvar=True, **kwargs)


@click.command(
    "serve",
    epilog="Examples:\n\n\b\n"
    "  callboard serve                                   # one node, memory registry, simulated agent\n"
    "  callboard serve --redis-url redis://localhost:6379/0 --port 8081 --node-id node-a\n"
    "  callboard serve --agent myapp.agent:create_agent   # your create_agent and join_call",
)
@_opt("--host", env="CALLBOARD_HOST", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@_opt("--port", env="CALLBOARD_PORT", type=int, default=8080, show_default=True, help="HTTP port.")
@_opt(
    "--redis-url",
    env="CALLBOARD_REDIS_URL",
    default=None,
    help="Registry: redis://, rediss://, unix:// or memory:// (the default; one node only).",
)
@_opt("--key-prefix", env="CALLBOARD_KEY_PREFIX", default=DEFAULT_KEY_PREFIX, show_default=True)
@_opt("--node-id", env="CALLBOARD_NODE_ID", default=None, help="Node id [default: host name + suffix].")
@_opt("--ttl", env="CALLBOARD_TTL", type=float, default=30.0, show_default=True, help="Record TTL, s.")
@_opt(
    "--maintenance-interval",
    env="CALLBOARD_MAINTENANCE_INTERVAL",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between heartbeats/idle checks; at most TTL/3.",
)
@_opt(
    "--max-concurrent-sessions",
    env=["CALLBOARD_MAX_CONCURRENT_SESSIONS", "CALLBOARD_CAPACITY"],
    type=click.IntRange(min=1),
    default=None,
    help="Sessions this node runs at most [default: unlimited].",
)
@_opt(
    "--max-sessions-per-call",
    env="CALLBOARD_MAX_SESSIONS_PER_CALL",
    type=click.IntRange(min=1),
    default=None,
    help="Sessions one call may have on all nodes [default: unlimited].",
)
@_opt(
    "--idle-timeout",
    env="CALLBOARD_IDLE_TIMEOUT",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds alone on a call before the agent leaves; 0 never.",
)
@_opt(
    "--max-session-duration",
    env="CALLBOARD_MAX_SESSION_DURATION",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds after which any session is closed [default: unlimited].",
)
@_opt(
    "--agent",
    env="CALLBOARD_AGENT",
    default=BUILTIN_AGENT,
    show_default=True,
    metavar="MODULE:FUNCTION",
    help="create_agent(**kwargs); the default is the built-in simulated agent.",
)
@_opt(
    "--join-call",
    env="CALLBOARD_JOIN_CALL",
    default=None,
    metavar="MODULE:FUNCTION",
    help="join_call(agent, call_type, call_id) [default: join_call in the --agent module].",
)
@_opt("--api-token", env="CALLBOARD_API_TOKEN", default=None, help="Require this bearer token.")
@_opt(
    "--cors-origin",
    "cors_origins",
    env="CALLBOARD_CORS_ORIGINS",
    multiple=True,
    help="Allowed browser origin (repeat; env: space-separated). Never with credentials.",
)
@_opt("--advertise-url", env="CALLBOARD_ADVERTISE_URL", default=None, help="URL published for this node.")
@_opt("--pod-ip", env="CALLBOARD_POD_IP", default=None, help="Pod IP, for the default advertise URL.")
@_opt("--pool", env="CALLBOARD_POOL", default=None, help="Pool of this node (AgentSession spec.pool).")
@_opt("--pod-name", env="CALLBOARD_POD_NAME", default=None)
@_opt("--namespace", env="CALLBOARD_POD_NAMESPACE", default=None)
@_opt(
    "--drain-timeout",
    env="CALLBOARD_DRAIN_TIMEOUT",
    type=click.FloatRange(min=0),
    default=25.0,
    show_default=True,
    help="Seconds sessions get to end on SIGTERM.",
)
@_opt("--access-log/--no-access-log", env="CALLBOARD_ACCESS_LOG", default=False, show_default=True)
def command(
    host: str,
    port: int,
    redis_url: str | None,
    key_prefix: str,
    node_id: str | None,
    ttl: float,
    maintenance_interval: float,
    max_concurrent_sessions: int | None,
    max_sessions_per_call: int | None,
    idle_timeout: float,
    max_session_duration: float | None,
    agent: str,
    join_call: str | None,
    api_token: str | None,
    cors_origins: tuple[str, ...],
    advertise_url: str | None,
    pod_ip: str | None,
    pool: str | None,
    pod_name: str | None,
    namespace: str | None,
    drain_timeout: float,
    access_log: bool,
) -> None:
    """Run a node: agent sessions plus the node HTTP API, sharing the registry.

    With --redis-url every node sharing that Redis (and key prefix) sees and can close
    every session. SIGTERM drains: no new sessions, live ones get --drain-timeout seconds.
    """
    try:
        settings = NodeSettings(
            redis_url=redis_url,
            key_prefix=key_prefix,
            node_id=node_id,
            ttl=ttl,
            host=host,
            port=port,
            advertise_url=advertise_url,
            pool=pool,
            pod_name=pod_name,
            namespace=namespace,
            drain_timeout=drain_timeout,
            access_log=access_log,
            agent=agent,
            join_call=join_call,
            launcher=LauncherSettings(
                agent_idle_timeout=idle_timeout,
                max_concurrent_sessions=max_concurrent_sessions,
                max_sessions_per_call=max_sessions_per_call,
                max_session_duration_seconds=max_session_duration,
                maintenance_interval=maintenance_interval,
            ),
            server=ServerSettings(auth_token=api_token, cors_origins=cors_origins),
        )
        code = asyncio.run(serve(settings, pod_ip=pod_ip))
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    sys.exit(code)
