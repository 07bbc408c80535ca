"""The autoscaling loop: read the agent Deployment and the registry, apply the buffer policy.

:func:`run_autoscaler` is the single entry point; the operator runs it as one guarded task
while it holds the leader lease. Each cycle (every ``interval`` seconds):

1. ``GET .../deployments/{name}/scale``: the replica count and the pod selector;
2. ``GET .../pods?labelSelector=...``: the Deployment's pods (ready, terminating, cost);
3. one read of the registry (nodes and sessions) to count the sessions of each pod;
4. :func:`~callboard.kube.autoscaling.policy.assess` and
   :func:`~callboard.kube.autoscaling.policy.decide_scale`;
5. in ``scale`` mode: scale up at once; to scale down, mark the idle pods to remove with the
   lowest ``pod-deletion-cost`` *and* mark their nodes draining in the registry
   (:meth:`~callboard.registry.SessionRegistry.mark_draining`, with a TTL): from then on
   those nodes refuse every new session (their registration checks the mark atomically) and
   the placer skips them. Wait ``settle`` seconds, check again on a fresh view that each is
   still idle and still marked (a session registered before the mark, or the operator
   rewrote the cost), decide again on that view (a busy pod that turned not-ready, more
   demand: fewer or no removals; :func:`~callboard.kube.autoscaling.policy.confirm_scale_down`),
   take back both marks of every victim that stays, and
   patch the scale (with the read's resourceVersion, so a concurrent change wins) down by
   the pods that passed. The ReplicaSet controller then removes exactly those. On any
   failure before the patch the drain marks are taken back; a patch whose outcome is
   unknown (no answer) leaves them to their TTL.
6. in ``metrics`` mode: the same cost marks (no drain marks: nothing says when, or whether,
   the HPA acts), the same check after ``settle`` (a victim that got a session meanwhile
   gets its cost back at once, and the exported target counts it), and the target exported
   as a metric for an HPA or a KEDA ScaledObject (which does the scaling).

RBAC: ``get``/``patch`` on ``deployments/scale`` and ``list`` on ``pods`` in the agent
namespace, ``patch`` on those pods (the operator already has it for its annotations).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from callboard._aio import LogThrottle
from callboard.errors import StoreError
from callboard.kube.autoscaling.policy import (
    VICTIM_COST,
    Assessment,
    AutoscaleSettings,
    PodView,
    ScaleDecision,
    ScaleDownCheck,
    ScalingMode,
    Stabilizer,
    assess,
    confirm_scale_down,
    decide_scale,
)
from callboard.kube.k8s.client import ConflictError, KubeApi, KubeApiError, NotFoundError, pod_path
from callboard.kube.resource.constants import POD_DELETION_COST
from callboard.registry import NodeInfo, SessionInfo, SessionRegistry

__all__ = ["Autoscaler", "AutoscalerMetrics", "pod_views", "run_autoscaler", "scale_path"]

logger = logging.getLogger(__name__)

#: Seconds to wait for the drain marks to be taken back after a failed scale-down (also when
#: the task is cancelled): never hold a shutdown on Redis; a mark left expires with its TTL.
UNDRAIN_TIMEOUT = 2.0


def scale_path(namespace: str, deployment: str) -> str:
    return (
        f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/deployments/{quote(deployment, safe='')}/scale"
    )


def _pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"


class AutoscalerMetrics:
    """Gauges an HPA or KEDA scales on (``desired_replicas``), plus what explains them.

    Labels: ``namespace``, ``deployment`` and ``pool`` of the agent Deployment. Pass the
    operator's :class:`~prometheus_client.CollectorRegistry` to serve them on its ``/metrics``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        labels = ["namespace", "deployment", "pool"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"callboard_autoscaler_{name}", doc, labels, registry=self.registry)

        self.desired_replicas = gauge(
            "desired_replicas",
            "Replicas the buffer policy wants now, after the cool-down and the idle-pod limit "
            "(the target of an HPA/KEDA in metrics mode).",
        )
        self.policy_replicas = gauge(
            "policy_replicas",
            "ceil((live sessions + buffer) / capacity) within min/max, before the cool-down.",
        )
        self.replicas = gauge("replicas", "spec.replicas of the agent Deployment.")
        self.live_sessions = gauge("live_sessions", "Live sessions on the Deployment's pods that stay.")
        self.free_slots = gauge("free_slots", "Free session slots on ready pods that take sessions.")
        self.idle_pods = gauge(
            "idle_pods", "Ready pods without a session (the only ones a scale-down removes)."
        )
        self.capacity = gauge("capacity", "Sessions per pod the policy uses.")
        self.pending_sessions = gauge(
            "pending_sessions",
            "AgentSessions of the pool waiting for a free slot (Pending), counted as demand.",
        )
        self.scale_changes = PromCounter(
            "callboard_autoscaler_scale_changes",
            "Scale patches of the agent Deployment, by direction (up, down).",
            [*labels, "direction"],
            registry=self.registry,
        )


