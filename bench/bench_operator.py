"""Operator speed against a real API server: the API server's own floor, then the operator.

A local control plane (etcd, kube-apiserver with its default API Priority and Fairness,
controller-manager, scheduler, kwok: the e2e tier's), a real redis-server, four
``callboard serve`` nodes (the built-in simulated agent) and ``callboard operator`` with its
default settings, each a separate process. The operator runs as the chart's ServiceAccount
with the chart's RBAC (``helm template``, watching one namespace), not as
``system:masters``: APF exempts that group, and a real operator is not exempt.

For each batch size N, one client creates N AgentSessions at once over 64 keep-alive
connections (like one ``kubectl apply`` of a big file) and one watch follows them:

1. **floor** (before the operator starts): burst start → the watch sees the object. This
   is what the API server costs on this machine, with no operator at all;
2. **operator**: the same burst, burst start → ``status.phase: Running`` (finalizer,
   placement, start request, node confirmation, status writes), then delete → gone (from
   the start of the delete burst). Counted from the burst start, not from each object's
   own request: the queueing behind the burst is part of what the user waits for.

The ratio is operator p99 / floor p99. Per burst the table also shows the 429s the API
server answered in the meantime (APF rejections), the CPU seconds the API server and the
operator burned, and the operator's status writes per object until every object ran.

Then a **steady state** of ``CALLBOARD_BENCH_OPERATOR_STEADY`` live objects (default
10,000; 0 skips it): with the operator stopped, the bench writes that many Running objects
(with the finalizer) and registers their sessions on registry nodes of its own that
heartbeat them; then it starts the operator again, lets its first writes calm down, and
measures a window in which nothing changes (settled: writes ≤ 5/s and CPU ≤ 20 % over 5 s,
or 240 s passed): the operator's API writes per second
(objects, status, Events, pods; the Lease's renewals are counted apart), its CPU (% of one
core), its RSS, its event-loop lag, and the Redis commands it sends per sync cycle
(``MONITOR``, attributed by the operator's own connections; commands run inside its Lua
scripts counted apart).

Then a **slow-node row**: the four nodes are replaced by four whose agent takes 1 s to be
ready (:mod:`bench.slow_agent`: a node confirms a start request a second after it claimed
it, like a real agent joining a call), and a burst of ``CALLBOARD_BENCH_OPERATOR_SLOW``
objects (default 1,000; 0 skips it) goes to Running. It reports the sustained starts/s
(objects Running after the first one, per second until the last one): placement that held
a worker while a node confirmed would cap it at workers/second.

Every burst (floor, operator, slow) is repeated ``CALLBOARD_BENCH_OPERATOR_RUNS`` times
(default 3); the tables print the median of the runs' figures (the p99 of each run, then
the median of those).

``CALLBOARD_BENCH_OPERATOR_SIZES`` (default ``1,100,1000``) picks the batch sizes;
``CALLBOARD_BENCH_OPERATOR_PROFILE=<file>`` runs the operator under cProfile (the stats
file is written when it exits), and ``CALLBOARD_BENCH_OPERATOR_STEADY_PROFILE=<file>`` the
steady state's operator (its start, settling and measured window).
``CALLBOARD_BENCH_APISERVER_PROFILE=<dir>`` starts the API server with ``--profiling`` and
writes a pprof CPU profile of it for each burst of 1,000 objects or more (the floor's first
3 s, the operator's first 12 s) to ``<dir>`` (read it with ``go tool pprof -top
<kube-apiserver binary> <file>``). Each burst also prints its API requests per object by
verb, resource and subresource. Figures depend on the machine: read them next to its core
count and its load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from callboard.kube.k8s.client import agentsession_path
from callboard.kube.resource.constants import FINALIZER
from callboard.kube.resource.fields import format_time
from callboard.kube.resource.naming import session_id_for
from callboard.kube.running.entrypoint import login
from callboard.registry import RedisSessionKVStore, SessionRegistry
from tests.support import kube as kh
from tests.support.redis_server import RedisServer, free_port

NAMESPACE = "bench"
OPERATOR_NAMESPACE = "callboard-system"
RELEASE = "bench"
#: The chart's names for that release (``callboard.serviceAccountName``, ``callboard.operatorName``).
SERVICE_ACCOUNT = f"{RELEASE}-callboard"
LEASE_NAME = f"{RELEASE}-callboard-operator"
NODES = 4
#: 4 x 2,600 slots: room for the steady-state row's 10,000 sessions.
NODE_CAPACITY = 2600
#: Keep-alive connections of the one client that issues a burst (kubectl-like, one big apply).
CONNECTIONS = 64
DEFAULT_SIZES = (1, 100, 1000)
DEFAULT_RUNS = 3
DEFAULT_SLOW = 1000
#: The slow row's agent (confirms 1 s after the claim) and the built-in session body.
SLOW_AGENT = "bench.slow_agent:create_agent"
SLOW_JOIN = "bench.slow_agent:join_call"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_STEADY = 10_000
#: Seconds a batch may take before the bench reports what it got and moves on.
BATCH_TIMEOUT = 600.0
#: Steady state: the bench's own registry nodes that hold the sessions, and their TTL.
FAKE_NODES = 4
FAKE_TTL = 30.0
#: Steady state: after the restart, the operator settles (its first sync writes what it
#: finds stale, kopf takes in every object once) until, over one SETTLE_STEP window, its
#: writes fall to SETTLED_WRITES/s and its CPU to SETTLED_CPU % of a core, for at most
#: SETTLE_MAX seconds (a steady state that costs more is measured then all the same);
#: then the window that is measured, then the (shorter: MONITOR slows Redis down) Redis
#: window.
SETTLE_STEP = 5.0
SETTLE_MAX = 240.0
SETTLED_WRITES = 5.0
SETTLED_CPU = 20.0
WINDOW = 30.0
MONITOR_WINDOW = 10.0
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Resources only the operator writes in the steady state (the Lease is counted apart).
OPERATOR_WRITES = ("agentsessions", "events", "pods")

_LABELS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _metrics(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric in Prometheus text: (labels, value)."""
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            labels = dict(_LABELS.findall(head[len(name) :]))
            with contextlib.suppress(ValueError):
                out.append((labels, float(value)))
    return out


