"""kopf's side: the handlers, registered on a fresh (non-global) kopf registry.

Each AgentSession handler acts only on the objects of the operator's class
(``spec.operatorClass``, ``--operator-class``), so two operators in one cluster never share one.

- ``on.event``: every watch event of an AgentSession feeds the cache, the placer and the
  operator's own finalizer (cheap: no API call, no progress record; the work happens in
  the placer's workers, the finalizer's tasks and the sync loop);
- ``on.cleanup``: stops the operator's loops as soon as kopf stops watching;
- ``on.probe``: what the liveness endpoint reports;
- ``on.login``: the same credentials the operator's own API client uses.

No ``on.delete``: the finalizer (``callboard.dev/close-session``) is the operator's own
(:class:`callboard.kube.deleting.finalizer.Finalizers`). kopf's cost about six PATCHes per
deleted object (its finalizer, progress annotations, the release) and re-invoked the handler
on each watch event of a deleting object; ours is one PATCH to add, one to release.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import kopf

from callboard.kube.resource.constants import GROUP, PLURAL, VERSION
from callboard.kube.resource.objects import owned_by
from callboard.kube.running.wiring import Runtime

__all__ = ["build_kopf_registry", "build_kopf_settings"]

#: What kopf believes its finalizer is: a name no object carries. kopf removes "its"
#: finalizer from objects whose handlers need none (only ``on.event`` is left), so with our
#: real finalizer's name here it would strip the one the operator manages.
KOPF_FINALIZER = "kopf.callboard.dev/unused"


class NoDiffBase(kopf.DiffBaseStorage):
    """Keep no "last handled" copy of the spec on the objects, and compute none.

    The operator's handlers never ask kopf for diffs (``on.event`` reads the object), so
    kopf's default, an annotation that repeats the whole spec (``params`` included) and costs
    one more PATCH per new object, buys nothing. ``build`` is kopf's deep copy of every body
    of every watch event (5 s of 63 in the 1,000-object profile), then deep-copied again by
    the progress storage's ``clear``: an empty essence makes both free.
    """

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}  # fresh: kopf may add to it

    def fetch(self, *, body: Any) -> None:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def build_kopf_settings(*, clusterwide: bool) -> Any:
    """kopf settings, each chosen for a watch-only kopf: it writes nothing to the objects
    (no finalizer, progress or spec copy), posts no Events, scans no CRDs or namespaces."""
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = KOPF_FINALIZER
    # kopf's own prefix: with any other, kopf also writes a "<prefix>/kopf-managed" marker
    # annotation on every object (one more PATCH per new object). No handler keeps progress
    # (on.event has none), so nothing is ever written with it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = NoDiffBase()
    # No kopf Events at all: the operator posts its own (rate-limited, EventPoster); kopf's
    # would repeat them or report handler failures that the operator's log already has, and
    # with posting off kopf does not even run its poster task.
    settings.posting.enabled = False
    settings.posting.level = logging.WARNING
    # One worker per object is kopf's design and the queue is what orders an object's events;
    # a limit would only delay the cache (the handler is cheap). Idle workers go after 5 s,
    # kopf's default: long enough for a burst's events, short enough at 10,000 objects.
    settings.queueing.worker_limit = None
    settings.queueing.idle_timeout = 5.0
    # Least privilege: the CRD and the namespaces are given, no need to watch either.
    settings.scanning.disabled = True
    settings.peering.standalone = True  # one active replica is the Lease's job
    settings.peering.clusterwide = clusterwide
    # Restart watches regularly: a silently broken connection must not freeze the operator.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # kopf's own requests are the watch's list calls only (it writes nothing): a stuck one
    # fails within a minute and kopf's backoffs retry it.
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    return settings


def build_kopf_registry(
    runtime: Runtime, *, login: Callable[[], Any], stop_flag: asyncio.Event | None = None
) -> Any:
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.login(registry=registry)
    def credentials(**_: Any) -> Any:  # sync: kopf runs it in a thread (it reads files)
        return login()

    operator_class = runtime.settings.operator_class

    def ours(body: Any, **_: Any) -> bool:
        # Another class's object is another operator's: not cached, not placed, no finalizer
        # (the runtime adds its class's finalizer only to the objects observed here).
        return owned_by(body, operator_class)

    @kopf.on.event(*resource, registry=registry, when=ours)
    async def observe(**kwargs: Any) -> None:
        event = kwargs["event"]
        runtime.observe(event.get("type"), event["object"])

    @kopf.on.cleanup(registry=registry)
    async def stop_loops(**_: Any) -> None:
        # Before kopf waits for stray tasks: placement and sync must not outlive the watch.
        await runtime.stop()
        if stop_flag is not None:
            stop_flag.set()  # kopf waits for its stop-flag waiter before it exits

    @kopf.on.probe(id="operator", registry=registry)
    async def health(**_: Any) -> dict[str, Any]:
        return runtime.liveness()

    return registry
