"""Start requests addressed to this node, held from their arrival to the app's answer.

The operator sends a start request through the registry; the sidecar holds it, puts it on
the app's stream, and records the app's answer: accepted (the app registered the session)
or rejected (with a reason). A request sent before this process started (a sidecar restart)
is found again in the store, where it waits for its TTL.
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

    def expire(self, horizon: float) -> None:
        """Forget requests sent before ``horizon`` (Unix time): their requester gave up."""
        for request_id, request in list(self._held.items()):
            if request.requested_at < horizon:
                del self._held[request_id]
