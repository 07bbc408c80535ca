"""The foreign scan: find and index sessions of nodes that keep no indexes (Vision Agents).

A Vision Agents node sharing the Redis writes only the documented ``sessions/`` keys. Written
through callboard's store they are indexed at once; written by its own Redis client no
index knows them, so per-call reads and limits scan the call's keys too (G5), unless the
cluster is known to be callboard-only. The scan establishes that: one node of the cluster
runs it (it holds a lease, so the key space is scanned once per interval, not once per
node), indexes every session by call and, when none is foreign, sets the marker that lets
every node trust its indexes for two intervals; a foreign session removes it. With
the fleet declared ``callboard_only`` or ``mixed``, or ``foreign_scan_interval=None``, no
scan runs. On a plain store there is no index: every read is already exact.
"""

from __future__ import annotations

import asyncio
import logging

from callboard.errors import StoreError
from callboard.registry import _keys as k
from callboard.registry._core import RegistryCore

__all__ = ["ForeignScan"]

logger = logging.getLogger("callboard.registry.registry")


class ForeignScan(RegistryCore):
    """The scan that indexes foreign sessions, run by one elected node."""

    async def index_foreign_sessions(self) -> int:
        """Run the foreign scan now (whoever holds the lease); return how many are foreign."""
        return await self._index.index_foreign(2 * (self.foreign_scan_interval or 60.0))

    async def scan_foreign_if_elected(self) -> int | None:
        """Run the scan if this node holds the scan lease (taking it if free); else None.

        The lease lasts two intervals, so a scanner that dies is replaced within two.
        """
        interval = self.foreign_scan_interval or 60.0
        if not await self._index.hold_lease(k.FOREIGN_SCAN_LEASE, self._node_id, 2 * interval):
            return None
        foreign = await self._index.index_foreign(2 * interval)
        if foreign and (suppressed := self._throttle.allow("foreign-found")) is not None:
            logger.warning(
                "found %d sessions of documented-layout nodes (Vision Agents?) in the store: "
                "per-call reads and limits scan the call's keys; declare fleet='mixed' to say so "
                "(%d similar messages suppressed)",
                foreign,
                suppressed,
            )
        return foreign

    async def _scan_foreign(self, interval: float) -> None:
        """Scan every interval, the first one interval after start: until a scan vouched
        for the fleet, per-call reads and limits stay exact (the safe side)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.scan_foreign_if_elected()
            except StoreError as exc:
                self._log_store_failure("foreign-scan", exc)
