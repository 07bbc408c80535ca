"""Writing an object's status: one merge patch per real change, an Event per phase change
(none for entering Scheduled, a step on the way to the placement's outcome).

Every status write of the operator goes through :class:`StatusWriter`, which skips writes
that would change nothing, keeps the cache up to date with the API server's answer and
posts the Event of a phase change. Each write is counted by reason (``on_write``, the
``callboard_operator_status_writes_total`` metric): status writes are etcd revisions and
watch events for every watcher, so their rate is what the operator costs the API server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from callboard.kube.k8s.client import KubeApi, NotFoundError, agentsession_path
from callboard.kube.k8s.event_poster import EventPoster
from callboard.kube.resource.fields import format_time
from callboard.kube.resource.objects import AgentSessionObject
from callboard.kube.resource.phases import Transition, apply_transition, is_noop
from callboard.kube.views.object_cache import ObjectCache

__all__ = ["StatusWriter"]

logger = logging.getLogger(__name__)


class StatusWriter:
    def __init__(
        self,
        *,
        api: KubeApi,
        cache: ObjectCache,
        events: EventPoster,
        clock: Callable[[], float] = time.time,
        on_write: Callable[[str], None] | None = None,
    ) -> None:
        self._api = api
        self._cache = cache
        self._events = events
        self._clock = clock
        self._on_write = on_write
        self.patches = 0

    async def transition(
        self, obj: AgentSessionObject, transition: Transition, *, precondition: bool = False
    ) -> AgentSessionObject | None:
        """Move ``obj`` to ``transition.phase``; the updated object, or None if it is gone.

        ``precondition``: write only if the object is still at ``obj.resource_version``
        (:class:`~callboard.kube.k8s.client.ConflictError` otherwise). For claims: two
        writers that both read the same version cannot both win.
        """
        patch, event = apply_transition(
            obj.status, transition, now=format_time(self._clock()), generation=obj.generation
        )
        updated = await self.patch(obj, patch, precondition=precondition, reason=transition.reason)
        if updated is not None and event is not None:
            self.event(obj, type=event.type, reason=event.reason, message=event.message)
        if (
            updated is not None and obj.status.phase is not transition.phase
        ):  # logged with or without an Event
            logger.info(
                "%s/%s: %s: %s (%s)",
                obj.namespace,
                obj.name,
                transition.phase.value,
                transition.message,
                transition.reason,
                extra={"resource": f"{obj.namespace}/{obj.name}", "call_id": obj.spec.call_id},
            )
        return updated

    async def patch(
        self,
        obj: AgentSessionObject,
        fields: Mapping[str, Any],
        *,
        precondition: bool = False,
        reason: str = "Mirror",
    ) -> AgentSessionObject | None:
        """Merge ``fields`` into the status (skipped when nothing changes).

        ``reason`` labels the write in the metric: a transition's reason, else what the
        caller mirrors (``Mirror``: where the session runs; ``ObservedGeneration``).

        Every write was decided on ``obj``'s spec, so it also records ``observedGeneration``:
        Argo CD, Flux and kstatus call an object whose status lags its generation progressing.
        """
        if obj.status.observed_generation != obj.generation:
            fields = {**fields, "observedGeneration": obj.generation}
        if is_noop(obj.status, fields):
            return obj
        body: dict[str, Any] = {"status": dict(fields)}
        if precondition and obj.resource_version:
            body["metadata"] = {"resourceVersion": obj.resource_version}
        try:
            body = await self._api.merge_patch(agentsession_path(obj.namespace, obj.name, status=True), body)
        except NotFoundError:
            return None
        self.patches += 1
        if self._on_write is not None:
            self._on_write(reason)
        return self._cache.put_body(body)

    def event(self, obj: AgentSessionObject, *, type: str, reason: str, message: str) -> None:
        self._events.post(obj.reference(), type=type, reason=reason, message=message)
