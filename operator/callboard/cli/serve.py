"""``callboard serve``: one node, an AgentLauncher behind the node HTTP API.

Flags and ``CALLBOARD_*`` variables are generated from :class:`~callboard.server.node.ServeSettings`
(:mod:`callboard.cli._options`); :func:`~callboard.server.node.build_launcher` builds the node.
Signals are handled here and nowhere else: the first SIGTERM/SIGINT drains (new starts refused,
``/ready`` 503, live sessions get ``--drain-timeout`` seconds, then are closed), a second one
stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import click

from callboard.cli._options import LOGGING_EPILOG, click_options, settings_from_click
from callboard.errors import ConfigurationError, StoreError
from callboard.server import NodeServer
from callboard.server.node import ServeSettings, build_launcher, redact_url

__all__ = ["command", "serve"]

logger = logging.getLogger(__name__)


async def serve(settings: ServeSettings) -> int:
    """Run the node until signalled; returns the exit code."""
    launcher = build_launcher(settings)
    node = NodeServer(
        launcher,
        host=settings.host,
        port=settings.port,
        settings=settings.server,
        drain_timeout=settings.drain,
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
            logger.info("%s: draining (up to %gs)", sig.name, settings.drain)
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


@click.command(
    "serve",
    epilog="Examples:\n\n\b\n"
    "  callboard serve                                   # one node, memory registry, simulated agent\n"
    "  callboard serve --redis-url redis://localhost:6379/0 --port 8081 --node-id node-a\n"
    "  callboard serve --agent myapp.agent:create_agent   # your create_agent and join_call\n\n"
    + LOGGING_EPILOG,
)
@click_options(ServeSettings)
def command(**options: object) -> None:
    """Run a node: agent sessions plus the node HTTP API, sharing the registry.

    With --redis-url every node sharing that Redis (and key prefix) sees and can close
    every session. SIGTERM drains: no new sessions, live ones get --drain-timeout seconds.
    """
    settings = settings_from_click(ServeSettings, options)
    try:
        code = asyncio.run(serve(settings))
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    sys.exit(code)
