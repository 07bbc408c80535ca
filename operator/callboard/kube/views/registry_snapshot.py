"""One read of the whole registry (nodes and sessions), shared by every loop of a cycle."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from callboard.registry import NodeInfo, SessionInfo

__all__ = ["Snapshot"]


@dataclass
class Snapshot:
    taken_at: float
    """Unix time of the read, seconds."""
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    sessions: dict[tuple[str, str], SessionInfo] = field(default_factory=dict)
    per_node: Counter[str] = field(default_factory=Counter)
    """Sessions listed per node id. The placer adds the sessions it saw start since the read."""
    per_call: dict[str, list[SessionInfo]] = field(default_factory=dict)
    """Sessions listed per call id (a Lost object looks here for a replacement)."""
    drain_marked: frozenset[str] = frozenset()
    """Nodes the autoscaler marked draining (scale-down victims): shown in ``nodes`` as draining."""

    source: object = None
    """The sessions this snapshot was built from (the read's list object, compared by identity)."""

    @classmethod
    def build(
        cls,
        nodes: Iterable[NodeInfo],
        sessions: Iterable[SessionInfo],
        *,
        now: float,
        drain_marked: Collection[str] = (),
        previous: Snapshot | None = None,
    ) -> Snapshot:
        """The snapshot of one read; a node in ``drain_marked`` takes no new session, so its
        view says draining (the placer skips it, a waiting object is not woken for it).

        When ``sessions`` is the very object ``previous`` was built from (the registry hands
        back its list unchanged while no node's sessions changed,
        :meth:`~callboard.registry.SessionRegistry.list_live`), the session maps are
        ``previous``'s: a quiet cycle costs O(nodes), not O(sessions)."""
        snap = cls(taken_at=now, drain_marked=frozenset(drain_marked), source=sessions)
        snap.nodes = {
            n.node_id: dataclasses.replace(n, draining=True) if n.node_id in snap.drain_marked else n
            for n in nodes
        }
        if previous is not None and previous.source is sessions:
            snap.sessions, snap.per_call = previous.sessions, previous.per_call
            snap.per_node = Counter(previous.per_node)
            return snap
        for s in sessions:
            snap.sessions[(s.call_id, s.session_id)] = s
            snap.per_node[s.node_id] += 1
            snap.per_call.setdefault(s.call_id, []).append(s)
        return snap

    def of_call(self, call_id: str) -> list[SessionInfo]:
        """The live sessions of ``call_id`` in this read."""
        return self.per_call.get(call_id, [])

    def pod_counts(self) -> dict[tuple[str, str], int]:
        """Live sessions per agent pod ``(namespace, pod)``, for nodes that name their pod."""
        counts: dict[tuple[str, str], int] = {}
        for node in self.nodes.values():
            if node.pod_name and node.namespace:
                key = (node.namespace, node.pod_name)
                counts[key] = counts.get(key, 0) + self.per_node[node.node_id]
        return counts

    def pod_pools(self) -> dict[tuple[str, str], str | None]:
        """The pool each agent pod's node record names (``None``: none), for the pool-label check."""
        return {
            (node.namespace, node.pod_name): node.pool
            for node in self.nodes.values()
            if node.pod_name and node.namespace
        }

    def capacity_signature(self, *, freshness: float) -> frozenset[tuple[str, str | None, bool]]:
        """Which nodes could take a session now: changes when a waiting object may fit."""
        return frozenset(
            (
                n.node_id,
                n.pool,
                n.capacity is None or max(n.active, self.per_node[n.node_id]) < n.capacity,
            )
            for n in self.nodes.values()
            if not n.draining and self.taken_at - n.heartbeat_at <= freshness
        )
