"""Start requests sent through the registry: how the operator places a session on a node.

Each request is answered once: the session starts with the id the sender chose and the
answer is "accepted", or the answer says why not in words the operator acts on
(:class:`StartRejection`). Requests arrive by push; they are also polled at start-up (sent
before this node listened) and every few cycles (a notice lost without a disconnect).
Duplicates are dropped by request id for twice the TTL, as a request lives one TTL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from callboard._aio import stop_tasks
from callboard.errors import (
    InvalidIdError,
    MaxConcurrentSessionsExceeded,
    MaxSessionsPerCallExceeded,
    NodeDrainingError,
    StoreError,
)
from callboard.launcher.agent import AgentStartError
from callboard.registry import EventStream, SessionRegistry, StartRequest

__all__ = ["StartRejection", "StartRequestHandler"]

logger = logging.getLogger(__name__)


class StartRejection:
    """Reasons a node gives when it rejects a start request (the operator reads them)."""

    AT_CAPACITY = "at capacity"
    DRAINING = "draining"
    CALL_LIMIT = "call limit"
    INVALID = "invalid request"
    FAILED = "agent failed to start"


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
        self._handled: dict[str, float] = {}
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
        if request.request_id in self._handled or not self.accepting:
            return
        now = time.monotonic()
        keep = 2 * self.registry.ttl
        self._handled = {r: t for r, t in self._handled.items() if now - t < keep}
        self._handled[request.request_id] = now
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
        reason: str | None = None
        try:
            await self.start(request)
        except NodeDrainingError:
            reason = StartRejection.DRAINING
        except MaxConcurrentSessionsExceeded:
            reason = StartRejection.AT_CAPACITY
        except MaxSessionsPerCallExceeded:
            reason = StartRejection.CALL_LIMIT
        except InvalidIdError as exc:
            reason = f"{StartRejection.INVALID}: {exc}"
        except StoreError as exc:
            # Not answered: forget it, so a later poll retries while the request lives.
            self._handled.pop(request.request_id, None)
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
