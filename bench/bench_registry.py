"""Registry speed over a real loopback redis-server (issue 2 targets).

| figure | target |
| --- | --- |
| heartbeat of 1,000 sessions | ≤ 5 ms |
| heartbeat of 10,000 sessions | ≤ 50 ms |
| get_for_call with 100,000 other sessions | ≤ 2 ms |
| close notice, request → owner, p99 | ≤ 50 ms |
| a page of ``GET /sessions`` (100 of 100,000 sessions on 1,000 nodes) | O(limit): no whole read |

Each figure is printed beside the documented way of doing it, measured in the same run:
a heartbeat of two round trips per session (refresh the record only-if-exists, read the
close flag), ``get_for_call`` as a SCAN of the key space plus MGET (also what a mixed fleet with Vision
Agents nodes pays, shown below it), a close noticed by
polling every 5 s (uniform 0-5 s; computed, since measuring it takes minutes).
The heartbeat figure is amortized: 9 cheap heartbeats (no per-session payload) and one full
one (the node's whole session list, a consistency check) in every 10; both are shown.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from callboard.registry import FleetMode, RedisSessionKVStore, SessionInfo, SessionRegistry
from callboard.registry import _keys as k
from callboard.registry.backends.redis_index import FULL_HEARTBEAT_EVERY, RedisSessionIndex
from tests.support.redis_server import RedisServer

POLL_INTERVAL_S = 5.0  # the documented maintenance interval


async def _median_ms(fn: Callable[[], Awaitable[object]], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _populate(registry: SessionRegistry, n: int, calls: int) -> None:
    index = registry._index
    assert isinstance(index, RedisSessionIndex)
    now = time.time()
    infos = [
        SessionInfo(session_id=f"s{i}", call_id=f"c{i % calls}", node_id=registry.node_id, started_at=now)
        for i in range(n)
    ]
    for start in range(0, n, 1000):
        await index._register_many(registry.node_id, infos[start : start + 1000], registry.ttl, 0)
    for info in infos:
        registry._local[(info.call_id, info.session_id)] = info


async def _populate_fleet(registry: SessionRegistry, *, nodes: int, per_node: int) -> None:
    """``nodes`` nodes of ``per_node`` sessions each, in their indexes and the node directory."""
    index = registry._index
    store = registry.store
    assert isinstance(index, RedisSessionIndex) and isinstance(store, RedisSessionKVStore)
    now = time.time()
    for n in range(nodes):
        node_id = f"node-{n:04d}"
        infos = [
            SessionInfo(session_id=f"s{i}", call_id=f"c{n}-{i % 50}", node_id=node_id, started_at=now)
            for i in range(per_node)
        ]
        await index._register_many(node_id, infos, registry.ttl, 0)
        await store.client.zadd(store.key_prefix + k.NODE_DIRECTORY, {node_id: 0})


async def _naive_heartbeat(store: RedisSessionKVStore, sessions: list[SessionInfo], ttl: float) -> None:
    for s in sessions:
        await store.set(k.session_key(s.call_id, s.session_id), s.to_json(), ttl, only_if_exists=True)
        await store.get(k.close_key(s.call_id, s.session_id))


async def _naive_get_for_call(store: RedisSessionKVStore, call_id: str) -> list[bytes | None]:
    return await store.mget(await store.keys(f"{k.SESSIONS_PREFIX}{call_id}/"))


async def run() -> list[tuple[str, float, float | None, str, str]]:
    server = RedisServer()
    server.start()
    rows: list[tuple[str, float, float | None, str, str]] = []
    try:
        for n, target, naive_runs in ((1000, "≤ 5 ms", 3), (10_000, "≤ 50 ms", 1)):
            server.flushall()
            async with SessionRegistry(RedisSessionKVStore(url=server.url), node_id="bench-node") as reg:
                await _populate(reg, n, calls=max(n // 4, 1))
                index = reg._index
                assert isinstance(index, RedisSessionIndex)
                cheap = await _median_ms(reg.heartbeat, runs=21)
                full = await _median_ms(
                    lambda r=reg, i=index: i._full_heartbeat(r.node, r.local_sessions, r.ttl),  # type: ignore[misc]
                    runs=5,
                )
                amortized = (cheap * (FULL_HEARTBEAT_EVERY - 1) + full) / FULL_HEARTBEAT_EVERY
                naive = await _median_ms(
                    lambda r=reg: _naive_heartbeat(r.store, r.local_sessions, r.ttl),  # type: ignore[misc]
                    runs=naive_runs,
                )
                rows.append((f"heartbeat, {n:,} sessions (amortized)", amortized, naive, "ms", target))
                rows.append((f"  cheap heartbeat, {n:,} (9 in 10)", cheap, naive, "ms", ""))
                rows.append((f"  full heartbeat, {n:,} (1 in 10)", full, naive, "ms", ""))

        server.flushall()
        async with SessionRegistry(RedisSessionKVStore(url=server.url), node_id="bench-node") as reg:
            await _populate(reg, 100_000, calls=50_000)  # 100,000 other sessions, 2 per call
            for i in range(3):
                await reg.register("target-call", f"t{i}")
            # A callboard-only fleet: the one foreign scan found no foreign session, so every
            # node trusts its indexes (the steady state of the default, FleetMode.AUTO).
            assert await reg.index_foreign_sessions() == 0
            ours = await _median_ms(lambda: reg.get_for_call("target-call"), runs=51)
            assert len(await reg.get_for_call("target-call")) == 3
            store = reg.store
            assert isinstance(store, RedisSessionKVStore)
            naive = await _median_ms(lambda: _naive_get_for_call(store, "target-call"), runs=5)
            rows.append(("get_for_call, 100,000 other sessions", ours, naive, "ms", "≤ 2 ms"))
            reg.fleet = FleetMode.MIXED  # Vision Agents nodes write with their own client
            mixed = await _median_ms(lambda: reg.get_for_call("target-call"), runs=5)
            rows.append(("  the same, mixed fleet (scans the call's keys)", mixed, naive, "ms", ""))

        server.flushall()
        async with SessionRegistry(
            RedisSessionKVStore(url=server.url), node_id="bench-reader", fleet="callboard_only"
        ) as reg:
            await _populate_fleet(reg, nodes=1000, per_node=100)  # 100,000 sessions, 1,000 nodes
            ours = await _median_ms(lambda: reg.list_sessions_page(limit=100), runs=21)
            assert len((await reg.list_sessions_page(limit=100)).sessions) == 100
            naive = await _median_ms(reg.list_sessions, runs=3)  # what every page used to read
            rows.append(("GET /sessions page of 100, 100,000 sessions", ours, naive, "ms", "O(limit)"))

        server.flushall()
        owner = SessionRegistry(RedisSessionKVStore(url=server.url), node_id="owner")
        asker = SessionRegistry(RedisSessionKVStore(url=server.url), node_id="asker")
        async with owner, asker:
            samples = []
            stream = owner.close_requests()
            for i in range(300):
                await owner.register("call", f"s{i}")
            for i in range(300):
                started = time.perf_counter()
                await asker.request_close("call", f"s{i}")
                await stream.get()
                samples.append((time.perf_counter() - started) * 1000)
            poll_p50, poll_p99 = POLL_INTERVAL_S * 500, POLL_INTERVAL_S * 990
            rows.append(("close notice p50, request → owner", _percentile(samples, 0.5), poll_p50, "ms", ""))
            rows.append(
                ("close notice p99, request → owner", _percentile(samples, 0.99), poll_p99, "ms", "≤ 50 ms")
            )
    finally:
        server.stop()
    return rows


def main() -> None:
    rows = asyncio.run(run())
    header = ("figure", "callboard", "documented way", "speed-up", "target")
    lines = [header]
    for name, ours, naive, unit, target in rows:
        ratio = f"{naive / ours:,.0f}x" if naive else ""
        lines.append((name, f"{ours:,.2f} {unit}", f"{naive:,.1f} {unit}" if naive else "", ratio, target))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    for j, row in enumerate(lines):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if j == 0:
            print("-+-".join("-" * w for w in widths))
    print("documented close notice = polling every 5 s (uniform 0-5 s), computed, not measured")


if __name__ == "__main__":
    main()
