"""kopf's handlers act only on the objects of the operator's class (two releases, one cluster)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from callboard.kube.resource.objects import AgentSessionObject
from callboard.kube.running.kopf_handlers import build_kopf_registry, build_kopf_settings
from callboard.kube.running.wiring import Runtime


def _body(operator_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"callId": "c"}
    if operator_class is not None:
        spec["operatorClass"] = operator_class
    return {"metadata": {"name": "a", "namespace": "ns", "uid": "u"}, "spec": spec}


def _filters(operator_class: str) -> dict[str, Any]:
    runtime = cast(Runtime, SimpleNamespace(settings=SimpleNamespace(operator_class=operator_class)))
    registry = build_kopf_registry(runtime, login=lambda: None)
    # kopf's registries by kind of cause: watch events (on.event) and changes (on.delete,
    # whose filter also decides which objects get the finalizer).
    handlers = registry._watching.get_all_handlers() + registry._changing.get_all_handlers()
    return {h.id.rsplit(".", 1)[-1]: h.when for h in handlers}


def test_g8_each_operator_handles_only_the_objects_of_its_class() -> None:
    default = _filters("default")
    assert set(default) == {"observe", "close_session"}
    for when in default.values():
        assert when is not None
        assert when(body=_body(None)) is True  # no class: the default operator's
        assert when(body=_body("default")) is True
        assert when(body=_body("tenant-b")) is False
    for when in _filters("tenant-b").values():
        assert when is not None
        assert when(body=_body(None)) is False
        assert when(body=_body("tenant-b")) is True


def test_g8_each_class_has_its_own_finalizer() -> None:
    """kopf strips its finalizer from objects its filters refuse: with one shared name, each
    operator would remove the other's (seen with two operators in kwok)."""
    assert build_kopf_settings(clusterwide=True).persistence.finalizer == "callboard.dev/close-session"
    other = build_kopf_settings(clusterwide=True, operator_class="tenant-b").persistence.finalizer
    assert other == "tenant-b.callboard.dev/close-session"
    body = _body("tenant-b")
    body["metadata"]["finalizers"] = ["callboard.dev/close-session"]
    assert not AgentSessionObject.from_body(body).has_finalizer  # the default class's, not its own
    body["metadata"]["finalizers"] = [other]
    assert AgentSessionObject.from_body(body).has_finalizer
