"""Start requests sent through the registry: how the operator places a session on a node.

Each request is claimed first (:meth:`SessionRegistry.claim_start`): a request that is
taken, withdrawn or expired is dropped unanswered. A claimed one is answered once: the
agent is created, the claim committed (:meth:`SessionRegistry.commit_start`) and only then
the session registered and "accepted"; a commit that fails (the requester withdrew it
meanwhile) closes the agent unstarted. Otherwise the answer says why not in words the
operator acts on (:class:`~callboard.registry.StartRejection`, shared with the sidecar).
Requests arrive by push; they are also polled at start-up (sent before this node
listened), after a reconnect of the push channel, and every few cycles (a notice lost
without a disconnect). Duplicates are dropped by request id
(:class:`~callboard.registry.SeenRequests`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from callboard._aio import stop_tasks
from callboard.errors import CapacityError, InvalidIdError, StartRequestGoneError, StoreError
from callboard.launcher.agent import AgentStartError
from callboard.registry import (
    EventStream,
    SeenRequests,
    SessionRegistry,
    StartClaim,
    StartRejection,
    StartRequest,
    rejection_for,
)

__all__ = ["StartRejection", "StartRequestHandler"]

logger = logging.getLogger(__name__)


class StartRequestHandler:
    """Answers this node's start requests with ``start(request)`` (which starts a session)."""

    def __init__(
        self,
        registry: SessionRegistry,
        start: Callable[[StartRequest], Awaitable[object]],
        *,
        answers: Counter[str],
        log_failure: Callable[[str, BaseException], None],
    ) -> None:
        self.registry = registry
        self.start = start
        self.answers = answers
        self.log_failure = log_failure
        self.accepting = True
        self._handled = SeenRequests(2 * registry.ttl)
        self._tasks: set[asyncio.Task[None]] = set()

    async def consume(self, stream: EventStream[StartRequest]) -> None:
        """Answer what was sent before we listened, then every pushed request."""
        try:
            await self.poll()
        except StoreError as exc:
            self.log_failure("start-requests", exc)
        async for request in stream:
            self.spawn(request)

    async def poll(self) -> None:
        for request in await self.registry.pending_start_requests():
            self.spawn(request)

    def spawn(self, request: StartRequest) -> None:
        """Answer ``request`` in a task of its own (a slow ``create_agent`` blocks nothing)."""
        if not self.accepting or not self._handled.first_time(request.request_id):
            return
        task = asyncio.create_task(self._answer(request), name=f"start:{request.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, timeout: float) -> None:
        self.accepting = False
        await stop_tasks(list(self._tasks), timeout=timeout, logger=logger)

    async def _answer(self, request: StartRequest) -> None:
        ctx: dict[str, Any] = {
            "node_id": self.registry.node_id,
            "call_id": request.call_id,
            "session_id": request.session_id,
        }
        try:
            claim = await self.registry.claim_start(request)
        except StoreError as exc:
            self._handled.forget(request.request_id)
            self.log_failure("start-request", exc)
            return
        if claim is not StartClaim.CLAIMED:
            self.answers[claim.value] += 1
            logger.info("start request %s dropped: %s", request.request_id, claim.value, extra=ctx)
            return
        reason: str | None = None
        try:
            await self.start(request)
        except StartRequestGoneError as exc:
            self.answers[exc.state] += 1
            logger.info("start request %s not started: %s", request.request_id, exc, extra=ctx)
            return
        except CapacityError as exc:
            reason = rejection_for(exc) or StartRejection.CAPACITY
        except InvalidIdError as exc:
            reason = f"{StartRejection.INVALID}: {exc}"
        except StoreError as exc:
            # Not answered: forget it, so a later poll retries while the request lives.
            self._handled.forget(request.request_id)
            self.log_failure("start-request", exc)
            return
        except (AgentStartError, RuntimeError) as exc:
            reason = f"{StartRejection.FAILED}: {exc}"
            logger.warning("start request %s failed: %s", request.request_id, exc, extra=ctx)
        self.answers[reason or "accepted"] += 1
        try:
            await self.registry.answer_start(request, accepted=reason is None, reason=reason)
        except StoreError as exc:
            self.log_failure("start-answer", exc)
            return
        if reason is None:
            logger.info("start request %s accepted", request.request_id, extra=ctx)
        else:
            logger.info("start request %s rejected: %s", request.request_id, reason, extra=ctx)
