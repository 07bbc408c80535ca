"""Drain marks: the operator's word that a node is about to be removed (a scale-down victim).

A scale-down picks idle pods and then asks the Deployment for fewer replicas; between the
two a session must not land on a victim. The operator marks each victim's node here
(:meth:`DrainMarks.mark_draining`) before it waits and patches the scale; while a mark
lives the node refuses every new session: its admission check reads the mark
(:meth:`DrainMarks.drain_marked`) and its registration refuses atomically
(``register.lua`` checks the key in the same script that writes the session, so a session
registered before the mark is visible to the operator's next read, and none after it). The
placer skips marked nodes too. A mark has a TTL, so a dead operator strands a node for at
most that long; the operator clears the marks of victims it does not remove
(:meth:`DrainMarks.clear_drain_marks`). Sessions a node already runs are untouched: a mark
only stops new ones (a sidecar's restore after a restart is not refused).
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection

from callboard.errors import ConfigurationError
from callboard.registry import _keys as k
from callboard.registry._core import RegistryCore
from callboard.registry.ids import validate_id

__all__ = ["DrainMarks"]


class DrainMarks(RegistryCore):
    """Set, clear and read the operator's drain marks on nodes (one round trip each)."""

    async def mark_draining(self, node_ids: Collection[str], *, ttl: float, by: str = "") -> None:
        """Mark ``node_ids`` draining for ``ttl`` seconds (renewed if marked already).

        ``by`` names the marker (the operator's identity) for whoever reads the key.
        """
        if ttl <= 0:
            raise ConfigurationError("a drain mark's ttl must be > 0")
        if not node_ids:
            return
        value = json.dumps({"by": by, "at": time.time()}).encode()
        await self._store.mset([(k.drain_mark_key(validate_id(n, "node_id")), value, ttl) for n in node_ids])

    async def clear_drain_marks(self, node_ids: Collection[str]) -> None:
        """Take the marks off ``node_ids``: they take new sessions again."""
        if node_ids:
            await self._store.delete([k.drain_mark_key(validate_id(n, "node_id")) for n in node_ids])

    async def drain_marks(self, node_ids: Collection[str]) -> set[str]:
        """Which of ``node_ids`` are marked draining now."""
        ids = list(node_ids)
        if not ids:
            return set()
        values = await self._store.mget([k.drain_mark_key(n) for n in ids])
        return {n for n, v in zip(ids, values, strict=True) if v is not None}

    async def drain_marked(self) -> bool:
        """Whether this node is marked draining (it must take no new session)."""
        return await self._store.get(k.drain_mark_key(self._node_id)) is not None
