"""Placing new AgentSessions on agent nodes and following them to Running.

Objects that need a node (no phase yet, Pending, or Scheduled without an attempt in this
process) go through a work queue served by a pool of workers. A worker only decides and
sends; one attempt:

1. choose a node (:mod:`callboard.kube.placing.policy`) counting the starts in flight;
2. send the start request through the registry, expiring at the start timeout, for the
   attempt's deterministic session id (``session_id_for(namespace, uid, attempt)``);
3. hand the attempt to a task of its own, which holds the object's lock (a delete waits
   for it) and the node's slot (``_reserved``): the worker takes the next object. The
   task waits (:class:`~callboard.kube.placing.start_tracker.StartTracker`) for the
   session record, a refusal or the timeout. On a timeout the request is withdrawn: then
   no node can start it any more, unless one committed it first (the withdrawal says so,
   and the session is followed instead of starting another). Running, or the object is
   queued again for the next attempt on another node, or Failed after ``max_attempts``.

**Status writes.** A node that confirms within ``scheduled_after`` seconds costs one
write, Running, which records the attempt (session id, node, attempt number, request id,
start time) on the ``resourceVersion`` the decision read. A slower node gets Scheduled,
with the same fields and the same precondition, when the window ends, then Running. With
``scheduled_after: 0`` Scheduled (the claim) is written before the request, as before.
One Event per outcome: Started, a Warning per failed attempt, Failed; none for Scheduled.

**Why no write before the request is safe** (G1, G8):

- *A restart* finds an attempt in flight without a status: the new process computes the
  same attempt number from the status, hence the same session id, and the registry
  refuses a second owner of a live session id, so a second request can at most start the
  same session, which the tracker then reports as the object's (Running says where it
  runs, from the session record). The request the killed process left expires at the
  start timeout; a failed attempt that the status never recorded is therefore not
  followed by another session id before this process is ``start_timeout`` (+ the accept
  grace) old: until then its session id is watched, and a late start of the twin is the
  object's session (:meth:`Placer._unknown_requests`).
- *Two replicas*: the leader raises the registry's fence to its term before it sends
  anything, and nodes refuse a lower term's claim and commit: a deposed leader starts
  nothing. Its writes are refused by the precondition of the first status write of an
  attempt (Scheduled or Running), taken on the version its stale view holds.
- *A Scheduled write refused by the precondition* after the request went out: the request
  is withdrawn; withdrawn, the object is placed again from the fresh version; committed,
  its session is followed.

No node with room: the object stays Pending with a ``Placed=False`` condition saying why,
and is queued again as soon as a sync cycle sees the capacity change; untried nodes go
first then, and when none is left a node that refused before is asked again. Only as many
waiting objects (oldest first) are queued again as there are free slots for them; when one
of them does not take its slot (refused again), the next waiting object gets it.
Placement starts on the object's first watch event; the operator's finalizer follows the
first status write (:func:`~callboard.kube.deleting.finalizer.finalizer_step`), so a
burst's finalizer writes queue behind its placements. An object deleted before it holds
the finalizer has its session closed all the same: by this placer when the Running write
finds it gone, or at its DELETED event when a status named the session (a Pending or
Failed write after a failed attempt records that attempt's session id for it). A
restarted operator resumes a Scheduled attempt with what is left of its own timeout
(``status.attemptStartedAt``), and withdraws it (``status.requestId``) when that runs out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

from callboard._aio import LogThrottle, Pulse, WorkQueue, guarded_task, stop_tasks
from callboard.errors import StoreError
from callboard.kube.k8s.client import ConflictError, KubeApiError
from callboard.kube.k8s.status_writer import StatusWriter
from callboard.kube.placing import policy as placement
from callboard.kube.placing.policy import needs_placement, spec_problem
from callboard.kube.placing.start_tracker import ACCEPTED_GRACE, Outcome, OutcomeKind, StartTracker
from callboard.kube.resource.fields import format_time, parse_time
from callboard.kube.resource.naming import session_id_for
from callboard.kube.resource.objects import AgentSessionObject, Key
from callboard.kube.resource.phases import ConditionType, Phase, Reason, Transition
from callboard.kube.settings import PlacementSettings
from callboard.kube.views.metrics import OperatorMetrics
from callboard.kube.views.object_cache import ObjectCache
from callboard.kube.views.registry_snapshot import Snapshot
from callboard.registry import SessionRegistry, StartClaim, StartRequest

__all__ = ["Placer"]

logger = logging.getLogger(__name__)

#: Seconds before an object whose placement hit an API or registry error is tried again.
RETRY_DELAY = 1.0
#: Seconds a confirmed start counts against its node while registry reads do not list it
#: yet (a read that began before the node registered the session ends after it).
CONFIRMED_MEMORY = 30.0
#: Longest wait (seconds) for a registry read newer than an object before calling it
#: unschedulable: nodes that registered just before it was applied must count.
FRESH_READ_WAIT = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Attempt:
    """A start request that went out, followed by a task of its own (no worker waits on it)."""

    obj: AgentSessionObject
    """The object as the attempt was decided on (its version is the claim's precondition)."""
    node_id: str
    attempt: int
    session_id: str
    request_id: str | None
    started: float
    """When the request was sent (``status.attemptStartedAt``)."""
    timeout: float
    claimed: bool
    """Whether the status already records this attempt (Scheduled, written before the request or by
    an earlier process); if not, it is written only when the node is slower than the window."""
    reserved: bool
    """Whether the attempt counts against its node in ``_reserved`` until its outcome."""


class Placer:
    def __init__(
        self,
        *,
        cache: ObjectCache,
        registry: SessionRegistry,
        writer: StatusWriter,
        tracker: StartTracker,
        metrics: OperatorMetrics,
        settings: PlacementSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._registry = registry
        self._writer = writer
        self._tracker = tracker
        self._metrics = metrics
        self._settings = settings
        self._clock = clock
        self._queue: WorkQueue[Key] = WorkQueue()
        self._waiting: dict[Key, None] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tried: defaultdict[str, set[str]] = defaultdict(set)
        self._retry_tried: set[str] = set()
        """Objects re-queued by a capacity change: they may go to a node that refused before."""
        self._requeued: dict[str, str | None] = {}
        """Objects re-queued for a free slot whose placement has not finished (uid: pool)."""
        self._round: set[str] = set()
        """Objects re-queued since the last capacity change: not again until the next one."""
        self._failures: defaultdict[str, list[str]] = defaultdict(list)
        self._reserved: dict[str, int] = {}
        self._confirmed: dict[tuple[str, str], tuple[str, float]] = {}
        self._confirmed_load: Counter[str] = Counter()
        self._cancelled: set[str] = set()
        self._snapshot: Snapshot | None = None
        self._snapshot_ready = asyncio.Event()
        self._fresh = Pulse()
        self._first_seen: dict[str, float] = {}
        self._signature: frozenset[tuple[str, str | None, bool]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._followers: set[asyncio.Task[None]] = set()
        """One task per attempt in flight: outcome, withdrawal, settle, the re-queue for the next one."""
        self._following: set[str] = set()
        """Objects (uid) whose attempt in flight a follower task holds (with the object's lock)."""
        self._sessions_in_flight: set[tuple[str, str]] = set()
        """(call id, session id) of the attempts in flight: sessions no status names yet."""
        self._made: dict[str, int] = {}
        """The last attempt this process sent per object: the status records it only when written."""
        self._settled: dict[str, int] = {}
        """The last attempt whose failure this process recorded: a Scheduled status of it (or of an
        earlier one) is not resumed."""
        self._last: dict[str, _Attempt] = {}
        """The last failed attempt per object, for the status of the phase that follows it (the
        finalizer closes ``status.sessionId``: a late start of that attempt must be found)."""
        self._born = clock()
        self._throttle = LogThrottle()

    # -- feeding ---------------------------------------------------------------------------

    def offer(self, obj: AgentSessionObject) -> None:
        """Queue ``obj`` if it needs a node (called on every watch event)."""
        if obj.uid in self._cancelled:
            return
        if needs_placement(obj):
            self._first_seen.setdefault(obj.uid, self._clock())
            self._queue.add(obj.key)

    def owns(self, obj: AgentSessionObject) -> bool:
        """Whether the placer is (or will be) working on ``obj``: the sync loop keeps off."""
        return (
            needs_placement(obj)
            or self._queue.busy(obj.key)
            or self._busy(obj.uid)
            or obj.uid in self._following
        )

    def in_flight_sessions(self) -> frozenset[tuple[str, str]]:
        """The sessions of the attempts in flight: not leftovers, though no status names them
        until the attempt is recorded (Running, or Scheduled for a slow node). A copy: the set
        changes as attempts end."""
        return frozenset(self._sessions_in_flight)

    def _busy(self, uid: str) -> bool:
        lock = self._locks.get(uid)
        return lock is not None and lock.locked()

    def set_snapshot(self, snap: Snapshot) -> None:
        """A fresh registry read: re-queue the waiting objects if capacity changed."""
        self._snapshot = snap
        self._snapshot_ready.set()
        self._fresh.fire()
        for ref, (node_id, at) in list(self._confirmed.items()):
            if (ref in snap.sessions and snap.taken_at > at) or snap.taken_at - at > CONFIRMED_MEMORY:
                del self._confirmed[ref]
                self._confirmed_load[node_id] -= 1
        signature = snap.capacity_signature(freshness=self._settings.node_freshness)
        if signature != self._signature:
            self._signature = signature
            self._round.clear()
            if any(has_room for _, _, has_room in signature):
                self._requeue_waiting()

    def _requeue_waiting(self) -> None:
        """Queue the oldest waiting objects again, as many as the free slots can take."""
        snap = self._snapshot
        if snap is None:
            return
        current = {key: self._cache.get(key) for key in self._waiting}
        for key, found_obj in current.items():
            if found_obj is None or not needs_placement(found_obj):
                del self._waiting[key]  # gone, or placed since by another event
        waiting = sorted(
            (
                o
                for o in current.values()
                if o is not None and o.key in self._waiting and o.uid not in self._round
            ),
            key=lambda o: o.created_at or 0.0,
        )
        found, _ = placement.candidates(
            snap.nodes.values(),
            load=self._load(snap),
            pool=None,
            now=self._clock(),
            freshness=self._settings.node_freshness,
        )
        free = [(snap.nodes[c.node_id].pool, c.free) for c in found]
        # Slots that objects queued again earlier are about to take are not free.
        in_flight = list(self._requeued.values())
        fits = placement.share_free_slots(free, [*in_flight, *(o.spec.pool for o in waiting)])
        for obj, fit in zip(waiting, fits[len(in_flight) :], strict=True):
            if not fit:
                continue
            # Capacity changed: untried nodes first, else those that refused may be asked again.
            del self._waiting[obj.key]
            self._round.add(obj.uid)
            self._retry_tried.add(obj.uid)
            self._requeued[obj.uid] = obj.spec.pool
            self.offer(obj)

    def _load(self, snap: Snapshot) -> dict[str, int]:
        """Sessions per node: listed by the read, plus starts in flight and confirmed since."""
        return {n: snap.per_node[n] + self._reserved.get(n, 0) + self._confirmed_load[n] for n in snap.nodes}

    def forget(self, uid: str) -> None:
        """The object is gone: drop what the placer remembers of it."""
        self._tried.pop(uid, None)
        self._retry_tried.discard(uid)
        self._requeued.pop(uid, None)
        self._round.discard(uid)
        self._failures.pop(uid, None)
        self._locks.pop(uid, None)
        self._cancelled.discard(uid)
        self._first_seen.pop(uid, None)
        self._made.pop(uid, None)
        self._settled.pop(uid, None)
        self._last.pop(uid, None)

    async def cancel(self, uid: str, *, timeout: float) -> None:
        """Stop placing ``uid`` (it is being deleted); wait up to ``timeout`` for an attempt in flight."""
        self._cancelled.add(uid)
        lock = self._locks.get(uid)
        if lock is None:
            return
        try:
            await asyncio.wait_for(lock.acquire(), timeout)
        except TimeoutError:
            logger.warning("placement of %s still in flight after %.0fs", uid, timeout)
            return
        lock.release()

    # -- running ----------------------------------------------------------------------------

    def start(self) -> None:
        self._born = self._clock()
        self._tasks = [
            guarded_task(self._worker(), name=f"placer-{i}", logger=logger)
            for i in range(self._settings.workers)
        ]

    async def stop(self) -> None:
        await stop_tasks([*self._tasks, *self._followers], timeout=2.0, logger=logger)
        self._tasks = []
        self._followers.clear()

    async def _worker(self) -> None:
        await self._snapshot_ready.wait()
        while True:
            key = await self._queue.get()
            try:
                await self.place(key)
            except (KubeApiError, StoreError) as exc:
                if (suppressed := self._throttle.allow("place")) is not None:
                    logger.warning(
                        "placing %s/%s failed, retrying: %s (%d similar suppressed)", *key, exc, suppressed
                    )
                self._queue.add_later(key, RETRY_DELAY)
            except Exception:
                logger.exception("placing %s/%s failed", *key)
                self._queue.add_later(key, RETRY_DELAY)
            finally:
                self._queue.done(key)
                self._slot_settled(key)

    def _slot_settled(self, key: Key) -> None:
        """An object queued again for a free slot is done: if it left the slot free (refused
        again), the next waiting object gets it."""
        obj = self._cache.get(key)
        if obj is None or obj.uid not in self._requeued or obj.uid in self._following:
            return  # not done yet: its follower settles the slot
        del self._requeued[obj.uid]
        if self._waiting:
            self._requeue_waiting()

    def _placeable(self, obj: AgentSessionObject | None) -> bool:
        return (
            obj is not None
            and needs_placement(obj)
            and obj.uid not in self._cancelled
            and obj.uid not in self._following
        )

    async def place(self, key: Key) -> None:
        """Place one object: decide and send one attempt, or write Pending (no room) or Failed.

        The attempt's outcome is followed by a task of its own, which holds the object's lock
        until it is settled (so :meth:`cancel` still waits for it) and queues the object again
        for the next attempt: the worker is free as soon as the request went out.
        """
        obj = self._cache.get(key)
        if obj is None or not self._placeable(obj):
            return
        lock = self._locks.setdefault(obj.uid, asyncio.Lock())
        await lock.acquire()
        handed_off = False
        try:
            obj = self._cache.get(key)
            if obj is None or not self._placeable(obj):
                return
            problem = spec_problem(obj)
            if problem is not None:
                await self._writer.transition(obj, Transition(Phase.FAILED, Reason.INVALID_SPEC, problem))
                return
            if (
                obj.status.phase is Phase.SCHEDULED
                and obj.status.session_id
                and obj.status.node_id
                and self._settled.get(obj.uid, 0) < obj.status.attempts
            ):
                self._resume(obj, lock)
                handed_off = True
                return
            handed_off = await self._attempts(obj, lock)
        finally:
            if not handed_off:
                lock.release()

    def _resume(self, obj: AgentSessionObject, lock: asyncio.Lock) -> None:
        """Follow an attempt made before this process started (or before an error)."""
        assert obj.status.session_id is not None and obj.status.node_id is not None
        since = obj.status.attempt_started_at
        if since is None:  # written by an operator that did not record the attempt's start
            placed = obj.status.condition(ConditionType.PLACED)
            since = parse_time(placed.last_transition_time) if placed is not None else None
        started = since or self._clock()
        remaining = started + self._settings.start_timeout - self._clock()
        self._made[obj.uid] = max(self._made.get(obj.uid, 0), obj.status.attempts)
        self._hand_off(
            _Attempt(
                obj=obj,
                node_id=obj.status.node_id,
                attempt=obj.status.attempts,
                session_id=obj.status.session_id,
                request_id=obj.status.request_id,
                started=started,
                timeout=max(remaining, 0.0),
                claimed=True,
                reserved=False,
            ),
            lock,
        )

    def _hand_off(self, attempt: _Attempt, lock: asyncio.Lock) -> None:
        self._following.add(attempt.obj.uid)
        self._sessions_in_flight.add((attempt.obj.spec.call_id, attempt.session_id))
        task = asyncio.create_task(self._run_attempt(attempt, lock), name=f"attempt-{attempt.session_id}")
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _run_attempt(self, attempt: _Attempt, lock: asyncio.Lock) -> None:
        """Follow one attempt to its outcome, then free the object (and queue it again if needed)."""
        key, uid = attempt.obj.key, attempt.obj.uid
        again: float | None = None
        try:
            again = await self._finish(attempt)
        except (KubeApiError, StoreError) as exc:
            if (suppressed := self._throttle.allow("place")) is not None:
                logger.warning(
                    "placing %s/%s failed, retrying: %s (%d similar suppressed)", *key, exc, suppressed
                )
            again = RETRY_DELAY
        except Exception:
            logger.exception("placing %s/%s failed", *key)
            again = RETRY_DELAY
        finally:
            self._following.discard(uid)
            self._sessions_in_flight.discard((attempt.obj.spec.call_id, attempt.session_id))
            lock.release()
        if again is None:
            self._slot_settled(key)
            latest = self._cache.get(key)
            if latest is not None and needs_placement(latest):
                # A change that came while the attempt was in flight found it busy (place()
                # returns at once then): it is placed now instead of waiting for another event.
                self._queue.add(key)
        elif again > 0:
            self._queue.add_later(key, again)
        else:
            self._queue.add(key)

    def _window(self) -> float:
        """Seconds an unclaimed attempt waits for its node before Scheduled is written."""
        return min(self._settings.scheduled_after, self._settings.start_timeout / 2)

    def _reserve(self, node_id: str) -> None:
        self._reserved[node_id] = self._reserved.get(node_id, 0) + 1

    def _unreserve(self, node_id: str) -> None:
        self._reserved[node_id] -= 1
        if not self._reserved[node_id]:
            del self._reserved[node_id]

    async def _follow(
        self, obj: AgentSessionObject, node_id: str, session_id: str, request_id: str | None, timeout: float
    ) -> Outcome:
        """Wait for an attempt's outcome; on a timeout withdraw its request (G1, G7).

        After a withdrawal that answers WITHDRAWN no node can start the session any more. One
        that answers STARTED means a node committed the request first and registers the
        session now: it is followed for one more start timeout instead of being duplicated.
        """
        call_id = obj.spec.call_id
        outcome = await self._tracker.wait(call_id, session_id, request_id=request_id, timeout=timeout)
        if outcome.kind is not OutcomeKind.TIMEOUT or request_id is None:
            return outcome
        if await self._withdraw(obj, node_id, session_id, request_id):
            return outcome
        logger.info("%s/%s: node %s committed the start as it timed out", obj.namespace, obj.name, node_id)
        late = await self._tracker.wait(
            call_id, session_id, request_id=request_id, timeout=self._settings.start_timeout
        )
        if late.kind is OutcomeKind.TIMEOUT:
            return Outcome(OutcomeKind.TIMEOUT, reason="committed but never registered")
        return late

    async def _withdraw(
        self, obj: AgentSessionObject, node_id: str, session_id: str, request_id: str
    ) -> bool:
        """Withdraw a start request: True if no node can start it any more, False if one committed it."""
        request = StartRequest(
            request_id=request_id, node_id=node_id, call_id=obj.spec.call_id, session_id=session_id
        )
        return await self._registry.withdraw_start(request) is StartClaim.WITHDRAWN

    async def _attempts(self, obj: AgentSessionObject, lock: asyncio.Lock) -> bool:
        """Decide the next attempt and send it; True once a follower task took the object over."""
        while True:
            if obj.uid in self._cancelled:
                return False
            made = max(obj.status.attempts, self._made.get(obj.uid, 0))
            if made >= self._settings.max_attempts:
                reasons = "; ".join(self._failures.get(obj.uid, [])) or "no node confirmed the start"
                await self._writer.transition(
                    obj,
                    Transition(
                        Phase.FAILED,
                        Reason.START_FAILED,
                        f"{made} start attempts failed: {reasons}",
                        fields={**self._record(obj), "endedAt": format_time(self._clock())},
                    ),
                )
                return False
            snap = self._snapshot
            assert snap is not None
            load = self._load(snap)
            found, tally = placement.candidates(
                snap.nodes.values(),
                load=load,
                pool=obj.spec.pool,
                now=self._clock(),
                freshness=self._settings.node_freshness,
                exclude=self._tried.get(obj.uid, ()),
            )
            if not found and obj.uid in self._retry_tried:
                # Capacity changed since every candidate was tried: nodes that refused may take
                # it now (with one pod, never asking again would leave it Pending for good).
                found, tally = placement.candidates(
                    snap.nodes.values(),
                    load=load,
                    pool=obj.spec.pool,
                    now=self._clock(),
                    freshness=self._settings.node_freshness,
                )
            self._retry_tried.discard(obj.uid)
            choice = placement.choose(found, self._settings.strategy)
            if choice is None and snap.taken_at < self._first_seen.get(obj.uid, 0.0):
                # The read predates the object: nodes that registered since would not count.
                await self._fresh.wait(FRESH_READ_WAIT)
                self._first_seen.pop(obj.uid, None)
                continue
            if choice is None:
                message = placement.explain(tally, pool=obj.spec.pool)
                if self._failures.get(obj.uid):
                    message += f" (earlier attempts: {'; '.join(self._failures[obj.uid])})"
                # Waiting first: a capacity change during the write must not be missed.
                self._waiting[obj.key] = None
                await self._writer.transition(
                    obj, Transition(Phase.PENDING, Reason.NO_CAPACITY, message, fields=self._record(obj))
                )
                return False
            return await self._attempt(obj, choice.node_id, made + 1, lock)

    def _record(self, obj: AgentSessionObject) -> dict[str, object]:
        """The last failed attempt's fields when the status does not show it yet (it was never
        Scheduled): the phase after it still says which session id and request it used."""
        last = self._last.get(obj.uid)
        if last is None or obj.status.attempts >= last.attempt:
            return {}
        fields = dict(self._scheduled(last).fields)
        del fields["startedAt"], fields["endedAt"]
        return fields

    def _scheduled(self, attempt: _Attempt) -> Transition:
        """The status of an attempt in flight: what a restarted operator needs to follow it."""
        snap = self._snapshot
        node = snap.nodes.get(attempt.node_id) if snap is not None else None
        return Transition(
            Phase.SCHEDULED,
            Reason.START_REQUESTED,
            f"start requested on node {attempt.node_id} (attempt {attempt.attempt})",
            fields={
                "sessionId": attempt.session_id,
                "nodeId": attempt.node_id,
                "podName": node.pod_name if node is not None else None,
                "attempts": attempt.attempt,
                "attemptStartedAt": format_time(attempt.started),
                "requestId": attempt.request_id,
                "startedAt": None,
                "endedAt": None,
            },
        )

    async def _attempt(self, obj: AgentSessionObject, node_id: str, number: int, lock: asyncio.Lock) -> bool:
        """Send attempt ``number`` to ``node_id``; True once its follower task holds the object.

        With a window (``scheduled_after`` > 0) nothing is written before the request: the
        follower writes Scheduled only if the node has not answered within the window, and
        otherwise the outcome's one write (Running) carries the attempt. With no window the
        claim (Scheduled, on the version this decision read) is written first.
        """
        attempt = _Attempt(
            obj=obj,
            node_id=node_id,
            attempt=number,
            session_id=session_id_for(obj.namespace, obj.uid, number),
            request_id=uuid.uuid4().hex,
            started=self._clock(),
            timeout=self._settings.start_timeout,
            claimed=self._window() <= 0,
            reserved=True,
        )
        self._reserve(node_id)
        handed_off = False
        try:
            if attempt.claimed:
                # The claim: only on the version this decision read. Another replica (a
                # leader that does not know it was deposed) that claimed it meanwhile wins,
                # and this one retries on the fresh object instead of sending a second start.
                written = await self._writer.transition(obj, self._scheduled(attempt), precondition=True)
                if written is None:
                    return False
                attempt = dataclasses.replace(attempt, obj=written)
            if obj.uid in self._cancelled:
                return False
            try:
                await self._registry.request_start(
                    node_id,
                    obj.spec.call_id,
                    session_id=attempt.session_id,
                    call_type=obj.spec.call_type,
                    params=obj.spec.params,
                    expires_in=self._settings.start_timeout,
                    request_id=attempt.request_id,
                )
            except StoreError as exc:
                # It may have gone out all the same: follow it as one that did (its
                # withdrawal on the timeout covers both), never send another beside it.
                logger.warning("%s/%s: start request on %s: %s", obj.namespace, obj.name, node_id, exc)
            self._made[obj.uid] = number
            self._hand_off(attempt, lock)
            handed_off = True
            return True
        finally:
            if not handed_off:
                self._unreserve(node_id)

    async def _finish(self, attempt: _Attempt) -> float | None:
        """An attempt's outcome, recorded: None when done, else seconds before placing again."""
        obj = attempt.obj
        claimed = attempt.claimed
        try:
            timeout = attempt.timeout
            outcome: Outcome | None = None
            if not claimed:
                window = self._window()
                early = await self._tracker.wait(
                    obj.spec.call_id, attempt.session_id, request_id=attempt.request_id, timeout=window
                )
                if early.kind is not OutcomeKind.TIMEOUT:
                    outcome = early
                else:
                    claim = await self._claim(attempt)
                    if claim is None:
                        return None  # gone
                    if isinstance(claim, float):
                        return claim
                    obj, claimed, timeout = claim, True, max(timeout - window, 0.0)
            if outcome is None:
                outcome = await self._follow(
                    obj, attempt.node_id, attempt.session_id, attempt.request_id, timeout
                )
        finally:
            if attempt.reserved:
                self._unreserve(attempt.node_id)
        if outcome.kind is not OutcomeKind.LIVE and not attempt.claimed:
            outcome = await self._unknown_requests(attempt, outcome)
        latest = await self._settle(obj, attempt, outcome, claimed=claimed)
        if latest is None:
            return None
        self._settled[obj.uid] = attempt.attempt
        return 0.0

    async def _claim(self, attempt: _Attempt) -> AgentSessionObject | float | None:
        """Write Scheduled for an attempt whose node is slow: the object, None if it is gone, or
        seconds before placing again (another writer changed the object and the request was
        withdrawn before any node started it)."""
        obj = attempt.obj
        try:
            written = await self._writer.transition(obj, self._scheduled(attempt), precondition=True)
        except ConflictError:
            written = None
            conflict = True
        else:
            conflict = False
        if written is not None:
            return written
        assert attempt.request_id is not None
        if await self._withdraw(obj, attempt.node_id, attempt.session_id, attempt.request_id):
            if conflict:
                self._made[obj.uid] = attempt.attempt - 1  # never started: the same id again
                return RETRY_DELAY
            return None
        # A node committed it before the withdrawal: follow it (the Running write says where).
        latest = self._cache.get(obj.key)
        return latest if latest is not None and latest.uid == obj.uid else None

    async def _unknown_requests(self, attempt: _Attempt, outcome: Outcome) -> Outcome:
        """A failed attempt the status never recorded: rule out a twin from an earlier process.

        An operator killed after its request and before any status write left a request for
        the same session id (ids are per attempt, the attempt count is in the status). It
        expires ``start_timeout`` after it was sent, i.e. before this process is that old
        (plus the accept grace): until then the session id is watched, and if it comes up the
        attempt is that session's, instead of a next attempt with another id beside it.
        """
        until = self._born + self._settings.start_timeout + ACCEPTED_GRACE
        remaining = until - self._clock()
        if remaining <= 0:
            return outcome
        obj = attempt.obj
        late = await self._tracker.wait(
            obj.spec.call_id, attempt.session_id, request_id=None, timeout=remaining
        )
        return late if late.kind is OutcomeKind.LIVE else outcome

    async def _settle(
        self, obj: AgentSessionObject, attempt: _Attempt, outcome: Outcome, *, claimed: bool
    ) -> AgentSessionObject | None:
        """Record an attempt's outcome: Running (None: done) or the object for the next try."""
        self._metrics.start_attempts.labels(result=outcome.kind.value).inc()
        latest = self._cache.get(obj.key) or obj
        if latest.uid != obj.uid:
            return None
        if outcome.kind is OutcomeKind.LIVE:
            session = outcome.session
            node_id = session.node_id if session is not None and session.node_id else attempt.node_id
            snap = self._snapshot
            node = snap.nodes.get(node_id) if snap is not None else None
            now = self._clock()
            ref = (obj.spec.call_id, attempt.session_id)
            if ref not in self._confirmed and (snap is None or ref not in snap.sessions):
                self._confirmed[ref] = (node_id, now)  # counts until a later read lists it
                self._confirmed_load[node_id] += 1
            started = session.started_at if session is not None else now
            scheduled = self._scheduled(attempt)
            try:
                running = await self._writer.transition(
                    latest,
                    Transition(
                        Phase.RUNNING,
                        Reason.STARTED,
                        f"session runs on node {node_id}",
                        fields={
                            **scheduled.fields,
                            "nodeId": node_id,
                            "startedAt": format_time(started),
                            "podName": node.pod_name if node is not None else latest.status.pod_name,
                        },
                    ),
                    # Not claimed: this write is the claim. A replica whose view is stale (a
                    # deposed leader) is refused here, as its requests are by the nodes' fence.
                    precondition=not claimed,
                )
            except ConflictError:
                # The object changed since: place it again with the same session id, which
                # finds this session live at once (a second request is refused by the registry).
                self._made[obj.uid] = attempt.attempt - 1
                raise
            if running is None:
                # Deleted while the attempt was in flight, before any status named its
                # session (and so before it held the finalizer): nobody else knows it.
                await self._registry.request_close(*ref)
            elif latest.created_at is not None:
                self._metrics.placement_seconds.observe(max(now - latest.created_at, 0.0))
            self._tried.pop(obj.uid, None)
            self._failures.pop(obj.uid, None)
            self._first_seen.pop(obj.uid, None)
            self._made.pop(obj.uid, None)
            self._settled.pop(obj.uid, None)
            self._last.pop(obj.uid, None)
            return None
        self._last[obj.uid] = attempt
        node_id = attempt.node_id
        self._tried[obj.uid].add(node_id)
        what = "refused" if outcome.kind is OutcomeKind.REJECTED else "did not confirm"
        detail = f"node {node_id} {what} attempt {attempt.attempt}: {outcome.reason}"
        self._failures[obj.uid].append(detail)
        reason = Reason.NODE_REJECTED if outcome.kind is OutcomeKind.REJECTED else Reason.START_TIMEOUT
        self._writer.event(latest, type="Warning", reason=reason, message=detail)
        logger.info("%s/%s: %s", latest.namespace, latest.name, detail)
        return latest
