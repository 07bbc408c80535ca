"""``callboard sidecar``: run the registry agent beside an agent container.

Every option is one ``CALLBOARD_*`` environment variable of
:data:`callboard.sidecar.settings.ENV_VARS` (the flag is the variable's name without the
prefix), so ``--help`` documents exactly what the settings read. Signals are handled here:
the first SIGTERM or SIGINT drains, a second one stops waiting for sessions.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from callboard.errors import ConfigurationError
from callboard.sidecar.settings import ENV_VARS, EnvVar, SidecarSettings

__all__ = ["command"]

_PREFIX = "CALLBOARD_"


def _flag(var: EnvVar) -> str:
    return var.name.removeprefix(_PREFIX).lower().replace("_", "-")


def _param(var: EnvVar) -> str:
    return var.name.removeprefix(_PREFIX).lower()


def _with_env_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for var in reversed(ENV_VARS):
        default = "unset" if var.default is None else (var.default or "see above")
        func = click.option(
            f"--{_flag(var)}",
            _param(var),
            envvar=var.name,
            show_envvar=True,
            metavar=var.type_name.upper(),
            help=f"{var.help}  [default: {default}]",
        )(func)
    return func


@click.command(
    "sidecar",
    epilog="Every option reads its environment variable when not given (the Kubernetes way: "
    "use the downward API for the pod name, namespace and IP). Logging: CALLBOARD_LOG_LEVEL and "
    "CALLBOARD_LOG_FORMAT (text or json), options of the callboard command itself.",
)
@_with_env_options
def command(**options: str | None) -> None:
    """Run the sidecar registry agent: a local HTTP API and event stream for the agent app.

    The app registers and ends its sessions on localhost and follows one Server-Sent Events
    stream (close_requested, start_requested, drain); the sidecar heartbeats the node and its
    sessions in the registry, removes the sessions of an app that died, and on SIGTERM marks the
    node draining, tells the app and waits up to the drain timeout for its sessions to end.
    """
    values = {f"{_PREFIX}{name.upper()}": value for name, value in options.items() if value is not None}
    try:
        settings = SidecarSettings.from_env(values)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        code = asyncio.run(_run(settings))
    except ConfigurationError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    sys.exit(code)


async def _run(settings: SidecarSettings) -> int:
    from callboard.sidecar.runner import run_sidecar  # uvicorn and FastAPI only when running

    terminate, force = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (force if terminate.is_set() else terminate).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return await run_sidecar(settings, terminate=terminate, force=force)
