"""One active replica: a coordination.k8s.io Lease held while the operator runs.

Why a Lease and not kopf's peering: kopf pauses *every* operator that sees a peer of the
same priority (replicas of one Deployment all have the same), and its pause does not
reach the operator's own loops (placement, sync, pod annotations). A Lease is what
Kubernetes' own controllers use: the holder renews it; the others wait until it has not
changed for ``lease_duration`` seconds (measured on their own clock, like client-go, so
clock skew between nodes does not matter), then take it with an optimistic-concurrency
update. A holder that cannot renew within the duration stops: better no operator for a
moment than two.

The timing follows client-go's leader election (``LeaseDuration`` 15 s, ``RenewDeadline``
10 s, ``RetryPeriod`` 2 s): the holder renews every ``renew_interval``; each attempt is cut
off when the *renew deadline*, counted from the start of the last successful renewal, is
reached; then the holder gives up. A standby takes over no earlier than ``lease_duration``
after it saw that renewal, which was written after it started, so the holder stops at least
``lease_duration - renew_deadline`` seconds before anyone else can lead. :meth:`LeaderLease.valid`
is that clock: the operator's API client and registry handle refuse to write once it says
no, whatever the loops are doing (a black-holed API server, a stuck renewal, a slow stop).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import socket
import time
import uuid
from typing import Any

from callboard.kube.k8s.client import (
    ConflictError,
    KubeApi,
    KubeApiError,
    NotFoundError,
    NotLeaderError,
    lease_path,
)
from callboard.kube.settings import LeaderSettings

__all__ = ["LeaderLease", "default_identity"]

logger = logging.getLogger(__name__)


def default_identity() -> str:
    """``POD_NAME`` in a cluster; host name plus a random suffix elsewhere."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


