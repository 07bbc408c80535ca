"""``callboard demo``: the narrated 3-node demo (``make demo``), with no external service."""

from __future__ import annotations

import asyncio
import logging
import sys

import click
from rich.console import Console

__all__ = ["command"]

#: Loggers quieted during the demo: the narration says what happens, and a killed node makes
#: the others log (rightly) about it. ``--verbose`` keeps them.
_NOISY = ("callboard", "uvicorn", "uvicorn.error", "httpx")


@click.command("demo")
@click.option(
    "--redis-url",
    envvar="CALLBOARD_REDIS_URL",
    show_envvar=True,
    default=None,
    metavar="URL",
    help="Use this Redis (keys under a fresh prefix, deleted at the end). Without it, a local "
    "redis-server is started if one is on PATH, else the nodes share an in-memory store.",
)
@click.option("--memory", is_flag=True, help="Run the 3 nodes in this process over an in-memory store.")
@click.option(
    "--ttl", type=click.FloatRange(min=0.3), default=3.0, show_default=True, help="Registry TTL, s."
)
@click.option("--live/--no-live", default=None, help="Live table [default: when stdout is a terminal].")
@click.option("--verbose", is_flag=True, help="Keep the nodes' log lines.")
def command(redis_url: str | None, memory: bool, ttl: float, live: bool | None, verbose: bool) -> None:
    """Three nodes, one registry: start, list, close cross-node, kill a node, watch it expire.

    Finishes in about 15 seconds and exits 0 when every narrated claim held.
    """
    from callboard.demo.runner import DemoError, DemoOptions, run_demo

    if not verbose:
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    options = DemoOptions(
        redis_url=redis_url, memory=memory, ttl=ttl, maintenance_interval=min(0.5, ttl / 3), live=live
    )
    console = Console()
    try:
        result = asyncio.run(run_demo(console, options))
    except DemoError as exc:
        console.print(f"[red]Error: {exc}[/red]")
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    sys.exit(0 if result.ok else 1)
