"""The operator's parts wired together, started and stopped as one.

:class:`Runtime` owns the API client's users (status writer, Event poster, pod
annotator), the registry handle, the cache, the placer, the start tracker and the sync
loop. kopf's handlers (:mod:`callboard.kube.running.kopf_handlers`) call into it; it never calls kopf.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from callboard._aio import Pulse, guarded_task, stop_tasks
from callboard.errors import DeposedLeaderError, StoreError
from callboard.kube.deleting import finalizer as deletion
from callboard.kube.k8s.client import KubeApi, KubeApiError, NotLeaderError, agentsession_path
from callboard.kube.k8s.event_poster import EventPoster
from callboard.kube.k8s.pod_annotator import PodAnnotator
from callboard.kube.k8s.status_writer import StatusWriter
from callboard.kube.mirroring.loop import Syncer
from callboard.kube.placing.loop import Placer
from callboard.kube.placing.start_tracker import StartTracker
from callboard.kube.resource.objects import AgentSessionObject, finalizer_for
from callboard.kube.resource.phases import TERMINAL
from callboard.kube.running.loop_lag import watch_loop_lag
from callboard.kube.settings import Settings
from callboard.kube.views.metrics import OperatorMetrics
from callboard.kube.views.object_cache import ObjectCache
from callboard.registry import SessionKVStore, SessionRegistry, StartRequest

__all__ = ["LeaderRegistry", "Runtime"]

logger = logging.getLogger(__name__)

#: Node id of the operator's registry handle. The operator never heartbeats, so no node
#: record with this id is ever written (it is not a node and must not get sessions).
OPERATOR_NODE_ID = "callboard-operator"
#: Seconds between the first attempts to reach the registry at start, doubling up to the max.
CONNECT_RETRY_MIN = 0.5
CONNECT_RETRY_MAX = 10.0
#: Fraction of the registry TTL between two publications of the fence: like a node's
#: heartbeat, so a fence the store lost (flush, failover) is back within one heartbeat.
FENCE_REFRESH_FRACTION = 1 / 3


class LeaderRegistry(SessionRegistry):
    """The operator's registry handle: start and close requests only while it leads.

    The operator writes nothing to the registry but requests, drain marks and its fence;
    ``guard`` (the leader lease's ``valid``) is checked before each, so a deposed leader whose loops have
    not stopped yet starts and closes nothing (:class:`NotLeaderError`, retried by the
    loops like any API error until they stop). A request that passed the guard and was
    delayed (a paused process, a slow network) is stopped by the nodes instead: with a
    ``fencing_token`` (the Lease's ``leaseTransitions``) every request carries it, none
    goes out before :meth:`publish_fence` raised the registry's fence to it (the first
    request publishes it if the runtime has not yet), and nodes refuse requests below the
    fence (:mod:`callboard.registry.fencing`).
    """

    guard: Callable[[], bool] | None = None
    fencing_token: int | None = None
    """This term's fencing token; None without a Lease (one replica): nothing is fenced."""
    fence_published = False
    """Whether the registry's fence was raised to :attr:`fencing_token` in this term."""
    deposed = False
    """A newer term raised the fence above ours: refuse every request from now on."""

    def _check(self, what: str) -> None:
        if self.guard is not None and not self.guard():
            raise NotLeaderError(0, f"{what}: refused, this replica no longer leads")
        if self.deposed:
            raise NotLeaderError(0, f"{what}: refused, a newer leader raised the registry's fence")

    async def _ensure_fence(self, what: str) -> None:
        """Publish this term's fence now if it is not yet: no request may precede it."""
        if self.fencing_token is None or self.fence_published:
            return
        try:
            await self.publish_fence()
        except DeposedLeaderError as exc:
            raise NotLeaderError(0, f"{what}: {exc}") from exc

    async def publish_fence(self) -> None:
        """Raise the registry's fence to this term's token (at the start and periodically).

        :class:`~callboard.errors.DeposedLeaderError` when the fence is above it already.
        """
        if self.fencing_token is None:
            return
        if self.guard is not None and not self.guard():
            raise NotLeaderError(0, "fence: refused, this replica no longer leads")
        try:
            await self.raise_fence(self.fencing_token)
        except DeposedLeaderError:
            self.deposed = True
            raise
        self.fence_published = True

    async def request_start(self, *args: Any, **kwargs: Any) -> StartRequest:
        self._check("start request")
        await self._ensure_fence("start request")
        kwargs["fencing_token"] = self.fencing_token
        return await super().request_start(*args, **kwargs)

    async def request_close(self, *args: Any, **kwargs: Any) -> None:
        self._check("close request")
        await self._ensure_fence("close request")
        kwargs["fencing_token"] = self.fencing_token
        try:
            await super().request_close(*args, **kwargs)
        except DeposedLeaderError as exc:
            self.deposed = True
            raise NotLeaderError(0, str(exc)) from exc

    async def mark_draining(self, *args: Any, **kwargs: Any) -> None:
        self._check("drain mark")
        await super().mark_draining(*args, **kwargs)

    async def clear_drain_marks(self, *args: Any, **kwargs: Any) -> None:
        # A deposed leader must not unmark the new leader's victims; its own marks expire.
        self._check("drain unmark")
        await super().clear_drain_marks(*args, **kwargs)


class Runtime:
    def __init__(
        self,
        *,
        settings: Settings,
        api: KubeApi,
        store: SessionKVStore,
        metrics: OperatorMetrics | None = None,
        instance: str = "callboard-operator",
        guard: Callable[[], bool] | None = None,
        fencing_token: int | None = None,
        advance_term: Callable[[int], Awaitable[int]] | None = None,
        events_api: KubeApi | None = None,
    ) -> None:
        """``guard`` says whether this replica still leads; ``fencing_token`` is its term's
        token (both None without a Lease). ``advance_term(at_least)`` raises the Lease's
        term to at least ``at_least`` and returns it: used when the registry's fence is
        above this term's token while the Lease is still ours (the Lease was deleted and
        recreated, which restarts ``leaseTransitions`` at 0)."""
        self.settings = settings
        self.api = api
        self.store = store
        self.metrics = metrics if metrics is not None else OperatorMetrics()
        # No start(): the handle reads and sends requests; it publishes no node record.
        self.registry = LeaderRegistry(
            store, node_id=OPERATOR_NODE_ID, ttl=settings.registry.ttl, foreign_scan_interval=None
        )
        self.registry.guard = guard
        self.registry.fencing_token = fencing_token
        self._advance_term = advance_term
        self.cache = ObjectCache()
        self.changed = Pulse()
        # Events through a pool of their own when given, at a bounded rate: a burst's Events
        # must not queue the status patches that move objects to Running.
        dropped = self.metrics.events_dropped
        self.events = EventPoster(
            events_api if events_api is not None else api,
            instance=instance,
            rate=settings.events.rate,
            burst=settings.events.burst,
            on_dropped=dropped.inc,
        )
        writes = self.metrics.status_writes
        self.writer = StatusWriter(
            api=api,
            cache=self.cache,
            events=self.events,
            on_write=lambda reason: writes.labels(reason=reason).inc(),
        )
        self.tracker = StartTracker(self.registry, poll_interval=settings.placement.poll_interval)
        self.placer = Placer(
            cache=self.cache,
            registry=self.registry,
            writer=self.writer,
            tracker=self.tracker,
            metrics=self.metrics,
            settings=settings.placement,
        )
        self.pods = (
            PodAnnotator(api, min_interval=settings.pods.min_interval, namespaces=_pod_namespaces(settings))
            if settings.pods.enabled
            else None
        )
        self.syncer = Syncer(
            cache=self.cache,
            registry=self.registry,
            api=api,
            writer=self.writer,
            placer=self.placer,
            pods=self.pods,
            metrics=self.metrics,
            settings=settings,
            changed=self.changed,
        )
        self.started_at = time.time()
        self.connected = asyncio.Event()
        self.connect_error: str | None = None
        """Why the registry could not be reached yet (None once connected, or before a try)."""
        """Set once the registry answered the first time."""
        self.finalizers = deletion.Finalizers(
            api,
            finalizer=finalizer_for(settings.operator_class),
            close=self._close_deleted,
            latest=self._latest,
            added=lambda body: self.observe("MODIFIED", body),
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        """Close requests for objects deleted before they held the finalizer."""
        self._running = False

    async def start(self) -> None:
        """Start the loops (kopf's watch feeds them after this) and connect to the registry.

        The connection is made in the background: a registry that is down when the operator
        starts must not keep kopf from running (deletes of objects without a session, the
        Lease, the probes), nor crash-loop the pod and restart the delete timeouts. The loops
        treat the outage like any other: the sync loop skips its cycles, placement waits for
        a first registry read, deletes wait for at most their timeout.
        """
        self._running = True
        self.started_at = time.time()
        self.events.start()
        self.placer.start()
        self.finalizers.start()
        self._tasks = [
            guarded_task(self._connect(), name="registry-connect", logger=logger),
            guarded_task(self.tracker.run(), name="start-tracker", logger=logger),
            guarded_task(self.syncer.run(), name="sync", logger=logger),
            guarded_task(self._prime(), name="prime-cache", logger=logger),
            guarded_task(
                watch_loop_lag(histogram=self.metrics.loop_lag, gauge=self.metrics.loop_lag_last),
                name="loop-lag",
                logger=logger,
            ),
        ]

    async def stop(self) -> None:
        """Stop the loops and close the registry connection (idempotent)."""
        if not self._running:
            return
        self._running = False
        await self.finalizers.stop()  # before the placer: a delete in flight cancels placements
        await stop_tasks([*self._tasks, *self._closing], timeout=2.0, logger=logger)
        self._tasks = []
        await self.placer.stop()
        await self.events.stop()
        await self.store.close()

    # -- fed by kopf ------------------------------------------------------------------------

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of an AgentSession (``None`` for the initial listing)."""
        if event_type == "DELETED":
            gone = AgentSessionObject.from_body(body)
            self.cache.remove(gone.key, gone.uid)
            self.placer.forget(gone.uid)
            self._close_gone(gone)
            return
        obj = self.cache.put_body(body)
        self.finalizers.observe(obj)
        self.placer.offer(obj)

    def _close_gone(self, obj: AgentSessionObject) -> None:
        """Close the session of an object deleted before it got the finalizer (which follows
        the first status write): at once, not a leftover closer's grace later. One whose
        finalizer this process released was closed by that delete; a terminal one has none
        (a late one is the leftover closer's)."""
        ref = obj.session
        if ref is None or obj.status.phase in TERMINAL or self.finalizers.released(obj.uid):
            return

        async def close() -> None:
            try:
                await self.registry.request_close(*ref)
            except (StoreError, NotLeaderError) as exc:
                logger.warning("%s/%s deleted: cannot close session %s yet: %s", *obj.key, ref[1], exc)
                return  # the leftover closer tries again
            self.syncer.note_closed(ref)
            logger.info(
                "%s/%s deleted before it held the finalizer: closing session %s",
                *obj.key, ref[1], extra={"resource": "/".join(obj.key), "call_id": ref[0]},
            )  # fmt: skip

        task = asyncio.create_task(close(), name=f"close-gone-{obj.uid}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _latest(self, obj: AgentSessionObject) -> AgentSessionObject:
        latest = self.cache.get(obj.key)
        return latest if latest is not None and latest.uid == obj.uid else obj

    async def _close_deleted(self, obj: AgentSessionObject) -> str:
        return await deletion.close_for_deletion(
            obj,
            cache=self.cache,
            registry=self.registry,
            placer=self.placer,
            writer=self.writer,
            closer=self.syncer,
            changed=self.changed,
            timeout=self.settings.deletion.timeout,
            placement_timeout=self.settings.placement.start_timeout + 2.0,
            operator_started_at=self.started_at,
        )

    def liveness(self) -> dict[str, Any]:
        """What the liveness probe reports; raises when the sync loop is stuck."""
        last = self.syncer.last_cycle
        age = None if last is None else time.monotonic() - last
        limit = max(30.0, 10 * self.settings.sync.interval)
        if age is not None and age > limit:
            raise RuntimeError(f"the sync loop has not finished a cycle for {age:.0f}s")
        return {
            "objects": len(self.cache),
            "sync_age_seconds": None if age is None else round(age, 3),
            "registry": self._registry_state(),
            "starts_in_flight": len(self.tracker),
        }

    def _registry_state(self) -> str:
        """``ok``, or why not: a probe must not say ok before the registry ever answered."""
        if not self.connected.is_set():
            return "connecting" if self.connect_error is None else f"unreachable: {self.connect_error}"
        return "ok" if self.syncer.last_error is None else f"unreachable: {self.syncer.last_error}"

    async def _connect(self) -> None:
        """``store.start()`` and the first fence until both work (backing off to
        :data:`CONNECT_RETRY_MAX` seconds), then publish the fence every third of the TTL."""
        delay = CONNECT_RETRY_MIN
        started = False
        while True:
            try:
                if not started:
                    await self.store.start()
                    started = True
                await self._publish_fence()
            except (StoreError, KubeApiError, DeposedLeaderError) as exc:
                what = "publish the fence" if started else "reach the registry"
                self.connect_error = str(exc)
                logger.warning("cannot %s yet (retrying in %.1fs): %s", what, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONNECT_RETRY_MAX)
                continue
            self.connect_error = None
            self.connected.set()
            break
        if self.registry.fencing_token is None:
            return
        while True:
            await asyncio.sleep(self.settings.registry.ttl * FENCE_REFRESH_FRACTION)
            try:
                await self._publish_fence()
            except (StoreError, KubeApiError, DeposedLeaderError) as exc:
                logger.warning("cannot publish the fence (will retry): %s", exc)

    async def _publish_fence(self) -> None:
        """Raise the registry's fence to this term's token, before any request goes out.

        A fence above our token while the Lease is still ours means the Lease was recreated
        (its ``leaseTransitions`` started again at 0): the term is moved past the fence on
        the Lease itself (an optimistic write only the holder can make), then published.
        Otherwise a newer leader acts: every request stays refused until this one stops.
        """
        registry = self.registry
        was_deposed = registry.deposed
        try:
            await registry.publish_fence()
            return
        except DeposedLeaderError as exc:
            if self._advance_term is None or (registry.guard is not None and not registry.guard()):
                if not was_deposed:
                    logger.error("%s: refusing every start and close request", exc)
                return
            logger.warning("%s while this replica holds the Lease: moving the term past it", exc)
            registry.fencing_token = await self._advance_term(exc.fence + 1)
        registry.deposed = False
        await registry.publish_fence()

    async def _prime(self) -> None:
        """List the watched objects once; the cache is primed when the watch showed them all."""
        paths = (
            [agentsession_path()]
            if self.settings.clusterwide
            else [agentsession_path(ns) for ns in self.settings.namespaces]
        )
        while True:
            try:
                uids = [
                    str((item.get("metadata") or {}).get("uid"))
                    for path in paths
                    for item in await self.api.list_all(path)
                ]
                break
            except KubeApiError as exc:
                logger.warning("cannot list AgentSessions yet: %s", exc)
                await asyncio.sleep(1.0)
        self.cache.expect(uids)
        try:
            await asyncio.wait_for(self.cache.primed.wait(), self.settings.adoption.prime_timeout)
        except TimeoutError:
            logger.warning(
                "the watch did not deliver every listed AgentSession within %.0fs; going on",
                self.settings.adoption.prime_timeout,
            )
            self.cache.primed.set()
        logger.info("cache primed with %d AgentSessions", len(self.cache))


def _pod_namespaces(settings: Settings) -> tuple[str, ...]:
    """Where agent pods may be annotated: the watched namespaces and the operator's own (where
    the chart runs the agent pool), or every namespace (empty) when it watches the cluster."""
    if settings.clusterwide:
        return ()
    return (*settings.namespaces, settings.leader.namespace, settings.autoscale.namespace)
