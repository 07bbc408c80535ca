"""Prometheus metrics of the operator, on its own (non-global) CollectorRegistry.

Gauges are recomputed from the cache and the registry snapshot by each sync cycle, so
they never drift from what the operator sees; counters and histograms count events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import Counter as PromCounter

from callboard.kube.resource.objects import AgentSessionObject
from callboard.kube.resource.phases import Phase
from callboard.kube.views.registry_snapshot import Snapshot

__all__ = ["CONTENT_TYPE", "OperatorMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Apply-to-Running takes ~0.1 s when a node is free and up to minutes without capacity.
PLACEMENT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
#: An idle loop lags < 1 ms; a Lease renewal deadline is seconds away: the buckets span both.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions = Gauge(
            "callboard_operator_sessions", "AgentSession objects by phase.", ["phase"], registry=r
        )
        self.pending = Gauge(
            "callboard_operator_pending_sessions",
            'AgentSessions waiting for a free slot (Pending) by spec.pool ("": any pool): demand an '
            "HPA or KEDA can scale the pool on.",
            ["pool"],
            registry=r,
        )
        self.nodes = Gauge(
            "callboard_operator_nodes",
            "Agent nodes in the registry by pool and state (ready, draining, full, stale).",
            ["pool", "state"],
            registry=r,
        )
        self.free_slots = Gauge(
            "callboard_operator_free_slots",
            "Free session slots on ready nodes by pool (nodes without a limit are not counted).",
            ["pool"],
            registry=r,
        )
        self.used_slots = Gauge(
            "callboard_operator_used_slots", "Live sessions on nodes by pool.", ["pool"], registry=r
        )
        self.placement_seconds = Histogram(
            "callboard_operator_placement_seconds",
            "Seconds from an AgentSession's creation to Running.",
            buckets=PLACEMENT_BUCKETS,
            registry=r,
        )
        self.start_attempts = PromCounter(
            "callboard_operator_start_attempts",
            "Start requests sent to nodes, by result (live, rejected, timeout).",
            ["result"],
            registry=r,
        )
        self.sync_seconds = Histogram(
            "callboard_operator_sync_seconds", "Duration of one sync cycle.", registry=r
        )
        self.sync_errors = PromCounter(
            "callboard_operator_sync_errors", "Sync cycles that could not read the registry.", registry=r
        )
        self.events_dropped = PromCounter(
            "callboard_operator_events_dropped",
            "Kubernetes Events not posted: a full queue over --event-rate, or unposted at exit.",
            registry=r,
        )
        self.pod_patches = PromCounter(
            "callboard_operator_pod_patches", "Annotation patches of agent pods.", registry=r
        )
        self.adopted = PromCounter(
            "callboard_operator_adopted_sessions", "Sessions adopted into AgentSession objects.", registry=r
        )
        self.orphans_closed = PromCounter(
            "callboard_operator_orphan_sessions_closed",
            "Sessions closed because the object they were placed for is gone or moved on.",
            registry=r,
        )
        self.status_writes = PromCounter(
            "callboard_operator_status_writes",
            "AgentSession status writes sent to the API server, by reason (a phase change's "
            "reason, Mirror for node/pod moves, ObservedGeneration for a spec edit alone).",
            ["reason"],
            registry=r,
        )
        self.leader = Gauge(
            "callboard_operator_leader", "1 while this replica holds the leader lease.", registry=r
        )
        self.loop_lag = Histogram(
            "callboard_operator_event_loop_lag_seconds",
            "How much later than asked the event loop woke a sleeper (all the operator's work "
            "shares the loop: a busy loop delays the watch, placement and the Lease alike).",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag_last = Gauge(
            "callboard_operator_event_loop_lag_last_seconds",
            "The event loop's lag at the last measurement.",
            registry=r,
        )
        self._pending_pools: set[str] = set()

    def observe_objects(self, objects: Iterable[AgentSessionObject]) -> None:
        objects = list(objects)
        counts = Counter(obj.status.phase.value if obj.status.phase else "None" for obj in objects)
        for phase in [*Phase, "None"]:
            name = phase.value if isinstance(phase, Phase) else phase
            self.sessions.labels(phase=name).set(counts.get(name, 0))
        pending = Counter(obj.spec.pool or "" for obj in objects if obj.status.phase is Phase.PENDING)
        for pool in set(pending) | self._pending_pools:
            self.pending.labels(pool=pool).set(pending.get(pool, 0))
        self._pending_pools |= set(pending)

    def observe_snapshot(self, snap: Snapshot, *, freshness: float) -> None:
        states: Counter[tuple[str, str]] = Counter()
        free: Counter[str] = Counter()
        used: Counter[str] = Counter()
        for node in snap.nodes.values():
            pool = node.pool or ""
            load = max(node.active, snap.per_node[node.node_id])
            used[pool] += load
            if snap.taken_at - node.heartbeat_at > freshness:
                state = "stale"
            elif node.draining:
                state = "draining"
            elif node.capacity is not None and load >= node.capacity:
                state = "full"
            else:
                state = "ready"
                if node.capacity is not None:
                    free[pool] += node.capacity - load
            states[(pool, state)] += 1
        self.nodes.clear()
        for (pool, state), n in states.items():
            self.nodes.labels(pool=pool, state=state).set(n)
        self.free_slots.clear()
        self.used_slots.clear()
        for pool in used.keys() | free.keys():
            self.free_slots.labels(pool=pool).set(free[pool])
            self.used_slots.labels(pool=pool).set(used[pool])

    def render(self) -> bytes:
        return generate_latest(self.registry)
