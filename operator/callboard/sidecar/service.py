"""The sidecar service: the registry node of one agent pod, driven by the app over a local API.

The app (any language) registers and ends its sessions here; the service owns the node
record and heartbeats the node with all its sessions in one round trip, turns close and start
requests addressed to this node into events on the app's stream, removes the sessions of an
app that died (:mod:`callboard.sidecar.watchdog`) or restarted (:meth:`SidecarService.app_instance`),
and drains on SIGTERM. When no heartbeat reached the registry for longer than its TTL it tells
the app (``registry_lost``): the sessions expired there, and the operator may have replaced them.

It knows nothing of HTTP: :mod:`callboard.sidecar.api` maps it to routes and status codes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from callboard import __version__
from callboard._aio import LogThrottle, guarded_task, stop_tasks
from callboard.errors import (
    CapacityError,
    SessionNotFoundError,
    StartRequestGoneError,
    StoreError,
    StoreUnavailableError,
)
from callboard.launcher.maintenance import HEARTBEAT_DEADLINE_SHARE, beat_within, run_fixed_rate
from callboard.registry import (
    EndReason,
    SessionInfo,
    SessionRegistry,
    StartClaim,
    StartRejection,
    StartRequest,
    admission_error,
    check_admission,
    rejection_for,
)
from callboard.sidecar.errors import (
    AppInstanceReplacedError,
    StartRequestMismatchError,
    UnknownStartRequestError,
)
from callboard.sidecar.events import Event, EventLog, EventType
from callboard.sidecar.settings import SidecarSettings
from callboard.sidecar.starts import StartDesk, start_data
from callboard.sidecar.status import NodeStatus, SessionView, SidecarStats
from callboard.sidecar.watchdog import ConsumerWatch, FailureCounter, watch_consumers, watch_health

__all__ = ["SidecarService"]

logger = logging.getLogger(__name__)

#: Backoff of the first connection to the store, seconds (doubles up to the cap): the sidecar
#: serves its probes meanwhile, so a Redis that starts after the pod is no crash loop.
CONNECT_BASE = 0.1
CONNECT_CAP = 5.0
#: Bound on stopping background tasks, seconds: never block the pod's exit on them.
STOP_TIMEOUT = 2.0
#: Removals in flight at once when the sidecar removes many sessions (drain timeout, dead app):
#: well under the store's connection pool (64), so other calls still get a connection.
REMOVE_BATCH = 32
#: Seconds cancelled removals get to unwind once the budget is spent.
UNWIND_TIMEOUT = 0.5
#: Reasons written in the tombstones of sessions the sidecar removes by itself.
REASON_APP_UNHEALTHY = EndReason.APP_UNHEALTHY
REASON_DRAIN_TIMEOUT = EndReason.DRAIN_TIMEOUT
REASON_APP_RESTARTED = EndReason.APP_RESTARTED
#: App instances remembered as replaced (their requests are refused): a handful of restarts,
#: bounded so a misbehaving app cannot grow the sidecar's memory.
REPLACED_INSTANCES = 16


class SidecarService:
    """One pod's registry node; see the module docstring. Start with :meth:`start`."""

    def __init__(
        self,
        settings: SidecarSettings,
        *,
        registry: SessionRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.stats = SidecarStats()
        self._clock = clock
        self.events = EventLog(capacity=settings.api.replay_buffer, snapshot=self._snapshot)
        self._consumer_watch = ConsumerWatch(settings.app.consumer_grace, now=clock())
        self.events.on_consumers_changed(lambda n: self._consumer_watch.consumers_changed(n, now=clock()))
        self._app_failures = FailureCounter(settings.app.failure_threshold)
        self._log_extra = {"node_id": registry.node_id}
        self._starts = StartDesk(registry, log_extra=self._log_extra)
        self._close_pending: dict[tuple[str, str], str] = {}
        self._orphans: dict[tuple[str, str], float] = {}
        """Sessions a previous process of this node left in the store, not re-asserted yet
        (by the monotonic time they were found): removed if the app turns out dead."""
        self._app: str | None = None
        """The current app instance (``Callboard-App-Instance``), once one has called."""
        self._replaced: dict[str, None] = {}
        """Instances a newer one replaced, oldest first (at most REPLACED_INSTANCES)."""
        self._owners: dict[tuple[str, str], str] = {}
        """The app instance that registered each session (sessions registered without one
        belong to no instance and are never removed for a restart)."""
        self._instance_lock = asyncio.Lock()
        self._in_flight = 0
        self._draining = False
        self._drain_deadline: float | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._connected = asyncio.Event()
        self._last_heartbeat_at: float | None = None
        """Monotonic time of the last successful heartbeat (readiness)."""
        self._last_heartbeat_wall: float | None = None
        """Unix time of the same (status)."""
        self._registry_lost: dict[str, Any] | None = None
        """The ``registry_lost`` event's data while the outage it reported lasts."""
        self._throttle = LogThrottle()
        self._tasks: list[asyncio.Task[None]] = []
        registry.set_node_info(
            address=settings.advertised_address,
            capacity=settings.node.capacity,
            pool=settings.node.pool,
            pod_name=settings.node.pod_name,
            namespace=settings.node.namespace,
            version=__version__,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background work; the store connection is retried until it succeeds."""
        spawn = [
            (self._connect_and_heartbeat(), "heartbeat"),
            (self._poll_closes(), "close-poll"),
            (self._pump_closes(), "close-requests"),
            (self._pump_starts(), "start-requests"),
        ]
        app = self.settings.app
        if app.consumer_grace > 0:
            spawn.append(
                (
                    watch_consumers(self._consumer_watch, clock=self._clock, on_dead=self._app_dead),
                    "consumer-watch",
                )
            )
        if app.health_url is not None:
            probing = watch_health(
                app.health_url,
                self._app_failures,
                interval=app.health_interval,
                timeout=app.health_timeout,
                on_probe=self._count_probe,
                on_dead=self._app_dead,
            )
            spawn.append((probing, "app-health"))
        for coro, name in spawn:
            self._tasks.append(guarded_task(coro, name=f"sidecar:{name}", logger=logger))

    async def stop(self) -> None:
        """End every event stream, stop the background work, remove the node record."""
        self.events.close()
        await stop_tasks(self._tasks, timeout=STOP_TIMEOUT, logger=logger)
        self._tasks.clear()
        if self.registry.running:
            await self.registry.stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def healthy(self) -> bool:
        """Liveness: every background loop still runs (they never end on their own)."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def ready(self) -> tuple[bool, str]:
        """Readiness and why not: connected, heartbeat fresh, app alive, not draining."""
        if not self.connected:
            return False, "not connected to the registry store yet"
        if self._draining:
            return False, "draining"
        if self._last_heartbeat_at is None or self._clock() - self._last_heartbeat_at > self.registry.ttl:
            return False, "no successful heartbeat within the TTL"
        if not self._app_failures.healthy:
            return False, "the app's health URL is failing"
        return True, "ready"

    # -- the app's calls ------------------------------------------------------------------

    async def app_instance(self, instance: str) -> None:
        """Note the app instance a request comes from; a new one replaces the previous one.

        Why: the kubelet restarts a killed app container within a second, before the
        watchdog's probes or the event stream's grace could notice, and the sidecar (alive)
        would heartbeat the dead process's sessions forever. An app instance (the Python
        client sends one id per process) says who is calling: the first request of a new
        instance removes the sessions the previous one registered (reason
        ``app_restarted``, no ``close_requested`` event: the new app never ran them) before
        it is answered, and requests of a replaced instance are refused
        (:class:`AppInstanceReplacedError`). One app per sidecar; a sidecar restart (it
        forgets the instance) is not an app restart, and sessions registered without an
        instance are never removed this way.
        """
        if instance == self._app:
            return
        async with self._instance_lock:
            if instance == self._app:
                return
            if instance in self._replaced:
                raise AppInstanceReplacedError(
                    f"app instance {instance!r} was replaced by {self._app!r}: its sessions are gone"
                )
            previous, self._app = self._app, instance
            if previous is None:
                return
            self._replaced[previous] = None
            while len(self._replaced) > REPLACED_INSTANCES:
                del self._replaced[next(iter(self._replaced))]
            live = {(s.call_id, s.session_id) for s in self.registry.local_sessions}
            self._owners = {key: owner for key, owner in self._owners.items() if key in live}
            stale = sorted(key for key, owner in self._owners.items() if owner != instance)
            self.stats.app_restarts += 1
            if not stale:
                logger.info("the app restarted (instance %s)", instance, extra=self._log_extra)
                return
            await self._remove_within(stale, REASON_APP_RESTARTED, self.settings.drain.shutdown.close)
            for key in stale:
                self._owners.pop(key, None)
                self._close_pending.pop(key, None)
            SidecarStats.bump(self.stats.ended, REASON_APP_RESTARTED, len(stale))
            self._sessions_changed()
            logger.warning(
                "the app restarted (instance %s): removed the %d sessions of its previous run",
                instance, len(stale), extra=self._log_extra,
            )  # fmt: skip

    async def register(
        self,
        call_id: str,
        session_id: str | None,
        *,
        metrics: Mapping[str, Any] | None = None,
        restore: bool = False,
        started_at: float | None = None,
        start_request_id: str | None = None,
        max_sessions_per_call: int | None = None,
        instance: str | None = None,
    ) -> tuple[SessionInfo, bool]:
        """Register a session of this node; return it and whether it was new here.

        ``restore`` re-asserts a session the app already runs (after a sidecar restart): it
        is accepted even when draining or full, keeps ``started_at`` and ``metrics``, and a
        close requested meanwhile is delivered. Registering a session this node already has
        returns it unchanged. ``start_request_id`` accepts that start request; a refusal
        (capacity, draining) answers it as rejected. A start request that was withdrawn,
        expired or claimed by another process raises ``StartRequestGoneError`` and
        registers nothing: the app must not run that session. ``instance`` is the app
        instance that runs it (see :meth:`app_instance`).
        """
        request = None
        if start_request_id is not None:
            request = await self._starts.lookup(start_request_id, connected=self.connected)
            if request is None:
                self._require_connected()
                raise StartRequestGoneError(
                    f"start request {start_request_id!r} is unknown, withdrawn or expired"
                )
        if request is not None:
            if call_id != request.call_id or (session_id is not None and session_id != request.session_id):
                raise StartRequestMismatchError(
                    f"start request {request.request_id} is for call {request.call_id!r} session "
                    f"{request.session_id!r}, not call {call_id!r} session {session_id!r}"
                )
            session_id = request.session_id
        if session_id is None:
            raise StartRequestMismatchError("session_id is required unless a start request names it")
        self._require_connected()
        existing = self._local(call_id, session_id)
        if existing is not None:
            if instance is not None:
                self._owners.setdefault((call_id, session_id), instance)
            if request is not None:
                await self._starts.answer(request, accepted=True)
            return existing, False
        if not restore:
            refusal = self._refusal()
            if refusal is not None:
                SidecarStats.bump(self.stats.refused, refusal[0])
                if request is not None:
                    await self._starts.answer(request, accepted=False, reason=refusal[0])
                raise refusal[1]
        if request is not None:
            claim = await self.registry.commit_start(request)
            if claim is not StartClaim.STARTED:
                self._starts.drop(request.request_id)
                SidecarStats.bump(self.stats.refused, claim.value)
                raise StartRequestGoneError(
                    f"start request {request.request_id} is {claim.value}", state=claim.value
                )
        self._in_flight += 1
        try:
            info = await self.registry.register(
                call_id,
                session_id,
                max_sessions_per_call=max_sessions_per_call,
                started_at=started_at if restore else None,
                metrics=metrics if restore else (metrics or None),
            )
        except CapacityError as exc:
            rejection = rejection_for(exc) or StartRejection.CALL_LIMIT
            SidecarStats.bump(self.stats.refused, rejection)
            if request is not None:
                await self._starts.answer(request, accepted=False, reason=rejection)
            raise
        finally:
            self._in_flight -= 1
        self._orphans.pop((call_id, session_id), None)
        if instance is not None:
            self._owners[(call_id, session_id)] = instance
        self._sessions_changed()
        if restore:
            await self._restore(info)
        if request is not None:
            await self._starts.answer(request, accepted=True)
        self.stats.registered += 1
        logger.info(
            "session %s", "restored" if restore else "registered",
            extra={**self._log_extra, "call_id": call_id, "session_id": session_id},
        )  # fmt: skip
        return info, True

    async def end(self, call_id: str, session_id: str, *, reason: str) -> None:
        """End a session of this node (also one only the store still knows, e.g. after a restart)."""
        if self._local(call_id, session_id) is None:
            self._require_connected()
            stored = await self.registry.get(call_id, session_id)
            if stored is None or stored.node_id != self.registry.node_id:
                raise SessionNotFoundError(f"no session {call_id}/{session_id} on this node")
        await self.registry.remove(call_id, session_id, reason=reason)
        self._close_pending.pop((call_id, session_id), None)
        self._orphans.pop((call_id, session_id), None)
        self._owners.pop((call_id, session_id), None)
        self._sessions_changed()
        SidecarStats.bump(self.stats.ended, "app")
        logger.info(
            "session ended: %s",
            reason,
            extra={**self._log_extra, "call_id": call_id, "session_id": session_id},
        )

    async def update_metrics(self, call_id: str, session_id: str, metrics: Mapping[str, Any]) -> SessionInfo:
        """Replace the metrics of a session of this node."""
        info = self._local(call_id, session_id)
        if info is None:
            raise SessionNotFoundError(f"no session {call_id}/{session_id} on this node")
        self._require_connected()
        await self.registry.update_metrics(call_id, session_id, metrics)
        return info

    async def reject_start(self, request_id: str, *, reason: str) -> StartRequest:
        """Answer a start request as rejected, with the app's reason."""
        request = await self._starts.lookup(request_id, connected=self.connected)
        if request is None:
            raise UnknownStartRequestError(f"no pending start request {request_id!r}")
        await self._starts.answer(request, accepted=False, reason=reason)
        return request

    def sessions(self) -> list[SessionView]:
        return [
            SessionView(info=s, close_requested=(s.call_id, s.session_id) in self._close_pending)
            for s in self.registry.local_sessions
        ]

    def session(self, call_id: str, session_id: str) -> SessionView:
        info = self._local(call_id, session_id)
        if info is None:
            raise SessionNotFoundError(f"no session {call_id}/{session_id} on this node")
        return SessionView(info=info, close_requested=(call_id, session_id) in self._close_pending)

    def start_requests(self) -> list[StartRequest]:
        return self._starts.pending()

    def status(self) -> NodeStatus:
        node = self.settings.node
        return NodeStatus(
            node_id=self.registry.node_id,
            pod_name=node.pod_name,
            namespace=node.namespace,
            pool=node.pool,
            capacity=node.capacity,
            active=len(self.registry.local_sessions),
            draining=self._draining,
            drain_deadline=self._drain_deadline,
            connected=self.connected,
            last_heartbeat_at=self._last_heartbeat_wall,
            app_healthy=self._app_failures.healthy,
            event_consumers=self.events.consumers,
            last_event_id=self.events.head,
            pending_start_requests=len(self._starts),
            version=__version__,
        )

    # -- drain ------------------------------------------------------------------------------

    async def drain(self, *, force: asyncio.Event | None = None) -> int:
        """Mark the node draining, tell the app, wait for its sessions to end (or ``force``).

        Sessions still live at the drain timeout are removed with reason ``drain_timeout``;
        returns how many.
        """
        timeout = self.settings.drain.timeout
        publish: asyncio.Future[None] | None = None
        if not self._draining:
            self._draining = True
            self._drain_deadline = time.time() + timeout
            live = len(self.registry.local_sessions)
            logger.info("draining: waiting up to %.1fs for %d sessions", timeout, live, extra=self._log_extra)
            # Told to the store while the sessions end, within the drain: a stalled store must
            # not add its ~15 s per command to the shutdown.
            publish = asyncio.ensure_future(asyncio.wait_for(self._publish_draining(), max(timeout, 1.0)))
            self._emit(EventType.DRAIN, self._drain_data())
        started = asyncio.get_running_loop().time()
        waiters = [asyncio.ensure_future(self._idle.wait())]
        if force is not None:
            waiters.append(asyncio.ensure_future(force.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if publish is not None:
            left = timeout - (asyncio.get_running_loop().time() - started)
            try:
                await asyncio.wait_for(publish, max(left, 1.0))
            except (StoreError, TimeoutError) as exc:
                logger.warning("could not publish draining: %s", exc or "timed out", extra=self._log_extra)
        leftover = len(self.registry.local_sessions)
        if leftover:
            logger.warning("drain timeout: removing %d live sessions", leftover, extra=self._log_extra)
            await self._remove_all(REASON_DRAIN_TIMEOUT, include_orphans=False)
        return leftover

    async def _publish_draining(self) -> None:
        if self.registry.running:
            try:
                await self.registry.set_draining(True)
            except StoreError as exc:
                logger.warning("could not publish draining: %s", exc, extra=self._log_extra)
        await self._starts.reject_all(StartRejection.DRAINING)

    # -- internals --------------------------------------------------------------------------

    def _local(self, call_id: str, session_id: str) -> SessionInfo | None:
        for info in self.registry.local_sessions:
            if info.call_id == call_id and info.session_id == session_id:
                return info
        return None

    def _require_connected(self) -> None:
        if not self.connected:
            raise StoreUnavailableError("the sidecar is not connected to the registry store yet")

    def _refusal(self) -> tuple[StartRejection, CapacityError] | None:
        active = len(self.registry.local_sessions) + self._in_flight
        capacity = self.settings.node.capacity
        rejection = check_admission(draining=self._draining, active=active, capacity=capacity)
        if rejection is None:
            return None
        node_id = self.registry.node_id
        return rejection, admission_error(rejection, node_id=node_id, active=active, capacity=capacity)

    def _sessions_changed(self) -> None:
        if self.registry.local_sessions:
            self._idle.clear()
        else:
            self._idle.set()

    async def _restore(self, info: SessionInfo) -> None:
        """Deliver a close asked while the app's session was not registered here."""
        self.stats.restored += 1
        flagged = await self.registry.get_close_requests({info.session_id: info.call_id})
        if flagged:
            self._on_close(info.call_id, info.session_id, reason=EndReason.CLOSE_REQUESTED)

    def _on_close(self, call_id: str, session_id: str, *, reason: str) -> None:
        if self._local(call_id, session_id) is None:
            return
        self._close_pending[(call_id, session_id)] = reason
        self._emit(
            EventType.CLOSE_REQUESTED, {"call_id": call_id, "session_id": session_id, "reason": reason}
        )

    def _emit(self, type: EventType, data: dict[str, Any]) -> None:
        SidecarStats.bump(self.stats.events, type.value)
        self.events.append(type, data)

    def _snapshot(self) -> list[Event]:
        """The events that restate the current state, for a reader the buffer cannot serve."""
        snapshot = [
            Event(EventType.CLOSE_REQUESTED, {"call_id": c, "session_id": s, "reason": reason})
            for (c, s), reason in self._close_pending.items()
            if self._local(c, s) is not None
        ]
        snapshot += [Event(EventType.START_REQUESTED, start_data(r)) for r in self._starts.pending()]
        if self._draining:
            snapshot.append(Event(EventType.DRAIN, self._drain_data()))
        if self._registry_lost is not None:
            snapshot.append(Event(EventType.REGISTRY_LOST, self._registry_lost))
        return snapshot

    def _drain_data(self) -> dict[str, Any]:
        return {"timeout": self.settings.drain.timeout, "deadline": self._drain_deadline}

    async def _on_start(self, request: StartRequest) -> None:
        claim = await self.registry.claim_start(request)
        if claim is not StartClaim.CLAIMED:  # withdrawn, expired, or another process has it
            self._starts.drop(request.request_id)
            return
        refusal = self._refusal()
        if refusal is not None:  # full or draining: the operator places it elsewhere at once
            await self._starts.answer(request, accepted=False, reason=refusal[0])
        elif self._starts.hold(request):
            self._emit(EventType.START_REQUESTED, start_data(request))

    async def _remove_all(self, reason: str, *, include_orphans: bool) -> int:
        """Remove this node's sessions (and those a previous sidecar left in the store)."""
        targets = {(s.call_id, s.session_id) for s in self.registry.local_sessions}
        if include_orphans:
            horizon = self._clock() - self.registry.ttl
            targets |= {key for key, found in self._orphans.items() if found > horizon}  # else expired
            self._orphans.clear()
        for call_id, session_id in sorted(targets):
            self._on_close(call_id, session_id, reason=reason)
        await self._remove_within(sorted(targets), reason, self.settings.drain.shutdown.close)
        for key in targets:
            self._close_pending.pop(key, None)
        if targets:
            SidecarStats.bump(self.stats.ended, reason, len(targets))
            self._sessions_changed()
        return len(targets)

    async def _remove_within(self, targets: list[tuple[str, str]], reason: str, budget: float) -> None:
        """Remove ``targets`` concurrently (at most REMOVE_BATCH at once), all within ``budget``
        seconds: one by one, a black-holed Redis took ~15 s per session. What is not removed
        by then expires by TTL (it is no longer heartbeated)."""
        if not targets:
            return
        gate = asyncio.Semaphore(REMOVE_BATCH)

        async def remove(call_id: str, session_id: str) -> None:
            async with gate:
                try:
                    await self.registry.remove(call_id, session_id, reason=reason)
                except StoreError as exc:
                    logger.warning(
                        "could not remove %s/%s: %s", call_id, session_id, exc, extra=self._log_extra
                    )

        tasks = [asyncio.ensure_future(remove(c, s)) for c, s in targets]
        _, pending = await asyncio.wait(tasks, timeout=budget)
        if pending:
            logger.warning(
                "%d of %d sessions not removed within %.1fs: they expire by TTL",
                len(pending),
                len(targets),
                budget,
                extra=self._log_extra,
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=UNWIND_TIMEOUT)

    async def _app_dead(self, why: str) -> None:
        removed = await self._remove_all(REASON_APP_UNHEALTHY, include_orphans=True)
        if removed:
            self.stats.app_unhealthy_cleanups += 1
            logger.warning(
                "the app looks dead (%s): removed its %d sessions", why, removed, extra=self._log_extra
            )

    # -- background loops -------------------------------------------------------------------

    async def _connect_and_heartbeat(self) -> None:
        delay = CONNECT_BASE
        while True:
            try:
                await self._find_orphans()  # before the first heartbeat rebuilds the node index
                await self.registry.start()
                break
            except StoreError as exc:
                self._log_failure("connect", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONNECT_CAP)
        self._throttle.reset("connect")
        self._beat_ok()
        self._connected.set()
        logger.info("connected to the registry store", extra=self._log_extra)
        try:
            for request in await self.registry.pending_start_requests():
                await self._on_start(request)
        except StoreError as exc:
            self._log_failure("pending start requests", exc)
        interval = self.settings.registry.heartbeat_interval
        await asyncio.sleep(interval * random.uniform(0.0, 0.1))  # jitter: nodes do not beat in step
        # Its own lane at a fixed rate: nothing else queues in front of a beat, and each beat
        # ends (or is cancelled) before the next tick, so a stalled store skips no tick.
        await run_fixed_rate(self._heartbeat_once, interval)

    async def _heartbeat_once(self) -> None:
        deadline = time.monotonic() + self.settings.registry.heartbeat_interval * HEARTBEAT_DEADLINE_SHARE
        try:
            await beat_within(self.registry.heartbeat, deadline)
        except (StoreError, TimeoutError) as exc:
            self.stats.heartbeat_failures += 1
            self._log_failure("heartbeat", exc)
            self._check_registry_lost()
            return
        self._beat_ok()
        self._throttle.reset("heartbeat")
        self._starts.expire(time.time(), ttl=self.registry.ttl)

    async def _poll_closes(self) -> None:
        """The fallback of the push: poll this node's close flags, in a lane of its own."""
        await self._connected.wait()
        await run_fixed_rate(self._poll_closes_once, self.settings.registry.heartbeat_interval)

    async def _poll_closes_once(self) -> None:
        local = {s.session_id: s.call_id for s in self.registry.local_sessions}
        if not local:
            return
        try:
            flagged = await self.registry.get_close_requests(local)
        except StoreError as exc:
            self._log_failure("close poll", exc)
            return
        for session_id in flagged:
            call_id = local[session_id]
            if (call_id, session_id) not in self._close_pending:
                self._on_close(call_id, session_id, reason=EndReason.CLOSE_REQUESTED)

    async def _find_orphans(self) -> None:
        stored = await self.registry.list_sessions(node_id=self.registry.node_id)
        now = self._clock()
        self._orphans = {(s.call_id, s.session_id): now for s in stored}
        if self._orphans:
            logger.info(
                "%d sessions of a previous sidecar process await re-assertion by the app", len(self._orphans),
                extra=self._log_extra,
            )  # fmt: skip

    def _beat_ok(self) -> None:
        self.stats.heartbeats += 1
        self._last_heartbeat_at = self._clock()
        self._last_heartbeat_wall = time.time()
        if self._registry_lost is not None:
            self._registry_lost = None
            logger.info("the registry is reachable again", extra=self._log_extra)

    def _check_registry_lost(self) -> None:
        """Tell the app once per outage when the last good heartbeat is older than the TTL.

        From then on the registry holds none of this node's sessions: the operator calls their
        objects Lost and may start replacements, so the app should end these calls itself.
        """
        if self._registry_lost is not None or self._last_heartbeat_at is None:
            return
        if self._clock() - self._last_heartbeat_at <= self.registry.ttl:
            return
        sessions = [{"call_id": s.call_id, "session_id": s.session_id} for s in self.registry.local_sessions]
        self._registry_lost = {
            "since": self._last_heartbeat_wall,
            "ttl": self.registry.ttl,
            "sessions": sessions,
        }
        logger.warning(
            "no heartbeat reached the registry for more than its TTL (%.0fs): %d sessions expired there",
            self.registry.ttl,
            len(sessions),
            extra=self._log_extra,
        )
        self._emit(EventType.REGISTRY_LOST, self._registry_lost)

    async def _pump_closes(self) -> None:
        async with self.registry.close_requests() as stream:
            async for request in stream:
                self._on_close(request.call_id, request.session_id, reason=EndReason.CLOSE_REQUESTED)

    async def _pump_starts(self) -> None:
        async with self.registry.start_requests() as stream:
            async for request in stream:
                try:
                    await self._on_start(request)
                except StoreError as exc:
                    self._log_failure("start request", exc)

    def _count_probe(self, ok: bool) -> None:
        self.stats.app_probes += 1
        if not ok:
            self.stats.app_probe_failures += 1

    def _log_failure(self, what: str, exc: Exception) -> None:
        if (suppressed := self._throttle.allow(what)) is not None:
            logger.warning("%s failed: %s (%d similar messages suppressed)", what, exc, suppressed,
                           extra=self._log_extra)  # fmt: skip
