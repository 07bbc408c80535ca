"""Operator speed against a real API server: apply → Running and delete → gone.

A local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok: the
e2e tier's), a real redis-server, four ``callboard serve`` nodes (300 sessions each, the
built-in simulated agent) and ``callboard operator`` with its default settings, each a
separate process. For each batch size the bench creates the AgentSessions at once
(32 requests in flight), follows them with one watch, then deletes them all:

- apply → Running: from just before the object's POST to the watch event that shows
  ``status.phase: Running`` (finalizer, placement, start request, node confirmation);
- delete → gone: from just before the DELETE to the watch's DELETED event (close request,
  the node closing the session, the next sync cycle seeing it gone, finalizer released).

``CALLBOARD_BENCH_OPERATOR_SIZES`` (default ``1,100,1000``) picks the batch sizes.
Figures depend on the machine: read them next to its core count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from callboard.kube.k8s.client import KubeApi, agentsession_path
from callboard.kube.running.entrypoint import login
from tests.support import kube as kh
from tests.support.redis_server import RedisServer, free_port

NAMESPACE = "bench"
NODES = 4
NODE_CAPACITY = 300
IN_FLIGHT = 32
DEFAULT_SIZES = (1, 100, 1000)
#: Seconds a batch may take before the bench reports what it got and moves on.
BATCH_TIMEOUT = 600.0


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Watch:
    """One watch on the bench namespace: when each object was first Running, and gone."""

    def __init__(self) -> None:
        self.running: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def run(self, session: aiohttp.ClientSession, server: str, resource_version: str) -> None:
        """Follow the namespace, resuming from the last version seen when the stream ends."""
        version = resource_version
        while True:
            params = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true"}
            try:
                async with session.get(
                    server + agentsession_path(NAMESPACE),
                    params=params,
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
                ) as response:
                    response.raise_for_status()
                    async for line in response.content:
                        if line.strip():
                            version = self._on_event(json.loads(line)) or version
            except (aiohttp.ClientError, ValueError) as exc:
                print(f"  (watch interrupted: {exc!r}; resuming)", flush=True)
                await asyncio.sleep(0.2)

    def _on_event(self, event: dict[str, Any]) -> str | None:
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":
            raise ValueError(f"watch error: {obj.get('message')}")
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        now = time.perf_counter()
        if event["type"] == "DELETED":
            self.gone.setdefault(name, now)
        elif (obj.get("status") or {}).get("phase") == "Running":
            self.running.setdefault(name, now)
        self.changed.set()
        version: str | None = meta.get("resourceVersion")
        return version


async def _wait(watch: Watch, done: Any, deadline: float) -> bool:
    while not done():
        if time.perf_counter() > deadline:
            return False
        watch.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.changed.wait(), 1.0)
    return True


async def _batch(api: KubeApi, watch: Watch, n: int, round_no: int) -> dict[str, Any]:
    names = [f"r{round_no}-{i:04d}" for i in range(n)]
    applied: dict[str, float] = {}
    deleted: dict[str, float] = {}
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def create(name: str) -> None:
        body = {
            "apiVersion": "callboard.dev/v1alpha1",
            "kind": "AgentSession",
            "metadata": {"name": name},
            "spec": {"callId": f"call-{name}"},
        }
        async with gate:
            applied[name] = time.perf_counter()
            await api.create(agentsession_path(NAMESPACE), body)

    async def delete(name: str) -> None:
        async with gate:
            deleted[name] = time.perf_counter()
            await api.delete(agentsession_path(NAMESPACE, name))

    started = time.perf_counter()
    await asyncio.gather(*(create(name) for name in names))
    all_running = await _wait(
        watch, lambda: all(name in watch.running for name in names), started + BATCH_TIMEOUT
    )
    running_wall = time.perf_counter() - started
    started = time.perf_counter()
    await asyncio.gather(*(delete(name) for name in names))
    all_gone = await _wait(watch, lambda: all(name in watch.gone for name in names), started + BATCH_TIMEOUT)
    gone_wall = time.perf_counter() - started
    up = [watch.running[name] - applied[name] for name in names if name in watch.running]
    down = [watch.gone[name] - deleted[name] for name in names if name in watch.gone]
    return {
        "n": n,
        "up": up,
        "down": down,
        "up_wall": running_wall,
        "down_wall": gone_wall,
        "complete": all_running and all_gone,
    }


@contextlib.contextmanager
def _processes(kube: kh.KubeEnv, redis_url: str, log_dir: Path) -> Iterator[int]:
    """Nodes and the operator as processes; yields the operator's liveness port."""
    script = Path(sys.executable).parent / "callboard"
    base = {k: v for k, v in kube.env.items() if not k.startswith(("CALLBOARD_", "POD_"))}
    base |= {
        "CALLBOARD_REDIS_URL": redis_url,
        "CALLBOARD_LOG_LEVEL": os.environ.get("CALLBOARD_BENCH_LOG_LEVEL", "warning"),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(NODES):
            env = base | {
                "CALLBOARD_NODE_ID": f"bench-node-{i}",
                "CALLBOARD_PORT": str(free_port()),
                "CALLBOARD_CAPACITY": str(NODE_CAPACITY),
                "CALLBOARD_IDLE_TIMEOUT": "0",
                "CALLBOARD_DRAIN_TIMEOUT": "1",
            }
            with (log_dir / f"node-{i}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen([str(script), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
                )
        liveness = free_port()
        env = base | {
            "CALLBOARD_NAMESPACES": NAMESPACE,
            "CALLBOARD_LIVENESS_PORT": str(liveness),
            "CALLBOARD_METRICS_PORT": str(free_port()),
            "CALLBOARD_LISTEN_HOST": "127.0.0.1",
            "CALLBOARD_LEASE_NAMESPACE": NAMESPACE,
            "POD_NAME": "bench-operator",
        }
        with (log_dir / "operator.log").open("wb") as log:
            procs.append(
                subprocess.Popen([str(script), "operator"], env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        yield liveness
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _ready(liveness: int) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{liveness}/healthz") as response:
                    if response.status == 200 and "standby" not in await response.text():
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("the operator did not become ready within 60 s")


async def _run(liveness: int, sizes: list[int]) -> list[dict[str, Any]]:
    await _ready(liveness)
    info = login()
    results = []
    async with KubeApi(login, timeout=60) as api:
        listing = await api.get(agentsession_path(NAMESPACE))
        watch = Watch()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()), headers=info.as_http_headers()
        ) as session:
            watcher = asyncio.create_task(
                watch.run(session, info.server, listing["metadata"]["resourceVersion"])
            )
            await asyncio.sleep(0.5)  # nodes heartbeat within their first second
            for round_no, n in enumerate(sizes):
                print(f"  batch of {n}...", flush=True)
                results.append(await _batch(api, watch, n, round_no))
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    return results


def _table(results: list[dict[str, Any]]) -> None:
    header = ["objects", "apply→Running p50", "p99", "all Running", "delete→gone p50", "p99", "all gone"]
    rows = [header]
    for r in results:
        up, down = r["up"], r["down"]
        rows.append(
            [
                f"{r['n']:,}" + ("" if r["complete"] else " (incomplete)"),
                f"{statistics.median(up):.2f} s" if up else "-",
                f"{_percentile(up, 0.99):.2f} s" if up else "-",
                f"{r['up_wall']:.1f} s",
                f"{statistics.median(down):.2f} s" if down else "-",
                f"{_percentile(down, 0.99):.2f} s" if down else "-",
                f"{r['down_wall']:.1f} s",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print(
        f"{NODES} callboard serve nodes x {NODE_CAPACITY} slots, operator defaults (sync every 1 s), "
        f"{os.cpu_count()} CPUs; local etcd + kube-apiserver + kwok on the same machine"
    )


def main() -> None:
    sizes = [int(s) for s in os.environ.get("CALLBOARD_BENCH_OPERATOR_SIZES", "").split(",") if s.strip()]
    sizes = sizes or list(DEFAULT_SIZES)
    kh.ensure_tools()
    redis = RedisServer()
    redis.start()
    try:
        with kh.local_control_plane() as kube:
            kube.kubectl("apply", "-f", "manifests/agentsession-crd.yaml")
            kube.kubectl(
                "wait", "--for=condition=Established", "crd/agentsessions.callboard.dev", "--timeout=60s"
            )
            kube.kubectl("create", "namespace", NAMESPACE)
            os.environ["KUBECONFIG"] = str(kube.kubeconfig)
            log_dir = Path(tempfile.mkdtemp(prefix="callboard-bench-operator-"))
            print(f"  process logs in {log_dir}", flush=True)
            with _processes(kube, redis.url, log_dir) as liveness:
                results = asyncio.run(_run(liveness, sizes))
            _table(results)
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