def _sum(text: str, name: str, keep: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
    return sum(v for labels, v in _metrics(text, name) if keep(labels))


LAG = "callboard_operator_event_loop_lag_seconds"
STATUS_WRITES = "callboard_operator_status_writes_total"


def _lag(before: str, after: str) -> tuple[float | None, float | None]:
    """The operator's event-loop lag between two scrapes: mean, and the histogram bucket that
    holds its 99th percentile (an upper bound); ``None`` when the operator has no such metric."""
    count = _sum(after, LAG + "_count") - _sum(before, LAG + "_count")
    if count <= 0:
        return None, None
    mean = (_sum(after, LAG + "_sum") - _sum(before, LAG + "_sum")) / count
    old = {labels["le"]: v for labels, v in _metrics(before, LAG + "_bucket")}
    for labels, v in _metrics(after, LAG + "_bucket"):
        if v - old.get(labels["le"], 0.0) >= 0.99 * count:
            return mean, float(labels["le"])
    return mean, None


class Watch:
    """One watch on the bench namespace: when each object was first seen, Running, gone."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
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
        if event["type"] == "BOOKMARK":
            pass
        elif event["type"] == "DELETED":
            self.gone.setdefault(name, now)
        else:
            self.seen.setdefault(name, now)
            if (obj.get("status") or {}).get("phase") == "Running":
                self.running.setdefault(name, now)
        self.changed.set()
        version: str | None = meta.get("resourceVersion")
        return version


async def _wait(
    watch: Watch, done: Callable[[], bool], deadline: float, alive: Callable[[], bool] = lambda: True
) -> bool:
    while not done():
        if time.perf_counter() > deadline or not alive():
            return False
        watch.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.changed.wait(), 1.0)
    return True


def _cpu(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _cpus(procs: list[psutil.Process]) -> float:
    return sum(_cpu(p) for p in procs)


@dataclass
class Client:
    """The bench's one admin client (system:masters, like a user's kubectl) and what it reads."""

    session: aiohttp.ClientSession
    server: str
    watch: Watch
    apiserver: psutil.Process | None
    operator: psutil.Process | None = None
    nodes: list[psutil.Process] = field(default_factory=list)
    """The ``callboard serve`` nodes (their CPU is part of what a burst costs the machine)."""
    operator_metrics: str | None = None
    client_429: int = 0
    redis_url: str = ""
    liveness: int = 0

    def operator_alive(self) -> bool:
        """False once the operator exited (e.g. it lost its Lease: nothing will get Running)."""
        if self.operator is None:
            return False
        try:
            return self.operator.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    async def apiserver_metrics(self) -> str:
        async with self.session.get(self.server + "/metrics") as response:
            response.raise_for_status()
            return await response.text()

    def profile_apiserver(self, name: str, n: int) -> asyncio.Task[None] | None:
        """With ``CALLBOARD_BENCH_APISERVER_PROFILE=<dir>``: a CPU profile (pprof) of the API
        server over the next seconds of a burst of at least 1,000 objects, written to <dir>."""
        target = os.environ.get("CALLBOARD_BENCH_APISERVER_PROFILE")
        if not target or n < 1000:
            return None
        seconds = 3 if name.startswith("floor") else 12

        url = self.server + f"/debug/pprof/profile?seconds={seconds}"
        out = Path(target, f"{name}.pb.gz")

        async def fetch() -> None:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
                response.raise_for_status()
                data = await response.read()
            await asyncio.to_thread(out.write_bytes, data)

        Path(target).mkdir(parents=True, exist_ok=True)
        return asyncio.create_task(fetch())

    async def operator_metrics_text(self) -> str:
        if self.operator_metrics is None:
            return ""
        with contextlib.suppress(aiohttp.ClientError):
            async with self.session.get(self.operator_metrics) as response:
                return await response.text()
        return ""

    async def _send(
        self, method: str, path: str, body: Any = None, *, content_type: str | None = None
    ) -> None:
        headers = {"Content-Type": content_type} if content_type else None
        url = self.server + path
        for _ in range(20):
            async with self.session.request(method, url, json=body, headers=headers) as response:
                await response.read()
                if response.status == 429:
                    self.client_429 += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                if response.status >= 400 and response.status != 404:
                    raise RuntimeError(f"{method} {path}: {response.status}")
                return
        raise RuntimeError(f"{method} {path}: 429 twenty times")

    async def create_all(self, names: list[str], *, then_run: bool = False) -> None:
        """Create ``names``; with ``then_run``, each one's create is followed at once by one
        status write as big as the operator's Running (the write floor: no operator)."""

        def body(name: str) -> dict[str, Any]:
            return {
                "apiVersion": "callboard.dev/v1alpha1",
                "kind": "AgentSession",
                "metadata": {"name": name},
                "spec": {"callId": f"call-{name}"},
            }

        async def one(name: str) -> None:
            await self._send("POST", agentsession_path(NAMESPACE), body(name))
            if then_run:
                await self._send(
                    "PATCH",
                    agentsession_path(NAMESPACE, name) + "/status",
                    {"status": _running_status(name)},
                    content_type="application/merge-patch+json",
                )

        await asyncio.gather(*(one(n) for n in names))

    async def delete_all(self, names: list[str]) -> None:
        await asyncio.gather(*(self._send("DELETE", agentsession_path(NAMESPACE, n)) for n in names))


