"""The buffer policy end to end: the chart's agent pool, the real controller-manager, real Redis.

The chart is installed with its agent pool (kwok runs the pods, so no process runs inside
them). Each Ready agent pod gets what its sidecar would keep: a node record in the real
Redis named after the pod (``SessionRegistry`` with the pod's name, namespace, pool and
capacity), heartbeated, and removed when the pod goes. The autoscaler
(:func:`callboard.kube.autoscaling.loop.run_autoscaler`) runs in the test's event loop with the
credentials of the chart's operator ServiceAccount, so the chart's RBAC is what it gets.

Sessions rise: replicas rise. Sessions end on the *oldest* pods, which the ReplicaSet
controller would otherwise keep (it removes the newest first): replicas fall, and the pods
removed are exactly the idle ones, chosen by the real controller through pod-deletion-cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from callboard.errors import NodeDrainingError, StoreError
from callboard.kube.autoscaling.loop import AutoscalerMetrics, run_autoscaler
from callboard.kube.autoscaling.policy import AutoscaleSettings, Buffer, ScalingMode
from callboard.kube.k8s.client import KubeApi
from callboard.registry import RedisSessionKVStore, SessionRegistry
from tests.support.kube import KubeEnv
from tests.support.waiting import wait_until as until

from .conftest import CHART

CAPACITY = 2
WINDOW = 2.0
INTERVAL = 0.2
POOL = "default"


class Sidecars:
    """A node record per Ready agent pod, as the pod's `callboard sidecar` would keep it."""

    def __init__(self, api: KubeApi, redis_url: str, namespace: str, selector: str) -> None:
        self.api = api
        self.redis_url = redis_url
        self.namespace = namespace
        self.selector = selector
        self.nodes: dict[str, SessionRegistry] = {}
        self.order: list[str] = []
        """Pod names in the order they came up."""
        self._n = 0

    async def pods(self) -> list[dict[str, Any]]:
        listing = await self.api.get(
            f"/api/v1/namespaces/{self.namespace}/pods", params={"labelSelector": self.selector}
        )
        return list(listing["items"])

    async def sync(self) -> None:
        live = set()
        for pod in await self.pods():
            name = pod["metadata"]["name"]
            status = pod.get("status") or {}
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
            )
            if pod["metadata"].get("deletionTimestamp") or not ready:
                continue
            live.add(name)
            if name not in self.nodes:
                node = SessionRegistry(RedisSessionKVStore(url=self.redis_url), node_id=name, ttl=10)
                node.set_node_info(capacity=CAPACITY, pool=POOL, pod_name=name, namespace=self.namespace)
                await node.start()
                self.nodes[name] = node
                self.order.append(name)
        for name in set(self.nodes) - live:  # the pod is going: its sidecar deregisters
            await self.nodes.pop(name).stop()
        for node in self.nodes.values():
            await node.heartbeat()

    async def run(self) -> None:
        while True:
            await self.sync()
            await asyncio.sleep(0.2)

    async def start_session(self, pod: str) -> tuple[str, str]:
        self._n += 1
        call = f"call-{self._n}"
        await self.nodes[pod].register(call, "s")
        return call, "s"

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.stop()
        self.nodes.clear()


def _login(kube_env: KubeEnv, *, namespace: str, service_account: str | None = None) -> Callable[[], Any]:
    """Credentials of a ServiceAccount (a TokenRequest token), else the admin's client certificate."""
    config = kube_env.kubectl_json("config", "view", "--raw", "--minify")
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    credentials: dict[str, Any] = {}
    if service_account:
        credentials["token"] = kube_env.kubectl(
            "create", "token", service_account, "-n", namespace, "--duration=1h"
        ).stdout.strip()
    else:
        credentials = {
            "token": user.get("token"),
            "certificate_data": user.get("client-certificate-data"),
            "private_key_data": user.get("client-key-data"),
        }
    info = kopf.ConnectionInfo(
        server=cluster["server"],
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        default_namespace=namespace,
        **credentials,
    )
    return lambda: info


