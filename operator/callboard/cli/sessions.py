"""``callboard sessions list|get|close``: the cluster's sessions, from any machine.

Two ways in, chosen by flag (or environment variable):

- ``--api URL`` (``CALLBOARD_API_URL``, with ``--api-token``/``CALLBOARD_API_TOKEN``): ask any
  node's HTTP API; it answers for the whole cluster. Nothing but HTTP access is needed.
- ``--redis-url URL`` (``CALLBOARD_REDIS_URL``, ``--key-prefix``): read the registry
  directly, as a read-mostly client that never registers itself as a node.

Both print the same tables, and with ``--json`` the same JSON (the API's shapes).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar

import click
from rich.console import Console
from rich.table import Table

from callboard.errors import CallboardError
from callboard.registry import DEFAULT_KEY_PREFIX, SessionRegistry, store_from_url
from callboard.server.client import NodeApiError, NodeClient
from callboard.server.models import NodeResponse, SessionResponse

__all__ = ["Source", "command", "nodes_table", "open_source", "run", "sessions_table", "source_options"]

_F = TypeVar("_F", bound=Callable[..., Any])
#: Sessions per registry read when the CLI lists straight from Redis (the API's largest page).
LIST_PAGE_SIZE = 1000
_T = TypeVar("_T")


class Source(Protocol):
    """Where the CLI reads from: a node's API or the registry itself."""

    async def list_sessions(self, *, call_id: str | None, node_id: str | None) -> list[dict[str, Any]]: ...
    async def get_session(self, call_id: str, session_id: str) -> dict[str, Any] | None: ...
    async def close_session(self, call_id: str, session_id: str) -> dict[str, Any] | None: ...
    async def list_nodes(self) -> list[dict[str, Any]]: ...


class _ApiSource:
    def __init__(self, client: NodeClient) -> None:
        self.client = client

    async def list_sessions(self, *, call_id: str | None, node_id: str | None) -> list[dict[str, Any]]:
        return await self.client.list_sessions(call_id=call_id, node_id=node_id)

    async def get_session(self, call_id: str, session_id: str) -> dict[str, Any] | None:
        return await self.client.get_session(call_id, session_id)

    async def close_session(self, call_id: str, session_id: str) -> dict[str, Any] | None:
        return await self.client.close_session(call_id, session_id)

    async def list_nodes(self) -> list[dict[str, Any]]:
        return await self.client.list_nodes()


class _RegistrySource:
    """The registry read directly; ``local`` is always False (this client runs nothing)."""

    def __init__(self, registry: SessionRegistry) -> None:
        self.registry = registry

    def _session(self, info: Any) -> dict[str, Any]:
        return SessionResponse.of(info, this_node="").model_dump(mode="json")

    async def list_sessions(self, *, call_id: str | None, node_id: str | None) -> list[dict[str, Any]]:
        # Page by page, as GET /sessions does: each read is bounded, never the whole cluster.
        sessions: list[Any] = []
        cursor: str | None = None
        while True:
            page = await self.registry.list_sessions_page(
                limit=LIST_PAGE_SIZE, cursor=cursor, call_id=call_id, node_id=node_id
            )
            sessions += page.sessions
            if (cursor := page.next_cursor) is None:
                break
        ordered = sorted(sessions, key=lambda s: (s.started_at, s.call_id, s.session_id))
        return [self._session(s) for s in ordered]

    async def get_session(self, call_id: str, session_id: str) -> dict[str, Any] | None:
        info = await self.registry.get(call_id, session_id)
        return None if info is None else self._session(info)

    async def close_session(self, call_id: str, session_id: str) -> dict[str, Any] | None:
        info = await self.registry.get(call_id, session_id)
        if info is None:
            return None
        await self.registry.request_close(call_id, session_id)
        return {
            "session_id": session_id,
            "call_id": call_id,
            "node_id": info.node_id,
            "status": "close_requested",
        }

    async def list_nodes(self) -> list[dict[str, Any]]:
        now = time.time()
        nodes = sorted(await self.registry.list_nodes(), key=lambda n: n.node_id)
        return [NodeResponse.of(n, now=now).model_dump(mode="json") for n in nodes]


@asynccontextmanager
async def open_source(
    *, api: str | None, api_token: str | None, redis_url: str | None, key_prefix: str
) -> AsyncIterator[Source]:
    """The source the flags name; ``--api`` wins when both are given."""
    if api:
        async with NodeClient(api, token=api_token) as client:
            yield _ApiSource(client)
        return
    if not redis_url:
        raise click.UsageError(
            "say where the cluster is: --api URL of any node (CALLBOARD_API_URL) "
            "or --redis-url of the registry (CALLBOARD_REDIS_URL)"
        )
    store = store_from_url(redis_url, key_prefix=key_prefix)
    await store.start()
    try:
        # Never started: this client reads and requests closes, it does not heartbeat.
        yield _RegistrySource(SessionRegistry(store, node_id="callboard-cli", foreign_scan_interval=None))
    finally:
        await store.close()


