"""``callboard nodes list``: the live nodes of the cluster (same sources as ``sessions``)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

from callboard.cli.sessions import nodes_table, open_source, run, source_options

__all__ = ["command"]


@click.group("nodes")
def command() -> None:
    """See the nodes of the cluster: capacity, load, draining, heartbeat."""


@command.command("list")
@source_options
def list_command(
    api: str | None, api_token: str | None, redis_url: str | None, key_prefix: str, as_json: bool
) -> None:
    """Every node whose heartbeat is within the TTL."""

    async def go() -> list[dict[str, Any]]:
        async with open_source(
            api=api, api_token=api_token, redis_url=redis_url, key_prefix=key_prefix
        ) as src:
            return await src.list_nodes()

    nodes = run(go())
    if as_json:
        click.echo(json.dumps(nodes, indent=2))
        return
    Console().print(nodes_table(nodes, title=f"{len(nodes)} nodes"))
