"""Session-aware autoscaling of an agent Deployment: settings and the pure policy.

The policy keeps ``ceil((live + pending sessions + buffer) / sessions per pod)`` replicas, within
``[min, max]``. The buffer is a count of free session slots or a percentage of the live
sessions. It scales up at once and down only after a cool-down: a scale-down goes to the
highest count wanted during the last ``scale_down_window`` seconds (HPA's stabilization
window), so a short lull does not shed pods a burst needs a minute later.

A scale-down never asks for a pod with sessions to go. The ReplicaSet controller picks the
pods to delete (see ``ActivePodsWithRanks``): unscheduled, then pending, then not-ready pods
first, then the lowest ``controller.kubernetes.io/pod-deletion-cost``. So the policy

- removes at most as many pods as are idle (a node record with no session, not draining);
- waits while any not-ready pod has sessions (the controller would delete it first) or
  while the Deployment is not steady (a rollout, pods starting or terminating);
- names the idle pods to remove (the *victims*), whose cost :mod:`callboard.kube.autoscaling.loop`
  sets to :data:`VICTIM_COST`, below any cost the operator writes (the session count), and
  resets stale victim marks on every other pod first.

Everything here is pure (no I/O, the clock is passed in): :mod:`callboard.kube.autoscaling.loop`
reads the cluster and the registry, calls it and acts on the :class:`ScaleDecision`.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

from callboard.config import parse_float, setting
from callboard.errors import ConfigurationError

__all__ = [
    "DEFAULT_CAPACITY",
    "VICTIM_COST",
    "Assessment",
    "AutoscaleSettings",
    "Buffer",
    "PodView",
    "ScaleDecision",
    "ScaleDownCheck",
    "ScalingMode",
    "Stabilizer",
    "assess",
    "confirm_scale_down",
    "decide_scale",
    "desired_replicas",
]

#: ``pod-deletion-cost`` of a pod chosen for removal: the lowest int32, below any session
#: count the operator writes and below the unannotated default (0).
VICTIM_COST = -(2**31)

#: Sessions per pod assumed when neither the settings nor any node record give one: the
#: sidecar's default ``CALLBOARD_CAPACITY``.
DEFAULT_CAPACITY = 10


class ScalingMode(enum.StrEnum):
    OFF = "off"
    """No autoscaling by callboard (a fixed replica count, or someone else's autoscaler)."""
    SCALE = "scale"
    """The operator patches the Deployment's scale itself."""
    METRICS = "metrics"
    """The operator only exports the desired replicas and free slots (and marks the idle pods
    to remove); an HPA or a KEDA ScaledObject reads the metric and scales."""


_BUFFER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True, slots=True)
class Buffer:
    """Free session slots to keep: a fixed count, or a percentage of the live sessions."""

    count: int = 0
    percent: float | None = None

    @classmethod
    def parse(cls, text: str | int) -> Self:
        """``"5"`` (slots) or ``"20%"`` (of the live sessions, rounded up)."""
        if isinstance(text, int):
            return cls(count=text) if text >= 0 else cls._bad(str(text))
        match = _BUFFER.match(text)
        if match is None:
            return cls._bad(text)
        number, percent = match.groups()
        if percent:
            return cls(percent=float(number))
        if "." in number:
            return cls._bad(text)
        return cls(count=int(number))

    @classmethod
    def _bad(cls, text: str) -> Self:
        raise ConfigurationError(
            f"autoscaling buffer {text!r}: use a count of free session slots (e.g. 5) "
            "or a percentage of the live sessions (e.g. 20%)"
        )

    def slots(self, live: int) -> int:
        """Free slots wanted beside ``live`` sessions."""
        if self.percent is None:
            return self.count
        return math.ceil(live * self.percent / 100 - 1e-9)

    def __str__(self) -> str:
        return str(self.count) if self.percent is None else f"{self.percent:g}%"