@pytest.fixture
async def installed(
    kube_env: KubeEnv, kube_namespace: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[str]:
    """The chart with an autoscaled agent pool (1 pod to start); the release name."""
    release = "cb-" + kube_namespace.rsplit("-", 1)[-1]
    values = {
        "redis": {"mode": "external", "external": {"url": redis_url}},
        "agentPool": {
            "enabled": True,
            "capacity": CAPACITY,
            "agent": {"image": {"repository": "registry.k8s.io/pause", "tag": "3.10"}},
            "autoscaling": {"mode": "operator", "minReplicas": 1, "maxReplicas": 6, "buffer": 1},
            # kwok completes deletions at once; the grace period is the sidecar's business.
        },
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    await asyncio.to_thread(
        kube_env.helm, "install", release, str(CHART), "-n", kube_namespace, "-f", str(path),
        "--wait", "--timeout", "120s", "--take-ownership",
    )  # fmt: skip
    try:
        yield release
    finally:
        await asyncio.to_thread(
            kube_env.helm, "uninstall", release, "-n", kube_namespace, "--wait", check=False
        )


async def test_buffer_policy_end_to_end(
    kube_env: KubeEnv, kube_namespace: str, redis_url: str, installed: str
) -> None:
    ns, release = kube_namespace, installed
    deployment = f"{release}-callboard-agents-{POOL}"
    admin = KubeApi(_login(kube_env, namespace=ns))
    operator = KubeApi(_login(kube_env, namespace=ns, service_account=f"{release}-callboard"))
    await admin.open()
    await operator.open()
    scale_path = f"/apis/apps/v1/namespaces/{ns}/deployments/{deployment}/scale"
    selector = (await admin.get(scale_path))["status"]["selector"]
    sidecars = Sidecars(admin, redis_url, ns, selector)
    store = RedisSessionKVStore(url=redis_url)
    await store.start()
    registry = SessionRegistry(store, node_id="autoscaler", ttl=10, foreign_scan_interval=None)
    metrics = AutoscalerMetrics()
    settings = AutoscaleSettings(
        mode=ScalingMode.SCALE,
        namespace=ns,
        deployment=deployment,
        pool=POOL,
        min_replicas=1,
        max_replicas=6,
        buffer=Buffer(count=1),
        interval=INTERVAL,
        scale_down_window=WINDOW,
        settle=0.5,
    )
    stop = asyncio.Event()
    history: list[int] = []

    async def replicas() -> int:
        count = int((await admin.get(scale_path))["spec"]["replicas"])
        if not history or history[-1] != count:
            history.append(count)
        return count

    async def up(count: int) -> None:
        """The Deployment asks for ``count`` pods and all of them registered as nodes."""
        await until(lambda: _eq(replicas(), count), timeout=60, what=f"{count} replicas")
        await until(lambda: _eq(_len(sidecars.nodes), count), timeout=60, what=f"{count} registered pods")

    tasks = [
        asyncio.create_task(sidecars.run(), name="sidecars"),
        asyncio.create_task(
            run_autoscaler(settings=settings, registry=registry, api=operator, stop=stop, metrics=metrics),
            name="autoscaler",
        ),
    ]
    try:
        await up(1)
        # Sessions rise: (2 + 1) / 2 -> 2 pods, (4 + 1) / 2 -> 3, (6 + 1) / 2 -> 4.
        sessions: dict[str, list[tuple[str, str]]] = {}
        for count, (pod_index, started) in enumerate([(0, CAPACITY), (1, CAPACITY), (2, CAPACITY)], start=2):
            pod = sidecars.order[pod_index]
            sessions[pod] = [await sidecars.start_session(pod) for _ in range(started)]
            await up(count)
        p0, p1, p2, p3 = sidecars.order
        sessions[p3] = [await sidecars.start_session(p3)]
        assert history == [1, 2, 3, 4]
        await asyncio.sleep(3 * INTERVAL)
        assert await replicas() == 4  # 7 live + 1 buffer fit in 4 pods

        # The sessions of the two oldest pods end: (3 + 1) / 2 -> 2 pods. Without the costs the
        # controller would remove the two newest pods, which still run sessions.
        for pod in (p0, p1):
            for session in sessions.pop(pod):
                await sidecars.nodes[pod].remove(*session)
        ended = time.monotonic()
        await until(lambda: _eq(replicas(), 2), timeout=60, what="the scale-down to 2")
        assert time.monotonic() - ended >= WINDOW - INTERVAL - 0.3, "scaled down before the cool-down"

        async def two_left() -> set[str] | None:
            names = {
                p["metadata"]["name"]
                for p in await sidecars.pods()
                if not p["metadata"].get("deletionTimestamp")
            }
            return names if len(names) == 2 else None

        survivors = await until(two_left, timeout=60, what="2 pods left")
        assert survivors == {p2, p3}, (
            f"removed {sorted({p0, p1, p2, p3} - survivors)} instead of the idle {p0}, {p1}"
        )
        await asyncio.to_thread(
            kube_env.kubectl, "wait", "--for=delete", f"pod/{p0}", f"pod/{p1}", "-n", ns, "--timeout=60s"
        )
        assert {p["metadata"]["name"] for p in await sidecars.pods()} == {p2, p3}
        live = {(s.node_id, s.call_id) for s in await registry.list_sessions()}
        assert live == {(pod, call) for pod, calls in sessions.items() for call, _ in calls}
        # Down in one step or, when the two pods' sessions end in different cycles, in two:
        # either way only downwards, to 2.
        tail = history[4:]
        assert history[:4] == [1, 2, 3, 4] and tail in ([2], [3, 2]), history
        labels = {"namespace": ns, "deployment": deployment, "pool": POOL}
        assert metrics.registry.get_sample_value("callboard_autoscaler_desired_replicas", labels) == 2
        assert metrics.registry.get_sample_value("callboard_autoscaler_live_sessions", labels) == 3
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(tasks[1], 5)
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sidecars.close()
        await store.close()
        await operator.close()
        await admin.close()


async def _eq(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _len(mapping: dict[str, Any]) -> int:
    return len(mapping)


async def test_g9_sessions_that_land_during_the_settle_window_keep_their_pod(
    kube_env: KubeEnv, kube_namespace: str, redis_url: str, installed: str
) -> None:
    """A scale-down victim is marked draining: what tries to land on it meanwhile goes elsewhere.

    Three pods: p0 full, p1 and p2 idle after p1's sessions end; the buffer wants two, so the
    newest idle pod (p2) is the victim. From its mark until it is deleted a placer keeps
    trying it first (as ``spread`` would: it is the emptiest), and on refusal puts one session
    on p1 instead. That session keeps its pod, p2 goes, and no session ever ran on p2.
    """
    ns, release = kube_namespace, installed
    deployment = f"{release}-callboard-agents-{POOL}"
    admin = KubeApi(_login(kube_env, namespace=ns))
    operator = KubeApi(_login(kube_env, namespace=ns, service_account=f"{release}-callboard"))
    await admin.open()
    await operator.open()
    scale_path = f"/apis/apps/v1/namespaces/{ns}/deployments/{deployment}/scale"
    selector = (await admin.get(scale_path))["status"]["selector"]
    sidecars = Sidecars(admin, redis_url, ns, selector)
    store = RedisSessionKVStore(url=redis_url)
    await store.start()
    registry = SessionRegistry(store, node_id="autoscaler", ttl=10, foreign_scan_interval=None)
    settings = AutoscaleSettings(
        mode=ScalingMode.SCALE,
        namespace=ns,
        deployment=deployment,
        pool=POOL,
        min_replicas=1,
        max_replicas=6,
        buffer=Buffer(count=1),
        interval=INTERVAL,
        scale_down_window=WINDOW,
        settle=3.0,  # long enough for the placer below to act inside it
    )
    stop = asyncio.Event()

    async def replicas() -> int:
        return int((await admin.get(scale_path))["spec"]["replicas"])

    async def up(count: int) -> None:
        await until(lambda: _eq(replicas(), count), timeout=60, what=f"{count} replicas")
        await until(lambda: _eq(_len(sidecars.nodes), count), timeout=60, what=f"{count} registered pods")

    tasks = [
        asyncio.create_task(sidecars.run(), name="sidecars"),
        asyncio.create_task(
            run_autoscaler(settings=settings, registry=registry, api=operator, stop=stop), name="autoscaler"
        ),
    ]
    try:
        await up(1)
        p0 = sidecars.order[0]
        kept = [await sidecars.start_session(p0) for _ in range(CAPACITY)]  # (2 + 1) / 2 -> 2
        await up(2)
        p1 = sidecars.order[1]
        ending = [await sidecars.start_session(p1) for _ in range(CAPACITY)]  # (4 + 1) / 2 -> 3
        await up(3)
        p2 = sidecars.order[2]
        for session in ending:  # (2 + 1) / 2 -> 2: one of the two idle pods (p1, p2) goes
            await sidecars.nodes[p1].remove(*session)

        async def marked() -> set[str]:
            return await registry.drain_marks([p0, p1, p2])

        chosen = await until(marked, timeout=60, interval=0.01, what="the victim's drain mark")
        # Which idle pod is chosen depends on its deletion cost at that moment (p1's falls from
        # its busy peak once it is idle): either way exactly one, and never the busy p0.
        assert len(chosen) == 1 and chosen <= {p1, p2}, chosen
        (doomed,) = chosen
        (spared,) = {p1, p2} - chosen
        refused, landed_on_victim = 0, []
        while (victim := sidecars.nodes.get(doomed)) is not None:  # until its pod goes
            try:
                landed_on_victim.append(await victim.register(f"try-{refused}", "s"))
            except NodeDrainingError:
                refused += 1
            except StoreError:
                break  # its sidecar stopped meanwhile (the pod is being deleted)
            if refused == 1:
                kept.append(await sidecars.start_session(spared))  # placed elsewhere, inside the window
            await asyncio.sleep(0.05)
        assert landed_on_victim == [] and refused >= 1

        async def left() -> set[str] | None:
            names = {
                p["metadata"]["name"]
                for p in await sidecars.pods()
                if not p["metadata"].get("deletionTimestamp")
            }
            return names if len(names) == 2 else None

        assert await until(left, timeout=60, what="2 pods left") == {p0, spared}
        assert await replicas() == 2
        live = {(s.node_id, s.call_id) for s in await registry.list_sessions()}
        assert live == {(p0, call) for call, _ in kept[:CAPACITY]} | {(spared, kept[-1][0])}
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(tasks[1], 5)
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sidecars.close()
        await store.close()
        await operator.close()
        await admin.close()
