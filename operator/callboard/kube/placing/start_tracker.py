"""Following start requests to their outcome in one batched loop.

Every start request in flight is resolved by the same loop: each tick reads, in one MGET,
the session record and the node's answer of every pending request. A session record means
it runs; a rejection carries the node's reason; nothing by the deadline is a timeout.
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
from callboard.registry import SessionInfo, SessionRegistry, StartResult
from callboard.registry import keys as k

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


@dataclass(slots=True)
class _Pending:
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
        keys: list[str] = []
        for p in pending:
            keys.append(k.session_key(p.call_id, p.session_id))
            if p.request_id is not None:
                keys.append(k.start_result_key(p.request_id))
        try:
            values = await self._registry.store.mget(keys)
        except StoreError as exc:
            if (suppressed := self._throttle.allow("mget")) is not None:
                logger.warning("cannot read start answers: %s (%d similar suppressed)", exc, suppressed)
            values = [None] * len(keys)
        now = time.monotonic()
        it = iter(values)
        for p in pending:
            raw_session = next(it)
            raw_result = next(it) if p.request_id is not None else None
            outcome = self._decide(p, raw_session, raw_result, now)
            if outcome is not None and not p.future.done():
                p.future.set_result(outcome)

    def _decide(
        self, p: _Pending, raw_session: bytes | None, raw_result: bytes | None, now: float
    ) -> Outcome | None:
        if raw_session is not None:
            try:
                return Outcome(OutcomeKind.LIVE, session=SessionInfo.from_json(raw_session))
            except (TypeError, ValueError):
                return Outcome(OutcomeKind.LIVE)
        if raw_result is not None:
            try:
                result = StartResult.from_json(raw_result)
            except (TypeError, ValueError):
                result = None
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
