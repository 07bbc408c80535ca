"""One active replica: a coordination.k8s.io Lease held while the operator runs.

Why a Lease and not kopf's peering: kopf pauses *every* operator that sees a peer of the
same priority (replicas of one Deployment all have the same), and its pause does not
reach the operator's own loops (placement, sync, pod annotations). A Lease is what
Kubernetes' own controllers use: the holder renews it; the others wait until it has not
changed for ``lease_duration`` seconds (measured on their own clock, like client-go, so
clock skew between nodes does not matter), then take it with an optimistic-concurrency
update. A holder that cannot renew within the duration stops: better no operator for a
moment than two.
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

from callboard.kube.k8s.client import ConflictError, KubeApi, KubeApiError, NotFoundError, lease_path
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
        self.lost = asyncio.Event()
        self.held = False

    async def acquire(self) -> None:
        """Wait until this replica holds the lease."""
        logged = False
        while not await self._try_acquire():
            if not logged:
                holder = ((self._lease or {}).get("spec") or {}).get("holderIdentity")
                logger.info("waiting for the leader lease %s (held by %s)", self._settings.name, holder)
                logged = True
            await asyncio.sleep(self._settings.renew_interval * random.uniform(0.8, 1.2))
        self.held = True
        logger.info("acquired the leader lease %s as %s", self._settings.name, self.identity)

    async def keep(self) -> None:
        """Renew until cancelled; set :attr:`lost` and return if the lease slips away."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self._settings.renew_interval)
            try:
                if await self._renew():
                    last_ok = time.monotonic()
                    continue
                logger.error("the leader lease was taken by %s", self._holder())
            except KubeApiError as exc:
                if time.monotonic() - last_ok < self._settings.lease_duration - self._settings.renew_interval:
                    logger.warning("cannot renew the leader lease (will retry): %s", exc)
                    continue
                logger.error(
                    "could not renew the leader lease for %.0fs: %s", time.monotonic() - last_ok, exc
                )
            self.held = False
            self.lost.set()
            return

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