def source_options(func: _F) -> _F:
    """The flags that choose a :class:`Source` (shared by ``sessions`` and ``nodes``)."""
    options = [
        click.option(
            "--api",
            envvar="CALLBOARD_API_URL",
            show_envvar=True,
            metavar="URL",
            help="Any node's HTTP API, e.g. http://localhost:8080 (answers for the whole cluster).",
        ),
        click.option(
            "--api-token", envvar="CALLBOARD_API_TOKEN", show_envvar=True, help="Bearer token of that API."
        ),
        click.option(
            "--redis-url",
            envvar="CALLBOARD_REDIS_URL",
            show_envvar=True,
            metavar="URL",
            help="Read the registry directly instead (redis://, rediss://, unix://).",
        ),
        click.option(
            "--key-prefix",
            envvar="CALLBOARD_KEY_PREFIX",
            show_envvar=True,
            default=DEFAULT_KEY_PREFIX,
            show_default=True,
        ),
        click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a CLI coroutine; callboard errors become one line on stderr and exit 1."""
    try:
        return asyncio.run(coro)
    except (NodeApiError, CallboardError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


def _age(iso: str | None, now: float) -> str:
    if not iso:
        return "-"
    seconds = max(now - datetime.fromisoformat(iso).timestamp(), 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _metrics(metrics: dict[str, Any], width: int = 60) -> str:
    text = " ".join(f"{k}={v}" for k, v in metrics.items())
    return text if len(text) <= width else text[: width - 1] + "…"


def sessions_table(
    sessions: list[dict[str, Any]], live_nodes: set[str] | None = None, *, title: str | None = None
) -> Table:
    """Sessions as a table; a session whose node has no live record is marked lost."""
    now = time.time()
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in ("CALL", "SESSION", "NODE", "AGE", "METRICS"):
        table.add_column(column, overflow="fold")
    for s in sessions:
        node = s["node_id"]
        if live_nodes is not None and node not in live_nodes:
            node = f"[red]{node} (gone)[/red]"
        table.add_row(
            s["call_id"], s["session_id"], node, _age(s["session_started_at"], now), _metrics(s["metrics"])
        )
    return table


def nodes_table(nodes: list[dict[str, Any]], *, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in ("NODE", "ADDRESS", "SESSIONS", "FREE", "STATE", "HEARTBEAT", "VERSION"):
        table.add_column(column)
    for n in nodes:
        capacity = "∞" if n["capacity"] is None else str(n["capacity"])
        free = "∞" if n["free_slots"] is None else str(n["free_slots"])
        state = "[yellow]draining[/yellow]" if n["draining"] else "[green]ready[/green]"
        table.add_row(
            n["node_id"],
            n["address"] or "-",
            f"{n['active']}/{capacity}",
            free,
            state,
            f"{n['heartbeat_age_seconds']:.1f}s ago",
            n["version"] or "-",
        )
    return table


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group("sessions")
def command() -> None:
    """List, inspect and close agent sessions anywhere in the cluster."""


@command.command("list")
@source_options
@click.option("--call-id", default=None, help="Only this call.")
@click.option("--node-id", default=None, help="Only this node.")
def list_command(
    api: str | None,
    api_token: str | None,
    redis_url: str | None,
    key_prefix: str,
    as_json: bool,
    call_id: str | None,
    node_id: str | None,
) -> None:
    """Every session of the cluster (or of one call / node)."""

    async def go() -> tuple[list[dict[str, Any]], set[str]]:
        async with open_source(
            api=api, api_token=api_token, redis_url=redis_url, key_prefix=key_prefix
        ) as src:
            sessions = await src.list_sessions(call_id=call_id, node_id=node_id)
            nodes = {n["node_id"] for n in await src.list_nodes()}
            return sessions, nodes

    sessions, nodes = run(go())
    if as_json:
        _print_json(sessions)
        return
    Console().print(sessions_table(sessions, nodes, title=f"{len(sessions)} sessions on {len(nodes)} nodes"))


@command.command("get")
@source_options
@click.argument("call_id")
@click.argument("session_id")
def get_command(
    api: str | None,
    api_token: str | None,
    redis_url: str | None,
    key_prefix: str,
    as_json: bool,
    call_id: str,
    session_id: str,
) -> None:
    """One session: where it runs, since when, its metrics. Exit 1 if there is none."""

    async def go() -> dict[str, Any] | None:
        async with open_source(
            api=api, api_token=api_token, redis_url=redis_url, key_prefix=key_prefix
        ) as src:
            return await src.get_session(call_id, session_id)

    session = run(go())
    if session is None:
        click.echo(f"Error: no session {session_id} in call {call_id}", err=True)
        sys.exit(1)
    if as_json:
        _print_json(session)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key in ("call_id", "session_id", "node_id", "session_started_at", "metrics_updated_at"):
        table.add_row(key, str(session.get(key) or "-"))
    for key, value in session["metrics"].items():
        table.add_row(f"metrics.{key}", str(value))
    Console().print(table)


@command.command("close")
@source_options
@click.argument("call_id")
@click.argument("session_id")
def close_command(
    api: str | None,
    api_token: str | None,
    redis_url: str | None,
    key_prefix: str,
    as_json: bool,
    call_id: str,
    session_id: str,
) -> None:
    """Close a session wherever it runs (its node is told at once). Exit 1 if there is none."""

    async def go() -> dict[str, Any] | None:
        async with open_source(
            api=api, api_token=api_token, redis_url=redis_url, key_prefix=key_prefix
        ) as src:
            return await src.close_session(call_id, session_id)

    result = run(go())
    if result is None:
        click.echo(f"Error: no session {session_id} in call {call_id}", err=True)
        sys.exit(1)
    if as_json:
        _print_json(result)
        return
    verb = "closing on" if result["status"] == "closing" else "close requested from"
    click.echo(f"session {session_id} of call {call_id}: {verb} node {result['node_id']}")
