"""Sessions no object claims: adopt them, or close them when they are leftovers (pure parts).

Every live session is one of:

- **claimed**: an object's status (or adoption annotation) names it;
- **leftover**: its id says the operator placed it (``ags.{ns}.{uid}.{n}``, see
  :mod:`callboard.kube.resource.naming`) in a watched namespace, but its object is gone or has
  moved on to another attempt (a node that confirmed after the timeout): closed;
- **foreign-placed**: placed by an operator watching other namespaces: left alone;
- **outside**: started through the HTTP API, a Python launcher or a foreign node sharing the
  Redis: adopted into an AgentSession in the adoption namespace.

A session must stay unclaimed for a grace period before anything happens to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from callboard.kube.resource.constants import (
    ADOPTED_LABEL,
    API_VERSION,
    DEFAULT_OPERATOR_CLASS,
    KIND,
    MANAGED_BY_LABEL,
    SESSION_ANNOTATION,
)
from callboard.kube.resource.naming import adopted_name, parse_session_id
from callboard.kube.resource.objects import LostPolicy
from callboard.registry import NodeInfo, SessionInfo

__all__ = ["Unclaimed", "adopted_manifest", "classify"]


@dataclass
class Unclaimed:
    adopt: list[SessionInfo] = field(default_factory=list)
    close: list[SessionInfo] = field(default_factory=list)


def classify(
    sessions: Iterable[SessionInfo],
    *,
    claimed: Callable[[str, str], bool],
    watched: Callable[[str], bool],
) -> Unclaimed:
    """Sort the unclaimed sessions into those to adopt and those to close."""
    result = Unclaimed()
    for session in sessions:
        if claimed(session.call_id, session.session_id):
            continue
        placed = parse_session_id(session.session_id)
        if placed is None:
            result.adopt.append(session)
        elif watched(placed.namespace):
            result.close.append(session)  # its object is gone (uid unknown) or moved on
        # else: another operator's placement
    return result


def adopted_manifest(
    session: SessionInfo,
    node: NodeInfo | None,
    *,
    namespace: str,
    ttl_seconds_after_finished: int,
    operator_class: str = DEFAULT_OPERATOR_CLASS,
) -> dict[str, Any]:
    """The AgentSession that mirrors a session started outside Kubernetes, of the adopting
    operator's class (so that operator, and no other, reconciles it).

    ``lostPolicy: Recover``: the operator did not start the session, so it does not hang it up
    for having been cut off; only a session of the call started after the loss (a
    replacement) gets the stale copy closed.
    """
    spec: dict[str, Any] = {
        "callId": session.call_id,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "lostPolicy": LostPolicy.RECOVER.value,
    }
    if operator_class != DEFAULT_OPERATOR_CLASS:
        spec["operatorClass"] = operator_class
    if node is not None and node.pool:
        spec["pool"] = node.pool
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": adopted_name(session.call_id, session.session_id),
            "namespace": namespace,
            "labels": {ADOPTED_LABEL: "true", MANAGED_BY_LABEL: "callboard"},
            "annotations": {SESSION_ANNOTATION: f"{session.call_id}/{session.session_id}"},
        },
        "spec": spec,
    }