def _running_status(name: str) -> dict[str, Any]:
    """A status with the fields and sizes of the operator's Running write."""
    now = format_time(time.time())
    uid = "00000000-0000-0000-0000-000000000000"
    message = "session runs on node bench-node-0"
    condition = {"status": "True", "reason": "Started", "message": message, "lastTransitionTime": now}
    return {
        "phase": "Running",
        "reason": "Started",
        "message": message,
        "observedGeneration": 1,
        "conditions": [
            {"type": "Placed", **condition, "observedGeneration": 1},
            {"type": "Ready", **condition, "observedGeneration": 1},
        ],
        "sessionId": f"ags.{NAMESPACE}.{uid}.1",
        "nodeId": "bench-node-0",
        "attempts": 1,
        "attemptStartedAt": now,
        "requestId": f"{name}-0123456789abcdef0123456789abcdef"[-32:],
        "startedAt": now,
    }


@dataclass
class Burst:
    n: int
    up: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)
    up_wall: float = 0.0
    down_wall: float = 0.0
    complete: bool = True
    rejected: float = 0.0
    """429s the API server answered during the burst (every client's)."""
    apiserver_cpu: float = 0.0
    operator_cpu: float = 0.0
    nodes_cpu: float = 0.0
    lag_mean: float | None = None
    lag_p99: float | None = None
    operator_exited: bool = False
    """The operator process ended during the burst (see its log: a lost Lease, say)."""
    status_writes: float | None = None
    """The operator's status writes from the burst's start until every object ran, per object
    (``callboard_operator_status_writes_total``)."""


async def _floor(client: Client, n: int, round_no: int, *, write: bool = False) -> Burst:
    """No operator: burst start → the watch sees each object; then delete them all.

    ``write``: the write floor, each create followed by one Running status write of the
    bench's own (burst start → the watch sees Running): what the API server costs for the
    least an operator must do, with no operator's work at all.
    """
    names = [f"{'w' if write else 'f'}{round_no}-{i:05d}" for i in range(n)]
    watch = client.watch
    before = await client.apiserver_metrics()
    cpu = _cpu(client.apiserver)
    profile = client.profile_apiserver(f"{'write-' if write else ''}floor-{n}-{round_no}", n)
    started = time.perf_counter()
    await client.create_all(names, then_run=write)
    seen = watch.running if write else watch.seen
    complete = await _wait(watch, lambda: all(x in seen for x in names), started + BATCH_TIMEOUT)
    result = Burst(n=n, complete=complete, up_wall=time.perf_counter() - started)
    result.apiserver_cpu = _cpu(client.apiserver) - cpu
    result.rejected = _sum(await client.apiserver_metrics(), "apiserver_request_total", _is_429) - _sum(
        before, "apiserver_request_total", _is_429
    )
    result.up = [seen[x] - started for x in names if x in seen]
    _print_requests(before, await client.apiserver_metrics(), n)
    if profile is not None:
        await profile
    await client.delete_all(names)
    await _wait(watch, lambda: all(x in watch.gone for x in names), time.perf_counter() + BATCH_TIMEOUT)
    return result


def _print_requests(before: str, after: str, n: int) -> None:
    """API requests per object during a burst, by verb, resource and subresource."""

    def key(labels: dict[str, str]) -> str:
        return f"{labels.get('verb')} {labels.get('resource')}/{labels.get('subresource', '')}"

    counts: dict[str, float] = {}
    for labels, v in _metrics(after, "apiserver_request_total"):
        counts[key(labels)] = counts.get(key(labels), 0.0) + v
    for labels, v in _metrics(before, "apiserver_request_total"):
        counts[key(labels)] = counts.get(key(labels), 0.0) - v
    rows = sorted(((v / n, k) for k, v in counts.items() if v >= 1), reverse=True)
    print("    requests/object: " + ", ".join(f"{k} {v:.2f}" for v, k in rows), flush=True)


def _is_429(labels: dict[str, str]) -> bool:
    return labels.get("code") == "429"


async def _operator_burst(client: Client, n: int, round_no: int, *, delete: bool = True) -> Burst:
    """Burst start → Running for every object; then delete → gone from the delete burst's start."""
    names = [f"r{round_no}-{i:05d}" for i in range(n)]
    watch = client.watch
    before = await client.apiserver_metrics()
    op_before = await client.operator_metrics_text()
    cpu_api, cpu_op, cpu_nodes = _cpu(client.apiserver), _cpu(client.operator), _cpus(client.nodes)
    profile = client.profile_apiserver(f"operator-{n}-{round_no}", n)
    started = time.perf_counter()
    await client.create_all(names)
    complete = await _wait(
        watch, lambda: all(x in watch.running for x in names), started + BATCH_TIMEOUT, client.operator_alive
    )
    result = Burst(n=n, complete=complete, up_wall=time.perf_counter() - started)
    result.operator_exited = not client.operator_alive()
    result.apiserver_cpu = _cpu(client.apiserver) - cpu_api
    result.operator_cpu = _cpu(client.operator) - cpu_op
    result.nodes_cpu = _cpus(client.nodes) - cpu_nodes
    result.up = [watch.running[x] - started for x in names if x in watch.running]
    writes = _sum(await client.operator_metrics_text(), STATUS_WRITES) - _sum(op_before, STATUS_WRITES)
    result.status_writes = writes / n if op_before else None
    _print_requests(before, await client.apiserver_metrics(), n)
    if profile is not None:
        await profile
    if delete:
        started = time.perf_counter()
        await client.delete_all(names)
        gone = await _wait(
            watch, lambda: all(x in watch.gone for x in names), started + BATCH_TIMEOUT, client.operator_alive
        )
        result.complete = result.complete and gone
        result.down_wall = time.perf_counter() - started
        result.down = [watch.gone[x] - started for x in names if x in watch.gone]
    after = await client.apiserver_metrics()
    result.rejected = _sum(after, "apiserver_request_total", _is_429) - _sum(
        before, "apiserver_request_total", _is_429
    )
    if not result.operator_exited:
        result.lag_mean, result.lag_p99 = _lag(op_before, await client.operator_metrics_text())
    return result


