"""The scripted, narrated demo behind ``callboard demo`` (``make demo``).

Three nodes (A, B, C) share one registry: Redis when a URL is given or a ``redis-server``
can be started locally (each node is then a real ``callboard serve`` process), else an
in-memory store in this process. The script starts sessions through different nodes,
lists them from another, reads metrics across nodes, closes one cross-node, kills a node
and watches its sessions expire, and ends with a summary. Every claim it narrates is also
checked; the demo fails (exit 1) if one does not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from callboard.demo.cluster import DemoNode, InProcessNode, ProcessNode, serve_command
from callboard.demo.redis import LocalRedis, free_port
from callboard.errors import CallboardError, StoreError
from callboard.launcher import LauncherSettings
from callboard.registry import InMemorySessionKVStore, store_from_url
from callboard.server import NodeApiError, NodeClient

__all__ = ["DemoError", "DemoOptions", "DemoResult", "run_demo"]

NAMES = ("A", "B", "C")
#: Sessions started, as (node, call): two per node, two per call, so the per-call limit of
#: 2 is reached for every call and each node runs sessions of two calls.
PLAN = (
    ("A", "standup"),
    ("B", "standup"),
    ("B", "support-42"),
    ("C", "support-42"),
    ("C", "sales-7"),
    ("A", "sales-7"),
)
#: Seconds between two refreshes of the live table: smooth, and cheap for the nodes.
POLL = 0.25


@dataclass(frozen=True)
class DemoOptions:
    redis_url: str | None = None
    """A Redis to use (keys go under a fresh prefix and are deleted at the end)."""
    memory: bool = False
    """Force the in-process, in-memory mode even when Redis is available."""
    ttl: float = 3.0
    """Registry TTL of the demo nodes, seconds: short, so a killed node vanishes quickly."""
    maintenance_interval: float = 0.5
    """Heartbeat pace, seconds (at most ttl/3)."""
    live: bool | None = None
    """Live-updating table; None: only when the console is a terminal."""


@dataclass
class DemoResult:
    backend: str = ""
    started: int = 0
    refused: int = 0
    close_ms: float | None = None
    expiry_s: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class _Board:
    """The cluster as one node sees it, refreshed in the background for the live table."""

    def __init__(self) -> None:
        self.sessions: list[dict[str, Any]] = []
        self.nodes: list[dict[str, Any]] = []
        self.viewer = ""
        self.killed: set[str] = set()

    async def refresh(self, client: NodeClient, viewer: str) -> None:
        self.sessions = await client.list_sessions()
        self.nodes = await client.list_nodes()
        self.viewer = viewer

    def render(self) -> RenderableType:
        live_nodes = {n["node_id"] for n in self.nodes}
        sessions = Table(
            title=f"sessions, as node {self.viewer} lists them", title_justify="left", header_style="bold"
        )
        for column in ("call", "session", "node", "age", "turns", "latency ms", "tokens in/out"):
            sessions.add_column(
                column, justify="right" if column in ("age", "turns", "latency ms") else "left"
            )
        now = time.time()
        for s in self.sessions:
            m = s.get("metrics") or {}
            node = s["node_id"]
            if node in self.killed:
                node = f"[red]{node} (killed)[/red]" if node in live_nodes else f"[red]{node} (gone)[/red]"
            started = _parse(s["session_started_at"])
            sessions.add_row(
                s["call_id"],
                s["session_id"][:8] + "…",
                node,
                f"{now - started:.0f}s",
                str(m.get("turns", "-")),
                str(m.get("latency_ms_last", "-")),
                f"{m.get('tokens_in', '-')}/{m.get('tokens_out', '-')}",
            )
        # Count from the session listing above, not the node records' "active": those are
        # refreshed by the next heartbeat and would lag behind sessions just started.
        per_node = Counter(s["node_id"] for s in self.sessions)
        nodes = Table(title="nodes", title_justify="left", header_style="bold")
        for column in ("node", "address", "sessions", "state", "heartbeat"):
            nodes.add_column(column)
        for n in self.nodes:
            state = "[yellow]draining[/yellow]" if n["draining"] else "[green]ready[/green]"
            if n["node_id"] in self.killed:
                state = "[red]killed: expiring[/red]"
            nodes.add_row(
                n["node_id"],
                n["address"] or "-",
                str(per_node[n["node_id"]]),
                state,
                f"{n['heartbeat_age_seconds']:.1f}s ago",
            )
        return Group(sessions, nodes)


class DemoError(CallboardError):
    """The demo cannot run here (e.g. the Redis it was given does not answer)."""


def _redact(url: str) -> str:
    """The URL without user and password."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def _parse(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


