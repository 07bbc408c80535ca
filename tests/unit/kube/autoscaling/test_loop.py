"""The autoscaling loop over a small fake API server and an in-memory registry.

The fake keeps one Deployment's scale and pods and, like the ReplicaSet controller, deletes
pods on a scale-down in its order: not-ready first, then the lowest pod-deletion-cost (then
the newest). New replicas appear as ready pods at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

import pytest

from callboard.errors import NodeDrainingError
from callboard.kube.autoscaling.loop import (
    Autoscaler,
    AutoscalerMetrics,
    pod_views,
    run_autoscaler,
    scale_path,
)
from callboard.kube.autoscaling.policy import VICTIM_COST, AutoscaleSettings, Buffer, ScalingMode
from callboard.kube.k8s.client import ConflictError, KubeApiError
from callboard.kube.resource.constants import POD_DELETION_COST
from callboard.registry import InMemorySessionKVStore, NodeInfo, SessionInfo, SessionRegistry
from tests.support.fake_kube import FakeDeployment, FakeKube

NS = "agents"
DEPLOYMENT = "pool"
COST = POD_DELETION_COST


def deployment(replicas: int) -> FakeDeployment:
    """The agent Deployment on a fresh fake API server, its pods started."""
    return FakeKube().add_deployment(DEPLOYMENT, NS, replicas=replicas, labels={"app": "pool"})


class Agents:
    """One registry per pod (as its sidecar would keep), on one shared in-memory store."""

    def __init__(self, store: InMemorySessionKVStore, *, capacity: int) -> None:
        self.store = store
        self.capacity = capacity
        self.nodes: dict[str, SessionRegistry] = {}
        self.ids = itertools.count()

    async def sync(self, cluster: FakeDeployment) -> None:
        for name in cluster.pods.keys() - self.nodes.keys():
            node = SessionRegistry(self.store, node_id=name, ttl=30)
            node.set_node_info(capacity=self.capacity, pod_name=name, namespace=NS, pool="default")
            await node.start()
            self.nodes[name] = node
        for name in self.nodes.keys() - cluster.pods.keys():
            await self.nodes.pop(name).stop()

    async def start_session(self, pod: str) -> tuple[str, str]:
        call = f"call-{next(self.ids)}"
        await self.nodes[pod].register(call, "s1")
        return call, "s1"

    async def end_session(self, pod: str, session: tuple[str, str]) -> None:
        await self.nodes[pod].remove(*session)

    async def close(self) -> None:
        for node in self.nodes.values():
            node._running = False  # the shared store is closed once, by the fixture
        self.nodes.clear()


@pytest.fixture
async def store() -> AsyncIterator[InMemorySessionKVStore]:
    store = InMemorySessionKVStore(cleanup_interval=60)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def agents(store: InMemorySessionKVStore) -> AsyncIterator[Agents]:
    agents = Agents(store, capacity=2)
    yield agents
    await agents.close()


def make_settings(**kw: Any) -> AutoscaleSettings:
    base: dict[str, Any] = {
        "mode": ScalingMode.SCALE,
        "namespace": NS,
        "deployment": DEPLOYMENT,
        "pool": "default",
        "min_replicas": 1,
        "max_replicas": 6,
        "buffer": Buffer(count=1),
        "interval": 0.01,
        "scale_down_window": 0.0,
        "settle": 0.01,
    }
    base.update(kw)
    return AutoscaleSettings(**base)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scaler(cluster: FakeDeployment, store: InMemorySessionKVStore, **kw: Any) -> Autoscaler:
    clock = kw.pop("clock", FakeClock())
    registry = SessionRegistry(store, node_id="autoscaler", ttl=30, foreign_scan_interval=None)
    return Autoscaler(settings=make_settings(**kw), registry=registry, api=cluster.kube, clock=clock)


async def test_sessions_rise_then_end_and_only_idle_pods_go(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=1)
    auto = scaler(cluster, store)
    await agents.sync(cluster)
    first = next(iter(cluster.pods))

    # Idle: (0 + 1) / 2 -> 1 pod.
    assert (await auto.cycle()).target == 1
    # Two sessions fill the pod: (2 + 1) / 2 -> 2.
    s1 = [await agents.start_session(first) for _ in range(2)]
    assert (await auto.cycle()).target == 2
    assert cluster.replicas == 2
    await agents.sync(cluster)
    second = max(cluster.pods)
    s2 = [await agents.start_session(second) for _ in range(2)]
    assert (await auto.cycle()).target == 3
    await agents.sync(cluster)
    third = max(cluster.pods)
    s3 = await agents.start_session(third)
    assert (await auto.cycle()).target == 3  # 5 live + 1 -> 3

    # The first two pods' sessions end; the third (newest) keeps one: (1 + 1) / 2 -> 1.
    for s in s1:
        await agents.end_session(first, s)
    for s in s2:
        await agents.end_session(second, s)
    decision = await auto.cycle()
    assert decision.target == 1
    assert set(decision.victims) == {first, second}
    assert set(cluster.deleted) == {first, second}
    assert list(cluster.pods) == [third]
    await agents.end_session(third, s3)


async def test_pending_agentsessions_grow_a_full_pool_for_all_of_them_at_once(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=1)
    await agents.sync(cluster)
    pod = next(iter(cluster.pods))
    for _ in range(2):
        await agents.start_session(pod)  # the one pod is full
    metrics = AutoscalerMetrics()
    registry = SessionRegistry(store, node_id="autoscaler", ttl=30, foreign_scan_interval=None)
    auto = Autoscaler(
        settings=make_settings(max_replicas=10),
        registry=registry,
        api=cluster.kube,
        clock=FakeClock(),
        metrics=metrics,
        pending=lambda: 6,  # six AgentSessions found no room
    )
    decision = await auto.cycle()
    # (2 live + 6 pending + 1 buffer) / 2 per pod -> 5 pods, in one step.
    assert decision.target == 5 and cluster.replicas == 5
    labels = {"namespace": NS, "deployment": DEPLOYMENT, "pool": "default"}
    assert metrics.registry.get_sample_value("callboard_autoscaler_pending_sessions", labels) == 6


async def test_scale_down_is_limited_to_idle_pods(store: InMemorySessionKVStore, agents: Agents) -> None:
    cluster = deployment(replicas=4)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    for name in names[1:]:
        await agents.start_session(name)  # 3 busy pods, 1 idle
    auto = scaler(cluster, store, buffer=Buffer(count=0), min_replicas=0, capacity=10)
    decision = await auto.cycle()
    # (3 + 0) / 10 -> 1 wanted, but only one pod is idle.
    assert decision.target == 3
    assert decision.victims == (names[0],)
    assert "only 1 idle pods" in decision.reason
    assert cluster.deleted == [names[0]]


async def test_a_victim_that_gets_a_session_meanwhile_stays(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=3)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    await agents.start_session(names[0])
    auto = scaler(cluster, store, buffer=Buffer(count=0), min_replicas=1, capacity=10)
    landed: list[asyncio.Task[tuple[str, str]]] = []

    def on_patch(name: str, body: dict[str, Any]) -> None:
        # The placer puts a session on the newest victim right after it was marked.
        if body["metadata"]["annotations"][COST] == str(VICTIM_COST) and name == names[2] and not landed:
            landed.append(asyncio.ensure_future(agents.start_session(name)))

    cluster.kube.on_pod_patch = on_patch
    decision = await auto.cycle()
    assert landed
    assert decision.target == 2
    assert decision.victims == (names[1],)
    assert cluster.deleted == [names[1]]
    # Its mark was taken back: the session count is its cost again.
    assert cluster.cost(names[2]) == "1"


async def test_a_victim_whose_cost_was_rewritten_stays(store: InMemorySessionKVStore, agents: Agents) -> None:
    cluster = deployment(replicas=2)
    await agents.sync(cluster)
    auto = scaler(cluster, store, buffer=Buffer(count=0), min_replicas=1, capacity=10)

    def operator_rewrites(name: str, body: dict[str, Any]) -> None:
        # The operator's annotator writes "0" for a pod it sees for the first time.
        if body["metadata"]["annotations"][COST] == str(VICTIM_COST):
            cluster.pods[name]["metadata"]["annotations"][COST] = "0"

    cluster.kube.on_pod_patch = operator_rewrites
    decision = await auto.cycle()
    assert decision.target == 2
    assert cluster.deleted == []
    assert cluster.scale_patches == []
    cluster.kube.on_pod_patch = None
    assert (await auto.cycle()).target == 1
    assert len(cluster.deleted) == 1


async def test_cool_down_holds_the_peak(store: InMemorySessionKVStore, agents: Agents) -> None:
    cluster = deployment(replicas=1)
    await agents.sync(cluster)
    clock = FakeClock()
    auto = scaler(cluster, store, scale_down_window=60.0, clock=clock)
    first = next(iter(cluster.pods))
    sessions = [await agents.start_session(first) for _ in range(2)]
    assert (await auto.cycle()).target == 2
    await agents.sync(cluster)
    for s in sessions:
        await agents.end_session(first, s)
    clock.now += 59
    decision = await auto.cycle()
    assert decision.target == 2
    assert "cool-down" in decision.reason
    clock.now += 1
    assert (await auto.cycle()).target == 1
    assert cluster.replicas == 1


async def test_stale_marks_are_taken_back(store: InMemorySessionKVStore, agents: Agents) -> None:
    cluster = deployment(replicas=2)
    await agents.sync(cluster)
    a, _ = sorted(cluster.pods)
    await agents.start_session(a)
    cluster.pods[a]["metadata"]["annotations"][COST] = str(VICTIM_COST)  # left by an earlier cycle
    auto = scaler(cluster, store, buffer=Buffer(count=2), capacity=2)
    decision = await auto.cycle()
    assert decision.target == 2
    assert decision.resets == {a: 1}
    assert cluster.cost(a) == "1"


async def test_metrics_mode_exports_and_marks_but_never_scales(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=3)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    for _ in range(2):
        await agents.start_session(names[0])
    metrics = AutoscalerMetrics()
    registry = SessionRegistry(store, node_id="autoscaler", ttl=30, foreign_scan_interval=None)
    auto = Autoscaler(
        settings=make_settings(mode=ScalingMode.METRICS, buffer=Buffer(count=1)),
        registry=registry,
        api=cluster.kube,
        metrics=metrics,
        clock=FakeClock(),
    )
    decision = await auto.cycle()
    assert decision.target == 2  # (2 + 1) / 2
    assert cluster.scale_patches == []
    assert cluster.cost(names[2]) == str(VICTIM_COST)
    labels = {"namespace": NS, "deployment": DEPLOYMENT, "pool": "default"}

    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"callboard_autoscaler_{name}", labels)

    assert value("desired_replicas") == 2
    assert value("policy_replicas") == 2
    assert value("replicas") == 3
    assert value("live_sessions") == 2
    assert value("free_slots") == 4  # 0 + 2 + 2
    assert value("idle_pods") == 2
    assert value("capacity") == 2
    # Already marked: no second patch of the same pod.
    patched: list[str] = []
    cluster.kube.on_pod_patch = lambda name, body: patched.append(name)
    await auto.cycle()
    assert patched == []


async def test_conflicting_scale_change_wins(store: InMemorySessionKVStore, agents: Agents) -> None:
    cluster = deployment(replicas=1)
    await agents.sync(cluster)
    first = next(iter(cluster.pods))
    for _ in range(2):
        await agents.start_session(first)
    auto = scaler(cluster, store)
    real_get = cluster.kube.get

    async def get_then_someone_scales(path: str, *, params: Mapping[str, str] | None = None) -> Any:
        result = await real_get(path, params=params)
        if path == scale_path(NS, DEPLOYMENT):
            cluster.version += 1  # kubectl scale, between our read and our patch
        return result

    cluster.kube.get = get_then_someone_scales  # type: ignore[method-assign]
    with pytest.raises(ConflictError):
        await auto.cycle()
    assert cluster.scale_patches == []


async def test_run_autoscaler_survives_failures_and_stops(
    store: InMemorySessionKVStore, agents: Agents, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = deployment(replicas=1)
    await agents.sync(cluster)
    first = next(iter(cluster.pods))
    for _ in range(2):
        await agents.start_session(first)
    cluster.kube.down = True
    stop = asyncio.Event()
    registry = SessionRegistry(store, node_id="autoscaler", ttl=30, foreign_scan_interval=None)
    caplog.set_level(logging.WARNING, logger="callboard.kube.autoscaling.loop")
    task = asyncio.create_task(
        run_autoscaler(settings=make_settings(), registry=registry, api=cluster.kube, stop=stop)
    )
    for _ in range(200):
        if "autoscaling cycle failed" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "connection refused" in caplog.text
    assert cluster.replicas == 1
    cluster.kube.down = False
    for _ in range(200):
        if cluster.replicas == 2:
            break
        await asyncio.sleep(0.01)
    assert cluster.replicas == 2
    stop.set()
    await asyncio.wait_for(task, 1.0)


async def test_run_autoscaler_off_returns_at_once(store: InMemorySessionKVStore) -> None:
    registry = SessionRegistry(store, node_id="autoscaler", ttl=30, foreign_scan_interval=None)
    cluster = deployment(replicas=1)
    await asyncio.wait_for(
        run_autoscaler(
            settings=AutoscaleSettings(), registry=registry, api=cluster.kube, stop=asyncio.Event()
        ),
        0.5,
    )


def test_pod_views_count_sessions_of_the_pods_node_records() -> None:
    pods = [
        {
            "metadata": {
                "name": "p1",
                "creationTimestamp": "t1",
                "annotations": {COST: "3"},
            },
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        },
        {
            "metadata": {"name": "p2", "deletionTimestamp": "t", "annotations": {COST: "x"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]},
        },
        {"metadata": {"name": "p3"}, "status": {"phase": "Pending"}},
    ]
    nodes = [
        NodeInfo(node_id="p1", capacity=4, active=1, pod_name="p1", namespace=NS),
        NodeInfo(node_id="p2", capacity=6, active=2, pod_name="p2", namespace=NS, draining=True),
        NodeInfo(node_id="other-ns", capacity=6, active=5, pod_name="p3", namespace="elsewhere"),
    ]
    sessions = [SessionInfo(session_id="s", call_id=f"c{i}", node_id="p1", started_at=0.0) for i in range(3)]
    views = {v.name: v for v in pod_views(pods, nodes, sessions, namespace=NS)}
    assert views["p1"].sessions == 3  # listed sessions beat the heartbeat's count
    assert views["p1"].ready and views["p1"].cost == 3 and views["p1"].capacity == 4
    assert views["p2"].sessions == 2
    assert views["p2"].terminating and views["p2"].draining and not views["p2"].ready
    assert views["p2"].cost is None
    assert views["p3"].sessions is None and not views["p3"].ready and views["p3"].pending
    assert not views["p1"].pending and not views["p2"].pending


async def test_g9_a_busy_pod_that_turns_unready_during_the_settle_window_stops_the_scale_down(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=3)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    await agents.start_session(names[0])  # busy; names[1], names[2] idle
    auto = scaler(cluster, store, buffer=Buffer(count=0), min_replicas=1, capacity=10)

    def on_patch(name: str, body: dict[str, Any]) -> None:
        # Right after the victims are marked, the busy pod fails its readiness probe: the
        # ReplicaSet controller would now delete it before any marked pod.
        if body["metadata"]["annotations"][COST] == str(VICTIM_COST):
            status = cluster.pods[names[0]]["status"]
            status["conditions"] = [{"type": "Ready", "status": "False"}]  # still Running

    cluster.kube.on_pod_patch = on_patch
    decision = await auto.cycle()
    assert decision.target == 3 and decision.victims == ()
    assert cluster.scale_patches == [] and cluster.deleted == []
    assert names[0] in cluster.pods
    # The marks were taken back.
    assert cluster.cost(names[1]) == "0" and cluster.cost(names[2]) == "0"


def on_mark(auto: Autoscaler, then: Callable[[list[str]], Awaitable[None]]) -> None:
    """Run ``then`` right after the autoscaler set its drain marks (inside the settle window)."""
    real = auto.registry.mark_draining

    async def mark_then(node_ids: Collection[str], *, ttl: float, by: str = "") -> None:
        await real(node_ids, ttl=ttl, by=by)
        await then(sorted(node_ids))

    auto.registry.mark_draining = mark_then  # type: ignore[method-assign]


async def test_g9_victims_are_marked_draining_and_refuse_sessions_in_the_settle_window(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=3)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    await agents.start_session(names[0])
    auto = scaler(cluster, store, buffer=Buffer(count=0), min_replicas=1, capacity=10)
    refused: list[str] = []

    async def try_to_land(marked: list[str]) -> None:
        for name in marked:  # the placer, or a start outside the operator
            with pytest.raises(NodeDrainingError):
                await agents.start_session(name)
            refused.append(name)

    on_mark(auto, try_to_land)
    decision = await auto.cycle()
    assert refused == [names[1], names[2]]
    assert decision.target == 1 and set(decision.victims) == {names[1], names[2]}
    assert set(cluster.deleted) == {names[1], names[2]}
    # The removed pods keep their marks (they drain by themselves once deleted; the TTL ends them).
    assert await auto.registry.drain_marks(names) == {names[1], names[2]}


async def test_g9_a_victim_whose_session_came_before_the_mark_stays_and_is_unmarked(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=3)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    await agents.start_session(names[0])
    auto = scaler(cluster, store, buffer=Buffer(count=0), min_replicas=1, capacity=10)

    async def landed_before(marked: list[str]) -> None:
        # Registered between the decision's read and the mark (its write raced the mark and
        # won, as a restore would): the fresh view must see it.
        await agents.nodes[names[2]].register("call-raced", "s1", new=False)

    on_mark(auto, landed_before)
    decision = await auto.cycle()
    assert decision.target == 2 and decision.victims == (names[1],)
    assert cluster.deleted == [names[1]]
    assert cluster.cost(names[2]) == "1"
    assert await auto.registry.drain_marks(names) == {names[1]}
    await agents.start_session(names[2])  # it takes new sessions again


async def test_g9_a_refused_scale_patch_takes_the_drain_marks_back(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=3)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    auto = scaler(cluster, store, buffer=Buffer(count=0), min_replicas=1, capacity=10)

    async def someone_scales(marked: list[str]) -> None:
        cluster.version += 1  # kubectl scale, between our read and our patch

    on_mark(auto, someone_scales)
    with pytest.raises(ConflictError):
        await auto.cycle()
    assert cluster.scale_patches == [] and cluster.deleted == []
    assert await auto.registry.drain_marks(names) == set()


async def test_g9_a_failed_fresh_read_takes_the_drain_marks_back(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=3)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    auto = scaler(cluster, store, buffer=Buffer(count=0), min_replicas=1, capacity=10)

    async def api_goes_down(marked: list[str]) -> None:
        cluster.kube.down = True

    on_mark(auto, api_goes_down)
    with pytest.raises(KubeApiError):
        await auto.cycle()
    assert cluster.scale_patches == []
    assert await auto.registry.drain_marks(names) == set()


async def test_g9_a_cancelled_scale_down_takes_the_drain_marks_back(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=3)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    auto = scaler(cluster, store, buffer=Buffer(count=0), min_replicas=1, capacity=10, settle=30.0)
    marked = asyncio.Event()

    async def note(node_ids: list[str]) -> None:
        marked.set()

    on_mark(auto, note)
    task = asyncio.create_task(auto.cycle())
    await marked.wait()
    assert await auto.registry.drain_marks(names) == {names[1], names[2]}
    task.cancel()  # leadership lost during the settle window
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cluster.scale_patches == []
    assert await auto.registry.drain_marks(names) == set()


async def test_g9_metrics_mode_sets_no_drain_mark_and_gives_a_busy_victim_its_cost_back(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=3)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    await agents.start_session(names[0])
    auto = scaler(
        cluster, store, mode=ScalingMode.METRICS, buffer=Buffer(count=0), min_replicas=1, capacity=10
    )
    landed: list[asyncio.Task[tuple[str, str]]] = []

    def on_patch(name: str, body: dict[str, Any]) -> None:
        if body["metadata"]["annotations"][COST] == str(VICTIM_COST) and name == names[2] and not landed:
            landed.append(asyncio.ensure_future(agents.start_session(name)))

    cluster.kube.on_pod_patch = on_patch
    decision = await auto.cycle()
    assert landed
    assert await auto.registry.drain_marks(names) == set()
    # Checked again after the settle window: the busy victim is no victim any more, at once.
    assert cluster.cost(names[2]) == "1"
    assert decision.target == 2 and decision.victims == (names[1],)
    assert cluster.scale_patches == []


async def test_g9_a_scale_patch_without_an_answer_leaves_the_marks_to_their_ttl(
    store: InMemorySessionKVStore, agents: Agents
) -> None:
    cluster = deployment(replicas=3)
    await agents.sync(cluster)
    names = sorted(cluster.pods)
    auto = scaler(cluster, store, buffer=Buffer(count=0), min_replicas=1, capacity=10)

    async def applied_but_no_answer(scale: Mapping[str, Any], replicas: int, *, direction: str) -> None:
        cluster.scale(replicas)  # the API server did it; the answer was lost
        raise KubeApiError(0, "connection reset")

    auto._patch_scale = applied_but_no_answer  # type: ignore[method-assign]
    with pytest.raises(KubeApiError):
        await auto.cycle()
    assert set(cluster.deleted) == {names[1], names[2]}
    # The pods may be on their way out: they keep refusing sessions until their marks expire.
    assert await auto.registry.drain_marks(names) == {names[1], names[2]}