def _micro_time(timestamp: float) -> str:
    """``metav1.MicroTime``: RFC 3339 with microseconds."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderLease:
    def __init__(self, api: KubeApi, settings: LeaderSettings, *, identity: str) -> None:
        self._api = api
        self._settings = settings
        self.identity = identity
        self._path = lease_path(settings.namespace, settings.name)
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._lease: dict[str, Any] | None = None
        self._renewed_at = 0.0
        self.lost = asyncio.Event()
        self.held = False

    def valid(self) -> bool:
        """Whether this replica may still act: it holds the lease and its renew deadline has
        not passed (``time.monotonic()`` since the start of the last successful renewal)."""
        return self.held and time.monotonic() - self._renewed_at < self._settings.renew_deadline

    @property
    def transitions(self) -> int:
        """``spec.leaseTransitions`` of the term this replica holds: grows with every new
        holder, so it orders leadership terms (the fencing token of the term)."""
        spec = (self._lease or {}).get("spec") or {}
        value = spec.get("leaseTransitions")
        return value if isinstance(value, int) else 0

    async def acquire(self) -> None:
        """Wait until this replica holds the lease."""
        logged = False
        failure: str | None = None
        while True:
            started = time.monotonic()
            try:
                if await self._try_acquire():
                    break
            except KubeApiError as exc:
                # Not fatal: the chart owns the Lease (the operator may not create it), so a
                # Lease deleted by hand comes back with `helm upgrade`; an API outage passes.
                if str(exc) != failure:
                    failure = str(exc)
                    logger.error(
                        "cannot take the leader lease %s/%s: %s (will retry; the chart creates "
                        "the Lease: `helm upgrade` restores a deleted one)",
                        self._settings.namespace,
                        self._settings.name,
                        exc,
                    )
                await asyncio.sleep(self._settings.renew_interval * random.uniform(0.8, 1.2))
                continue
            if not logged:
                holder = ((self._lease or {}).get("spec") or {}).get("holderIdentity")
                logger.info("waiting for the leader lease %s (held by %s)", self._settings.name, holder)
                logged = True
            await asyncio.sleep(self._settings.renew_interval * random.uniform(0.8, 1.2))
        self._renewed_at = started
        self.lost.clear()
        self.held = True
        logger.info("acquired the leader lease %s as %s", self._settings.name, self.identity)

    async def keep(self) -> None:
        """Renew until cancelled; set :attr:`lost` and return once the lease slips away.

        Lost means: another replica holds it, or no renewal succeeded within the renew
        deadline. Each attempt is bounded by what is left of the deadline, so a hanging call
        (an API server that accepts connections and never answers) cannot stretch the term.
        """
        settings = self._settings
        while True:
            remaining = self._renewed_at + settings.renew_deadline - time.monotonic()
            await asyncio.sleep(max(0.0, min(settings.renew_interval, remaining)))
            remaining = self._renewed_at + settings.renew_deadline - time.monotonic()
            if remaining <= 0:
                logger.error(
                    "could not renew the leader lease within its renew deadline (%.1fs): stepping down",
                    settings.renew_deadline,
                )
                break
            started = time.monotonic()
            try:
                async with asyncio.timeout(remaining):
                    renewed = await self._renew()
            except TimeoutError:
                logger.warning("renewing the leader lease timed out (will retry until the deadline)")
                continue
            except KubeApiError as exc:
                logger.warning("cannot renew the leader lease (will retry until the deadline): %s", exc)
                continue
            if renewed:
                self._renewed_at = started
                continue
            logger.error("the leader lease was taken by %s", self._holder())
            break
        self.held = False
        self.lost.set()

    async def advance(self, at_least: int) -> int:
        """Move this term's token (``spec.leaseTransitions``) up to ``at_least``; return it.

        For a Lease that was deleted and recreated (its count started again at 0) while the
        registry's fence remembers older terms: without this every request of the new
        term would be fenced. The write carries the Lease's ``resourceVersion``, so only
        the holder can make it (:class:`~callboard.kube.k8s.client.ConflictError` else).
        """
        if self.transitions >= at_least:
            return self.transitions
        if not self.valid() or self._lease is None:
            raise NotLeaderError(0, "advancing the lease term: refused, this replica no longer leads")
        spec = {**self._spec(acquire=False), "leaseTransitions": at_least}
        self._lease = await self._api.replace(self._path, {**self._lease, "spec": spec})
        logger.warning("moved the leader lease's term to %d (past the registry's fence)", self.transitions)
        return self.transitions

    async def release(self) -> None:
        """Hand the lease over at once (shielded, bounded): the next replica need not wait."""
        if not self.held or self._lease is None:
            return
        self.held = False
        spec = dict(self._lease.get("spec") or {})
        spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_micro_time(time.time()))
        body = {**self._lease, "spec": spec}
        try:
            await asyncio.wait_for(asyncio.shield(self._api.replace(self._path, body)), 2.0)
            logger.info("released the leader lease %s", self._settings.name)
        except (KubeApiError, TimeoutError) as exc:
            logger.warning("could not release the leader lease: %s", exc)

    # -- internals ------------------------------------------------------------------------

    def _holder(self) -> str | None:
        holder = ((self._lease or {}).get("spec") or {}).get("holderIdentity")
        return holder if isinstance(holder, str) and holder else None

    def _spec(self, *, acquire: bool) -> dict[str, Any]:
        now = _micro_time(time.time())
        old = (self._lease or {}).get("spec") or {}
        spec = {
            **old,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self._settings.lease_duration)),
            "renewTime": now,
        }
        if acquire:
            spec["acquireTime"] = now
            # Counted like client-go: every change of holder of an existing lease.
            changed = bool(old) and old.get("holderIdentity") != self.identity
            spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + (1 if changed else 0)
        return spec

    async def _try_acquire(self) -> bool:
        try:
            self._lease = await self._api.get(self._path)
        except NotFoundError:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self._settings.name, "namespace": self._settings.namespace},
                "spec": self._spec(acquire=True),
            }
            try:
                self._lease = await self._api.create(lease_path(self._settings.namespace), body)
            except ConflictError:
                return False
            return True
        assert self._lease is not None
        spec = self._lease.get("spec") or {}
        holder = self._holder()
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        now = time.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or self._settings.lease_duration)
        if holder not in (None, self.identity) and now - self._observed_at < duration:
            return False
        try:
            self._lease = await self._api.replace(
                self._path, {**self._lease, "spec": self._spec(acquire=True)}
            )
        except ConflictError:
            return False
        return True

    async def _renew(self) -> bool:
        """Renew the lease; False when another replica holds it now."""
        assert self._lease is not None
        try:
            self._lease = await self._api.replace(
                self._path, {**self._lease, "spec": self._spec(acquire=False)}
            )
            return True
        except ConflictError:
            self._lease = await self._api.get(self._path)
            if self._holder() == self.identity:
                return await self._renew()
            return False
