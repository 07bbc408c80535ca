"""Start requests: how a requester (the operator) asks one node to start a session.

The protocol, in the store (Redis runs each step as one script; see ``backends/lua``):

1. **request**: the requester writes the request under the node's prefix with the
   requester's start timeout as its expiry (``expires_in``) and pushes it;
2. **claim**: a node that receives it (push, poll, or the re-read after a reconnect)
   claims it (:meth:`StartRequests.claim_start`): exactly one claimant wins, once, and
   only while the request lives;
3. **commit**: just before it registers the session, the claimant commits
   (:meth:`StartRequests.commit_start`); from then on the session starts. A node whose
   commit does not answer ``started`` must not start it;
4. **answer**: the node records accepted or why not (:meth:`StartRequests.answer_start`);
5. **withdraw**: a requester that stops waiting withdraws the request
   (:meth:`StartRequests.withdraw_start`); the answer says whether a node committed
   first (then the session starts and the requester follows it) or nobody ever will.

A request carrying a fencing token below the registry's fence (a deposed operator leader
sent it, see :mod:`callboard.registry.fencing`) is refused by the claim and by the commit:
FENCED, and the registry answers it for the node (:attr:`StartRejection.FENCED`).

The requester follows the session by the id it chose. Over a store without server-side
scripts the claim is read then written (see :mod:`callboard.registry.index`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from callboard.errors import ConfigurationError
from callboard.registry import _keys as k
from callboard.registry._core import RegistryCore
from callboard.registry.bounds import MAX_PARAMS_BYTES, check_json_object
from callboard.registry.ids import validate_id
from callboard.registry.models import (
    SessionInfo,
    StartClaim,
    StartRejection,
    StartRequest,
    StartResult,
    decode_or_none,
)
from callboard.registry.push import EventStream
from callboard.registry.store import PubSubSupport, SessionKVStore

__all__ = ["SeenRequests", "StartProgress", "StartRef", "StartRequests"]

logger = logging.getLogger("callboard.registry.registry")


class SeenRequests:
    """Request ids handled recently: the one de-duplication of start requests.

    A request is delivered at least once (pushed, then polled after a reconnect or every few
    cycles), so each consumer drops repeats by id. A request lives one TTL in the store;
    ids are remembered for ``keep`` seconds (twice the TTL) and then forgotten.
    """

    def __init__(self, keep: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._keep = keep
        self._clock = clock
        self._seen: dict[str, float] = {}

    def first_time(self, request_id: str) -> bool:
        """Remember ``request_id``; True unless it was seen within ``keep`` seconds."""
        if request_id in self._seen:
            return False
        now = self._clock()
        # Insertion order is time order: drop the expired ids from the front. Rebuilding the
        # dict on every call cost O(ids) per request (a node taking 1,000 starts in a burst).
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self._keep:
                break
            del self._seen[oldest]
        self._seen[request_id] = now
        return True

    def forget(self, request_id: str) -> None:
        """Let ``request_id`` through again (its handling failed before an answer)."""
        self._seen.pop(request_id, None)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._seen


class StartRef(NamedTuple):
    """A start to follow: the session it should create and, if known, its request id."""

    call_id: str
    session_id: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class StartProgress:
    """What the store says about one start (see :meth:`StartRequests.get_start_progress`)."""

    live: bool
    """The session's record exists: it runs (even if the record is malformed)."""
    session: SessionInfo | None
    """The decoded record when ``live`` and readable."""
    result: StartResult | None
    """The node's answer, once given (None also when it is malformed)."""


