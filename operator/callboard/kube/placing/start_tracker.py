"""Following start requests to their outcome in one batched loop.

Every start request in flight is resolved by the same loop: each tick reads, in one MGET
(:meth:`SessionRegistry.get_start_progress`), the session record and the node's answer of
every pending request. A session record means it runs; a rejection carries the node's
reason; nothing by the deadline is a timeout.
1,000 starts in flight cost one round trip per tick, not 1,000 pollers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum

from callboard._aio import LogThrottle
from callboard.errors import StoreError
from callboard.registry import SessionInfo, SessionRegistry, StartProgress, StartRef

__all__ = ["Outcome", "OutcomeKind", "StartTracker"]

logger = logging.getLogger(__name__)

#: After a node said "accepted", how long (seconds) to wait for its session record before
#: taking the answer's word for it (the node registers before it answers, so normally 0).
ACCEPTED_GRACE = 1.0


class OutcomeKind(StrEnum):
    LIVE = "live"
    REJECTED = "rejected"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    reason: str = ""
    session: SessionInfo | None = None


@dataclass(slots=True, eq=False)
class _Pending:
    """One awaited start (compared by identity: with every attempt in flight tracked here, a
    removal from the list must not compare the fields of a thousand others)."""

    call_id: str
    session_id: str
    request_id: str | None
    deadline: float
    future: asyncio.Future[Outcome]
    accepted_at: float | None = None


class StartTracker:
    def __init__(self, registry: SessionRegistry, *, poll_interval: float = 0.1) -> None:
        self._registry = registry
        self._poll_interval = poll_interval
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._throttle = LogThrottle()

    def __len__(self) -> int:
        return len(self._pending)

    async def wait(self, call_id: str, session_id: str, *, request_id: str | None, timeout: float) -> Outcome:
        """Wait until the session runs, the node refused it, or ``timeout`` seconds passed.

        Without ``request_id`` (an attempt made before a restart) only the session record
        counts: a refusal shows as a timeout.
        """
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        entry = _Pending(call_id, session_id, request_id, time.monotonic() + max(timeout, 0.0), future)
        self._pending.append(entry)
        self._wakeup.set()
        try:
            return await future
        finally:
            if entry in self._pending:
                self._pending.remove(entry)

    async def run(self) -> None:
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self.poll()
            await asyncio.sleep(self._poll_interval)

    async def poll(self) -> None:
        """One batched read that resolves what it can (public for tests)."""
        pending = [p for p in self._pending if not p.future.done()]
        if not pending:
            return
        try:
            progress = await self._registry.get_start_progress(
                [StartRef(p.call_id, p.session_id, p.request_id) for p in pending]
            )
        except StoreError as exc:
            if (suppressed := self._throttle.allow("mget")) is not None:
                logger.warning("cannot read start answers: %s (%d similar suppressed)", exc, suppressed)
            progress = [StartProgress(live=False, session=None, result=None)] * len(pending)
        now = time.monotonic()
        for p, seen in zip(pending, progress, strict=True):
            outcome = self._decide(p, seen, now)
            if outcome is not None and not p.future.done():
                p.future.set_result(outcome)

    def _decide(self, p: _Pending, seen: StartProgress, now: float) -> Outcome | None:
        if seen.live:
            return Outcome(OutcomeKind.LIVE, session=seen.session)
        result = seen.result
        if result is not None and not result.accepted:
            return Outcome(OutcomeKind.REJECTED, reason=result.reason or "rejected")
        if result is not None and result.accepted:
            if p.accepted_at is None:
                p.accepted_at = now
            if now - p.accepted_at >= ACCEPTED_GRACE:
                return Outcome(OutcomeKind.LIVE)
        if now >= p.deadline:
            return Outcome(OutcomeKind.TIMEOUT, reason="no answer")
        return None
