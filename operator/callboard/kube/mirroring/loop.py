"""The sync loop: one batched read of the registry per cycle, mirrored into every object.

Each cycle reads every node and session once, through the registry's node indexes (one
script, O(nodes + sessions), no SCAN of the key space); every :data:`FULL_READ_INTERVAL`
seconds, and whenever the indexes cannot be trusted, by scanning (O(key space), tombstones
and start results included). Then, for the objects the placer does not own and that are
not being deleted:

- patches the status where the registry says something new (:mod:`callboard.kube.mirroring.policy`),
  never for liveness alone (heartbeats and metrics stay in the registry and Prometheus);
- closes a session that comes back for a Lost object (``spec.lostPolicy``);
- asks the registry about sessions that vanished (ended: Succeeded; node gone: Lost);
- deletes finished objects past ``ttlSecondsAfterFinished``;
- adopts sessions started outside Kubernetes and closes leftovers (:mod:`callboard.kube.mirroring.adoption`);
- updates the agent pods' annotations and the metrics.

A registry outage skips the cycle: nothing is declared lost because Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from callboard._aio import LogThrottle, Pulse
from callboard.errors import StoreError
from callboard.kube.k8s.client import ConflictError, KubeApi, KubeApiError, NotFoundError, agentsession_path
from callboard.kube.k8s.pod_annotator import PodAnnotator
from callboard.kube.k8s.status_writer import StatusWriter
from callboard.kube.mirroring.adoption import Unclaimed, adopted_manifest, classify
from callboard.kube.mirroring.policy import MirrorDecision, decide_mirror, gone_transition
from callboard.kube.placing.loop import Placer
from callboard.kube.resource.naming import parse_session_id
from callboard.kube.resource.objects import AgentSessionObject
from callboard.kube.resource.phases import TERMINAL, Phase, Reason
from callboard.kube.settings import Settings
from callboard.kube.views.metrics import OperatorMetrics
from callboard.kube.views.object_cache import ObjectCache
from callboard.kube.views.registry_snapshot import Snapshot
from callboard.registry import NodeInfo, SessionInfo, SessionRegistry, SessionStatus

__all__ = ["Syncer"]

logger = logging.getLogger(__name__)

SessionRef = tuple[str, str]

#: Seconds the operator leaves alone a session it asked to close (or just adopted) before
#: acting on it again (adopting it, or asking again): the node needs a moment, and the
#: close flag lives on meanwhile.
RECENT = 30.0
#: Seconds before retrying to adopt a session the API server refused (e.g. a call id the
#: CRD schema rejects): the refusal is logged once per period, not once per cycle.
ADOPT_RETRY = 300.0
#: Seconds between two reads of the registry by SCAN instead of through the indexes: a
#: session an index lost is back in it with its node's next heartbeat anyway (G3), and a
#: node of a version that keeps no node-id index is seen at least this often.
FULL_READ_INTERVAL = 30.0


class Syncer:
    def __init__(
        self,
        *,
        cache: ObjectCache,
        registry: SessionRegistry,
        api: KubeApi,
        writer: StatusWriter,
        placer: Placer,
        pods: PodAnnotator | None,
        metrics: OperatorMetrics,
        settings: Settings,
        changed: Pulse,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._registry = registry
        self._api = api
        self._writer = writer
        self._placer = placer
        self._pods = pods
        self._metrics = metrics
        self._settings = settings
        self._changed = changed
        self._clock = clock
        self._missing_since: dict[str, float] = {}
        self._unclaimed_since: dict[SessionRef, float] = {}
        self._recent: dict[SessionRef, float] = {}
        self._adopt_refused: dict[SessionRef, float] = {}
        self._throttle = LogThrottle()
        self._semaphore = asyncio.Semaphore(settings.sync.concurrency)
        self.snapshot: Snapshot | None = None
        self.last_cycle: float | None = None
        """``time.monotonic()`` of the last finished cycle (read or not): the liveness probe."""
        self.last_error: str | None = None
        self._last_full_read: float | None = None
        self._quiet: dict[str, tuple[AgentSessionObject, SessionInfo, str | None]] = {}
        """Objects whose last decision was "nothing to do", with the inputs it had."""
        self._classified: tuple[dict[SessionRef, SessionInfo], int, Unclaimed] | None = None
        self._observed: int | None = None

    def note_closed(self, ref: SessionRef) -> None:
        """The operator asked ``ref`` to close: do not adopt it while it winds down."""
        self._recent[ref] = self._clock()

    async def run(self) -> None:
        while True:
            await self.cycle()
            await asyncio.sleep(self._settings.sync.interval)

    async def cycle(self) -> None:
        started = time.perf_counter()
        try:
            await self._cycle()
        finally:
            self.last_cycle = time.monotonic()
            self._metrics.sync_seconds.observe(time.perf_counter() - started)

    async def _cycle(self) -> None:
        try:
            nodes, sessions = await self._read()
            marked = await self._registry.drain_marks([n.node_id for n in nodes])
        except StoreError as exc:
            self.last_error = str(exc)
            self._metrics.sync_errors.inc()
            if (suppressed := self._throttle.allow("read")) is not None:
                logger.warning("cannot read the registry: %s (%d similar suppressed)", exc, suppressed)
            return
        self.last_error = None
        self._throttle.reset("read")
        now = self._clock()
        snap = Snapshot.build(nodes, sessions, now=now, drain_marked=marked, previous=self.snapshot)
        self.snapshot = snap
        self._placer.set_snapshot(snap)
        self._changed.fire()

        jobs: list[Awaitable[None]] = []
        seen: set[str] = set()
        quiet: dict[str, tuple[AgentSessionObject, SessionInfo, str | None]] = {}
        for obj in self._cache:
            if obj.deleting or self._placer.owns(obj):
                continue
            inputs = _quiet_inputs(obj, snap)
            if inputs is not None and self._quiet.get(obj.uid) == inputs:
                quiet[obj.uid] = inputs  # nothing it depends on changed: still nothing to do
                continue
            decision = decide_mirror(obj, snap, now=now)
            if decision.check_gone:
                seen.add(obj.uid)
            if not decision.empty:
                jobs.append(self._apply(obj, decision, now))
            elif inputs is not None:
                quiet[obj.uid] = inputs
        self._quiet = quiet
        for uid in set(self._missing_since) - seen:
            del self._missing_since[uid]
        jobs.extend(await self._unclaimed(snap, now))
        await self._bounded(jobs)

        if self._pods is not None:
            patched = await self._pods.update(snap.pod_counts(), pools=snap.pod_pools())
            self._metrics.pod_patches.inc(patched)
        if self._observed != self._cache.version:
            self._observed = self._cache.version
            self._metrics.observe_objects(self._cache)
        self._metrics.observe_snapshot(snap, freshness=self._settings.placement.node_freshness)

    async def _read(self) -> tuple[list[NodeInfo], list[SessionInfo]]:
        """Nodes and sessions: through the indexes, or by a scan when one is due."""
        now = time.monotonic()
        if self._last_full_read is not None and now - self._last_full_read < FULL_READ_INTERVAL:
            return await self._registry.list_live()
        nodes, sessions = await self._registry.list_live(full=True)
        self._last_full_read = now
        return nodes, sessions

    async def _bounded(self, jobs: Iterable[Awaitable[None]]) -> None:
        async def run(job: Awaitable[None]) -> None:
            async with self._semaphore:
                try:
                    await job
                except (KubeApiError, StoreError) as exc:
                    if (suppressed := self._throttle.allow("apply")) is not None:
                        logger.warning("sync step failed: %s (%d similar suppressed)", exc, suppressed)

        await asyncio.gather(*(run(job) for job in jobs))

    # -- one object -------------------------------------------------------------------------

    async def _apply(self, obj: AgentSessionObject, decision: MirrorDecision, now: float) -> None:
        name = f"{obj.namespace}/{obj.name}"
        if decision.delete:
            logger.info(
                "%s finished %s ago: deleting it (ttlSecondsAfterFinished)",
                name,
                obj.spec.ttl_seconds_after_finished,
            )
            with contextlib.suppress(NotFoundError):
                await self._api.delete(agentsession_path(obj.namespace, obj.name))
            return
        if decision.check_gone:
            await self._check_gone(obj, now)
            return
        if decision.close and obj.session is not None and obj.session not in self._recent:
            await self._registry.request_close(*obj.session)  # again every RECENT seconds
            self.note_closed(obj.session)
            if obj.status.phase in TERMINAL:
                message = f"session {obj.session[1]} runs although the object is {obj.status.phase.value}"
                logger.warning("%s: %s: close requested", name, message)
                self._writer.event(obj, type="Warning", reason=Reason.ORPHAN_CLOSED, message=message)
            elif obj.status.phase is Phase.LOST and decision.transition is not None:
                logger.warning("%s: %s", name, decision.transition.message)
                self._writer.event(
                    obj,
                    type="Warning",
                    reason=decision.transition.reason,
                    message=decision.transition.message,
                )
        if decision.transition is not None:
            await self._writer.transition(obj, decision.transition)
        elif decision.fields:
            reason = "ObservedGeneration" if set(decision.fields) == {"observedGeneration"} else "Mirror"
            await self._writer.patch(obj, decision.fields, reason=reason)

    async def _check_gone(self, obj: AgentSessionObject, now: float) -> None:
        assert obj.session is not None
        call_id, session_id = obj.session
        status = await self._registry.session_status(call_id, session_id, obj.status.node_id)
        if status is SessionStatus.LIVE:
            self._missing_since.pop(obj.uid, None)
            return  # registered since the snapshot
        ended = await self._registry.get_ended(call_id, session_id) if status is SessionStatus.ENDED else None
        if status is not SessionStatus.ENDED:
            # UNKNOWN: no record, no tombstone, the node alive (a flush, a failover): its
            # heartbeat writes the record back within one TTL, so wait that long at least.
            grace = self._settings.sync.lost_grace
            if status is SessionStatus.UNKNOWN:
                grace = max(grace, self._registry.ttl)
            since = self._missing_since.setdefault(obj.uid, now)
            if now - since < grace:
                return
        transition = gone_transition(obj, status, ended, now=now)
        if transition is not None:
            self._missing_since.pop(obj.uid, None)
            await self._writer.transition(obj, transition)

    # -- sessions nobody claims ----------------------------------------------------------------

    async def _unclaimed(self, snap: Snapshot, now: float) -> list[Awaitable[None]]:
        if not self._cache.primed.is_set():
            return []
        last = self._classified
        in_flight = self._placer.in_flight_sessions()
        if last is not None and last[0] is snap.sessions and last[1] == self._cache.version and not in_flight:
            found = last[2]  # the same sessions, the same objects, no attempt: the same answer
        else:
            found = classify(
                snap.sessions.values(),
                # An attempt in flight claims its session before any status names it.
                claimed=lambda c, s: self._cache.claiming(c, s) is not None or (c, s) in in_flight,
                watched=self._settings.watches,
            )
            self._classified = (snap.sessions, self._cache.version, found)
        adopting = self._settings.adoption.namespace is not None
        current = {(s.call_id, s.session_id) for s in found.close}
        if adopting:
            current |= {(s.call_id, s.session_id) for s in found.adopt}
        self._unclaimed_since = {ref: self._unclaimed_since.get(ref, now) for ref in current}
        self._recent = {ref: at for ref, at in self._recent.items() if now - at < RECENT}
        self._adopt_refused = {ref: at for ref, at in self._adopt_refused.items() if now - at < ADOPT_RETRY}

        def ready(session: SessionInfo) -> bool:
            ref = (session.call_id, session.session_id)
            return (
                ref in self._unclaimed_since
                and now - self._unclaimed_since[ref] >= self._settings.adoption.grace
                and ref not in self._recent
                and ref not in self._adopt_refused
            )

        jobs: list[Awaitable[None]] = [self._close_leftover(s) for s in found.close if ready(s)]
        to_adopt = [s for s in found.adopt if ready(s)] if adopting else []
        if to_adopt:
            flagged = set(
                await self._registry.get_close_requests({s.session_id: s.call_id for s in to_adopt})
            )
            jobs.extend(self._adopt(s, snap) for s in to_adopt if s.session_id not in flagged)
        return jobs

    async def _close_leftover(self, session: SessionInfo) -> None:
        ref = (session.call_id, session.session_id)
        self.note_closed(ref)  # also spaces out the re-reads below
        if await self._claimed_upstream(session):
            return
        logger.info(
            "closing session %s of call %s on node %s: the object it was placed for is gone or moved on",
            session.session_id,
            session.call_id,
            session.node_id,
            extra={"call_id": session.call_id, "session_id": session.session_id, "node_id": session.node_id},
        )
        await self._registry.request_close(*ref)
        self._metrics.orphans_closed.inc()

    async def _claimed_upstream(self, session: SessionInfo) -> bool:
        """Whether the API server (not the cache) shows an object claiming ``session``.

        The cache can be behind: a watch that went quiet, or another replica that placed the
        object while this one still thinks it leads. Closing on a stale view would hang up a
        session that is in use, so the object is read again first (a GET when the cache
        knows its name, else one list of its namespace; leftovers are rare).
        """
        placed = parse_session_id(session.session_id)
        if placed is None:
            return False
        cached = self._cache.by_uid(placed.uid)
        if cached is not None:
            try:
                bodies = [await self._api.get(agentsession_path(cached.namespace, cached.name))]
            except NotFoundError:
                return False
        else:
            bodies = await self._api.list_all(agentsession_path(placed.namespace))
        for body in bodies:
            obj = AgentSessionObject.from_body(body)
            if obj.uid != placed.uid:
                continue
            if cached is not None:
                self._cache.put(obj)  # newer than what the watch showed
            if obj.session == (session.call_id, session.session_id):
                logger.warning(
                    "session %s of call %s looked like a leftover, but %s/%s claims it: not closing it",
                    session.session_id,
                    session.call_id,
                    obj.namespace,
                    obj.name,
                )
                return True
        return False

    async def _adopt(self, session: SessionInfo, snap: Snapshot) -> None:
        namespace = self._settings.adoption.namespace
        assert namespace is not None
        ref = (session.call_id, session.session_id)
        manifest = adopted_manifest(
            session,
            snap.nodes.get(session.node_id),
            namespace=namespace,
            ttl_seconds_after_finished=self._settings.adoption.ttl_seconds_after_finished,
            operator_class=self._settings.operator_class,
        )
        self._recent[ref] = self._clock()
        try:
            await self._api.create(agentsession_path(namespace), manifest)
        except ConflictError:
            return  # adopted already (the watch has not shown it yet)
        except KubeApiError as exc:
            if exc.status in (400, 403, 422):
                self._adopt_refused[ref] = self._clock()
                logger.warning(
                    "cannot adopt session %s of call %s: %s", session.session_id, session.call_id, exc
                )
                return
            raise
        self._metrics.adopted.inc()
        logger.info(
            "adopted session %s of call %s (node %s) as %s/%s",
            session.session_id,
            session.call_id,
            session.node_id,
            namespace,
            manifest["metadata"]["name"],
            extra={"call_id": session.call_id, "session_id": session.session_id},
        )


def _quiet_inputs(
    obj: AgentSessionObject, snap: Snapshot
) -> tuple[AgentSessionObject, SessionInfo, str | None] | None:
    """What :func:`decide_mirror` reads for a Running object whose decision depends on nothing
    else (no clock: no ``maxDurationSeconds``; no other session: not Lost): the object (the
    cache's instance, replaced on every change), its session (the registry's decoded copy,
    replaced when its node's sessions change) and its node's pod. None for any other object:
    it is decided every cycle.

    A quiet cycle at 10,000 Running objects then costs a dict look-up per object instead of a
    decision per object.
    """
    if obj.status.phase is not Phase.RUNNING or obj.spec.max_duration_seconds is not None:
        return None
    ref = obj.session
    session = snap.sessions.get(ref) if ref is not None else None
    if session is None:
        return None
    node = snap.nodes.get(session.node_id)
    return obj, session, node.pod_name if node is not None else None
