"""The foreign scan: find and index sessions of nodes that keep no indexes (Vision Agents).

A Vision Agents node sharing the Redis writes only the documented ``sessions/`` keys. Written
through callboard's store they are indexed at once; written by its own Redis client no
index knows them. The scan finds them: one node of the cluster runs it (it holds a lease,
so the key space is scanned once per interval, not once per node), indexes every session
by call and, when some are foreign, sets the marker that makes every node read and limit
calls exactly (G5). ``foreign_scan_interval=None`` runs no scan (nothing foreign writes);
``mixed_fleet=True`` reads exactly without waiting for a scan. On a plain store there is no
index: every read is already exact and there is nothing to do.
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
        """Index sessions of nodes that keep no indexes now; return how many are foreign."""
        return await self._index.index_foreign()

    async def scan_foreign_if_elected(self) -> int | None:
        """Run the scan if this node holds the scan lease (taking it if free); else None.

        The lease lasts two intervals, so a scanner that dies is replaced within two.
        """
        interval = self.foreign_scan_interval or 60.0
        if not await self._index.hold_lease(k.FOREIGN_SCAN_LEASE, self._node_id, 2 * interval):
            return None
        foreign = await self._index.index_foreign()
        if foreign and (suppressed := self._throttle.allow("foreign-found")) is not None:
            logger.warning(
                "found %d sessions of documented-layout nodes (Vision Agents?) in the store: every "
                "node now reads and limits calls by scanning their keys; say mixed_fleet=True to "
                "do so from the start (%d similar messages suppressed)",
                foreign,
                suppressed,
            )
        return foreign

    async def _scan_foreign(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.scan_foreign_if_elected()
            except StoreError as exc:
                self._log_store_failure("foreign-scan", exc)