@dataclass
class AutoscaleSettings:
    """What the autoscaler scales and how: ``CALLBOARD_AUTOSCALE*`` settings of ``callboard operator``."""

    mode: ScalingMode = setting(
        ScalingMode.OFF,
        env="CALLBOARD_AUTOSCALE",
        help="Autoscaling of the agent pool: off, scale (the operator scales the Deployment) or "
        "metrics (an HPA or KEDA scales on the exported metrics).",
    )
    """``off``, ``scale`` (the operator scales the Deployment) or ``metrics`` (HPA/KEDA does)."""
    namespace: str = setting(
        "default",
        env=("CALLBOARD_AUTOSCALE_NAMESPACE", "POD_NAMESPACE"),
        help="Namespace of the agent Deployment.",
        default_text="$POD_NAMESPACE, else default",
    )
    """Namespace of the agent Deployment (the chart's release namespace)."""
    deployment: str = setting(
        "", env="CALLBOARD_AUTOSCALE_DEPLOYMENT", help="Name of the agent Deployment (needed to autoscale)."
    )
    """Name of the agent Deployment whose pods run ``callboard sidecar``."""
    pool: str = setting("", env="CALLBOARD_AUTOSCALE_POOL", help="Pool label of the exported metrics.")
    """Pool name of the agent pods; only a label of the exported metrics."""
    min_replicas: int = setting(1, env="CALLBOARD_AUTOSCALE_MIN", help="Fewest agent pods.")
    """Fewest pods, also with no session at all: one warm pod answers the first call at once."""
    max_replicas: int = setting(10, env="CALLBOARD_AUTOSCALE_MAX", help="Most agent pods.")
    """Most pods, whatever the load: a ceiling on cost."""
    buffer: Buffer = setting(
        env="CALLBOARD_AUTOSCALE_BUFFER",
        help="Free session slots to keep: a count (5) or a percentage of the live sessions (20%).",
        parse=Buffer.parse,
        default_factory=lambda: Buffer(count=5),
    )
    """Free session slots kept beside the live sessions, so a new call finds a pod at once
    (a new pod needs tens of seconds to pull, start and register)."""
    capacity: int | None = setting(
        None,
        env="CALLBOARD_AUTOSCALE_CAPACITY",
        help="Sessions per agent pod.",
        default_text="the smallest capacity the pods publish",
    )
    """Sessions per pod. None: the smallest ``capacity`` the pods publish in their node records."""
    interval: float = setting(
        5.0, env="CALLBOARD_AUTOSCALE_INTERVAL", help="Seconds between two autoscaling evaluations."
    )
    """Seconds between two evaluations (one scale read, one pod list, one registry read each)."""
    scale_down_window: float = setting(
        300.0,
        env="CALLBOARD_AUTOSCALE_SCALE_DOWN_WINDOW",
        help="Seconds of cool-down: a scale-down goes to the highest count wanted in this window.",
        parse=parse_float,
    )
    """Seconds of cool-down: a scale-down goes to the highest count wanted in this window
    (the HPA's default stabilization window), and never happens sooner after a peak."""
    settle: float = setting(
        1.0,
        env="CALLBOARD_AUTOSCALE_SETTLE",
        help="Seconds between marking the pods to remove and patching the scale.",
    )
    """Seconds between marking the pods to remove and patching the scale. Pods and
    ReplicaSets reach the ReplicaSet controller through separate watches, so the new costs
    must be in its cache before it picks pods; one second is ample for a healthy control plane."""

    drain_mark_ttl: float = setting(
        60.0,
        env="CALLBOARD_AUTOSCALE_DRAIN_MARK_TTL",
        help="Seconds a scale-down victim's drain mark lives in the registry (it takes no new "
        "session meanwhile); must exceed the settle time.",
        parse=parse_float,
    )
    """Seconds a victim's drain mark lives in the registry (scale mode). It must outlast the
    settle time, the scale patch and the ReplicaSet's delete (after which the pod drains by
    itself on SIGTERM); it bounds how long a dead operator keeps an idle pod out of service."""

    def validate(self) -> None:
        """Raise :class:`~callboard.errors.ConfigurationError` for settings that cannot work."""
        if self.mode is ScalingMode.OFF:
            return
        if not self.deployment:
            raise ConfigurationError(
                "autoscaling needs the agent Deployment's name (CALLBOARD_AUTOSCALE_DEPLOYMENT)"
            )
        if self.min_replicas < 0:
            raise ConfigurationError("autoscaling min replicas must be >= 0")
        if self.max_replicas < max(self.min_replicas, 1):
            raise ConfigurationError("autoscaling max replicas must be >= min replicas and >= 1")
        if self.capacity is not None and self.capacity < 1:
            raise ConfigurationError("autoscaling capacity (sessions per pod) must be >= 1")
        for name, value in (("interval", self.interval), ("settle", self.settle)):
            if value <= 0:
                raise ConfigurationError(f"autoscaling {name} must be > 0")
        if self.scale_down_window < 0:
            raise ConfigurationError("autoscaling scale-down window must be >= 0")
        if not self.drain_mark_ttl > self.settle:
            raise ConfigurationError(
                f"autoscaling drain-mark TTL ({self.drain_mark_ttl:g}s) must exceed the settle time "
                f"({self.settle:g}s): a mark must live until the scale patch"
            )