def _parse_cost(pod: Mapping[str, Any]) -> int | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(POD_DELETION_COST)
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def _is_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def pod_views(
    pods: Iterable[Mapping[str, Any]],
    nodes: Iterable[NodeInfo],
    sessions: Iterable[SessionInfo],
    *,
    namespace: str,
) -> list[PodView]:
    """The policy's view of ``pods``, with session counts from the registry.

    A pod's sessions are those its node records list (by ``pod_name``/``namespace``), at
    least the ``active`` count of their last heartbeat: the session keys are written at once
    on registration, the count only with the next heartbeat.
    """
    listed = Counter(s.node_id for s in sessions)
    per_pod: dict[str, list[NodeInfo]] = {}
    for node in nodes:
        if node.pod_name and node.namespace == namespace:
            per_pod.setdefault(node.pod_name, []).append(node)
    views = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name", ""))
        records = per_pod.get(name, [])
        capacities = [n.capacity for n in records if n.capacity is not None]
        views.append(
            PodView(
                name=name,
                ready=_is_ready(pod),
                terminating=bool(meta.get("deletionTimestamp")),
                pending=(pod.get("status") or {}).get("phase", "Pending") == "Pending",
                sessions=sum(max(n.active, listed[n.node_id]) for n in records) if records else None,
                draining=any(n.draining for n in records),
                capacity=min(capacities) if capacities else None,
                created=str(meta.get("creationTimestamp") or ""),
                cost=_parse_cost(pod),
                node_ids=tuple(sorted(n.node_id for n in records)),
            )
        )
    return views


