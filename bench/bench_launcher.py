"""Launcher and node API speed over a real loopback redis-server (issue 4 targets).

| figure | how | target |
| --- | --- | --- |
| HTTP starts per second | 3 ``callboard serve`` processes, 32 requests in flight | read |
| HTTP cross-node closes per second | DELETE on a node that does not own the session | read |
| close latency p50/p99, request on B → agent closed on A | in-process nodes, own Redis pools | p99 ≤ 100 ms |

The close latency is measured from just before the HTTP DELETE is sent to node B until the
agent's ``close()`` runs on node A. It is shown beside the documented design measured in the
same run: node A on a store with only the documented methods (no push), so it notices the
close flag at its next maintenance cycle, every 5 s (0-5 s; the samples are spread over
the cycle). Throughput figures are medians of 3 rounds.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from callboard.demo.cluster import ProcessNode, serve_command
from callboard.demo.redis import LocalRedis, free_port
from callboard.launcher import AgentLauncher
from callboard.registry import RedisSessionKVStore, SessionKVStore, SessionRegistry
from callboard.server import NodeClient, NodeServer

POLL_INTERVAL_S = 5.0  # the documented maintenance interval
ROUNDS = 3
HTTP_SESSIONS = 300
IN_FLIGHT = 32
PUSH_SAMPLES = 200
POLL_SAMPLES = 30


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- HTTP throughput over real processes ----------------------------------------------------


class _RawHttp:
    """HTTP/1.1 keep-alive on one connection, parsed by hand.

    A general client (httpx) costs a few milliseconds of CPU per request on a small
    machine, which would make the bench measure itself; this costs a few tens of µs, so the
    figures are the nodes' own.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def _drive(
    ports: list[int], jobs: list[list[tuple[str, str, bytes]]]
) -> tuple[float, list[float], list[bytes]]:
    """Send ``jobs[n]`` to node ``n`` with IN_FLIGHT connections in all; rate, latencies, bodies."""
    queues: list[asyncio.Queue[tuple[str, str, bytes]]] = [asyncio.Queue() for _ in ports]
    for queue, node_jobs in zip(queues, jobs, strict=True):
        for job in node_jobs:
            queue.put_nowait(job)
    latencies: list[float] = []
    bodies: list[bytes] = []

    async def worker(n: int) -> None:
        http = _RawHttp(ports[n])
        try:
            while not queues[n].empty():
                method, path, body = queues[n].get_nowait()
                t0 = time.perf_counter()
                status, answer = await http.request(method, path, body)
                latencies.append((time.perf_counter() - t0) * 1000)
                assert status in (201, 202), (status, answer)
                bodies.append(answer)
        finally:
            await http.aclose()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i % len(ports)) for i in range(IN_FLIGHT)))
    return sum(map(len, jobs)) / (time.perf_counter() - t0), latencies, bodies


async def _http_round(ports: list[int], client: NodeClient) -> dict[str, float]:
    starts: list[list[tuple[str, str, bytes]]] = [[] for _ in ports]
    for i in range(HTTP_SESSIONS):
        starts[i % 3].append(("POST", f"/calls/bench-{i % 100}/sessions", b'{"call_type":"default"}'))
    start_rate, start_ms, bodies = await _drive(ports, starts)
    owners = {f"bench-{name}": n for n, name in enumerate("abc")}
    closes: list[list[tuple[str, str, bytes]]] = [[] for _ in ports]
    for raw in bodies:
        body = json.loads(raw)
        target = (owners[body["node_id"]] + 1) % 3  # never the owner: a cross-node close
        closes[target].append(("DELETE", f"/calls/{body['call_id']}/sessions/{body['session_id']}", b""))
    close_rate, close_ms, answers = await _drive(ports, closes)
    assert all(json.loads(a)["status"] == "close_requested" for a in answers)
    while await client.list_sessions():  # noqa: ASYNC110 - the owners finish closing before the next round
        await asyncio.sleep(0.05)
    return {
        "start_rate": start_rate,
        "start_p50": _pct(start_ms, 0.5),
        "start_p99": _pct(start_ms, 0.99),
        "close_rate": close_rate,
        "close_p50": _pct(close_ms, 0.5),
        "close_p99": _pct(close_ms, 0.99),
    }


async def http_throughput(redis_url: str) -> dict[str, float]:
    logs = Path(tempfile.mkdtemp(prefix="callboard-bench-"))
    nodes = []
    for name in "abc":
        port = free_port()
        argv = serve_command(
            node_id=f"bench-{name}",
            port=port,
            redis_url=redis_url,
            key_prefix="bench:",
            ttl=30,
            maintenance_interval=5,
            extra=["--idle-timeout", "0", "--drain-timeout", "0"],
            log_level="warning",
        )
        nodes.append(ProcessNode(name, f"bench-{name}", port, argv, logs / f"{name}.log"))
    client = NodeClient(nodes[0].url, timeout=30)
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        await asyncio.gather(*(node.wait_ready() for node in nodes))
        rounds = [await _http_round([node.port for node in nodes], client) for _ in range(ROUNDS)]
    finally:
        await client.aclose()
        await asyncio.gather(*(node.stop() for node in nodes))
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


# -- end-to-end close latency, push vs the documented poll ----------------------------------


class _TimedAgent:
    """Records when it was closed; its call lasts until then."""

    closed_at: dict[str, float] = {}

    def __init__(self, **_: Any) -> None:
        self.id = f"agent-{random.getrandbits(48):012x}"
        self.done = asyncio.Event()

    async def close(self) -> None:
        _TimedAgent.closed_at.setdefault(self.id, time.perf_counter())
        self.done.set()

    def idle_for(self) -> float:
        return 0.0

    def on_call_for(self) -> float:
        return 0.0


