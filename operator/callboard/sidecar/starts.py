"""Start requests addressed to this node, held from their arrival to the app's answer.

The operator sends a start request through the registry; the sidecar claims it (a request
withdrawn, expired or claimed by another process is dropped), holds it, puts it on the
app's stream, and records the app's answer: accepted (the app registered the session, which
commits the claim first) or rejected (with a reason). A request sent before this process
started (a sidecar restart) is found again in the store, where it waits until it expires.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from callboard.errors import StoreError
from callboard.registry import SessionRegistry, StartRequest

__all__ = ["StartDesk", "start_data"]

logger = logging.getLogger(__name__)


def start_data(request: StartRequest) -> dict[str, Any]:
    """The ``start_requested`` event's data."""
    return {
        "request_id": request.request_id,
        "call_id": request.call_id,
        "session_id": request.session_id,
        "call_type": request.call_type,
        "params": request.params,
        "requested_at": request.requested_at,
        "expires_at": request.expires_at,
    }


class StartDesk:
    """The unanswered start requests of this node."""

    def __init__(self, registry: SessionRegistry, *, log_extra: Mapping[str, str]) -> None:
        self.registry = registry
        self._held: dict[str, StartRequest] = {}
        self._log_extra = dict(log_extra)

    def __len__(self) -> int:
        return len(self._held)

    def pending(self) -> list[StartRequest]:
        """Unanswered requests, oldest first."""
        return sorted(self._held.values(), key=lambda r: r.requested_at)

    def hold(self, request: StartRequest) -> bool:
        """Keep ``request`` until answered; False if it is held already (a re-delivery)."""
        if request.request_id in self._held:
            return False
        self._held[request.request_id] = request
        return True

    def drop(self, request_id: str) -> None:
        """Forget a held request without answering it (withdrawn, expired or taken)."""
        self._held.pop(request_id, None)

    async def lookup(self, request_id: str, *, connected: bool) -> StartRequest | None:
        """A held request, else one this process never saw but the store still has."""
        held = self._held.get(request_id)
        if held is not None or not connected:
            return held
        for request in await self.registry.pending_start_requests():
            if request.request_id == request_id:
                return request
        return None

    async def answer(self, request: StartRequest, *, accepted: bool, reason: str | None = None) -> None:
        """Record the answer in the registry (the requester reads it there)."""
        self._held.pop(request.request_id, None)
        await self.registry.answer_start(request, accepted=accepted, reason=reason)
        logger.info(
            "start request %s %s%s", request.request_id, "accepted" if accepted else "rejected",
            f": {reason}" if reason else "",
            extra={**self._log_extra, "call_id": request.call_id, "session_id": request.session_id},
        )  # fmt: skip

    async def reject_all(self, reason: str) -> None:
        """Reject every held request (draining); a store failure only costs the requester a timeout."""
        for request in self.pending():
            try:
                await self.answer(request, accepted=False, reason=reason)
            except StoreError as exc:
                logger.warning(
                    "could not answer start request %s: %s", request.request_id, exc, extra=self._log_extra
                )

    def expire(self, now: float, *, ttl: float) -> None:
        """Forget requests past their expiry at ``now`` (Unix time; ``requested_at + ttl`` for
        a request without one): nobody can accept them any more."""
        for request_id, request in list(self._held.items()):
            expires_at = request.expires_at if request.expires_at is not None else request.requested_at + ttl
            if expires_at <= now:
                del self._held[request_id]