class Autoscaler:
    """One Deployment's autoscaling state (the cool-down history) and its cycle."""

    def __init__(
        self,
        *,
        settings: AutoscaleSettings,
        registry: SessionRegistry,
        api: KubeApi,
        metrics: AutoscalerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        pending: Callable[[], int] | None = None,
    ) -> None:
        settings.validate()
        self.pending = pending
        """Sessions of the pool that wait for room (the operator's Pending objects), or None."""
        self.settings = settings
        self.registry = registry
        self.api = api
        self.metrics = metrics if metrics is not None else AutoscalerMetrics()
        self.clock = clock
        self.stabilizer = Stabilizer(settings.scale_down_window)
        self.last: tuple[Assessment, ScaleDecision] | None = None
        self._labels = {
            "namespace": settings.namespace,
            "deployment": settings.deployment,
            "pool": settings.pool,
        }
        self.log_extra = {"resource": f"{settings.namespace}/{settings.deployment}"}

    async def cycle(self) -> ScaleDecision:
        """Read, decide, act once; the decision taken."""
        s = self.settings
        scale = await self.api.get(scale_path(s.namespace, s.deployment))
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        views = await self._views(str((scale.get("status") or {}).get("selector") or ""))
        assessment = assess(views, s, pending=self.pending() if self.pending is not None else 0)
        stabilized = self.stabilizer.observe(self.clock(), assessment.desired)
        decision = decide_scale(
            current=current, desired=assessment.desired, stabilized=stabilized, pods=views
        )
        if decision.resets:
            await self._set_costs(decision.resets)
        if decision.target < current:
            costs = {v.name: v.cost for v in views}
            marked = {n for n in decision.victims if costs.get(n) == VICTIM_COST}
            marked |= await self._set_costs({n: VICTIM_COST for n in decision.victims if n not in marked})
            decision = await self._scale_down(scale, current, decision, marked, views)
        elif decision.target > current and s.mode is ScalingMode.SCALE:
            await self._patch_scale(scale, decision.target, direction="up")
            logger.info(
                "scaled up %d -> %d: %d live sessions, buffer %s, %d per pod",
                current,
                decision.target,
                assessment.live_sessions,
                s.buffer,
                assessment.capacity,
                extra=self.log_extra,
            )
        self._export(current, assessment, decision)
        self.last = (assessment, decision)
        return decision

    async def _views(self, selector: str) -> list[PodView]:
        s = self.settings
        if not selector:
            raise KubeApiError(0, f"deployment {s.namespace}/{s.deployment} has no selector in its scale")
        listing = await self.api.get(_pods_path(s.namespace), params={"labelSelector": selector})
        nodes = await self.registry.list_nodes()
        sessions = await self.registry.list_sessions()
        return pod_views(listing.get("items") or [], nodes, sessions, namespace=s.namespace)

    async def _set_costs(self, costs: Mapping[str, int]) -> set[str]:
        """Write ``pod-deletion-cost`` of each pod; the pods that were written."""

        async def patch(name: str, cost: int) -> str | None:
            patch = {"metadata": {"annotations": {POD_DELETION_COST: str(cost)}}}
            try:
                await self.api.merge_patch(pod_path(self.settings.namespace, name), patch)
            except NotFoundError:
                return None
            return name

        done = await asyncio.gather(*(patch(name, cost) for name, cost in costs.items()))
        return {name for name in done if name is not None}

    async def _scale_down(
        self,
        scale: Mapping[str, Any],
        current: int,
        decision: ScaleDecision,
        marked: set[str],
        views: list[PodView],
    ) -> ScaleDecision:
        """Mark, settle, check again on a fresh view, then patch (scale mode) or export."""
        s = self.settings
        patching = s.mode is ScalingMode.SCALE
        by_name = {v.name: v for v in views}
        drained = (
            sorted({n for name in decision.victims if name in marked for n in by_name[name].node_ids})
            if patching
            else []
        )
        try:
            if drained:
                await self.registry.mark_draining(
                    drained, ttl=s.drain_mark_ttl, by=f"autoscaler {s.namespace}/{s.deployment}"
                )
            check, fresh = await self._check_again(scale, current, decision, marked)
            fresh_views = {v.name: v for v in fresh}
            undrain = sorted({n for name in check.kept for n in by_name[name].node_ids} & set(drained))
            if undrain:
                await self.registry.clear_drain_marks(undrain)
            if check.kept:
                await self._set_costs(
                    {name: fresh_views[name].sessions or 0 for name in check.kept if name in fresh_views}
                )
                logger.info(
                    "not removing %s: no longer idle, or no longer wanted (%s)",
                    ", ".join(check.kept),
                    check.reason or "the fresh decision keeps them",
                    extra=self.log_extra,
                )
        except BaseException:
            await self._undrain(drained)
            raise
        if check.target >= current:
            return dataclasses.replace(decision, target=current, victims=(), reason=check.reason)
        if not patching:
            return dataclasses.replace(decision, target=check.target, victims=check.removed)
        # From here on a failure without an answer (no HTTP status, or cancelled on the wire)
        # may have scaled down all the same: the marks are left to their TTL then.
        try:
            await self._patch_scale(scale, check.target, direction="down")
        except KubeApiError as exc:
            if exc.status:  # answered: refused, so nothing is removed
                await self._undrain([n for name in check.removed for n in by_name[name].node_ids])
            raise
        logger.info(
            "scaled down %d -> %d, removing idle pods %s%s",
            current,
            check.target,
            ", ".join(check.removed) or "-",
            f" ({decision.reason})" if decision.reason else "",
            extra=self.log_extra,
        )
        return dataclasses.replace(decision, target=check.target, victims=check.removed)

    async def _check_again(
        self, scale: Mapping[str, Any], current: int, decision: ScaleDecision, marked: set[str]
    ) -> tuple[ScaleDownCheck, list[PodView]]:
        """Wait ``settle``, read a fresh view and decide on it again."""
        s = self.settings
        await asyncio.sleep(s.settle)
        # Check again: a session may have landed on a victim before its mark, or its cost been
        # rewritten. And decide again on the fresh view: not only the victims change meanwhile.
        # A busy pod that turned not-ready would go first (the controller deletes not-ready pods
        # before any cost), demand may have grown, a rollout may have begun.
        fresh = await self._views(str((scale.get("status") or {}).get("selector") or ""))
        again = assess(fresh, s, pending=self.pending() if self.pending is not None else 0)
        redo = decide_scale(
            current=current,
            desired=again.desired,
            stabilized=self.stabilizer.observe(self.clock(), again.desired),
            pods=fresh,
        )
        check = confirm_scale_down(current=current, decision=decision, redo=redo, fresh=fresh, marked=marked)
        return check, fresh

    async def _undrain(self, node_ids: Iterable[str]) -> None:
        """Take drain marks back after a failure (bounded, shielded: also when cancelled)."""
        ids = sorted(set(node_ids))
        if not ids:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.registry.clear_drain_marks(ids)), UNDRAIN_TIMEOUT)
        except (TimeoutError, StoreError, KubeApiError) as exc:  # KubeApiError: no longer leading
            logger.warning(
                "could not take back the drain marks of %s (they expire with their TTL): %s",
                ", ".join(ids),
                exc or "timed out",
                extra=self.log_extra,
            )

    async def _patch_scale(self, scale: Mapping[str, Any], replicas: int, *, direction: str) -> None:
        s = self.settings
        version = (scale.get("metadata") or {}).get("resourceVersion")
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if version:
            body["metadata"] = {"resourceVersion": version}  # a precondition: fail if it moved
        await self.api.merge_patch(scale_path(s.namespace, s.deployment), body)
        self.metrics.scale_changes.labels(**self._labels, direction=direction).inc()

    def _export(self, current: int, assessment: Assessment, decision: ScaleDecision) -> None:
        m, labels = self.metrics, self._labels
        m.desired_replicas.labels(**labels).set(decision.target)
        m.policy_replicas.labels(**labels).set(assessment.desired)
        m.replicas.labels(**labels).set(current)
        m.live_sessions.labels(**labels).set(assessment.live_sessions)
        m.free_slots.labels(**labels).set(assessment.free_slots)
        m.idle_pods.labels(**labels).set(assessment.idle_pods)
        m.capacity.labels(**labels).set(assessment.capacity)
        m.pending_sessions.labels(**labels).set(assessment.pending_sessions)