def desired_replicas(
    live: int, *, capacity: int, buffer: Buffer, min_replicas: int, max_replicas: int
) -> int:
    """``ceil((live + buffer) / capacity)`` clamped to ``[min_replicas, max_replicas]``."""
    if capacity < 1:
        raise ValueError("capacity must be >= 1")
    wanted = math.ceil((live + buffer.slots(live)) / capacity)
    return max(min_replicas, min(max_replicas, wanted))


@dataclass(frozen=True, slots=True)
class PodView:
    """One pod of the agent Deployment as the policy sees it."""

    name: str
    ready: bool
    """Running and Ready: the ReplicaSet controller deletes pods that are not before any other."""
    terminating: bool = False
    """Has a deletion timestamp: no longer counted by the Deployment."""
    pending: bool = False
    """Not started (phase Pending): no container runs, so it runs no session either."""
    sessions: int | None = None
    """Live sessions per the registry; None when no node record names this pod."""
    draining: bool = False
    capacity: int | None = None
    """The ``capacity`` of its node record (None: unknown or unlimited)."""
    created: str = ""
    """Creation timestamp (RFC 3339 sorts as text): newer idle pods are removed first."""
    cost: int | None = None
    """Its current ``pod-deletion-cost`` annotation, if any (parsed)."""
    node_ids: tuple[str, ...] = ()
    """The registry nodes that name this pod (what a drain mark is set on)."""

    @property
    def idle(self) -> bool:
        """Known to run no session and to take new ones: safe to remove."""
        return self.sessions == 0 and not self.draining


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the registry says about the Deployment's pods, and the replica count it calls for."""

    live_sessions: int
    free_slots: int
    capacity: int
    desired: int
    """The policy's count before the cool-down and the idle-pod limit."""
    idle_pods: int
    pending_sessions: int = 0
    """AgentSessions of the pool waiting for a free slot (Pending): demand the pods must grow for."""


def assess(pods: Iterable[PodView], settings: AutoscaleSettings, *, pending: int = 0) -> Assessment:
    """Live sessions and free slots on the pods that count, and the replicas they call for.

    Pods that are terminating or draining are leaving: their sessions end where they are, so
    they neither need nor offer slots among the pods that stay. ``pending`` sessions (objects
    no pod had room for) count like live ones: 200 applies on a full pool call for the pods
    of 200 sessions at once, not one more pod per pod start-up.
    """
    staying = [p for p in pods if not p.terminating and not p.draining]
    capacities = [p.capacity for p in staying if p.capacity is not None and p.capacity > 0]
    capacity = settings.capacity or (min(capacities) if capacities else DEFAULT_CAPACITY)
    live = sum(p.sessions or 0 for p in staying)
    free = sum(max(capacity - (p.sessions or 0), 0) for p in staying if p.ready and p.sessions is not None)
    desired = desired_replicas(
        live + max(pending, 0),
        capacity=capacity,
        buffer=settings.buffer,
        min_replicas=settings.min_replicas,
        max_replicas=settings.max_replicas,
    )
    return Assessment(
        live_sessions=live,
        free_slots=free,
        capacity=capacity,
        desired=desired,
        idle_pods=sum(1 for p in staying if p.ready and p.idle),
        pending_sessions=max(pending, 0),
    )


