"""AgentLauncher: the sessions of this node, their limits, and the loop that keeps them honest.

Compatible with the documented Vision Agents launcher (same constructor, same members), with
a :class:`~callboard.registry.SessionRegistry` underneath that makes every session visible
to, and closable from, every node. Without a registry it uses an in-memory one and behaves
as a single node.

Background work, each a named guarded task:

- ``heartbeat``: one batch heartbeat per ``maintenance_interval`` in a lane of its own, each
  bounded to end before the next tick and retried within that bound
  (:func:`~callboard.launcher.maintenance.beat_within`): a stalled store never makes it skip a
  beat by queueing it behind the rest of the maintenance.
- ``maintenance``: a fixed-rate cycle (see :mod:`callboard.launcher.maintenance`): idle and
  max-duration closes, polled close requests (the fallback), changed metrics, and now and
  then a poll for start requests. One failing agent or an unreachable store is logged
  (rate-limited) and the cycle goes on.
- ``close-requests``: consumes the registry's push stream and closes at once.
- ``start-requests``: consumes start requests sent through the registry (by the operator),
  starts each session with the requested id and answers accepted or why not.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Self

from callboard._aio import LogThrottle, guarded_task, stop_tasks
from callboard.errors import (
    ConfigurationError,
    InvalidIdError,
    MaxSessionsPerCallExceeded,
    NodeDrainingError,
    StartRequestGoneError,
    StoreError,
)
from callboard.launcher.agent import Agent, AgentStartError, AgentT, CreateAgent, JoinCall, agent_metrics
from callboard.launcher.maintenance import HEARTBEAT_DEADLINE_SHARE, beat_within, run_fixed_rate
from callboard.launcher.metrics import MetricsPublisher
from callboard.launcher.session import AgentSession, CloseReason
from callboard.launcher.settings import LauncherSettings
from callboard.launcher.shutdown import ShutdownBudget
from callboard.launcher.start_requests import StartRequestHandler
from callboard.launcher.stats import LauncherStats
from callboard.registry import (
    CloseRequest,
    EventStream,
    SessionInfo,
    SessionRegistry,
    StartClaim,
    StartRejection,
    StartRequest,
    admission_error,
    check_admission,
    validate_id,
)

__all__ = ["AgentLauncher"]

logger = logging.getLogger(__name__)

#: ``maintenance_interval`` may be at most ``ttl / TTL_TO_INTERVAL``: with 3, two heartbeats
#: in a row can fail (a Redis failover) before the node's records expire.
TTL_TO_INTERVAL = 3
#: Seconds an agent gets to leave its call when its session ends; a stuck close is logged
#: and abandoned so it never blocks a drain or a shutdown.
AGENT_CLOSE_TIMEOUT = 10.0
#: Seconds background tasks get to stop (they only wait on the store, itself bounded); the
#: whole of :meth:`AgentLauncher.stop` is within :attr:`ShutdownBudget.stop`.
TASK_STOP_TIMEOUT = 1.0
#: Seconds cancelled clean-ups get to unwind once the close budget is spent.
UNWIND_TIMEOUT = 0.5
#: With push working, poll for start requests every this many cycles anyway (30 s at the
#: default interval): a pub/sub notice can be lost without a disconnect being noticed.
START_POLL_EVERY = 6
#: The ``stats.rejected`` key (the ``callboard_sessions_rejected`` metric's label) of each
#: admission refusal; kept from before the shared vocabulary so dashboards keep working.
_STAT_OF = {StartRejection.DRAINING: "draining", StartRejection.CAPACITY: "max_concurrent"}


class AgentLauncher(Generic[AgentT]):
    """Starts agents on calls, enforces limits, closes what must close, shares it all.

    ``create_agent(**kwargs)`` makes an agent (sync or async); ``join_call(agent,
    call_type, call_id)`` is the coroutine that runs the session. Limits:
    ``max_concurrent_sessions`` (this node), ``max_sessions_per_call`` (all nodes,
    atomic in Redis), ``agent_idle_timeout`` (seconds alone on the call, 0 disables),
    ``max_session_duration_seconds``. ``maintenance_interval`` paces the maintenance loop
    and must be at most a third of the registry's TTL (else ``ValueError``). ``shutdown``
    bounds closing the sessions a drain or stop leaves and the stop itself
    (:class:`~callboard.launcher.ShutdownBudget`), so a shutdown fits the pod's grace period.
    """

    def __init__(
        self,
        create_agent: CreateAgent[AgentT],
        join_call: JoinCall[AgentT],
        agent_idle_timeout: float = 60.0,
        max_concurrent_sessions: int | None = None,
        max_sessions_per_call: int | None = None,
        max_session_duration_seconds: float | None = None,
        maintenance_interval: float = 5.0,
        registry: SessionRegistry | None = None,
        *,
        shutdown: ShutdownBudget | None = None,
    ) -> None:
        if agent_idle_timeout < 0:
            raise ConfigurationError("agent_idle_timeout must be >= 0 (0 disables it)")
        if max_concurrent_sessions is not None and max_concurrent_sessions <= 0:
            raise ConfigurationError("max_concurrent_sessions must be > 0 or None")
        if max_sessions_per_call is not None and max_sessions_per_call <= 0:
            raise ConfigurationError("max_sessions_per_call must be > 0 or None")
        if max_session_duration_seconds is not None and max_session_duration_seconds <= 0:
            raise ConfigurationError("max_session_duration_seconds must be > 0 or None")
        if maintenance_interval <= 0:
            raise ConfigurationError("maintenance_interval must be > 0")
        self._registry = registry if registry is not None else SessionRegistry()
        limit = self._registry.ttl / TTL_TO_INTERVAL
        if maintenance_interval > limit:
            raise ConfigurationError(
                f"maintenance_interval={maintenance_interval:g}s is too close to the registry ttl="
                f"{self._registry.ttl:g}s: it must be at most ttl/{TTL_TO_INTERVAL} = {limit:g}s, so "
                "heartbeats come well before records expire. Lower maintenance_interval or raise ttl."
            )
        self._create_agent = create_agent
        self._join_call = join_call
        self.agent_idle_timeout = agent_idle_timeout
        self.max_concurrent_sessions = max_concurrent_sessions
        self.max_sessions_per_call = max_sessions_per_call
        self.max_session_duration_seconds = max_session_duration_seconds
        self.maintenance_interval = maintenance_interval
        self.shutdown = shutdown if shutdown is not None else ShutdownBudget()

        self._sessions: dict[str, AgentSession[AgentT]] = {}
        self._starting = 0
        self._started_mono: dict[str, float] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._close_stream: EventStream[CloseRequest] | None = None
        self._start_stream: EventStream[StartRequest] | None = None
        self._owns_registry = False
        self._running = False
        self._draining = False
        self._cycle = 0
        self._throttle = LogThrottle()
        self._failing: set[str] = set()
        self.stats = LauncherStats()
        self._metrics = MetricsPublisher(self._registry, on_agent_error=self._on_agent_metrics_error)
        self._starts = StartRequestHandler(
            self._registry,
            self._start_requested,
            answers=self.stats.start_requests,
            log_failure=self._log_failure,
        )

    @classmethod
    def from_settings(
        cls,
        create_agent: CreateAgent[AgentT],
        join_call: JoinCall[AgentT],
        settings: LauncherSettings,
        *,
        registry: SessionRegistry | None = None,
    ) -> AgentLauncher[AgentT]:
        return cls(create_agent, join_call, registry=registry, **settings.as_kwargs())

    # -- properties -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def ready(self) -> bool:
        """Running and taking new sessions (False while draining)."""
        return self._running and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def registry(self) -> SessionRegistry:
        return self._registry

    @property
    def node_id(self) -> str:
        return self._registry.node_id

    @property
    def sessions(self) -> list[AgentSession[AgentT]]:
        """The live sessions of this node."""
        return list(self._sessions.values())

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the registry (unless already running) and the background tasks.

        Raises :class:`~callboard.errors.StoreUnavailableError` when the store cannot be
        reached, and ``RuntimeError`` when already running.
        """
        if self._running:
            raise RuntimeError("AgentLauncher is already running")
        self._publish_capacity()
        # Open the streams before the registry subscribes, so no pushed request is missed.
        self._close_stream = self._registry.close_requests()
        self._start_stream = self._registry.start_requests()
        self._owns_registry = not self._registry.running
        if self._owns_registry:
            try:
                await self._registry.start()
            except BaseException:
                await self._close_streams()
                raise
        self._running = True
        self._draining = False
        self._starts.accepting = True
        clock = asyncio.get_running_loop().time
        self._tasks = [
            guarded_task(
                run_fixed_rate(
                    self._heartbeat_lane, self.maintenance_interval, stats=self.stats.heartbeat, clock=clock
                ),
                name=f"heartbeat:{self.node_id}",
                logger=logger,
            ),
            guarded_task(
                run_fixed_rate(
                    self.maintenance_cycle,
                    self.maintenance_interval,
                    stats=self.stats.maintenance,
                    clock=clock,
                    on_skip=self._on_skipped_ticks,
                ),
                name=f"maintenance:{self.node_id}",
                logger=logger,
            ),
            guarded_task(
                self._consume_close_requests(self._close_stream),
                name=f"close-requests:{self.node_id}",
                logger=logger,
            ),
            guarded_task(
                self._starts.consume(self._start_stream),
                name=f"start-requests:{self.node_id}",
                logger=logger,
            ),
        ]
        # Let each task take its first step: a guarded task cancelled before it ever ran
        # would leave its coroutine never awaited (a warning) if stop() came right away.
        await asyncio.sleep(0)
        logger.info("launcher started", extra={"node_id": self.node_id})

    async def stop(self) -> None:
        """Close every session, stop background work, stop an owned registry; all bounded.

        Sessions still live are closed within ``shutdown.close`` seconds (clean-ups still
        running then are cancelled: their records expire by TTL); the rest takes at most
        about ``shutdown.stop`` seconds, even against a black-holed store.
        """
        if not self._running:
            return
        self._running = False
        await self._starts.stop(TASK_STOP_TIMEOUT)
        await stop_tasks(self._tasks, timeout=TASK_STOP_TIMEOUT, logger=logger)
        self._tasks.clear()
        await self._close_within(list(self._sessions.values()), CloseReason.STOPPED, self.shutdown.close)
        await self._close_streams()
        if self._owns_registry:
            await self._registry.stop()
        logger.info("launcher stopped", extra={"node_id": self.node_id})

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def drain(self, timeout: float) -> int:
        """Refuse new sessions, mark the node draining, let sessions end, then close the rest.

        Waits up to ``timeout`` seconds for live sessions to end by themselves, then closes
        what is left (reason ``drain_timeout``) and waits for that too. Returns how many sessions
        had to be closed. Draining lasts until :meth:`stop`.
        """
        self._draining = True
        logger.info(
            "draining: %d live sessions, grace %.1fs", len(self._sessions), timeout, extra=self._ctx()
        )
        timeout = max(timeout, 0.0)
        deadline = asyncio.get_running_loop().time() + timeout
        # Published while the sessions end, bounded by the drain: a stalled store must not
        # add its ~15 s to the drain.
        publish = asyncio.ensure_future(
            asyncio.wait_for(self._registry.set_draining(True), max(timeout, 1.0))
        )
        live = list(self._sessions.values())
        if live:
            waiters = [asyncio.ensure_future(s.wait()) for s in live]
            _, pending = await asyncio.wait(waiters, timeout=timeout)
            for waiter in pending:
                waiter.cancel()
        try:
            await asyncio.wait_for(publish, max(deadline - asyncio.get_running_loop().time(), 1.0))
        except (StoreError, TimeoutError) as exc:
            logger.warning("could not publish draining state: %s", exc or "timed out", extra=self._ctx())
        leftover = list(self._sessions.values())
        await self._close_within(leftover, CloseReason.DRAIN, self.shutdown.close)
        if leftover:
            logger.info("drain closed %d sessions at the deadline", len(leftover), extra=self._ctx())
        return len(leftover)

    # -- sessions -------------------------------------------------------------------------

    async def launch(self, **kwargs: Any) -> AgentT:
        """Create an agent with ``create_agent(**kwargs)`` (documented; no session)."""
        try:
            result = self._create_agent(**kwargs)
            agent = await result if inspect.isawaitable(result) else result
        except Exception as exc:
            raise AgentStartError(f"create_agent failed: {exc!r}") from exc
        if not isinstance(agent, Agent):
            raise AgentStartError(
                f"create_agent returned {type(agent).__name__}, which is not an agent "
                "(it needs id, close(), idle_for() and on_call_for())"
            )
        return agent

    async def start_session(
        self,
        call_id: str,
        call_type: str = "default",
        *,
        session_id: str | None = None,
        agent_kwargs: Mapping[str, Any] | None = None,
        start_request: StartRequest | None = None,
    ) -> AgentSession[AgentT]:
        """Create an agent, register its session, and run ``join_call`` in a task.

        ``session_id`` defaults to the agent's id; a start request passes the id its sender
        chose (and a repeated request for a live session returns that session).
        ``agent_kwargs`` go to ``create_agent``. With ``start_request`` (claimed by this
        node) the request is committed after the agent was created and before the session
        is registered: if the requester withdrew it meanwhile, or it expired, the agent is
        closed and :class:`~callboard.errors.StartRequestGoneError` raised.

        Raises :class:`~callboard.errors.NodeDrainingError`,
        :class:`~callboard.errors.MaxConcurrentSessionsExceeded`,
        :class:`~callboard.errors.MaxSessionsPerCallExceeded`,
        :class:`~callboard.errors.InvalidIdError`, :class:`AgentStartError`, and
        :class:`~callboard.errors.StoreUnavailableError` when the registry is unreachable.
        """
        validate_id(call_id, "call_id")
        validate_id(call_type, "call_type")
        if session_id is not None:
            validate_id(session_id, "session_id")
            existing = self._sessions.get(session_id)
            if existing is not None and existing.call_id == call_id:
                return existing
        if not self._running:
            raise RuntimeError("AgentLauncher is not running: call start() first")
        self._check_capacity()
        # The operator's drain mark (a scale-down chose this node): refuse before creating an
        # agent; the registration refuses too, atomically, should the mark come meanwhile.
        if await self._registry.drain_marked():
            self._check_capacity(marked=True)
        self._starting += 1
        try:
            agent = await self.launch(**dict(agent_kwargs or {}))
            try:
                sid = validate_id(session_id if session_id is not None else agent.id, "session_id")
                if sid in self._sessions:
                    raise InvalidIdError(f"session id {sid!r} is already live on this node")
                if self._draining:  # drain() began while the agent was created
                    raise admission_error(StartRejection.DRAINING, node_id=self.node_id)
                if start_request is not None:
                    claim = await self._registry.commit_start(start_request)
                    if claim is not StartClaim.STARTED:
                        raise StartRequestGoneError(
                            f"start request {start_request.request_id} is {claim.value}: not started",
                            state=claim.value,
                        )
                info = await self._registry.register(
                    call_id, sid, max_sessions_per_call=self.max_sessions_per_call
                )
            except BaseException as exc:
                if isinstance(exc, MaxSessionsPerCallExceeded):
                    self.stats.rejected["max_per_call"] += 1
                elif isinstance(exc, NodeDrainingError):
                    self.stats.rejected["draining"] += 1
                await self._close_agent(agent, None)
                raise
        except AgentStartError:
            self.stats.rejected["failed"] += 1
            raise
        finally:
            self._starting -= 1
        return self._run(sid, call_id, call_type, agent, info)

    async def close_session(self, session_id: str, wait: bool = False) -> bool:
        """Close a session of this node; with ``wait``, until it left the registry.

        Returns False when no such session runs here.
        """
        session = self._sessions.get(session_id)
        if session is None:
            return False
        self._close(session, CloseReason.CLOSED)
        if wait:
            await session.wait()
        return True

    def get_session(self, session_id: str) -> AgentSession[AgentT] | None:
        """A live session of this node (local look-up only)."""
        return self._sessions.get(session_id)

    async def request_close_session(self, call_id: str, session_id: str) -> None:
        """Close a session wherever it runs: at once when here, else through the registry."""
        session = self._sessions.get(session_id)
        if session is not None and session.call_id == call_id:
            self._close(session, CloseReason.CLOSE_REQUESTED)
            return
        await self._registry.request_close(call_id, session_id)

    async def get_session_info(self, call_id: str, session_id: str) -> SessionInfo | None:
        """A session of any node, from the registry."""
        return await self._registry.get(call_id, session_id)

    def local_metrics(self, session_id: str) -> dict[str, Any] | None:
        """Current metrics of a local session straight from its agent (None if unknown)."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        try:
            return agent_metrics(session.agent)
        except Exception as exc:
            self._log_failure("agent-metrics", exc, session)
            return None

    # -- maintenance ----------------------------------------------------------------------

    async def maintenance_cycle(self) -> None:
        """One maintenance cycle. Never raises: each step logs its own failure.

        The heartbeat is not part of it: it has its own lane (:meth:`heartbeat_once`).
        """
        self._cycle += 1
        self._close_expired()
        await self._step("close-requests", self._poll_close_requests)
        await self._step("metrics", lambda: self._metrics.publish(list(self._sessions.values())))
        if not self._registry.supports_push or self._cycle % START_POLL_EVERY == 0:
            await self._step("start-requests", self._starts.poll)

    async def _step(self, name: str, step: Any) -> None:
        try:
            await step()
        except Exception as exc:
            self.stats.errors[name] += 1
            self._log_failure(name, exc)
        else:
            if name in self._failing:
                self._failing.discard(name)
                self._throttle.reset(name)
                logger.info("%s works again", name, extra=self._ctx())

    def _close_expired(self) -> None:
        now = time.monotonic()
        for session in list(self._sessions.values()):
            reason = None
            try:
                if 0 < self.agent_idle_timeout <= session.agent.idle_for():
                    reason = CloseReason.IDLE
                elif self.max_session_duration_seconds is not None:
                    age = max(session.agent.on_call_for(), now - self._started_mono.get(session.id, now))
                    if age >= self.max_session_duration_seconds:
                        reason = CloseReason.MAX_DURATION
            except Exception as exc:
                self.stats.errors["agent-timers"] += 1
                self._log_failure("agent-timers", exc, session)
                continue
            if reason is not None:
                self._close(session, reason)

    async def heartbeat_once(self) -> None:
        """One beat of the heartbeat lane. Never raises: a failure is counted and logged.

        Retried within a deadline just before the next tick, so a stalled store costs only
        the beats it stalls (and a store back mid-interval is written to at once).
        """
        clock = asyncio.get_running_loop().time
        deadline = clock() + self.maintenance_interval * HEARTBEAT_DEADLINE_SHARE
        await self._step("heartbeat", lambda: self._beat_within(deadline, clock))

    async def _beat_within(self, deadline: float, clock: Any) -> None:
        try:
            await beat_within(self._heartbeat, deadline, clock=clock)
        except TimeoutError:
            self.stats.registry_ok = False
            raise

    async def _heartbeat_lane(self) -> None:
        await self.heartbeat_once()

    async def _heartbeat(self) -> None:
        try:
            await self._registry.heartbeat()
        except StoreError:
            self.stats.registry_ok = False
            raise
        self.stats.registry_ok = True
        self.stats.last_heartbeat_at = time.time()

    async def _poll_close_requests(self) -> None:
        live = {sid: s.call_id for sid, s in self._sessions.items()}
        if not live:
            return
        for sid in await self._registry.get_close_requests(live):
            session = self._sessions.get(sid)
            if session is not None:
                self._close(session, CloseReason.CLOSE_REQUESTED)

    def _on_agent_metrics_error(self, exc: BaseException, session: AgentSession[Any]) -> None:
        self.stats.errors["agent-metrics"] += 1
        self._log_failure("agent-metrics", exc, session)

    def _on_skipped_ticks(self, missed: int) -> None:
        self.stats.errors["overrun"] += 1
        if (suppressed := self._throttle.allow("overrun")) is not None:
            logger.warning(
                "maintenance cycle overran %d tick(s) of %.1fs (%d similar messages suppressed)",
                missed,
                self.maintenance_interval,
                suppressed,
                extra=self._ctx(),
            )

    # -- close requests -------------------------------------------------------------------

    async def _consume_close_requests(self, stream: EventStream[CloseRequest]) -> None:
        async for request in stream:
            session = self._sessions.get(request.session_id)
            if session is not None and session.call_id == request.call_id:
                self._close(session, CloseReason.CLOSE_REQUESTED)

    async def _start_requested(self, request: StartRequest) -> None:
        await self.start_session(
            request.call_id,
            request.call_type,
            session_id=request.session_id,
            agent_kwargs=request.params,
            start_request=request,
        )

    # -- internals ------------------------------------------------------------------------

    def _check_capacity(self, *, marked: bool = False) -> None:
        active = len(self._sessions) + self._starting
        limit = self.max_concurrent_sessions
        rejection = check_admission(draining=self._draining, active=active, capacity=limit, marked=marked)
        if rejection is not None:
            self.stats.rejected[_STAT_OF[rejection]] += 1
            raise admission_error(rejection, node_id=self.node_id, active=active, capacity=limit)

    def _run(
        self, sid: str, call_id: str, call_type: str, agent: AgentT, info: SessionInfo
    ) -> AgentSession[AgentT]:
        task = asyncio.create_task(self._join(agent, call_type, call_id), name=f"session:{call_id}/{sid}")
        session = AgentSession(
            id=sid,
            call_id=call_id,
            call_type=call_type,
            agent=agent,
            started_at=datetime.fromtimestamp(info.started_at, tz=UTC),
            task=task,
        )
        self._sessions[sid] = session
        self._started_mono[sid] = time.monotonic()
        task.add_done_callback(lambda t: self._on_session_done(session, t))
        self.stats.started += 1
        logger.info("session started", extra=self._ctx(call_id, sid))
        return session

    async def _join(self, agent: AgentT, call_type: str, call_id: str) -> None:
        await self._join_call(agent, call_type, call_id)

    def _close(self, session: AgentSession[AgentT], reason: CloseReason) -> None:
        """Take the session out of the live set and cancel its task; clean-up follows."""
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        if session.close_reason is None:
            session.close_reason = reason
        session.task.cancel()

    def _on_session_done(self, session: AgentSession[AgentT], task: asyncio.Task[None]) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        if session.close_reason is not None:
            reason = session.close_reason
        elif task.cancelled():
            reason = CloseReason.CANCELLED
        elif (error := task.exception()) is not None:
            reason = CloseReason.FAILED
            logger.error(
                "join_call failed: %r", error, exc_info=error, extra=self._ctx(session.call_id, session.id)
            )
        else:
            reason = CloseReason.FINISHED
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
        cleanup = asyncio.get_running_loop().create_task(
            self._cleanup(session, reason), name=f"cleanup:{session.call_id}/{session.id}"
        )
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)

    async def _cleanup(self, session: AgentSession[AgentT], reason: CloseReason) -> None:
        try:
            await self._close_agent(session.agent, session)
            try:
                await self._registry.remove(session.call_id, session.id, reason=reason.value)
            except StoreError as exc:  # no heartbeat renews it now: it expires within the TTL
                self._log_failure("remove", exc, session)
            self.stats.closed[reason.value] += 1
            logger.info("session ended: %s", reason.value, extra=self._ctx(session.call_id, session.id))
        finally:
            self._started_mono.pop(session.id, None)
            self._metrics.forget(session.id)
            session.ended.set()

    async def _close_agent(self, agent: AgentT, session: AgentSession[AgentT] | None) -> None:
        try:
            await asyncio.wait_for(agent.close(), AGENT_CLOSE_TIMEOUT)
        except Exception as exc:
            self.stats.errors["agent-close"] += 1
            self._log_failure("agent-close", exc, session)

    async def _close_within(
        self, sessions: list[AgentSession[AgentT]], reason: CloseReason, budget: float
    ) -> None:
        """Close ``sessions`` and wait, up to ``budget`` seconds in all, until every session
        this node closed has ended (agent closed, record removed); then cancel what is left.

        Waiting on the sessions, not only on clean-ups already created, matters: a cancelled
        session task creates its clean-up a loop turn later, and a clean-up that runs after
        the registry stopped opens store connections nobody closes.
        """
        for session in sessions:
            self._close(session, reason)
        ending = [s for s in sessions if not s.ended.is_set()]
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(s.ended.wait()) for s in ending]
        waiters += list(self._cleanups)
        if waiters:
            _, pending = await asyncio.wait(waiters, timeout=budget)
            for waiter in pending:
                waiter.cancel()
        stuck = [c for c in self._cleanups if not c.done()] + [s.task for s in ending if not s.task.done()]
        if stuck:
            logger.warning(
                "%d sessions did not finish closing within %.1fs: abandoned (their records expire by TTL)",
                len(stuck),
                budget,
                extra=self._ctx(),
            )
            for task in stuck:
                task.cancel()
            await asyncio.wait(stuck, timeout=UNWIND_TIMEOUT)

    async def _close_streams(self) -> None:
        for stream in (self._close_stream, self._start_stream):
            if stream is not None:
                await stream.aclose()
        self._close_stream = self._start_stream = None

    def _publish_capacity(self) -> None:
        if self._registry.node.capacity is None and self.max_concurrent_sessions is not None:
            self._registry.set_node_info(capacity=self.max_concurrent_sessions)

    def _ctx(self, call_id: str | None = None, session_id: str | None = None) -> dict[str, str]:
        ctx = {"node_id": self.node_id}
        if call_id is not None:
            ctx["call_id"] = call_id
        if session_id is not None:
            ctx["session_id"] = session_id
        return ctx

    def _log_failure(self, what: str, exc: BaseException, session: AgentSession[Any] | None = None) -> None:
        self._failing.add(what)
        if (suppressed := self._throttle.allow(what)) is None:
            return
        ctx = self._ctx(session.call_id, session.id) if session is not None else self._ctx()
        logger.warning(
            "%s failed: %s (%d similar messages suppressed)",
            what,
            exc if str(exc) else repr(exc),
            suppressed,
            extra=ctx,
        )
