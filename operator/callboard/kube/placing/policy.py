"""Which objects need a node, and choosing one for each new session (pure functions).

:func:`needs_placement` says whether the placer owns an object now, :func:`spec_problem`
whether its spec can be sent to a node at all.

A node is a candidate when its record is fresh (heartbeat within ``freshness`` seconds),
it is not draining (by itself, or marked so in the registry by the autoscaler before a
scale-down: :class:`~callboard.kube.views.registry_snapshot.Snapshot` shows a marked node as
draining; the node refuses such a start anyway), it belongs to the requested pool (no
pool requested: any node) and it has a free slot. Its load is the larger of what its
heartbeat reported and the sessions the registry lists for it, plus the start requests
the operator has in flight to it (a node's record lags behind its sessions by up to one
heartbeat).

- ``packed`` (default) fills the fullest node that still has room, so idle nodes stay
  idle and can be scaled down; nodes without a capacity limit come last.
- ``spread`` takes the emptiest node (unlimited ones first), for isolation.

When nothing fits, :func:`explain` tells why in one line for the ``Placed`` condition. The
line names the kinds of refusal, never a count: a count changes with every session that
starts or ends somewhere, and each change would rewrite every Pending object's status.
When capacity changes, :func:`share_free_slots` picks the waiting objects that fit in the
free slots, so only those are placed again (and written), not every Pending object.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from callboard.errors import CallboardError
from callboard.kube.resource.objects import AgentSessionObject
from callboard.kube.resource.phases import Phase
from callboard.registry import NodeInfo, validate_id

__all__ = [
    "Candidate",
    "Strategy",
    "Verdict",
    "candidates",
    "choose",
    "explain",
    "needs_placement",
    "share_free_slots",
    "spec_problem",
]


class Strategy(StrEnum):
    PACKED = "packed"
    SPREAD = "spread"


class Verdict(StrEnum):
    """Why a node is not a candidate (or that it is one)."""

    OK = "ok"
    OTHER_POOL = "other pool"
    STALE = "stale heartbeat"
    DRAINING = "draining"
    FULL = "full"
    EXCLUDED = "already tried"


@dataclass(frozen=True, slots=True)
class Candidate:
    node_id: str
    used: int
    free: int | None
    """Free slots; None when the node has no capacity limit."""


def _verdict(
    node: NodeInfo,
    used: int,
    *,
    pool: str | None,
    now: float,
    freshness: float,
    exclude: Collection[str],
) -> Verdict:
    if pool and node.pool != pool:
        return Verdict.OTHER_POOL
    if node.node_id in exclude:
        return Verdict.EXCLUDED
    if now - node.heartbeat_at > freshness:
        return Verdict.STALE
    if node.draining:
        return Verdict.DRAINING
    if node.capacity is not None and used >= node.capacity:
        return Verdict.FULL
    return Verdict.OK


def candidates(
    nodes: Iterable[NodeInfo],
    *,
    load: Mapping[str, int],
    pool: str | None,
    now: float,
    freshness: float,
    exclude: Collection[str] = (),
) -> tuple[list[Candidate], Counter[Verdict]]:
    """The nodes that can take one more session, and a tally of verdicts over all nodes.

    ``load`` maps node ids to sessions known besides the node's own ``active`` count
    (registered sessions plus in-flight start requests).
    """
    found: list[Candidate] = []
    tally: Counter[Verdict] = Counter()
    for node in nodes:
        used = max(node.active, 0, load.get(node.node_id, 0))
        verdict = _verdict(node, used, pool=pool, now=now, freshness=freshness, exclude=exclude)
        tally[verdict] += 1
        if verdict is Verdict.OK:
            free = None if node.capacity is None else node.capacity - used
            found.append(Candidate(node.node_id, used, free))
    return found, tally


def choose(found: Iterable[Candidate], strategy: Strategy) -> Candidate | None:
    """The best candidate for ``strategy``; ties go to the smaller node id (deterministic)."""
    pool = list(found)
    if not pool:
        return None
    if strategy is Strategy.PACKED:
        # Limited nodes first, fewest free slots first; among unlimited ones the busiest.
        return min(
            pool,
            key=lambda c: (c.free is None, c.free if c.free is not None else -c.used, c.node_id),
        )
    # Spread: unlimited nodes first (least used), then the most free slots, then least used.
    return min(
        pool,
        key=lambda c: (c.free is not None, -(c.free or 0), c.used, c.node_id),
    )


def explain(tally: Counter[Verdict], *, pool: str | None) -> str:
    """One line for the ``Placed`` condition: why no node could take the session.

    Stable while the kinds of refusal stay the same (no counts, see the module docstring).
    """
    where = f"pool {pool!r}" if pool else "any pool"
    total = sum(tally.values())
    if total == 0:
        return f"no agent node is registered ({where})"
    if total == tally[Verdict.OTHER_POOL]:
        return f"no agent node is in {where}"
    kinds = [v.value for v in Verdict if v not in (Verdict.OK, Verdict.OTHER_POOL) and tally[v]]
    return f"no agent node in {where} can take a session: {', '.join(kinds)}"


def share_free_slots(
    free: Iterable[tuple[str | None, int | None]],
    wanted: Sequence[str | None],
) -> list[bool]:
    """Which of the ``wanted`` placements (their ``spec.pool``, in order) fit in ``free``.

    ``free`` has one ``(pool, free slots)`` entry per node that can take sessions (None
    slots: no limit). Each placement that fits takes one slot of a node of its pool (no pool:
    of any node), so as many waiting objects are placed again as there is room for.
    """
    nodes = list(free)
    left: list[int | None] = [n for _, n in nodes]
    fits: list[bool] = []
    for pool in wanted:
        slot = next(
            (
                i
                for i, (node_pool, _) in enumerate(nodes)
                if (not pool or node_pool == pool) and (left[i] is None or (left[i] or 0) > 0)
            ),
            None,
        )
        if slot is not None:
            n = left[slot]
            left[slot] = None if n is None else n - 1
        fits.append(slot is not None)
    return fits


def needs_placement(obj: AgentSessionObject) -> bool:
    """Whether the placer owns ``obj`` now (pure: in-process attempts are checked apart)."""
    if obj.deleting or obj.adopted_session is not None:
        return False
    return obj.status.phase in (None, Phase.PENDING, Phase.SCHEDULED)


def spec_problem(obj: AgentSessionObject) -> str | None:
    """Why the spec cannot be sent to a node (the CRD schema should have caught it)."""
    try:
        validate_id(obj.spec.call_id, "spec.callId")
        validate_id(obj.spec.call_type, "spec.callType")
    except CallboardError as exc:
        return str(exc)
    return None
