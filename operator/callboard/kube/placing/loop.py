"""Placing new AgentSessions on agent nodes and following them to Running.

Objects that need a node (no phase yet, Pending, or Scheduled without an attempt in this
process) go through a work queue served by a pool of workers. One attempt:

1. choose a node (:mod:`callboard.kube.placing.policy`) counting the starts in flight;
2. write ``Scheduled`` with the attempt's session id *before* sending anything, so a
   restart finds the attempt and follows it instead of starting a second session; the
   write carries the object's ``resourceVersion``, so of two writers only one claims it;
3. send the start request through the registry, expiring at the start timeout (the
   request id and the attempt's start time are in the status written before);
4. wait (:class:`~callboard.kube.placing.start_tracker.StartTracker`) for the session record, a refusal
   or the timeout. On a timeout the request is withdrawn: then no node can start it any
   more, unless one committed it first (the withdrawal says so, and the placer follows
   that session instead of starting another). Running, or the next attempt on another
   node, or Failed after ``max_attempts``.

No node with room: the object stays Pending with a ``Placed=False`` condition saying why,
and is queued again as soon as a sync cycle sees the capacity change; untried nodes go
first then, and when none is left a node that refused before is asked again. Only as many
waiting objects (oldest first) are queued again as there are free slots for them; when one
of them does not take its slot (refused again), the next waiting object gets it.
Placement starts only once the object holds the operator's finalizer, so every placed
session is closed when its object is deleted. A restarted operator resumes an attempt
with what is left of its own timeout (``status.attemptStartedAt``), and withdraws it
(``status.requestId``) when that runs out.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

from callboard._aio import LogThrottle, Pulse, WorkQueue, guarded_task, stop_tasks
from callboard.errors import StoreError
from callboard.kube.k8s.client import KubeApiError
from callboard.kube.k8s.status_writer import StatusWriter
from callboard.kube.placing import policy as placement
from callboard.kube.placing.policy import needs_placement, spec_problem
from callboard.kube.placing.start_tracker import Outcome, OutcomeKind, StartTracker
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
        return needs_placement(obj) or self._queue.busy(obj.key) or self._busy(obj.uid)

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
        self._tasks = [
            guarded_task(self._worker(), name=f"placer-{i}", logger=logger)
            for i in range(self._settings.workers)
        ]

    async def stop(self) -> None:
        await stop_tasks(self._tasks, timeout=2.0, logger=logger)
        self._tasks = []

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
        if obj is None or obj.uid not in self._requeued:
            return
        del self._requeued[obj.uid]
        if self._waiting:
            self._requeue_waiting()

    async def place(self, key: Key) -> None:
        """Place one object: run attempts until Running, Pending (no room) or Failed."""
        obj = self._cache.get(key)
        if obj is None or not needs_placement(obj) or obj.uid in self._cancelled:
            return
        lock = self._locks.setdefault(obj.uid, asyncio.Lock())
        async with lock:
            obj = self._cache.get(key)
            if obj is None or not needs_placement(obj) or obj.uid in self._cancelled:
                return
            problem = spec_problem(obj)
            if problem is not None:
                await self._writer.transition(obj, Transition(Phase.FAILED, Reason.INVALID_SPEC, problem))
                return
            if obj.status.phase is Phase.SCHEDULED and obj.status.session_id and obj.status.node_id:
                obj = await self._resume(obj)
                if obj is None:
                    return
            await self._attempts(obj)

    async def _resume(self, obj: AgentSessionObject) -> AgentSessionObject | None:
        """Follow an attempt made before this process started (or before an error)."""
        assert obj.status.session_id is not None and obj.status.node_id is not None
        since = obj.status.attempt_started_at
        if since is None:  # written by an operator that did not record the attempt's start
            placed = obj.status.condition(ConditionType.PLACED)
            since = parse_time(placed.last_transition_time) if placed is not None else None
        remaining = (since or self._clock()) + self._settings.start_timeout - self._clock()
        outcome = await self._follow(
            obj, obj.status.node_id, obj.status.session_id, obj.status.request_id, max(remaining, 0.0)
        )
        return await self._settle(obj, obj.status.node_id, obj.status.attempts, outcome)

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
        request = StartRequest(request_id=request_id, node_id=node_id, call_id=call_id, session_id=session_id)
        if await self._registry.withdraw_start(request) is StartClaim.WITHDRAWN:
            return outcome
        logger.info("%s/%s: node %s committed the start as it timed out", obj.namespace, obj.name, node_id)
        late = await self._tracker.wait(
            call_id, session_id, request_id=request_id, timeout=self._settings.start_timeout
        )
        if late.kind is OutcomeKind.TIMEOUT:
            return Outcome(OutcomeKind.TIMEOUT, reason="committed but never registered")
        return late

    async def _attempts(self, obj: AgentSessionObject) -> None:
        while True:
            if obj.uid in self._cancelled:
                return
            if obj.status.attempts >= self._settings.max_attempts:
                reasons = "; ".join(self._failures.get(obj.uid, [])) or "no node confirmed the start"
                await self._writer.transition(
                    obj,
                    Transition(
                        Phase.FAILED,
                        Reason.START_FAILED,
                        f"{obj.status.attempts} start attempts failed: {reasons}",
                        fields={"endedAt": format_time(self._clock())},
                    ),
                )
                return
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
                await self._writer.transition(obj, Transition(Phase.PENDING, Reason.NO_CAPACITY, message))
                return
            attempt = obj.status.attempts + 1
            updated = await self._attempt(obj, choice.node_id, attempt)
            if updated is None:
                return
            obj = updated

    async def _attempt(
        self, obj: AgentSessionObject, node_id: str, attempt: int
    ) -> AgentSessionObject | None:
        """One start attempt on ``node_id``; the object to continue with, or None when done."""
        session_id = session_id_for(obj.namespace, obj.uid, attempt)
        request_id = uuid.uuid4().hex
        snap = self._snapshot
        node = snap.nodes.get(node_id) if snap is not None else None
        self._reserved[node_id] = self._reserved.get(node_id, 0) + 1
        try:
            written = await self._writer.transition(
                obj,
                Transition(
                    Phase.SCHEDULED,
                    Reason.START_REQUESTED,
                    f"start requested on node {node_id} (attempt {attempt})",
                    fields={
                        "sessionId": session_id,
                        "nodeId": node_id,
                        "podName": node.pod_name if node is not None else None,
                        "attempts": attempt,
                        "attemptStartedAt": format_time(self._clock()),
                        "requestId": request_id,
                        "startedAt": None,
                        "endedAt": None,
                    },
                ),
                # The claim: only on the version this decision read. Another replica (a
                # leader that does not know it was deposed) that claimed it meanwhile wins,
                # and this one retries on the fresh object instead of sending a second start.
                precondition=True,
            )
            if written is None or obj.uid in self._cancelled:
                return None
            request = await self._registry.request_start(
                node_id,
                obj.spec.call_id,
                session_id=session_id,
                call_type=obj.spec.call_type,
                params=obj.spec.params,
                expires_in=self._settings.start_timeout,
                request_id=request_id,
            )
            outcome = await self._follow(
                obj, node_id, session_id, request.request_id, self._settings.start_timeout
            )
        finally:
            self._reserved[node_id] -= 1
            if not self._reserved[node_id]:
                del self._reserved[node_id]
        return await self._settle(written, node_id, attempt, outcome)

    async def _settle(
        self, obj: AgentSessionObject, node_id: str, attempt: int, outcome: Outcome
    ) -> AgentSessionObject | None:
        """Record an attempt's outcome: Running (None: done) or the object for the next try."""
        self._metrics.start_attempts.labels(result=outcome.kind.value).inc()
        latest = self._cache.get(obj.key) or obj
        if latest.uid != obj.uid:
            return None
        if outcome.kind is OutcomeKind.LIVE:
            session = outcome.session
            snap = self._snapshot
            node = snap.nodes.get(node_id) if snap is not None else None
            now = self._clock()
            ref = (obj.spec.call_id, session_id_for(obj.namespace, obj.uid, attempt))
            if ref not in self._confirmed and (snap is None or ref not in snap.sessions):
                self._confirmed[ref] = (node_id, now)  # counts until a later read lists it
                self._confirmed_load[node_id] += 1
            started = session.started_at if session is not None else now
            running = await self._writer.transition(
                latest,
                Transition(
                    Phase.RUNNING,
                    Reason.STARTED,
                    f"session runs on node {node_id}",
                    fields={
                        "startedAt": format_time(started),
                        "podName": node.pod_name if node is not None else latest.status.pod_name,
                    },
                ),
            )
            if running is not None and latest.created_at is not None:
                self._metrics.placement_seconds.observe(max(now - latest.created_at, 0.0))
            self._tried.pop(obj.uid, None)
            self._failures.pop(obj.uid, None)
            self._first_seen.pop(obj.uid, None)
            return None
        self._tried[obj.uid].add(node_id)
        what = "refused" if outcome.kind is OutcomeKind.REJECTED else "did not confirm"
        detail = f"node {node_id} {what} attempt {attempt}: {outcome.reason}"
        self._failures[obj.uid].append(detail)
        reason = Reason.NODE_REJECTED if outcome.kind is OutcomeKind.REJECTED else Reason.START_TIMEOUT
        self._writer.event(latest, type="Warning", reason=reason, message=detail)
        logger.info("%s/%s: %s", latest.namespace, latest.name, detail)
        return latest