@dataclass
class Steady:
    n: int
    running: int = 0
    fill_wall: float = 0.0
    settle_wall: float = 0.0
    writes_per_s: float = 0.0
    writes_by: dict[str, float] = field(default_factory=dict)
    lease_writes_per_s: float = 0.0
    requests_per_s: float = 0.0
    cpu_percent: float = 0.0
    rss_mib: float = 0.0
    cycles: float = 0.0
    window_cycles: float = 0.0
    """Sync cycles in the measured window, and their mean duration (s): the cycle's own cost."""
    cycle_mean: float | None = None
    redis_per_cycle: float = 0.0
    redis_script_per_cycle: float = 0.0
    redis_by: dict[str, float] = field(default_factory=dict)
    lag_mean: float | None = None
    lag_p99: float | None = None


def _writes(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in _metrics(text, "apiserver_request_total"):
        if labels.get("verb") in WRITE_VERBS:
            key = labels.get("resource", "") + (
                "/" + labels["subresource"] if labels.get("subresource") else ""
            )
            out[key] = out.get(key, 0.0) + value
    return out


def _operator_requests(text: str) -> float:
    """Requests APF dispatched for the ``service-accounts`` flow schema: the operator's alone
    (controllers run as kube-system accounts, the bench as an exempt admin)."""
    return _sum(
        text,
        "apiserver_flowcontrol_dispatched_requests_total",
        lambda x: x.get("flow_schema") == "service-accounts",
    )


async def _monitor(
    redis_port: int, operator: psutil.Process, seconds: float
) -> tuple[int, int, dict[str, int]]:
    """Redis commands sent by the operator's connections during ``seconds`` (MONITOR)."""
    ports = {
        c.laddr.port
        for c in operator.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == redis_port and c.status == psutil.CONN_ESTABLISHED
    }
    proc = await asyncio.create_subprocess_exec(
        "redis-cli",
        "-p",
        str(redis_port),
        "monitor",
        stdout=asyncio.subprocess.PIPE,
        limit=2**26,  # a full heartbeat's EVALSHA names every session of its node
    )
    assert proc.stdout is not None
    top = inner = 0
    by: dict[str, int] = {}
    mine = False
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), left)
            except TimeoutError:
                break
            parts = line.decode(errors="replace").split(" ", 3)
            if len(parts) < 4 or not parts[1].startswith("["):
                continue
            source, command = parts[2].rstrip("]"), parts[3].split(" ", 1)[0].strip('"').upper()
            if source == "lua":
                inner += mine
                continue
            mine = source.rpartition(":")[2].isdigit() and int(source.rpartition(":")[2]) in ports
            if mine:
                top += 1
                by[command] = by.get(command, 0) + 1
    finally:
        proc.terminate()
        await proc.wait()
    return top, inner, by


