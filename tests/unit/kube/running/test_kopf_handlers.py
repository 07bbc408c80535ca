"""kopf's handlers act only on the objects of the operator's class (two releases, one cluster)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from callboard.kube.resource.objects import AgentSessionObject, finalizer_for
from callboard.kube.running.kopf_handlers import NoDiffBase, build_kopf_registry, build_kopf_settings
from callboard.kube.running.wiring import Runtime


def _body(operator_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"callId": "c"}
    if operator_class is not None:
        spec["operatorClass"] = operator_class
    return {"metadata": {"name": "a", "namespace": "ns", "uid": "u"}, "spec": spec}


def _filters(operator_class: str) -> dict[str, Any]:
    runtime = cast(Runtime, SimpleNamespace(settings=SimpleNamespace(operator_class=operator_class)))
    registry = build_kopf_registry(runtime, login=lambda: None)
    # kopf's registries by kind of cause: watch events (on.event) and changes (none: the
    # finalizer is the runtime's, so kopf adds and removes none).
    handlers = registry._watching.get_all_handlers() + registry._changing.get_all_handlers()
    return {h.id.rsplit(".", 1)[-1]: h.when for h in handlers}


def test_g8_each_operator_handles_only_the_objects_of_its_class() -> None:
    default = _filters("default")
    assert set(default) == {"observe"}
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
    """One finalizer per class: an operator releases only its own class's entry."""
    assert finalizer_for("default") == "callboard.dev/close-session"
    other = finalizer_for("tenant-b")
    assert other == "tenant-b.callboard.dev/close-session"
    body = _body("tenant-b")
    body["metadata"]["finalizers"] = ["callboard.dev/close-session"]
    assert not AgentSessionObject.from_body(body).has_finalizer  # the default class's, not its own
    body["metadata"]["finalizers"] = [other]
    assert AgentSessionObject.from_body(body).has_finalizer


def test_g8_kopf_can_strip_no_class_finalizer() -> None:
    """kopf removes the finalizer its settings name from every object none of its handlers
    needs one for (all of them: only on.event is left), so that name must be no class's."""
    registry = build_kopf_registry(
        cast(Runtime, SimpleNamespace(settings=SimpleNamespace(operator_class="default"))), login=lambda: None
    )
    assert registry._changing.get_all_handlers() == []  # nothing of kopf's needs a finalizer
    kopf_finalizer = build_kopf_settings(clusterwide=True).persistence.finalizer
    assert kopf_finalizer not in {finalizer_for("default"), finalizer_for("tenant-b")}
    assert not kopf_finalizer.endswith("callboard.dev/close-session")  # nor any class's to come


def test_kopf_copies_no_body_and_posts_no_events() -> None:
    """kopf's diff base was a deep copy of each watch event's body for nothing (no handler
    reads diffs); its Events would repeat the operator's."""
    body = {"metadata": {"name": "a"}, "spec": {"callId": "c", "params": {"big": list(range(100))}}}
    assert NoDiffBase().build(body=body) == {}
    settings = build_kopf_settings(clusterwide=True)
    assert settings.posting.enabled is False
    assert settings.persistence.diffbase_storage.fetch(body=body) is None