async def _timed_join(agent: _TimedAgent, call_type: str, call_id: str) -> None:
    await agent.done.wait()


class _DocumentedOnly(SessionKVStore):
    """The documented store interface and nothing else: no push, no server-side index."""

    def __init__(self, inner: RedisSessionKVStore) -> None:
        self.inner = inner

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def set(self, key: str, value: bytes, ttl: float, *, only_if_exists: bool = False) -> None:
        await self.inner.set(key, value, ttl, only_if_exists=only_if_exists)

    async def mset(self, items: list[tuple[str, bytes, float]]) -> None:
        await self.inner.mset(items)

    async def expire(self, *keys: str, ttl: float) -> None:
        await self.inner.expire(*keys, ttl=ttl)

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return await self.inner.mget(keys)

    async def keys(self, prefix: str) -> list[str]:
        return await self.inner.keys(prefix)

    async def delete(self, keys: list[str]) -> None:
        await self.inner.delete(keys)


async def close_latency(redis_url: str, *, push: bool) -> list[float]:
    """Milliseconds from DELETE sent to node B until the agent closed on node A."""
    prefix = f"latency-{'push' if push else 'poll'}:"
    a_store: SessionKVStore = RedisSessionKVStore(url=redis_url, key_prefix=prefix)
    if not push:
        a_store = _DocumentedOnly(RedisSessionKVStore(url=redis_url, key_prefix=prefix))
    a = AgentLauncher(
        _TimedAgent,
        _timed_join,
        agent_idle_timeout=0,
        maintenance_interval=POLL_INTERVAL_S,
        registry=SessionRegistry(a_store, node_id="owner-a", ttl=30),
    )
    b = AgentLauncher(
        _TimedAgent,
        _timed_join,
        registry=SessionRegistry(
            RedisSessionKVStore(url=redis_url, key_prefix=prefix), node_id="node-b", ttl=30
        ),
    )
    port = free_port()
    server = NodeServer(b, port=port, drain_timeout=0)
    shutdown = asyncio.Event()
    serving = asyncio.create_task(server.run(shutdown))
    await server.wait_started()
    samples: list[float] = []
    try:
        async with a, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await http.get("/health")  # warm the connection
            if push:
                for _ in range(PUSH_SAMPLES):
                    session = await a.start_session("latency-call")
                    t0 = time.perf_counter()
                    response = await http.delete(f"/calls/latency-call/sessions/{session.id}")
                    assert response.status_code == 202
                    await session.wait()
                    samples.append((_TimedAgent.closed_at[session.id] - t0) * 1000)
            else:
                sessions = [await a.start_session("latency-call") for _ in range(POLL_SAMPLES)]

                async def request(session: Any, delay: float) -> None:
                    await asyncio.sleep(delay)
                    t0 = time.perf_counter()
                    response = await http.delete(f"/calls/latency-call/sessions/{session.id}")
                    assert response.status_code == 202
                    await session.wait()
                    samples.append((_TimedAgent.closed_at[session.id] - t0) * 1000)

                spread = [POLL_INTERVAL_S * i / POLL_SAMPLES for i in range(POLL_SAMPLES)]
                await asyncio.gather(*(request(s, d) for s, d in zip(sessions, spread, strict=True)))
    finally:
        shutdown.set()
        await serving
    return samples


async def run() -> tuple[dict[str, float], list[float], list[float]]:
    with LocalRedis() as redis:
        throughput = await http_throughput(redis.url)
        push = await close_latency(redis.url, push=True)
        poll = await close_latency(redis.url, push=False)
    return throughput, push, poll


def _table(rows: list[tuple[str, str, str, str, str]]) -> None:
    header = ("figure", "callboard", "documented way", "ratio", "target")
    lines = [header, *rows]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    for j, row in enumerate(lines):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if j == 0:
            print("-+-".join("-" * w for w in widths))


def main() -> None:
    import logging

    logging.getLogger("callboard").setLevel(logging.ERROR)  # a bench prints a table, not logs
    throughput, push, poll = asyncio.run(run())
    push50, push99 = _pct(push, 0.5), _pct(push, 0.99)
    poll50, poll99 = _pct(poll, 0.5), _pct(poll, 0.99)
    t = throughput
    rows = [
        (f"HTTP starts/s, 3 nodes, {IN_FLIGHT} in flight", f"{t['start_rate']:,.0f}/s", "", "", "read"),
        ("  start latency p50 / p99", f"{t['start_p50']:.1f} / {t['start_p99']:.1f} ms", "", "", ""),
        ("HTTP cross-node closes/s (DELETE on a non-owner)", f"{t['close_rate']:,.0f}/s", "", "", "read"),
        ("  close answer latency p50 / p99", f"{t['close_p50']:.1f} / {t['close_p99']:.1f} ms", "", "", ""),
        (
            "close p50, DELETE on B → agent closed on A",
            f"{push50:.2f} ms",
            f"{poll50:,.0f} ms",
            f"{poll50 / push50:,.0f}x",
            "",
        ),
        (
            "close p99, DELETE on B → agent closed on A",
            f"{push99:.2f} ms",
            f"{poll99:,.0f} ms",
            f"{poll99 / push99:,.0f}x",
            "≤ 100 ms",
        ),
    ]
    _table(rows)
    print(f"throughput: median of {ROUNDS} rounds of {HTTP_SESSIONS} sessions over keep-alive connections")
    print(
        f"close latency: {len(push)} pushed samples; documented way = node A polls every "
        f"{POLL_INTERVAL_S:g} s ({len(poll)} samples spread over one cycle)"
    )


if __name__ == "__main__":
    main()