class FakeNodes:
    """The steady state's sessions: ``FAKE_NODES`` registry nodes in this process that hold
    one session per object and heartbeat them (no agents, no start requests)."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.nodes: list[SessionRegistry] = []
        self._beat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for i in range(FAKE_NODES):
            registry = SessionRegistry(
                RedisSessionKVStore(url=self.redis_url),
                node_id=f"bench-fake-{i}",
                ttl=FAKE_TTL,
                foreign_scan_interval=None,
            )
            await registry.start()
            self.nodes.append(registry)
        self._beat = asyncio.create_task(self._heartbeats())

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(FAKE_TTL / 6)
            await asyncio.gather(*(node.heartbeat() for node in self.nodes))

    async def stop(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        for node in self.nodes:
            await node.stop()


async def _fill(client: Client, fake: FakeNodes, n: int) -> int:
    """``n`` objects that are Running on the fake nodes, written with the operator stopped:
    created with the finalizer, their session registered, their status written as the
    operator writes it (no legacy ``lastHeartbeatAt``: the operator would remove it from
    each object once, 10,000 writes that are a migration, not the steady state)."""
    gate = asyncio.Semaphore(CONNECTIONS)
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        name = f"s-{i:05d}"
        node = fake.nodes[i % len(fake.nodes)]
        body = {
            "apiVersion": "callboard.dev/v1alpha1",
            "kind": "AgentSession",
            "metadata": {"name": name, "finalizers": [FINALIZER]},
            "spec": {"callId": f"call-{name}"},
        }
        async with gate:
            async with client.session.post(
                client.server + agentsession_path(NAMESPACE), json=body
            ) as response:
                created = await response.json()
                if response.status != 201:
                    raise RuntimeError(f"create {name}: {response.status} {created}")
            session_id = session_id_for(NAMESPACE, created["metadata"]["uid"], 1)
            info = await node.register(f"call-{name}", session_id)
            now = format_time(time.time())
            status = {
                "status": {
                    "phase": "Running",
                    "sessionId": session_id,
                    "nodeId": node.node_id,
                    "attempts": 1,
                    "attemptStartedAt": now,
                    "startedAt": format_time(info.started_at),
                    "observedGeneration": created["metadata"].get("generation", 1),
                }
            }
            async with client.session.patch(
                client.server + agentsession_path(NAMESPACE, name) + "/status",
                json=status,
                headers={"Content-Type": "application/merge-patch+json"},
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"status of {name}: {response.status}")
            done += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return done


async def _operator_writes(client: Client) -> dict[str, float]:
    return _writes(await client.apiserver_metrics())


async def _steady(
    client: Client, n: int, redis_port: int, sync_interval: float, restart: Callable[[], int]
) -> Steady:
    """The operator stopped, ``n`` Running objects and their sessions written by the bench,
    the operator started again; once its writes have calmed down, one quiet window."""
    result = Steady(n=n)
    fake = FakeNodes(client.redis_url)
    await fake.start()
    try:
        print(
            f"  steady state: writing {n:,} Running objects and their sessions (operator stopped)...",
            flush=True,
        )
        started = time.perf_counter()
        result.running = await _fill(client, fake, n)
        result.fill_wall = time.perf_counter() - started
        client.operator = psutil.Process(restart())
        await _ready(client.liveness)
        print(f"  written in {result.fill_wall:.0f} s; operator restarted, settling", flush=True)
        deadline = time.perf_counter() + SETTLE_MAX
        before, cpu_before = await _operator_writes(client), _cpu(client.operator)
        while time.perf_counter() < deadline:
            await asyncio.sleep(SETTLE_STEP)
            after, cpu_after = await _operator_writes(client), _cpu(client.operator)
            rate = (
                sum(after.get(k, 0) - before.get(k, 0) for k in after if k.startswith(OPERATOR_WRITES))
                / SETTLE_STEP
            )
            cpu = 100 * (cpu_after - cpu_before) / SETTLE_STEP
            before, cpu_before = after, cpu_after
            if rate <= SETTLED_WRITES and cpu <= SETTLED_CPU:
                break
        result.settle_wall = time.perf_counter() - started - result.fill_wall
        await _measure(client, result, redis_port, sync_interval)
    finally:
        await fake.stop()
    return result


async def _measure(client: Client, result: Steady, redis_port: int, sync_interval: float) -> None:
    assert client.operator is not None
    api0, op0 = await client.apiserver_metrics(), await client.operator_metrics_text()
    cpu0, t0 = _cpu(client.operator), time.perf_counter()
    await asyncio.sleep(WINDOW)
    api1, op1 = await client.apiserver_metrics(), await client.operator_metrics_text()
    cpu1, elapsed = _cpu(client.operator), time.perf_counter() - t0
    w0, w1 = _writes(api0), _writes(api1)
    delta = {k: (w1.get(k, 0.0) - w0.get(k, 0.0)) / elapsed for k in w1}
    result.lease_writes_per_s = delta.pop("leases", 0.0)
    result.writes_by = {k: v for k, v in delta.items() if v > 0}
    result.writes_per_s = sum(v for k, v in delta.items() if k.startswith(OPERATOR_WRITES))
    result.requests_per_s = (_operator_requests(api1) - _operator_requests(api0)) / elapsed
    result.cpu_percent = 100 * (cpu1 - cpu0) / elapsed
    result.rss_mib = client.operator.memory_info().rss / 2**20
    result.lag_mean, result.lag_p99 = _lag(op0, op1)
    sync = "callboard_operator_sync_seconds"
    count = _sum(op1, f"{sync}_count") - _sum(op0, f"{sync}_count")
    total = _sum(op1, f"{sync}_sum") - _sum(op0, f"{sync}_sum")
    result.window_cycles, result.cycle_mean = count, (total / count if count else None)
    cycles0 = _sum(await client.operator_metrics_text(), "callboard_operator_sync_seconds_count")
    top, inner, by = await _monitor(redis_port, client.operator, MONITOR_WINDOW)
    cycles = _sum(await client.operator_metrics_text(), "callboard_operator_sync_seconds_count") - cycles0
    result.cycles = cycles or MONITOR_WINDOW / sync_interval
    result.redis_per_cycle = top / result.cycles
    result.redis_script_per_cycle = inner / result.cycles
    result.redis_by = {k: v / result.cycles for k, v in sorted(by.items(), key=lambda kv: -kv[1])}


def _operator_kubeconfig(kube: kh.KubeEnv, path: Path) -> Path:
    """The chart's ServiceAccount, RBAC, Lease and FlowSchemas (rendered by helm, watching NAMESPACE), and a
    kubeconfig with a TokenRequest token of that account."""
    rendered = kube.helm(
        "template",
        RELEASE,
        "charts/callboard",
        "-n",
        OPERATOR_NAMESPACE,
        "--set",
        f"operator.watchNamespaces={{{NAMESPACE}}}",
        "--set",
        "operator.adoption.enabled=false",
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
        "--show-only",
        "templates/operator-lease.yaml",  # helm owns the Lease; the operator may not create it
        "--show-only",
        "templates/operator-flowschema.yaml",  # the chart's APF: its Lease at leader-election
    ).stdout
    kube.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    kube.kubectl("apply", "-f", "-", input=rendered)
    token = kube.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=12h"
    ).stdout.strip()
    admin = kube.kubectl_json("config", "view", "--raw", "--minify")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "bench", "user": SERVICE_ACCOUNT}}],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    return path


class Processes:
    """The nodes and the operator, each a process; the operator can be stopped and started."""

    def __init__(self, kube: kh.KubeEnv, redis_url: str, log_dir: Path, kubeconfig: Path) -> None:
        self.script = Path(sys.executable).parent / "callboard"
        self.log_dir = log_dir
        base = {k: v for k, v in kube.env.items() if not k.startswith(("CALLBOARD_", "POD_"))}
        self.base = base | {
            "CALLBOARD_REDIS_URL": redis_url,
            "CALLBOARD_LOG_LEVEL": os.environ.get("CALLBOARD_BENCH_LOG_LEVEL", "warning"),
        }
        self.liveness, self.metrics = free_port(), free_port()
        while self.metrics == self.liveness:
            self.metrics = free_port()
        self.kubeconfig = kubeconfig
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.operator: subprocess.Popen[bytes] | None = None
        self._runs = 0

    def start_nodes(self, *, slow: bool = False) -> None:
        """Start the nodes: the built-in agent, or (``slow``) :mod:`bench.slow_agent`."""
        for i in range(NODES):
            extra = {"CALLBOARD_AGENT": SLOW_AGENT, "CALLBOARD_JOIN_CALL": SLOW_JOIN} if slow else {}
            env = (
                self.base
                | extra
                | {
                    "PYTHONPATH": str(REPO),  # bench.slow_agent is not installed
                    "CALLBOARD_NODE_ID": f"bench-{'slow-' if slow else ''}node-{i}",
                    "CALLBOARD_PORT": str(free_port()),
                    "CALLBOARD_CAPACITY": str(NODE_CAPACITY),
                    "CALLBOARD_IDLE_TIMEOUT": "0",
                    "CALLBOARD_DRAIN_TIMEOUT": "1",
                }
            )
            with (self.log_dir / f"node-{'slow-' if slow else ''}{i}.log").open("wb") as log:
                self.nodes.append(
                    subprocess.Popen(
                        [str(self.script), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
                    )
                )

    def stop_nodes(self) -> None:
        _stop(self.nodes, timeout=30)
        self.nodes = []

    def start_operator(self, profile: str | None = None) -> int:
        """Start ``callboard operator`` (under cProfile on the first run, or with ``profile``,
        if asked); its pid."""
        env = self.base | {
            "KUBECONFIG": str(self.kubeconfig),
            "CALLBOARD_NAMESPACES": NAMESPACE,
            "CALLBOARD_LIVENESS_PORT": str(self.liveness),
            "CALLBOARD_METRICS_PORT": str(self.metrics),
            "CALLBOARD_LISTEN_HOST": "127.0.0.1",
            "CALLBOARD_LEASE_NAMESPACE": OPERATOR_NAMESPACE,
            "CALLBOARD_LEASE_NAME": LEASE_NAME,
            "POD_NAME": "bench-operator",
        }
        argv = [str(self.script), "operator"]
        if not profile and not self._runs:
            profile = os.environ.get("CALLBOARD_BENCH_OPERATOR_PROFILE")
        if profile:
            argv = [sys.executable, "-m", "cProfile", "-o", profile, *argv]
        self._runs += 1
        with (self.log_dir / f"operator-{self._runs}.log").open("wb") as log:
            self.operator = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self.operator.pid

    def stop_operator(self) -> None:
        if self.operator is not None:
            _stop([self.operator], timeout=60)
            self.operator = None

    def restart_operator(self) -> int:
        self.stop_operator()
        return self.start_operator()

    def stop(self) -> None:
        _stop([p for p in [self.operator, *self.nodes] if p is not None], timeout=30)


def _stop(procs: list[subprocess.Popen[bytes]], *, timeout: float) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _ready(liveness: int) -> None:
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{liveness}/healthz") as response:
                    if response.status == 200 and "standby" not in await response.text():
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("the operator did not become ready within 120 s")


@dataclass
class Results:
    floor: list[Burst] = field(default_factory=list)
    write_floor: list[Burst] = field(default_factory=list)
    """Creates each followed by one Running status write of the bench's own (no operator)."""
    operator: list[Burst] = field(default_factory=list)
    slow: list[Burst] = field(default_factory=list)
    """Bursts on nodes that confirm after 1 s (:mod:`bench.slow_agent`)."""
    steady: Steady | None = None
    client_429: int = 0


