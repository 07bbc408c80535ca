"""Posting Kubernetes Events in the background, never blocking the caller, at a bounded rate.

Events are a courtesy to humans (``kubectl describe``), the status is the record: a burst
must not spend the API server on Events before the status writes that move objects to
Running. So the posts share one :class:`TokenBucket` (``--event-rate`` per second, a burst
of ``EventSettings.burst``), the queues are bounded, a full queue drops the newest, and every
drop is counted (``callboard_operator_events_dropped_total``); a failed post is logged
(throttled), never retried for long or raised. Several workers post at once; the Events of
one object always go through the same worker, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from callboard._aio import LogThrottle, guarded_task, stop_tasks
from callboard.kube.k8s.client import KubeApi, KubeApiError, event_path
from callboard.kube.resource.constants import REPORTING_COMPONENT
from callboard.kube.resource.fields import format_time

__all__ = ["EventPoster", "TokenBucket"]

logger = logging.getLogger(__name__)

#: Events waiting to be posted per worker (1,024 in all); beyond this, new ones are dropped
#: and counted. At the default rate (10/s) a full queue is about 100 s of Events: anything
#: queued behind that is stale news, and the objects' status says it already.
QUEUE_SIZE = 128
#: Posts in flight at once: Events come in bursts (1,000 objects applied together).
WORKERS = 8
#: Connections the operator's Events client keeps: one per worker (see the entrypoint).
CONNECTIONS = WORKERS


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up: :meth:`take` says how long to wait.

    A taker that finds no token reserves the next one (the count goes negative), so takers
    that wait concurrently still go out at ``rate`` in all, not all at once when one refills.
    """

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self) -> float:
        """Take one token; the seconds to wait before using it (0: at once)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class EventPoster:
    """Queue Events with :meth:`post`; :meth:`start` the workers that send them.

    ``rate`` (Events per second, with ``burst`` saved up) bounds the posts; None posts as fast
    as the workers go, 0 posts none (each is dropped and counted). ``on_dropped`` gets the
    number of each drop (the metric).
    """

    def __init__(
        self,
        api: KubeApi,
        *,
        instance: str,
        rate: float | None = None,
        burst: int = 100,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._api = api
        self._instance = instance
        self._bucket = TokenBucket(rate, burst) if rate else None
        self._off = rate == 0
        self._on_dropped = on_dropped
        self._queues: list[asyncio.Queue[dict[str, Any]]] = [
            asyncio.Queue(QUEUE_SIZE) for _ in range(WORKERS)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._throttle = LogThrottle()
        self.dropped = 0
        self.posted = 0

    def post(self, ref: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
        """Queue an Event about the object ``ref`` (an ObjectReference with a namespace)."""
        if self._off:
            self._drop()
            return
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
            self._drop()

    def _drop(self, count: int = 1) -> None:
        self.dropped += count
        if self._on_dropped is not None and count:
            self._on_dropped(count)

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
                unposted = sum(q.qsize() for q in self._queues)
                logger.info("dropping %d unposted events at exit", unposted)
                self._drop(unposted)
        await stop_tasks(self._tasks, timeout=2.0, logger=logger)
        self._tasks = []

    async def _work(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            event = await queue.get()
            try:
                if self._bucket is not None and (wait := self._bucket.take()) > 0:
                    await asyncio.sleep(wait)
                await self._api.create(event_path(event["metadata"]["namespace"]), event)
                self.posted += 1
            except KubeApiError as exc:
                if (suppressed := self._throttle.allow("post")) is not None:
                    logger.warning("could not post an event: %s (%d similar suppressed)", exc, suppressed)
            finally:
                queue.task_done()
