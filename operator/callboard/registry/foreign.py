"""The foreign scan: index sessions of nodes that keep no indexes (Vision Agents nodes).

A Vision Agents node sharing the Redis writes only the documented ``sessions/`` keys; the
Redis index does not know them until a scan adds them to their call's set, so per-call
look-ups and the per-call limit (G5) count them too. The registry runs the scan every
``foreign_scan_interval`` seconds; on a plain store there is no index and nothing to do.
"""

from __future__ import annotations

import asyncio

from callboard.errors import StoreError
from callboard.registry._core import RegistryCore

__all__ = ["ForeignScan"]


class ForeignScan(RegistryCore):
    """The periodic scan that indexes foreign sessions."""

    async def index_foreign_sessions(self) -> int:
        """Index sessions of nodes that keep no indexes now (normally done periodically)."""
        return await self._index.index_foreign()

    async def _scan_foreign(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self._index.index_foreign()
            except StoreError as exc:
                self._log_store_failure("foreign-scan", exc)
