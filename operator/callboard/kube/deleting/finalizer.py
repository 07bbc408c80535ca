"""Deleting an AgentSession closes its session: the finalizer's side, bounded in time.

The operator manages its finalizer itself (kopf only watches): :func:`finalizer_step` says
what an object of its class needs (the finalizer added, or its deletion handled), and
:func:`adding_patch` / :func:`removing_patch` are the JSON patches that touch our entry of
``metadata.finalizers`` only, with a ``test`` precondition so another controller's finalizer
added or removed at the same moment is never lost. The runtime runs one deletion task per
uid: :func:`close_for_deletion`, then the finalizer's removal.

:func:`close_for_deletion` stops any placement in flight, marks the
object Closing, sends ``request_close`` and waits, woken by each sync cycle, until the
session left the registry or its node is gone. A Succeeded or Failed object has no
session to close, unless one shows up late (a node committed a start as its attempt timed
out): the sessions of the call placed for this object are looked up, and any that runs is
closed the same way, so deleting a Failed object still ends a late agent.

It never waits past ``deletion.timeout`` seconds counted from the later of the deletion
and the operator's start (so a restart does not release at once what a previous process
was still waiting for): then it gives up with a Warning Event saying what it saw (the
owner still lists the session, or the registry could not be reached).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from callboard._aio import LogThrottle, Pulse, stop_tasks
from callboard.errors import StoreError
from callboard.kube.k8s.client import KubeApi, KubeApiError, NotFoundError, NotLeaderError, agentsession_path
from callboard.kube.k8s.status_writer import StatusWriter
from callboard.kube.placing.loop import Placer
from callboard.kube.resource.fields import format_time
from callboard.kube.resource.naming import parse_session_id
from callboard.kube.resource.objects import AgentSessionObject
from callboard.kube.resource.phases import TERMINAL, Phase, Reason, Transition, apply_transition
from callboard.kube.views.object_cache import ObjectCache
from callboard.registry import SessionRegistry, SessionStatus

__all__ = [
    "Closer",
    "FinalizerStep",
    "Finalizers",
    "adding_patch",
    "close_for_deletion",
    "finalizer_step",
    "removing_patch",
]

logger = logging.getLogger(__name__)

#: Seconds between two checks when no sync cycle wakes the wait (the registry is down).
CHECK_INTERVAL = 1.0
#: Seconds before a failed finalizer write or deletion is tried again, doubling up to the max
#: (kopf's on.delete retried every second; an API outage must not turn into a busy loop).
RETRY_MIN = 1.0
RETRY_MAX = 10.0
#: Uids whose finalizer this process released, remembered (newest) so that a watch event
#: that left the queue after the release (it still shows our finalizer) starts no second
#: delete: such events arrive within seconds, far fewer than this many deletes apart.
RELEASED_MEMORY = 4096
#: Finalizer adds in flight at once. Each is a write as costly as a status write: bounded,
#: a burst's adds queue behind its placements instead of sharing the API server with them.
ADDS_IN_FLIGHT = 2
#: API statuses of a failed precondition: 409 (resourceVersion moved), 422 (a ``test`` failed).
PRECONDITION_FAILED = frozenset({409, 422})


class FinalizerStep(enum.Enum):
    """What an object of the operator's class needs from the finalizer's side."""

    NONE = "none"
    ADD = "add"
    """Alive and placed (it has a phase) without our finalizer: add it."""
    CLOSE = "close"
    """Deleted while our finalizer holds it: close its session, then remove the finalizer."""


def finalizer_step(obj: AgentSessionObject) -> FinalizerStep:
    """The step ``obj`` needs, from its deletion timestamp, finalizers and phase alone.

    The finalizer follows the placer's first status write (a phase): placement does not wait
    for it, and in a burst the adds come after the writes users wait for. A deleted object
    without our finalizer needs nothing here (deleted before it got one, or released by a
    previous process): its session is closed when its DELETED event arrives
    (:meth:`~callboard.kube.running.wiring.Runtime.observe`), by the placer if its attempt
    was in flight, and else by the sync loop's leftover closer.
    """
    if obj.deleting:
        return FinalizerStep.CLOSE if obj.has_finalizer else FinalizerStep.NONE
    if obj.has_finalizer or obj.status.phase is None:
        return FinalizerStep.NONE
    return FinalizerStep.ADD


def adding_patch(
    finalizers: Sequence[str], resource_version: str | None, finalizer: str
) -> list[dict[str, Any]] | None:
    """The JSON patch that appends ``finalizer`` (None when it is there already).

    With a list present, its exact content is the precondition (an append cannot drop a
    concurrent entry, and two appends of ours cannot both pass); without one, the whole list
    is written, so the precondition is the resourceVersion (someone else's first finalizer
    would otherwise be overwritten). A failed ``test`` is a 422, a moved version a 409.
    """
    if finalizer in finalizers:
        return None
    if finalizers:
        return [
            {"op": "test", "path": "/metadata/finalizers", "value": list(finalizers)},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ]
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version or ""},
        {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
    ]


def removing_patch(finalizers: Sequence[str], finalizer: str) -> list[dict[str, Any]] | None:
    """The JSON patch that removes our entry alone (None when it is not there).

    The precondition is our entry at its index: an entry before it removed or inserted
    meanwhile shifts the index and fails the ``test`` (the caller reads the object again and
    retries); an entry of someone else's is never removed nor lost.
    """
    if finalizer not in finalizers:
        return None
    at = f"/metadata/finalizers/{list(finalizers).index(finalizer)}"
    return [{"op": "test", "path": at, "value": finalizer}, {"op": "remove", "path": at}]


class Finalizers:
    """The operator's own finalizer: added to its live objects, released after each delete.

    kopf's ``on.delete`` did this with a PATCH for the finalizer, progress annotations and a
    re-invocation of the handler for every watch event of a deleting object (about six
    writes and five calls per delete at 1,000 objects). Here :meth:`observe` runs on every
    watch event (cheap: no API call unless a step is due), starts at most one add and one
    deletion task per uid, and each task writes once when nothing races it. A relist (a
    restart, a new watch) brings the deleting objects back, so a delete interrupted by a
    restart resumes; its deadline is counted from the deletion and the operator's start
    (:func:`close_for_deletion`), as before.
    """

    def __init__(
        self,
        api: KubeApi,
        *,
        finalizer: str,
        close: Callable[[AgentSessionObject], Awaitable[str]],
        latest: Callable[[AgentSessionObject], AgentSessionObject],
        added: Callable[[Mapping[str, Any]], None],
    ) -> None:
        """``close`` closes a deleted object's session (a one-line outcome); ``latest`` is the
        cache's newest copy of an object; ``added`` takes the body the finalizer patch
        answered (the cache holds its version before the watch echoes it, so a status
        write's precondition is not taken on the version before the add)."""
        self._api = api
        self.finalizer = finalizer
        self.close = close
        """Closes a deleted object's session (tests wrap it to record the outcomes)."""
        self._latest = latest
        self._added = added
        self._adding: dict[str, asyncio.Task[None]] = {}
        self._deleting: dict[str, asyncio.Task[None]] = {}
        self._released: OrderedDict[str, None] = OrderedDict()
        self._add_gate = asyncio.Semaphore(ADDS_IN_FLIGHT)
        self._throttle = LogThrottle()
        self.running = False

    @property
    def deletions(self) -> int:
        """Deletion tasks in flight."""
        return len(self._deleting)

    def observe(self, obj: AgentSessionObject) -> None:
        """Start the step ``obj`` needs, unless a task for its uid runs already."""
        if not self.running:
            return
        step = finalizer_step(obj)
        if step is FinalizerStep.ADD and obj.uid not in self._adding and obj.uid not in self._deleting:
            self._spawn(self._adding, obj.uid, lambda: self._add(obj))
        elif step is FinalizerStep.CLOSE and obj.uid not in self._deleting and obj.uid not in self._released:
            self._spawn(self._deleting, obj.uid, lambda: self._delete(obj))

    def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        """Cancel the tasks in flight: the next leader's relist resumes their deletes."""
        self.running = False
        tasks = [*self._adding.values(), *self._deleting.values()]
        await stop_tasks(tasks, timeout=2.0, logger=logger)
        self._adding.clear()
        self._deleting.clear()

    def _spawn(
        self, tasks: dict[str, asyncio.Task[None]], uid: str, work: Callable[[], Awaitable[None]]
    ) -> None:
        # A factory, not a coroutine: a task cancelled before its first step (stop() while
        # adds queue for the gate) would leave a coroutine that was never awaited.
        async def run() -> None:
            try:
                await work()
            except NotLeaderError:
                pass  # this replica stops: the next leader's relist takes over
            except Exception:
                logger.exception("finalizer task of %s failed", uid)
            finally:
                if tasks.get(uid) is task:
                    del tasks[uid]

        task = asyncio.create_task(run(), name=f"finalizer-{uid}")
        tasks[uid] = task

    def released(self, uid: str) -> bool:
        """Whether this process released its finalizer from ``uid`` (its delete closed the session)."""
        return uid in self._released

    async def _add(self, obj: AgentSessionObject) -> None:
        async with self._add_gate:
            await self._add_now(self._latest(obj))

    async def _add_now(self, obj: AgentSessionObject) -> None:
        delay = RETRY_MIN
        while self.running:
            patch = adding_patch(obj.finalizers, obj.resource_version, self.finalizer)
            if patch is None or obj.deleting:
                return
            try:
                body = await self._api.json_patch(agentsession_path(obj.namespace, obj.name), patch)
            except NotFoundError:
                return
            except KubeApiError as exc:
                if isinstance(exc, NotLeaderError):
                    raise
                fresh = await self._reread(obj, exc, "add the finalizer to", delay)
                if fresh is None:
                    return
                if exc.status not in PRECONDITION_FAILED:
                    delay = min(delay * 2, RETRY_MAX)
                obj = fresh
                continue
            self._added(body)
            return

    async def _delete(self, obj: AgentSessionObject) -> None:
        delay = RETRY_MIN
        while True:
            try:
                outcome = await self.close(obj)
                break
            except NotLeaderError:
                raise
            except Exception as exc:  # kopf retried any failure of on.delete: so does this
                if (suppressed := self._throttle.allow("close")) is not None:
                    logger.warning(
                        "%s/%s: closing its session failed (retrying in %.0fs; %d similar suppressed): %s",
                        obj.namespace, obj.name, delay, suppressed, exc,
                    )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        logger.info(
            "%s/%s deleted: %s",
            obj.namespace,
            obj.name,
            outcome,
            extra={"resource": f"{obj.namespace}/{obj.name}"},
        )
        await self._remove(self._latest(obj))

    async def _remove(self, obj: AgentSessionObject) -> None:
        delay = RETRY_MIN
        while True:
            patch = removing_patch(obj.finalizers, self.finalizer)
            if patch is None:
                return
            try:
                await self._api.json_patch(agentsession_path(obj.namespace, obj.name), patch)
                self._remember(obj.uid)
                return
            except NotFoundError:
                return
            except KubeApiError as exc:
                if isinstance(exc, NotLeaderError):
                    raise
                fresh = await self._reread(obj, exc, "remove the finalizer from", delay)
                if fresh is None:
                    return
                if exc.status not in PRECONDITION_FAILED:
                    delay = min(delay * 2, RETRY_MAX)
                obj = fresh

    def _remember(self, uid: str) -> None:
        self._released[uid] = None
        if len(self._released) > RELEASED_MEMORY:
            self._released.popitem(last=False)

    async def _reread(
        self, obj: AgentSessionObject, exc: KubeApiError, what: str, delay: float
    ) -> AgentSessionObject | None:
        """After a failed write: the object as it is now (None when it is gone or replaced).

        A failed precondition is read again at once (someone else wrote in between); any
        other failure waits ``delay`` first and is logged (throttled).
        """
        if exc.status not in PRECONDITION_FAILED:
            if (suppressed := self._throttle.allow(what)) is not None:
                logger.warning(
                    "%s/%s: cannot %s it (retrying in %.0fs; %d similar suppressed): %s",
                    obj.namespace, obj.name, what, delay, suppressed, exc,
                )  # fmt: skip
            await asyncio.sleep(delay)
        while True:
            try:
                body = await self._api.get(agentsession_path(obj.namespace, obj.name))
                break
            except NotFoundError:
                return None
            except KubeApiError as again:
                if isinstance(again, NotLeaderError):
                    raise
                await asyncio.sleep(delay)
        fresh = AgentSessionObject.from_body(body)
        return fresh if fresh.uid == obj.uid else None


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
    deadline = max(obj.deletion_at or clock(), operator_started_at) + timeout
    if obj.status.phase in TERMINAL:
        already = f"session already {obj.status.phase.value.lower()}"
        try:
            late = [
                s
                for s in await registry.get_for_call(obj.spec.call_id)
                if (placed := parse_session_id(s.session_id)) is not None and placed.uid == obj.uid
            ]
        except StoreError as exc:
            logger.warning("%s/%s: cannot look for late sessions: %s", obj.namespace, obj.name, exc)
            return already
        if not late:
            return already
        for session in late[1:]:  # more than one late attempt: ask them all, follow the first
            await registry.request_close(session.call_id, session.session_id)
            closer.note_closed((session.call_id, session.session_id))
        ref = (late[0].call_id, late[0].session_id)
        writer.event(
            obj, type="Warning", reason=Reason.ORPHAN_CLOSED,
            message=f"session {ref[1]} runs although the object is {obj.status.phase.value}: closing it",
        )  # fmt: skip
        return await _close_and_wait(
            obj, ref, late[0].node_id, registry=registry, writer=writer, closer=closer, changed=changed,
            timeout=timeout, deadline=deadline, clock=clock,
        )  # fmt: skip
    node_id = obj.status.node_id
    if obj.status.phase is not Phase.CLOSING:
        where = f"node {node_id}" if node_id else "its node"
        transition = Transition(
            Phase.CLOSING, Reason.CLOSE_REQUESTED, f"object deleted: closing the session on {where}"
        )
        # The status says Closing; the delete's one Event is its outcome (Closed or
        # CloseTimedOut), not also a CloseRequested one a second before it.
        now = format_time(clock())
        patch, _ = apply_transition(obj.status, transition, now=now, generation=obj.generation)
        updated = await writer.patch(obj, patch, reason=transition.reason)
        obj = updated or obj
    return await _close_and_wait(
        obj, ref, node_id, registry=registry, writer=writer, closer=closer, changed=changed,
        timeout=timeout, deadline=deadline, clock=clock,
    )  # fmt: skip


async def _close_and_wait(
    obj: AgentSessionObject,
    ref: tuple[str, str],
    node_id: str | None,
    *,
    registry: SessionRegistry,
    writer: StatusWriter,
    closer: Closer,
    changed: Pulse,
    timeout: float,
    deadline: float,
    clock: Callable[[], float],
) -> str:
    """Ask ``ref`` to close and wait until it left the registry, its node is gone, or ``deadline``."""
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