class _Demo:
    def __init__(self, console: Console, options: DemoOptions) -> None:
        self.console = console
        self.options = options
        self.result = DemoResult()
        self.board = _Board()
        self.nodes: dict[str, DemoNode] = {}
        self.clients: dict[str, NodeClient] = {}
        self.live = options.live if options.live is not None else console.is_terminal
        self.step = 0

    # -- narration ------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.step += 1
        self.console.print(f"\n[bold cyan]{self.step}.[/bold cyan] {text}")

    def note(self, text: str) -> None:
        self.console.print(f"   {text}")

    def check(self, ok: bool, claim: str) -> None:
        if ok:
            self.console.print(f"   [green]✓[/green] {claim}")
        else:
            self.console.print(f"   [red]✗ {claim}[/red]")
            self.result.failures.append(claim)

    async def snapshot(self) -> None:
        """Without a live table, print the cluster as it is now."""
        if not self.live:
            await self.refresh()
            self.console.print(self.board.render())

    async def refresh(self, viewer: str = "B") -> None:
        await self.board.refresh(self.clients[viewer], self.nodes[viewer].node_id)

    # -- set-up ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def cluster(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            opts = self.options
            settings = LauncherSettings(
                agent_idle_timeout=0,
                max_concurrent_sessions=4,
                max_sessions_per_call=2,
                maintenance_interval=opts.maintenance_interval,
            )
            redis_url = opts.redis_url
            if not opts.memory and redis_url is None and LocalRedis.available():
                local = LocalRedis()
                await asyncio.to_thread(local.start)
                stack.callback(local.stop)
                redis_url = local.url
                self.result.backend = f"a local redis-server on port {local.port} (started for the demo)"
            elif not opts.memory and redis_url is not None:
                await self._check_redis(redis_url)
                self.result.backend = f"Redis at {_redact(redis_url)}"
            if opts.memory or redis_url is None:
                shared = InMemorySessionKVStore()
                await shared.start()
                stack.push_async_callback(shared.close)
                self.result.backend = "one in-memory store shared by 3 nodes in this process"
                for name in NAMES:
                    self.nodes[name] = InProcessNode(
                        name,
                        f"node-{name.lower()}",
                        free_port(),
                        shared,
                        ttl=opts.ttl,
                        launcher_settings=settings,
                        drain_timeout=0.5,
                    )
            else:
                prefix = f"callboard-demo-{secrets.token_hex(4)}:"
                stack.push_async_callback(self._delete_keys, redis_url, prefix)
                logs = Path(tempfile.mkdtemp(prefix="callboard-demo-"))
                self.note(f"[dim]node logs: {logs}[/dim]")
                for name in NAMES:
                    node_id, port = f"node-{name.lower()}", free_port()
                    argv = serve_command(
                        node_id=node_id,
                        port=port,
                        redis_url=redis_url,
                        key_prefix=prefix,
                        ttl=opts.ttl,
                        maintenance_interval=opts.maintenance_interval,
                        extra=[
                            "--max-concurrent-sessions",
                            str(settings.max_concurrent_sessions),
                            "--max-sessions-per-call",
                            str(settings.max_sessions_per_call),
                            "--idle-timeout",
                            "0",
                            "--drain-timeout",
                            "0.5",
                        ],
                    )
                    self.nodes[name] = ProcessNode(name, node_id, port, argv, logs / f"{node_id}.log")
            for name, node in self.nodes.items():
                stack.push_async_callback(node.stop)
                self.clients[name] = await stack.enter_async_context(NodeClient(node.url, timeout=5.0))
            yield

    async def _check_redis(self, redis_url: str) -> None:
        store = store_from_url(redis_url)
        try:
            await store.start()
        except StoreError as exc:
            raise DemoError(f"Redis at {_redact(redis_url)} is unreachable: {exc}") from exc
        finally:
            await store.close()

    async def _delete_keys(self, redis_url: str, prefix: str) -> None:
        store = store_from_url(redis_url, key_prefix=prefix)
        with contextlib.suppress(Exception):
            await store.start()
            await store.delete(await store.keys(""))
        await store.close()

    # -- the script -----------------------------------------------------------------------

    async def run(self) -> DemoResult:
        opts = self.options
        self.console.print(
            Panel.fit(
                "[bold]callboard demo[/bold]: every agent session a cluster-wide fact\n"
                "3 nodes run simulated voice agents; any node can list, read and close any session.",
                border_style="cyan",
            )
        )
        async with self.cluster():
            self.say(f"Starting nodes A, B and C over {self.result.backend} (TTL {opts.ttl:g}s).")
            await asyncio.gather(*(node.start() for node in self.nodes.values()))
            try:
                await asyncio.gather(*(node.wait_ready() for node in self.nodes.values()))
            except (RuntimeError, TimeoutError) as exc:
                self.check(False, f"the nodes start: {exc}")
                return self.result
            for name, node in self.nodes.items():
                self.note(f"node {name}: [bold]{node.node_id}[/bold] on {node.url}")
            await self.refresh()
            self.check(len(self.board.nodes) == 3, "all 3 nodes are registered and see each other")
            live = Live(get_renderable=self.board.render, console=self.console, refresh_per_second=8)
            with live if self.live else contextlib.nullcontext():
                refresher = asyncio.create_task(self._keep_refreshing())
                try:
                    await self._script()
                finally:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError, NodeApiError):
                        await refresher
                    await self.refresh()
            self.console.print("\n[dim]Stopping A and B: drain, then exit.[/dim]")
            codes = await asyncio.gather(self.nodes["A"].stop(), self.nodes["B"].stop())
            self.check(
                all(code == 0 for code in codes),
                f"A and B drained and exited cleanly (exit codes {codes[0]}, {codes[1]})",
            )
            self._summary()
        return self.result

    async def _keep_refreshing(self) -> None:
        while True:
            with contextlib.suppress(NodeApiError):
                await self.refresh()
            await asyncio.sleep(POLL)

    async def _script(self) -> None:
        opts = self.options
        self.say("Starting 6 agent sessions through different nodes (POST /calls/{call}/sessions).")
        started: list[tuple[str, str, str]] = []
        for name, call in PLAN:
            body = await self.clients[name].start_session(call)
            started.append((name, call, body["session_id"]))
            sid, node_id = body["session_id"], body["node_id"]
            self.note(f"via {name}: call [bold]{call}[/bold] → session {sid[:8]}… on {node_id}")
        self.result.started = len(started)
        try:
            await self.clients["C"].start_session("standup")
            self.check(False, "a 3rd session of 'standup' is refused (max 2 per call)")
        except NodeApiError as exc:
            self.result.refused += 1
            self.check(
                exc.status == 429,
                f"a 3rd 'standup' session, asked on C, is refused: {exc.status} {exc.detail}",
            )

        self.say("Listing from node B, which runs only 2 of them (GET /sessions).")
        await self.refresh()
        by_node = {n.node_id: 0 for n in self.nodes.values()}
        for s in self.board.sessions:
            by_node[s["node_id"]] = by_node.get(s["node_id"], 0) + 1
        self.check(
            len(self.board.sessions) == 6 and set(by_node.values()) == {2},
            f"B lists all {len(self.board.sessions)} sessions: "
            + ", ".join(f"{k} runs {v}" for k, v in by_node.items()),
        )
        await self.snapshot()

        a_name, a_call, a_sid = started[0]
        self.say(f"Reading the metrics of A's session {a_sid[:8]}… through node C.")
        await asyncio.sleep(2 * opts.maintenance_interval + 0.3)  # the agents talk; A publishes
        metrics = await self.clients["C"].session_metrics(a_call, a_sid)
        m = (metrics or {}).get("metrics") or {}
        self.check(
            metrics is not None and metrics["node_id"] == self.nodes[a_name].node_id and "turns" in m,
            f"C reads it from the registry: {m.get('turns', 0)} turns, "
            f"last latency {m.get('latency_ms_last', '-')} ms, {m.get('tokens_out', 0)} tokens out",
        )

        self.say(f"Closing A's session {a_sid[:8]}… through node C (DELETE, cross-node).")
        t0 = time.perf_counter()
        answer = await self.clients["C"].close_session(a_call, a_sid)
        self.note(f"C answers 202: {answer and answer['status']} → {answer and answer['node_id']}")
        while await self.clients["A"].get_session(a_call, a_sid) is not None:
            if time.perf_counter() - t0 > 5:
                break
            await asyncio.sleep(0.002)
        self.result.close_ms = (time.perf_counter() - t0) * 1000
        self.check(
            self.result.close_ms < 1000,
            f"node A closed the agent and dropped the session {self.result.close_ms:.0f} ms later "
            f"(pushed; a poll would wait up to the {opts.maintenance_interval:g}s maintenance interval)",
        )
        await self.snapshot()

        c = self.nodes["C"]
        kind = "kill -9" if isinstance(c, ProcessNode) else "cut off from the store and stopped"
        self.say(f"Killing node C ({kind}): no goodbye; its sessions must expire by TTL ({opts.ttl:g}s).")
        self.board.killed.add(c.node_id)
        await c.kill()
        t0 = time.perf_counter()
        last_note = -1.0
        while True:
            await self.refresh()
            left = [s for s in self.board.sessions if s["node_id"] == c.node_id]
            node_left = any(n["node_id"] == c.node_id for n in self.board.nodes)
            elapsed = time.perf_counter() - t0
            if not left and not node_left:
                break
            if elapsed - last_note >= 1.0:
                last_note = elapsed
                self.note(
                    f"t+{elapsed:.1f}s: B still lists {len(left)} of C's sessions (they expire with the TTL)"
                )
            if elapsed > opts.ttl + 5:
                break
            await asyncio.sleep(0.05)
        self.result.expiry_s = time.perf_counter() - t0
        self.check(
            not left and not node_left and self.result.expiry_s <= opts.ttl + 2,
            f"C and its sessions left every listing after {self.result.expiry_s:.1f}s",
        )
        for viewer in ("A", "B"):
            listed = await self.clients[viewer].list_sessions()
            self.check(
                all(s["node_id"] != c.node_id for s in listed) and len(listed) == 3,
                f"node {viewer} lists the 3 remaining sessions, none of C",
            )
        await self.snapshot()

    def _summary(self) -> None:
        r = self.result
        table = Table(show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("registry", r.backend)
        table.add_row(
            "sessions started", f"{r.started} on 3 nodes ({r.refused} refused by the per-call limit)"
        )
        table.add_row("cross-node close", f"{r.close_ms:.0f} ms" if r.close_ms is not None else "-")
        table.add_row("killed node expired", f"after {r.expiry_s:.1f} s" if r.expiry_s is not None else "-")
        table.add_row(
            "before shutdown", f"{len(self.board.sessions)} sessions on {len(self.board.nodes)} nodes"
        )
        table.add_row(
            "result", "[green]every check passed[/green]" if r.ok else f"[red]{len(r.failures)} failed[/red]"
        )
        self.console.print()
        self.console.print(
            Panel(table, title="summary", title_align="left", border_style="green" if r.ok else "red")
        )


async def run_demo(console: Console, options: DemoOptions | None = None) -> DemoResult:
    """Run the whole demo; nodes and any Redis it started are stopped before it returns."""
    return await _Demo(console, options or DemoOptions()).run()
