"""The admission check both node runtimes (launcher and sidecar) share.

A node takes a new session unless it is draining (by itself, or marked so by the operator
before a scale-down, see :mod:`~callboard.registry.drain_marks`) or full; the per-call limit is checked
atomically by :meth:`SessionRegistry.register` (it counts every node) and surfaces as
:class:`~callboard.errors.MaxSessionsPerCallExceeded`. Each refusal has one
:class:`StartRejection` (what a start request's answer says) and one
:class:`~callboard.errors.CapacityError` (what a caller catches), mapped here both ways so
the two runtimes cannot drift apart.
"""

from __future__ import annotations

from callboard.errors import (
    CapacityError,
    ConfigurationError,
    InvalidIdError,
    MaxConcurrentSessionsExceeded,
    MaxSessionsPerCallExceeded,
    NodeDrainingError,
)
from callboard.registry.models import StartRejection

__all__ = ["admission_error", "check_admission", "rejection_for"]

_ERRORS: dict[StartRejection, type[CapacityError]] = {
    StartRejection.DRAINING: NodeDrainingError,
    StartRejection.CAPACITY: MaxConcurrentSessionsExceeded,
    StartRejection.CALL_LIMIT: MaxSessionsPerCallExceeded,
}


def check_admission(
    *, draining: bool, active: int, capacity: int | None, marked: bool = False
) -> StartRejection | None:
    """Why this node must refuse one more session, or None when it may take it.

    ``active`` counts the node's sessions *and* those being started (so a burst of
    concurrent starts cannot overshoot); ``capacity`` None means unlimited. ``marked``: the
    operator's drain mark is on the node (a scale-down is about to remove it), which
    refuses like draining. Draining wins over capacity: a draining node says so, whatever
    its load.
    """
    if draining or marked:
        return StartRejection.DRAINING
    if capacity is not None and active >= capacity:
        return StartRejection.CAPACITY
    return None


def admission_error(
    rejection: StartRejection, *, node_id: str, active: int = 0, capacity: int | None = None
) -> CapacityError:
    """The error a caller gets for ``rejection`` (the runtime raises it)."""
    if rejection is StartRejection.DRAINING:
        return NodeDrainingError(f"node {node_id} is draining and takes no new sessions")
    if rejection is StartRejection.CAPACITY:
        return MaxConcurrentSessionsExceeded(
            f"node {node_id} runs {active} sessions, its capacity is {capacity}"
        )
    if rejection is StartRejection.CALL_LIMIT:
        return MaxSessionsPerCallExceeded(f"node {node_id}: the call has its maximum of sessions")
    raise ConfigurationError(f"{rejection!r} is not an admission refusal")


def rejection_for(exc: BaseException) -> StartRejection | None:
    """The :class:`StartRejection` that answers a start which failed with ``exc``, if any."""
    for rejection, error in _ERRORS.items():
        if isinstance(exc, error):
            return rejection
    if isinstance(exc, InvalidIdError):
        return StartRejection.INVALID
    return None