async def _list_version(session: aiohttp.ClientSession, server: str) -> str:
    """The namespace's list version, once the API server serves the new CRD (it may answer
    404 for a moment after the CRD is Established)."""
    deadline = time.monotonic() + 60
    while True:
        async with session.get(server + agentsession_path(NAMESPACE)) as response:
            body = await response.json()
        version = (body.get("metadata") or {}).get("resourceVersion")
        if response.status == 200 and version:
            return str(version)
        if time.monotonic() > deadline:
            raise RuntimeError(f"cannot list AgentSessions: {response.status} {body}")
        await asyncio.sleep(0.5)


def _apiserver_process() -> psutil.Process | None:
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name() == "kube-apiserver":
                return child
    return None


@dataclass(frozen=True)
class Plan:
    """What to run: burst sizes, how many times each, the slow row's size, the steady state's."""

    sizes: list[int]
    runs: int
    slow: int
    steady: int


async def _run(kube: kh.KubeEnv, redis: RedisServer, log_dir: Path, kubeconfig: Path, plan: Plan) -> Results:
    info = login()
    results = Results()
    connector = aiohttp.TCPConnector(ssl=info.as_ssl_context(), limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, headers=info.as_http_headers()) as session:
        client = Client(session=session, server=info.server, watch=Watch(), apiserver=_apiserver_process())
        version = await _list_version(session, info.server)
        # The watch has a connection of its own: the burst's 64 must not queue it.
        watch_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()), headers=info.as_http_headers()
        )
        watcher = asyncio.create_task(client.watch.run(watch_session, info.server, version))
        try:
            await asyncio.sleep(0.5)
            rounds = [
                (run * len(plan.sizes) + i, n) for run in range(plan.runs) for i, n in enumerate(plan.sizes)
            ]
            for round_no, n in rounds:
                print(f"  floor: burst of {n} (no operator)...", flush=True)
                results.floor.append(await _floor(client, n, round_no))
                print(f"  write floor: burst of {n}, each with one status write (no operator)...", flush=True)
                results.write_floor.append(await _floor(client, n, round_no, write=True))
            procs = Processes(kube, redis.url, log_dir, kubeconfig)
            try:
                procs.start_nodes()
                client.nodes = [psutil.Process(p.pid) for p in procs.nodes]
                client.operator = psutil.Process(procs.start_operator())
                client.operator_metrics = f"http://127.0.0.1:{procs.metrics}/metrics"
                client.liveness, client.redis_url = procs.liveness, redis.url
                await _ready(procs.liveness)
                await asyncio.sleep(1.0)  # nodes heartbeat within their first second
                for round_no, n in rounds:
                    print(f"  operator: burst of {n}...", flush=True)
                    if client.operator_alive():
                        results.operator.append(await _operator_burst(client, n, round_no))
                        _progress(results.operator[-1])
                    else:
                        results.operator.append(Burst(n=n, complete=False, operator_exited=True))
                if plan.slow and client.operator_alive():
                    procs.stop_nodes()
                    procs.start_nodes(slow=True)
                    client.nodes = [psutil.Process(p.pid) for p in procs.nodes]
                    await asyncio.sleep(2.0)  # the old nodes' records go, the new ones heartbeat
                    for run in range(plan.runs):
                        print(
                            f"  operator: burst of {plan.slow} on nodes that confirm after 1 s...", flush=True
                        )
                        if client.operator_alive():
                            results.slow.append(await _operator_burst(client, plan.slow, 1000 + run))
                            _progress(results.slow[-1])
                if not client.operator_alive():
                    print(f"  the operator exited: see {log_dir}/operator-1.log", flush=True)
                results.client_429 = client.client_429
                _table(results)  # now: a failure of the steady state must not lose it
                _slow_table(results)
                if plan.steady:
                    procs.stop_operator()
                    profile = os.environ.get("CALLBOARD_BENCH_OPERATOR_STEADY_PROFILE")
                    results.steady = await _steady(
                        client, plan.steady, redis.port, 1.0, lambda: procs.start_operator(profile)
                    )
            finally:
                procs.stop()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await watch_session.close()
        results.client_429 = client.client_429
    return results


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    rows = [header, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def _lag_cell(mean: float | None, p99: float | None) -> str:
    if mean is None:
        return "-"
    bound = "?" if p99 is None else f"{p99 * 1000:g}"
    return f"{mean * 1000:.1f}/{bound} ms"


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _q(samples: list[float], q: float | None) -> float | None:
    if not samples:
        return None
    return statistics.median(samples) if q is None else _percentile(samples, q)


def _med_s(bursts: list[Burst], q: float | None, *, down: bool = False) -> str:
    """The median over the runs of each run's ``q`` quantile (p50 with None) of up (or down) times."""
    per_run = [v for b in bursts if (v := _q(b.down if down else b.up, q)) is not None]
    return f"{_med(per_run):.2f} s" if per_run else "-"


def _progress(burst: Burst) -> None:
    """One line per burst as it ends: a run cut short still shows what it measured."""
    rate = _starts_per_s(burst)
    print(
        f"    -> p99 {_med_s([burst], 0.99)}, all Running {burst.up_wall:.1f} s, "
        f"{'-' if rate is None else f'{rate:.0f}'} starts/s, {_writes_cell([burst])} status writes/object, "
        f"operator CPU {burst.operator_cpu:.1f} s, nodes CPU {burst.nodes_cpu:.1f} s"
        + ("" if burst.complete else " (incomplete)"),
        flush=True,
    )


def _writes_cell(bursts: list[Burst]) -> str:
    per_object = [b.status_writes for b in bursts if b.status_writes is not None]
    return f"{_med(per_object):.2f}" if per_object else "-"


def _by_size(bursts: list[Burst]) -> dict[int, list[Burst]]:
    out: dict[int, list[Burst]] = {}
    for b in bursts:
        out.setdefault(b.n, []).append(b)
    return out


def _flags(bursts: list[Burst]) -> str:
    return (" (operator exited)" if any(b.operator_exited for b in bursts) else "") + (
        "" if all(b.complete for b in bursts) else " (incomplete)"
    )


def _table(results: Results) -> None:
    header = [
        "objects",
        "runs",
        "floor p50",
        "p99",
        "operator apply→Running p50",
        "p99",
        "ratio p99",
        "write floor p99",
        "ratio to it",
        "all Running",
        "delete→gone p99",
        "all gone",
        "429s",
        "apiserver CPU floor/write floor/op",
        "operator CPU",
        "nodes CPU",
        "status writes/object",
        "loop lag mean/p99≤",
    ]
    rows = []
    floors = _by_size(results.floor)
    write_floors = _by_size(results.write_floor)
    for n, ops in _by_size(results.operator).items():
        fl = floors.get(n, [])
        wf = write_floors.get(n, [])
        ratios = [
            _percentile(op.up, 0.99) / _percentile(f.up, 0.99)
            for f, op in zip(fl, ops, strict=False)
            if op.up and f.up
        ]
        write_ratios = [
            _percentile(op.up, 0.99) / _percentile(w.up, 0.99)
            for w, op in zip(wf, ops, strict=False)
            if op.up and w.up
        ]
        lags = [(b.lag_mean, b.lag_p99) for b in ops if b.lag_mean is not None]
        lag_mean = _med([m for m, _ in lags if m is not None]) if lags else None
        lag_p99s = [p for _, p in lags if p is not None]
        rows.append(
            [
                f"{n:,}" + _flags([*fl, *ops]),
                str(len(ops)),
                _med_s(fl, None),
                _med_s(fl, 0.99),
                _med_s(ops, None),
                _med_s(ops, 0.99),
                f"{_med(ratios):.1f}x" if ratios else "-",
                _med_s(wf, 0.99),
                f"{_med(write_ratios):.1f}x" if write_ratios else "-",
                f"{_med([b.up_wall for b in ops]):.1f} s",
                _med_s(ops, 0.99, down=True),
                f"{_med([b.down_wall for b in ops]):.1f} s",
                f"{_med([b.rejected for b in fl]):.0f}/{_med([b.rejected for b in ops]):.0f}",
                "/".join(f"{_med([b.apiserver_cpu for b in bs]):.1f}" for bs in (fl, wf, ops)) + " s",
                f"{_med([b.operator_cpu for b in ops]):.1f} s",
                f"{_med([b.nodes_cpu for b in ops]):.1f} s",
                _writes_cell(ops),
                _lag_cell(lag_mean, _med(lag_p99s) if lag_p99s else None),
            ]
        )
    _print_table(header, rows)
    print(
        f"burst: one client, {CONNECTIONS} keep-alive connections, times from the burst's start; "
        f"floor = the watch sees the object, no operator running; write floor = each create followed "
        f"by one Running status write of the bench's own, the watch sees Running (the least any "
        f"operator must cost the API server). {NODES} callboard serve nodes x "
        f"{NODE_CAPACITY} slots, operator defaults (sync every 1 s) as the chart's ServiceAccount "
        f"(default APF); 429s floor/operator; the bench client itself got {results.client_429} 429s. "
        f"Each figure is the median of the runs' figures. "
        f"{os.cpu_count()} CPUs; local etcd + kube-apiserver + kwok on the same machine"
    )


def _starts_per_s(burst: Burst) -> float | None:
    """Objects that went Running after the first one, per second until the last one did."""
    if len(burst.up) < 2:
        return None
    span = max(burst.up) - min(burst.up)
    return (len(burst.up) - 1) / span if span > 0 else None


def _slow_table(results: Results) -> None:
    if not results.slow:
        return
    print()
    rows = []
    for n, bursts in _by_size(results.slow).items():
        rates = [r for b in bursts if (r := _starts_per_s(b)) is not None]
        rows.append(
            [
                f"{n:,}" + _flags(bursts),
                str(len(bursts)),
                _med_s(bursts, None),
                _med_s(bursts, 0.99),
                f"{_med([b.up_wall for b in bursts]):.1f} s",
                f"{_med(rates):.0f}" if rates else "-",
                f"{_med([b.operator_cpu for b in bursts]):.1f} s",
                f"{_med([b.nodes_cpu for b in bursts]):.1f} s",
                _writes_cell(bursts),
            ]
        )
    _print_table(
        [
            "objects (nodes confirm after 1 s)",
            "runs",
            "apply→Running p50",
            "p99",
            "all Running",
            "starts/s sustained",
            "operator CPU",
            "nodes CPU",
            "status writes/object",
        ],
        rows,
    )
    print(
        f"slow nodes: {NODES} callboard serve nodes whose agent is ready 1 s after the claim "
        "(bench.slow_agent); starts/s = objects Running after the first, per second until the last. "
        "Medians of the runs."
    )


def _steady_table(results: Results) -> None:
    s = results.steady
    if s is None:
        return
    print()
    _print_table(
        [
            "steady objects",
            "operator API writes/s",
            "Lease writes/s (all)",
            "operator requests/s",
            "operator CPU",
            "RSS",
            "Redis cmds/sync cycle",
            "+ in scripts",
            "sync cycles, mean",
            "loop lag mean/p99≤",
        ],
        [
            [
                f"{s.running:,}" + ("" if s.running == s.n else f" of {s.n:,}"),
                f"{s.writes_per_s:.2f}",
                f"{s.lease_writes_per_s:.2f}",
                f"{s.requests_per_s:.2f}",
                f"{s.cpu_percent:.1f} %",
                f"{s.rss_mib:.0f} MiB",
                f"{s.redis_per_cycle:.1f}",
                f"{s.redis_script_per_cycle:.1f}",
                f"{s.window_cycles:.0f}, "
                + ("-" if s.cycle_mean is None else f"{1000 * s.cycle_mean:.0f} ms"),
                _lag_cell(s.lag_mean, s.lag_p99),
            ]
        ],
    )
    by = ", ".join(f"{k} {v:.1f}" for k, v in s.redis_by.items())
    writes = ", ".join(f"{k} {v:.2f}" for k, v in sorted(s.writes_by.items())) or "none"
    print(
        f"steady: {s.running:,} Running objects and their sessions (on {FAKE_NODES} registry nodes of the "
        f"bench) written in {s.fill_wall:.0f} s with the operator stopped; operator restarted, settled in "
        f"{s.settle_wall:.0f} s (writes ≤ {SETTLED_WRITES:.0f}/s, CPU ≤ {SETTLED_CPU:.0f} %), "
        f"{WINDOW:.0f} s measured "
        f"(Redis: {MONITOR_WINDOW:.0f} s of MONITOR, {s.cycles:.0f} sync cycles). "
        f"Redis per cycle: {by or 'none'}. "
        f"API writes/s by resource (all clients, Lease renewals of every component included): {writes}"
    )


def main() -> None:
    sizes = [int(s) for s in os.environ.get("CALLBOARD_BENCH_OPERATOR_SIZES", "").split(",") if s.strip()]
    plan = Plan(
        sizes=sizes or list(DEFAULT_SIZES),
        runs=max(1, int(os.environ.get("CALLBOARD_BENCH_OPERATOR_RUNS", str(DEFAULT_RUNS)))),
        slow=int(os.environ.get("CALLBOARD_BENCH_OPERATOR_SLOW", str(DEFAULT_SLOW))),
        steady=int(os.environ.get("CALLBOARD_BENCH_OPERATOR_STEADY", str(DEFAULT_STEADY))),
    )
    # A SIGTERM unwinds like Ctrl-C: the processes and the control plane are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
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
            log_dir = Path(tempfile.mkdtemp(prefix="callboard-bench-operator-"))
            kubeconfig = _operator_kubeconfig(kube, log_dir / "operator-kubeconfig")
            os.environ["KUBECONFIG"] = str(kube.kubeconfig)
            print(f"  process logs in {log_dir}", flush=True)
            results = asyncio.run(_run(kube, redis, log_dir, kubeconfig, plan))
            _steady_table(results)
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
