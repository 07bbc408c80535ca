"""Keeping agent pods' autoscaling annotations equal to their live sessions.

For each pod named by a node record (the sidecar publishes its pod name and namespace):

- ``controller.kubernetes.io/pod-deletion-cost`` = live sessions, so a ReplicaSet scaling
  down removes the idlest pods first;
- ``cluster-autoscaler.kubernetes.io/safe-to-evict`` = ``"false"`` and
  ``karpenter.sh/do-not-disrupt`` = ``"true"`` while it runs any session, removed when it
  runs none, so neither the Cluster Autoscaler nor Karpenter drains a busy node;
- the label ``callboard.dev/busy`` = ``"true"`` while it runs any session: the chart's
  PodDisruptionBudget with ``maxUnavailable: 0`` selects it, so no eviction (``kubectl
  drain``, any autoscaler) removes a busy pod (as Agones protects allocated game servers).

A node record is data anyone with write access to the registry could forge (G11), so a pod
it names is patched only when it is an agent pod of the pool the record names, whatever the
record says: in a namespace the operator manages (``--namespace``; every one when it watches
the whole cluster), and carrying the pool label (``callboard.dev/pool``, which the chart's agent
Deployment sets) with the record's pool as its value (any value when the record names no
pool). The pod is read once to check (RBAC: pods get), then remembered until it is gone.

A pod is patched only when its count changed, and at most once per ``min_interval``
seconds: the latest count is written when the interval has passed (the sync loop calls
:meth:`PodAnnotator.update` every cycle, so nothing is lost). Two exceptions keep a busy
pod's protection (a scale-down by an HPA or KEDA, which nothing here confirms, removes the
lowest cost first):

- a pod that turns busy (its first session) is patched at once, whatever the interval, so
  it leaves the lowest costs (an idle pod's 0, a victim's mark) within one sync cycle;
- a busy pod's cost is never lowered while it stays busy (5 sessions, then 2: the cost
  stays 5, and no patch is sent); it falls to 0 only when the pod runs no session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from callboard._aio import LogThrottle
from callboard.kube.k8s.client import KubeApi, KubeApiError, NotFoundError, pod_path
from callboard.kube.resource.constants import (
    BUSY_LABEL,
    DO_NOT_DISRUPT,
    POD_DELETION_COST,
    POOL_LABEL,
    SAFE_TO_EVICT,
)

__all__ = ["PodAnnotator", "annotations_for", "labels_for"]

logger = logging.getLogger(__name__)

PodKey = tuple[str, str]

#: Seconds before a pod that was not found is tried again (its node record may name a pod
#: that is still being created, or one outside the operator's reach).
NOT_FOUND_RETRY = 60.0


def annotations_for(sessions: int) -> dict[str, Any]:
    """The merge-patch value of the annotations for a pod running ``sessions``."""
    return {
        POD_DELETION_COST: str(sessions),
        SAFE_TO_EVICT: "false" if sessions > 0 else None,
        DO_NOT_DISRUPT: "true" if sessions > 0 else None,
    }


def labels_for(sessions: int) -> dict[str, Any]:
    """The merge-patch value of the labels for a pod running ``sessions``."""
    return {BUSY_LABEL: "true" if sessions > 0 else None}


class PodAnnotator:
    def __init__(
        self,
        api: KubeApi,
        *,
        min_interval: float,
        concurrency: int = 8,
        clock: Callable[[], float] = time.monotonic,
        namespaces: Collection[str] = (),
    ) -> None:
        """``namespaces``: the ones the operator manages (empty: every namespace)."""
        self._api = api
        self._namespaces = frozenset(namespaces)
        self._verified: set[tuple[PodKey, str | None]] = set()
        self._min_interval = min_interval
        self._semaphore = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._written: dict[PodKey, int] = {}
        self._written_at: dict[PodKey, float] = {}
        self._missing_until: dict[PodKey, float] = {}
        self._throttle = LogThrottle()
        self.patches = 0

    def due(self, counts: Mapping[PodKey, int]) -> dict[PodKey, int]:
        """The pods to patch now and their counts (pure apart from the clock)."""
        now = self._clock()
        due: dict[PodKey, int] = {}
        for pod, count in counts.items():
            written = self._written.get(pod)
            if written == count:
                continue
            if now < self._missing_until.get(pod, 0.0):
                continue
            if count > 0 and written is not None and written > count:
                continue  # still busy: never lower its cost (nor patch for it)
            turns_busy = count > 0 and not written
            if not turns_busy and now - self._written_at.get(pod, float("-inf")) < self._min_interval:
                continue
            due[pod] = count
        return due

    async def update(
        self, counts: Mapping[PodKey, int], *, pools: Mapping[PodKey, str | None] | None = None
    ) -> int:
        """Patch the pods whose count changed (rate-limited); how many were patched.

        ``pools``: the pool each pod's node record names; a pod is patched only when it
        carries that pool's label (absent or ``None``: any pool label).
        """
        for pod in set(self._written) - set(counts):  # no node names it any more
            self._written.pop(pod, None)
            self._written_at.pop(pod, None)
        pools = pools or {}
        self._verified = {
            (pod, pool) for pod, pool in self._verified if pod in counts and pools.get(pod) == pool
        }
        due = self.due(counts)
        results = await asyncio.gather(
            *(self._patch(pod, count, pools.get(pod)) for pod, count in due.items())
        )
        return sum(results)

    async def _is_agent_pod(self, pod: PodKey, pool: str | None) -> bool:
        """In a namespace the operator manages and labelled with ``pool`` (remembered once checked)."""
        if (pod, pool) in self._verified:
            return True
        reason = None
        if self._namespaces and pod[0] not in self._namespaces:
            reason = "outside the namespaces the operator manages"
        else:
            labels = (await self._api.get(pod_path(*pod))).get("metadata", {}).get("labels") or {}
            if POOL_LABEL not in labels:
                reason = f"without the {POOL_LABEL} label (not an agent pod)"
            elif pool is not None and labels[POOL_LABEL] != pool:
                reason = f"of pool {labels[POOL_LABEL]!r}, not the record's {pool!r}"
        if reason is not None:
            self._missing_until[pod] = self._clock() + NOT_FOUND_RETRY
            if (suppressed := self._throttle.allow("foreign")) is not None:
                logger.warning(
                    "a node record names pod %s/%s, %s: not annotated (%d similar suppressed)",
                    *pod,
                    reason,
                    suppressed,
                )
            return False
        self._verified.add((pod, pool))
        return True

    async def _patch(self, pod: PodKey, count: int, pool: str | None) -> bool:
        async with self._semaphore:
            try:
                if not await self._is_agent_pod(pod, pool):
                    return False
                await self._api.merge_patch(
                    pod_path(*pod),
                    {"metadata": {"annotations": annotations_for(count), "labels": labels_for(count)}},
                )
            except NotFoundError:
                self._missing_until[pod] = self._clock() + NOT_FOUND_RETRY
                self._verified = {v for v in self._verified if v[0] != pod}  # a new pod is checked again
                return False
            except KubeApiError as exc:
                if (suppressed := self._throttle.allow("patch")) is not None:
                    logger.warning(
                        "cannot annotate pod %s/%s: %s (%d similar suppressed)", *pod, exc, suppressed
                    )
                return False
        self._written[pod] = count
        self._written_at[pod] = self._clock()
        self._missing_until.pop(pod, None)
        self.patches += 1
        return True