async def run_autoscaler(
    *,
    settings: AutoscaleSettings,
    registry: SessionRegistry,
    api: KubeApi,
    stop: asyncio.Event,
    metrics: AutoscalerMetrics | None = None,
    clock: Callable[[], float] = time.monotonic,
    pending: Callable[[], int] | None = None,
) -> None:
    """Keep the agent Deployment at the buffer policy's size until ``stop`` is set.

    ``registry`` is a started (or read-only) :class:`SessionRegistry` on the agents' store;
    ``api`` an open :class:`KubeApi`. Failures of one cycle (API, registry) are logged,
    throttled, and the next cycle tries again. Returns at once when the mode is ``off``.
    """
    if settings.mode is ScalingMode.OFF:
        return
    scaler = Autoscaler(
        settings=settings, registry=registry, api=api, metrics=metrics, clock=clock, pending=pending
    )
    throttle = LogThrottle()
    logger.info(
        "autoscaling %s/%s (%s): %d..%d replicas, buffer %s",
        settings.namespace,
        settings.deployment,
        settings.mode.value,
        settings.min_replicas,
        settings.max_replicas,
        settings.buffer,
    )
    while not stop.is_set():
        try:
            await scaler.cycle()
            throttle.reset("cycle")
        except ConflictError:
            logger.debug("the scale changed meanwhile; deciding again next cycle", extra=scaler.log_extra)
        except (KubeApiError, StoreError) as exc:
            if (suppressed := throttle.allow("cycle")) is not None:
                logger.warning(
                    "autoscaling cycle failed: %s (%d similar suppressed)",
                    exc,
                    suppressed,
                    extra=scaler.log_extra,
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.interval)
