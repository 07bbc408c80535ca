"""Posting Kubernetes Events in the background, never blocking the caller.

Events are a courtesy to humans (``kubectl describe``): a full queue drops the newest
and a failed post is logged (throttled), never retried for long or raised. Several workers
post at once; the Events of one object always go through the same worker, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections.abc import Mapping
from typing import Any

from callboard._aio import LogThrottle, guarded_task, stop_tasks
from callboard.kube.k8s.client import KubeApi, KubeApiError, event_path
from callboard.kube.resource.constants import REPORTING_COMPONENT
from callboard.kube.resource.fields import format_time

__all__ = ["EventPoster"]

logger = logging.getLogger(__name__)

#: Events waiting to be posted per worker; beyond this, new ones are dropped (and counted).
QUEUE_SIZE = 2_000
#: Posts in flight at once: Events come in bursts (1,000 objects applied together).
WORKERS = 8
#: Connections the operator's Events client keeps: one per worker (see the entrypoint).
CONNECTIONS = WORKERS


class EventPoster:
    """Queue Events with :meth:`post`; :meth:`start` the workers that send them."""

    def __init__(self, api: KubeApi, *, instance: str) -> None:
        self._api = api
        self._instance = instance
        self._queues: list[asyncio.Queue[dict[str, Any]]] = [
            asyncio.Queue(QUEUE_SIZE) for _ in range(WORKERS)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._throttle = LogThrottle()
        self.dropped = 0
        self.posted = 0

    def post(self, ref: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
        """Queue an Event about the object ``ref`` (an ObjectReference with a namespace)."""
        now = format_time(time.time())
        namespace = str(ref.get("namespace") or "default")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{ref.get('name', 'object')}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": dict(ref),
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": REPORTING_COMPONENT},
            "reportingComponent": REPORTING_COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        queue = self._queues[zlib.crc32(str(ref.get("uid") or ref.get("name")).encode()) % WORKERS]
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def flushed(self) -> None:
        """Wait until every queued Event was posted (or failed)."""
        await asyncio.gather(*(queue.join() for queue in self._queues))

    def start(self) -> None:
        self._tasks = [
            guarded_task(self._work(queue), name=f"event-poster-{i}", logger=logger)
            for i, queue in enumerate(self._queues)
        ]

    async def stop(self, *, flush_timeout: float = 2.0) -> None:
        """Post what is queued (bounded wait), then stop the workers."""
        if self._tasks:
            try:
                await asyncio.wait_for(self.flushed(), flush_timeout)
            except TimeoutError:
                logger.info("dropping %d unposted events at exit", sum(q.qsize() for q in self._queues))
        await stop_tasks(self._tasks, timeout=2.0, logger=logger)
        self._tasks = []

    async def _work(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            event = await queue.get()
            try:
                await self._api.create(event_path(event["metadata"]["namespace"]), event)
                self.posted += 1
            except KubeApiError as exc:
                if (suppressed := self._throttle.allow("post")) is not None:
                    logger.warning("could not post an event: %s (%d similar suppressed)", exc, suppressed)
            finally:
                queue.task_done()
