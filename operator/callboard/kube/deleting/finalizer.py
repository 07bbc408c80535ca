"""Deleting an AgentSession closes its session: the finalizer's side, bounded in time.

kopf calls :func:`close_for_deletion` once the object has a deletion timestamp and
removes the finalizer when it returns. It stops any placement in flight, marks the
object Closing, sends ``request_close`` and waits, woken by each sync cycle, until the
session left the registry or its node is gone.

It never waits past ``deletion.timeout`` seconds counted from the later of the deletion
and the operator's start (so a restart does not release at once what a previous process
was still waiting for): then it gives up with a Warning Event saying what it saw (the
owner still lists the session, or the registry could not be reached).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from callboard._aio import Pulse
from callboard.errors import StoreError
from callboard.kube.k8s.status_writer import StatusWriter
from callboard.kube.placing.loop import Placer
from callboard.kube.resource.objects import AgentSessionObject
from callboard.kube.resource.phases import TERMINAL, Phase, Reason, Transition
from callboard.kube.views.object_cache import ObjectCache
from callboard.registry import SessionRegistry, SessionStatus

__all__ = ["Closer", "close_for_deletion"]

logger = logging.getLogger(__name__)

#: Seconds between two checks when no sync cycle wakes the wait (the registry is down).
CHECK_INTERVAL = 1.0


class Closer(Protocol):
    def note_closed(self, ref: tuple[str, str]) -> None: ...


async def close_for_deletion(
    obj: AgentSessionObject,
    *,
    cache: ObjectCache,
    registry: SessionRegistry,
    placer: Placer,
    writer: StatusWriter,
    closer: Closer,
    changed: Pulse,
    timeout: float,
    placement_timeout: float,
    operator_started_at: float,
    clock: Callable[[], float] = time.time,
) -> str:
    """Close the session of a deleted object; a one-line account of what happened."""
    await placer.cancel(obj.uid, timeout=placement_timeout)
    latest = cache.get(obj.key)
    if latest is not None and latest.uid == obj.uid:
        obj = latest
    ref = obj.session
    if ref is None:
        return "no session was placed"
    if obj.status.phase in TERMINAL:
        return f"session already {obj.status.phase.value.lower() if obj.status.phase else 'gone'}"
    node_id = obj.status.node_id
    deadline = max(obj.deletion_at or clock(), operator_started_at) + timeout
    if obj.status.phase is not Phase.CLOSING:
        where = f"node {node_id}" if node_id else "its node"
        updated = await writer.transition(
            obj,
            Transition(
                Phase.CLOSING, Reason.CLOSE_REQUESTED, f"object deleted: closing the session on {where}"
            ),
        )
        obj = updated or obj
    requested = False
    problem = ""
    while True:
        try:
            if not requested:
                await registry.request_close(*ref)
                closer.note_closed(ref)
                requested = True
            status = await registry.session_status(*ref, node_id)
            if status is not SessionStatus.LIVE:
                outcome = f"session {ref[1]} closed ({status.value})"
                writer.event(obj, type="Normal", reason=Reason.CLOSED, message=outcome)
                return outcome
            if node_id is not None and await registry.get_node(node_id) is None:
                outcome = f"node {node_id} is gone; its session {ref[1]} went with it"
                writer.event(obj, type="Normal", reason=Reason.CLOSED, message=outcome)
                return outcome
            problem = f"node {node_id} still lists session {ref[1]}"
        except StoreError as exc:
            problem = f"the registry is unreachable: {exc}"
        remaining = deadline - clock()
        if remaining <= 0:
            outcome = f"gave up waiting for the session to close after {timeout:.0f}s: {problem}"
            writer.event(obj, type="Warning", reason=Reason.CLOSE_TIMED_OUT, message=outcome)
            logger.warning("%s/%s: %s", obj.namespace, obj.name, outcome)
            return outcome
        await changed.wait(min(CHECK_INTERVAL, remaining))