class StartRequests(RegistryCore):
    """Sending, receiving and answering start requests."""

    def __init__(
        self,
        store: SessionKVStore | None = None,
        *,
        node_id: str | None = None,
        ttl: float = 30.0,
        foreign_scan_interval: float | None = 60.0,
    ) -> None:
        super().__init__(store, node_id=node_id, ttl=ttl, foreign_scan_interval=foreign_scan_interval)
        self._start_streams: set[EventStream[StartRequest]] = set()
        self._seen_starts = SeenRequests(2 * self._ttl)
        self._claimant = f"{self._node_id}#{uuid.uuid4().hex[:12]}"
        """Who this process is in a claim: two processes started with one node id differ."""

    def start_requests(self) -> EventStream[StartRequest]:
        """Open a stream of start requests for this node (pushed).

        Requests sent before the stream was opened are in :meth:`pending_start_requests`.
        """
        return EventStream(self._start_streams)

    async def request_start(
        self,
        node_id: str,
        call_id: str,
        *,
        session_id: str | None = None,
        call_type: str = "default",
        params: Mapping[str, Any] | None = None,
        expires_in: float | None = None,
        request_id: str | None = None,
        fencing_token: int | None = None,
    ) -> StartRequest:
        """Ask ``node_id`` to start a session for ``call_id``; follow it by its session id.

        The request waits in the store for ``expires_in`` seconds (default: the registry
        TTL), the requester's start timeout: no node can claim or commit it afterwards. It
        is pushed at once when the store supports it. ``request_id`` lets a requester record
        the id before sending (so a restarted requester can still withdraw it). ``params``
        out of bounds (non-JSON, NaN/inf, over 64 KiB) raise
        :class:`~callboard.errors.InvalidValueError`. ``fencing_token`` is the operator
        leader's term (see :mod:`callboard.registry.fencing`): nodes refuse the request
        once a newer term raised the fence; None: never refused for that.
        """
        expiry = self._ttl if expires_in is None else expires_in
        if expiry <= 0:
            raise ConfigurationError("expires_in must be > 0")
        now = time.time()
        request = StartRequest(
            request_id=validate_id(request_id or uuid.uuid4().hex, "request_id"),
            node_id=validate_id(node_id, "node_id"),
            call_id=validate_id(call_id, "call_id"),
            session_id=validate_id(session_id or str(uuid.uuid4()), "session_id"),
            call_type=validate_id(call_type, "call_type"),
            params=check_json_object(params or {}, "params", MAX_PARAMS_BYTES),
            requested_at=now,
            expires_at=now + expiry,
            fencing_token=fencing_token,
        )
        payload = request.to_json()
        await self._store.set(k.start_request_key(node_id, request.request_id), payload, expiry)
        if node_id == self._node_id:
            self._on_start_notice(payload)
        elif isinstance(self._store, PubSubSupport):
            await self._store.publish(k.start_channel(node_id), payload)
        return request

    async def pending_start_requests(self) -> list[StartRequest]:
        """Start requests for this node not answered yet (the polling fallback)."""
        warn = self._warn_malformed("start request")
        raws = await self._read_prefix(f"{k.START_REQUESTS_PREFIX}{self._node_id}/")
        decoded = (decode_or_none(StartRequest.from_json, raw, on_error=warn) for raw in raws)
        return sorted((r for r in decoded if r is not None), key=lambda r: r.requested_at)

    async def claim_start(self, request: StartRequest) -> StartClaim:
        """Claim ``request`` for this process: :attr:`StartClaim.CLAIMED` to one claimant only.

        Anything else (taken, withdrawn, expired, fenced) means: drop it, do not answer it
        (a fenced request, from a deposed leader, is answered here).
        """
        claim = await self._index.claim_start(
            k.start_request_key(request.node_id, request.request_id),
            k.start_claim_key(request.request_id),
            self._claimant,
            k.ENDED_TTL,
            token=request.fencing_token,
        )
        return await self._answer_fenced(request, claim)

    async def commit_start(self, request: StartRequest) -> StartClaim:
        """Commit ``request`` right before registering its session; start only on STARTED.

        After STARTED a withdrawal no longer stops the start (the requester follows the
        session); any other answer means the requester gave up, another node has it, or a
        newer operator leader raised the fence (FENCED, answered here).
        """
        claim = await self._index.commit_start(
            k.start_request_key(request.node_id, request.request_id),
            k.start_claim_key(request.request_id),
            self._claimant,
            k.ENDED_TTL,
            token=request.fencing_token,
        )
        return await self._answer_fenced(request, claim)

    async def _answer_fenced(self, request: StartRequest, claim: StartClaim) -> StartClaim:
        """Answer a request the claim script fenced, for both node runtimes (one place)."""
        if claim is StartClaim.FENCED:
            logger.warning(
                "start request %s refused: sent by a deposed operator leader (fencing token %s)",
                request.request_id,
                request.fencing_token,
                extra={
                    "node_id": self._node_id,
                    "call_id": request.call_id,
                    "session_id": request.session_id,
                },
            )
            reason = (
                f"{StartRejection.FENCED}: sent by a deposed leader (fencing token "
                f"{request.fencing_token} is below the registry's fence)"
            )
            await self.answer_start(request, accepted=False, reason=reason)
        return claim

    async def withdraw_start(self, request: StartRequest) -> StartClaim:
        """Withdraw ``request`` (the requester stops waiting for it).

        WITHDRAWN: no node can claim or commit it any more. STARTED: a node committed it
        first, so its session starts (or runs): follow it or close it.
        """
        return await self._index.withdraw_start(
            k.start_request_key(request.node_id, request.request_id),
            k.start_claim_key(request.request_id),
            k.ENDED_TTL,
        )

    async def answer_start(
        self, request: StartRequest, *, accepted: bool, reason: str | None = None
    ) -> StartResult:
        """Record this node's answer to ``request`` (commit and register first to accept)."""
        result = StartResult(
            request_id=request.request_id,
            node_id=self._node_id,
            accepted=accepted,
            session_id=request.session_id if accepted else None,
            reason=reason,
        )
        await self._store.set(k.start_result_key(request.request_id), result.to_json(), k.ENDED_TTL)
        await self._store.delete([k.start_request_key(request.node_id, request.request_id)])
        return result

    async def get_start_result(self, request_id: str) -> StartResult | None:
        """The answer to a start request, once the node gave it."""
        raw = await self._store.get(k.start_result_key(validate_id(request_id, "request_id")))
        return decode_or_none(StartResult.from_json, raw, on_error=self._warn_malformed("start result"))

    async def get_start_progress(self, starts: Sequence[StartRef]) -> list[StartProgress]:
        """The session record and the node's answer of every start in ``starts``, in order.

        One MGET for all of them: a requester following 1,000 starts pays one round trip
        per look, not 1,000. A start without ``request_id`` is followed by its record only.
        """
        keys: list[str] = []
        for start in starts:
            keys.append(k.session_key(start.call_id, start.session_id))
            if start.request_id is not None:
                keys.append(k.start_result_key(start.request_id))
        values = iter(await self._store.mget(keys) if keys else [])
        progress = []
        for start in starts:
            raw_session = next(values)
            raw_result = next(values) if start.request_id is not None else None
            progress.append(
                StartProgress(
                    live=raw_session is not None,
                    session=decode_or_none(SessionInfo.from_json, raw_session),
                    result=decode_or_none(StartResult.from_json, raw_result),
                )
            )
        return progress

    def _on_start_notice(self, message: bytes) -> None:
        request = decode_or_none(
            StartRequest.from_json, message, on_error=self._warn_malformed("start request notice")
        )
        if request is None:
            return
        if request.node_id != self._node_id or not self._seen_starts.first_time(request.request_id):
            return
        for stream in list(self._start_streams):
            stream._put(request)

    async def _poll_missed_starts(self) -> None:
        for request in await self.pending_start_requests():
            self._on_start_notice(request.to_json())