class Stabilizer:
    """The highest desired count of the last ``window`` seconds (HPA's scale-down stabilization)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._history: list[tuple[float, int]] = []

    def observe(self, now: float, desired: int) -> int:
        """Record ``desired`` at ``now``; the count a scale-down may go to."""
        self._history = [(t, d) for t, d in self._history if now - t < self.window]
        self._history.append((now, desired))
        return max(d for _, d in self._history)

    def reset(self) -> None:
        self._history.clear()


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """What to do with the Deployment now."""

    target: int
    """The replica count to set (or to export in metrics mode)."""
    victims: tuple[str, ...] = ()
    """Ready idle pods to mark with :data:`VICTIM_COST` before a scale-down."""
    resets: Mapping[str, int] = field(default_factory=dict)
    """Other pods still marked as victims, and the cost to write back (their session count)."""
    reason: str = ""
    """Why the count differs from the desired one (cool-down, idle pods, rollout...)."""


def decide_scale(*, current: int, desired: int, stabilized: int, pods: Sequence[PodView]) -> ScaleDecision:
    """The replica count to set and the pods to mark, given the policy's counts.

    ``current`` is the Deployment's ``spec.replicas``, ``desired`` the policy's count now and
    ``stabilized`` the highest count of the cool-down window (>= ``desired``). Every pod
    still marked from an earlier decision and not chosen now gets its cost written back.
    """
    staying = [p for p in pods if not p.terminating]
    target, chosen, reason = _scale(current=current, desired=desired, stabilized=stabilized, staying=staying)
    names = {p.name for p in chosen}
    resets = {
        p.name: p.sessions or 0 for p in staying if p.name not in names and p.cost is not None and p.cost < 0
    }
    return ScaleDecision(target=target, victims=tuple(p.name for p in chosen), resets=resets, reason=reason)


def _scale(
    *, current: int, desired: int, stabilized: int, staying: Sequence[PodView]
) -> tuple[int, list[PodView], str]:
    if desired >= current:
        return desired, [], ""
    floor = max(stabilized, desired)
    if floor >= current:
        return current, [], f"cool-down: {floor} wanted within the window"
    if len(staying) != current:
        return current, [], f"not steady: {len(staying)} pods for {current} replicas"
    # Not-ready pods go first, whatever their cost: wait until they are ready or idle. One
    # without a node record may still run sessions (its sidecar lost Redis); a pending one cannot.
    busy_unready = sorted(p.name for p in staying if not p.ready and not p.pending and p.sessions != 0)
    if busy_unready:
        return current, [], f"not-ready pods that may run sessions: {', '.join(busy_unready)}"
    # The controller takes the not-ready pods (all sessionless here) first, then the lowest costs.
    unready = sum(1 for p in staying if not p.ready)
    idle = sorted((p for p in staying if p.ready and p.idle), key=lambda p: (p.created, p.name), reverse=True)
    count = min(current - floor, unready + len(idle))
    target = current - count
    reason = "" if target == floor else f"only {unready + len(idle)} idle pods to remove"
    return target, idle[: max(count - unready, 0)], reason


@dataclass(frozen=True, slots=True)
class ScaleDownCheck:
    """A scale-down checked again after the settle window, on a fresh view."""

    target: int
    """The replica count to set now (``current`` when nothing is to be removed)."""
    removed: tuple[str, ...]
    """Victims still idle, still marked and still wanted gone: the pods the patch removes."""
    kept: tuple[str, ...]
    """Victims that stay (busy now, cost rewritten, or no longer wanted): marks to take back."""
    reason: str = ""


def confirm_scale_down(
    *,
    current: int,
    decision: ScaleDecision,
    redo: ScaleDecision,
    fresh: Sequence[PodView],
    marked: Collection[str],
) -> ScaleDownCheck:
    """Which of ``decision``'s victims may go, given the view read after the settle window.

    ``decision`` was taken on the first view, ``redo`` on ``fresh`` (read after the marks
    were set and the settle window passed), ``marked`` are the victims whose marks were
    written. A victim goes only if it is still ready, idle, not terminating and carries its
    victim cost; and no more go than both decisions allow. Not-ready sessionless pods the
    first decision counted on (the controller deletes them first) count against that too.
    A fresh decision that keeps every pod (a busy pod turned not-ready, more demand, a
    rollout) keeps them all.
    """
    views = {v.name: v for v in fresh}
    unmarked_removals = (current - decision.target) - len(decision.victims)
    confirmed = [
        name
        for name in decision.victims
        if name in marked
        and (view := views.get(name)) is not None
        and view.idle
        and view.ready
        and not view.terminating
        and view.cost == VICTIM_COST
    ]
    if redo.target >= current:
        confirmed, unmarked_removals = [], 0
    else:
        allowed = max(0, current - max(redo.target, decision.target) - unmarked_removals)
        confirmed = confirmed[:allowed]
    kept = tuple(name for name in decision.victims if name not in confirmed)
    target = current - unmarked_removals - len(confirmed)
    if target >= current:
        return ScaleDownCheck(current, (), kept, redo.reason or "the chosen pods are busy now")
    return ScaleDownCheck(target, tuple(confirmed), kept, decision.reason)
