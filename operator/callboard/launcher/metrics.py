"""Publishing agents' metrics to the registry, once per maintenance cycle, only when changed.

The registry's ``update_metrics`` is one write per session (only-if-exists, its documented
meaning), so unchanged metrics are not written again and the writes of one cycle run
concurrently, bounded. Metrics that are not JSON are refused here: handed to the registry
they would poison the session's record for every later write-back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any

from callboard.launcher.agent import agent_metrics
from callboard.launcher.session import AgentSession
from callboard.registry import SessionRegistry

__all__ = ["METRICS_CONCURRENCY", "MetricsPublisher"]

#: Metrics writes in flight at once: enough to flush hundreds of sessions in one cycle
#: without taking every connection of the store's pool.
METRICS_CONCURRENCY = 16


class MetricsPublisher:
    """Remembers what was last published per session; publishes what changed."""

    def __init__(
        self,
        registry: SessionRegistry,
        *,
        on_agent_error: Callable[[BaseException, AgentSession[Any]], None],
    ) -> None:
        self.registry = registry
        self.on_agent_error = on_agent_error
        self._published: dict[str, dict[str, Any]] = {}

    def forget(self, session_id: str) -> None:
        self._published.pop(session_id, None)

    async def publish(self, sessions: Iterable[AgentSession[Any]]) -> None:
        """Write changed metrics; raise the first store error after trying them all."""
        changed: list[tuple[AgentSession[Any], dict[str, Any]]] = []
        for session in sessions:
            try:
                metrics = agent_metrics(session.agent)
                if metrics is None or metrics == self._published.get(session.id):
                    continue
                json.dumps(metrics)
            except Exception as exc:
                self.on_agent_error(exc, session)
                continue
            changed.append((session, metrics))
        if not changed:
            return
        limit = asyncio.Semaphore(METRICS_CONCURRENCY)

        async def write(session: AgentSession[Any], metrics: dict[str, Any]) -> None:
            async with limit:
                await self.registry.update_metrics(session.call_id, session.id, metrics)
            if not session.ended.is_set():
                self._published[session.id] = metrics

        results = await asyncio.gather(*(write(s, m) for s, m in changed), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
