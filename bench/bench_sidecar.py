"""Sidecar cost and event latency, over a real loopback redis-server (issue 5 targets).

| figure | target |
| --- | --- |
| idle RSS of ``callboard sidecar`` | ≤ 80 MB |
| idle CPU | (as low as it goes) |
| ``request_close`` on another node → event on the app's stream, p99 | ≤ 100 ms |

The sidecar runs as a real process with its production defaults (heartbeat every 10 s,
TTL 30 s), holding 10 sessions with one app connected to its event stream: the steady state
of a pod. Idle figures are sampled over several windows; latency is measured from
``request_close`` in this process (another node) to the event read from the stream, one
close at a time, in several rounds. Every figure is the median over windows or rounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import psutil

from callboard.registry import RedisSessionKVStore, SessionRegistry
from callboard.sidecar.sse import SSEDecoder
from tests.support.redis_server import RedisServer, free_port

SESSIONS = 10
IDLE_WINDOWS = 3
IDLE_WINDOW_S = 5.0
ROUNDS = 3
CLOSES_PER_ROUND = 200


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _wait_ready(http: httpx.AsyncClient, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"the sidecar exited with {proc.returncode}")
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the sidecar did not become ready within 30 s")


async def _follow(
    http: httpx.AsyncClient, arrivals: asyncio.Queue[tuple[str, float]], connected: asyncio.Event
) -> None:
    """The app: read the stream, time-stamp each close_requested as it arrives."""
    async with http.stream("GET", "/v1/events", timeout=httpx.Timeout(5, read=None)) as response:
        decoder = SSEDecoder()
        async for line in response.aiter_lines():
            if decoder.retry is not None:
                connected.set()
            raw = decoder.feed(line)
            if raw is not None and raw.event == "close_requested":
                arrivals.put_nowait((json.loads(raw.data)["session_id"], time.perf_counter()))


async def run() -> list[tuple[str, str, str]]:
    server = RedisServer()
    server.start()
    port = free_port()
    env = {
        **os.environ,
        "CALLBOARD_REDIS_URL": server.url,
        "CALLBOARD_NODE_ID": "bench-node",
        "CALLBOARD_LISTEN": f"127.0.0.1:{port}",
        "CALLBOARD_LOG_LEVEL": "warning",
    }
    script = Path(sys.executable).parent / "callboard"
    proc = await asyncio.create_subprocess_exec(str(script), "sidecar", env=env)
    peer = SessionRegistry(RedisSessionKVStore(url=server.url), node_id="bench-peer")
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
    follower: asyncio.Task[None] | None = None
    try:
        await _wait_ready(http, proc)
        await peer.start()
        for n in range(SESSIONS):
            response = await http.post("/v1/sessions", json={"call_id": "bench-call", "session_id": f"s-{n}"})
            response.raise_for_status()
        arrivals: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        connected = asyncio.Event()
        follower = asyncio.create_task(_follow(http, arrivals, connected))
        await asyncio.wait_for(connected.wait(), 10)

        sidecar = psutil.Process(proc.pid)
        await asyncio.sleep(2)  # let start-up work settle
        rss, cpu = [], []
        for _ in range(IDLE_WINDOWS):
            before, started = sidecar.cpu_times(), time.monotonic()
            await asyncio.sleep(IDLE_WINDOW_S)
            after, elapsed = sidecar.cpu_times(), time.monotonic() - started
            used = (after.user + after.system) - (before.user + before.system)
            cpu.append(100 * used / elapsed)
            rss.append(sidecar.memory_info().rss / 2**20)

        p50s, p99s = [], []
        for _ in range(ROUNDS):
            samples = []
            for n in range(CLOSES_PER_ROUND):
                session_id = f"s-{n % SESSIONS}"
                sent = time.perf_counter()
                await peer.request_close("bench-call", session_id)
                while True:
                    got, at = await asyncio.wait_for(arrivals.get(), 5)
                    if got == session_id:
                        break
                samples.append((at - sent) * 1000)
            p50s.append(_percentile(samples, 0.50))
            p99s.append(_percentile(samples, 0.99))
        rss_after = sidecar.memory_info().rss / 2**20
        for n in range(SESSIONS):  # so that the drain at exit has nothing to wait for
            await http.delete(f"/v1/calls/bench-call/sessions/s-{n}", params={"reason": "bench-over"})
    finally:
        if follower is not None:
            follower.cancel()
        await http.aclose()
        if peer.running:
            await peer.stop()
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        server.stop()
    return [
        (f"idle RSS ({SESSIONS} sessions, 1 stream)", f"{statistics.median(rss):.1f} MB", "≤ 80 MB"),
        ("idle CPU", f"{statistics.median(cpu):.2f} % of a core", ""),
        ("close → app's stream, p50", f"{statistics.median(p50s):.2f} ms", ""),
        ("close → app's stream, p99", f"{statistics.median(p99s):.2f} ms", "≤ 100 ms"),
        (f"RSS after {ROUNDS * CLOSES_PER_ROUND} closes", f"{rss_after:.1f} MB", ""),
    ]


def main() -> None:
    rows = asyncio.run(run())
    lines = [("figure", "sidecar", "target"), *rows]
    widths = [max(len(row[i]) for row in lines) for i in range(3)]
    for j, row in enumerate(lines):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if j == 0:
            print("-+-".join("-" * w for w in widths))
    print(
        f"medians of {IDLE_WINDOWS} idle windows of {IDLE_WINDOW_S:g} s and of {ROUNDS} rounds of "
        f"{CLOSES_PER_ROUND} closes; production defaults (heartbeat 10 s, TTL 30 s)"
    )


if __name__ == "__main__":
    main()
