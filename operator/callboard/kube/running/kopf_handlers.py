"""kopf's side: the handlers, registered on a fresh (non-global) kopf registry.

Each AgentSession handler acts only on the objects of the operator's class
(``spec.operatorClass``, ``--operator-class``), so two operators in one cluster never share one.

- ``on.event``: every watch event of an AgentSession feeds the cache and the placer
  (cheap: no API call, no progress record; the work happens in the placer's workers and
  the sync loop, batched);
- ``on.delete``: the finalizer (``callboard.dev/close-session``) turns a deletion into a
  close of the session (:mod:`callboard.kube.deleting.finalizer`);
- ``on.cleanup``: stops the operator's loops as soon as kopf stops watching;
- ``on.probe``: what the liveness endpoint reports;
- ``on.login``: the same credentials the operator's own API client uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import kopf

from callboard.kube.resource.constants import DEFAULT_OPERATOR_CLASS, GROUP, PLURAL, VERSION
from callboard.kube.resource.objects import finalizer_for, owned_by
from callboard.kube.running.wiring import Runtime

__all__ = ["build_kopf_registry", "build_kopf_settings"]

logger = logging.getLogger(__name__)


class NoDiffBase(kopf.DiffBaseStorage):
    """Keep no "last handled" copy of the spec on the objects.

    The operator's handlers never ask kopf for diffs (``on.event`` reads the object,
    ``on.delete`` runs on the deletion timestamp), so kopf's default, an annotation that
    repeats the whole spec (``params`` included) and costs one more PATCH per new object,
    buys nothing.
    """

    def fetch(self, *, body: Any) -> None:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def build_kopf_settings(*, clusterwide: bool, operator_class: str = DEFAULT_OPERATOR_CLASS) -> Any:
    """kopf settings: our class's finalizer, no spec copies in annotations, no CRD/namespace scanning."""
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = finalizer_for(operator_class)
    # kopf's own prefix: with any other, kopf also writes a "<prefix>/kopf-managed" marker
    # annotation on every object (one more PATCH per new object). Progress is written only
    # while a delete handler retries, which is rare.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = NoDiffBase()
    # The operator posts its own Events; kopf's would repeat them ("Handler succeeded").
    settings.posting.level = logging.WARNING
    # Least privilege: the CRD and the namespaces are given, no need to watch either.
    settings.scanning.disabled = True
    settings.peering.standalone = True  # one active replica is the Lease's job
    settings.peering.clusterwide = clusterwide
    # Restart watches regularly: a silently broken connection must not freeze the operator.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
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
        # (kopf adds it only to objects a delete handler's filter accepts).
        return owned_by(body, operator_class)

    @kopf.on.event(*resource, registry=registry, when=ours)
    async def observe(**kwargs: Any) -> None:
        event = kwargs["event"]
        runtime.observe(event.get("type"), event["object"])

    @kopf.on.delete(*resource, registry=registry, backoff=1.0, when=ours)
    async def close_session(**kwargs: Any) -> None:
        body = kwargs["body"]
        outcome = await runtime.close_for_deletion(dict(body))
        meta = body.get("metadata") or {}
        logger.info(
            "%s/%s deleted: %s",
            meta.get("namespace"),
            meta.get("name"),
            outcome,
            extra={"resource": f"{meta.get('namespace')}/{meta.get('name')}"},
        )

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
