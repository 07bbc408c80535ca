"""A typed, immutable view of an AgentSession object as the API server returned it.

kopf and the API client hand out plain dicts. Every decision of the operator is made
on an :class:`AgentSessionObject` built once per event, so a missing or odd field is handled
in one place and the rest of the code reads attributes, not nested ``.get`` chains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from callboard.kube.resource.constants import (
    ADOPTED_LABEL,
    API_VERSION,
    DEFAULT_OPERATOR_CLASS,
    FINALIZER,
    KIND,
    SESSION_ANNOTATION,
)
from callboard.kube.resource.fields import int_or_none, parse_time, str_or_none
from callboard.kube.resource.phases import Status

__all__ = [
    "AgentSessionObject",
    "Key",
    "LostPolicy",
    "Spec",
    "finalizer_for",
    "operator_class_of",
    "owned_by",
    "resource_version_newer",
]

#: (namespace, name): how the operator addresses an object.
Key = tuple[str, str]


def resource_version_newer(candidate: str | None, current: str | None) -> bool:
    """Whether ``candidate`` is a later version of an object than ``current``.

    Resource versions are documented as opaque; every etcd-backed API server issues them
    from etcd's revision counter, so when both parse as integers they are compared as such
    (this keeps a watch event that arrives after our own PATCH response from rolling the
    cache back). Anything else is taken as newer, the informer's usual rule.
    """
    if current is None or candidate is None:
        return True
    try:
        return int(candidate) >= int(current)
    except ValueError:
        return True


class LostPolicy(StrEnum):
    """``spec.lostPolicy``: what happens when the session of a Lost object shows up again.

    A node cut off from the registry for longer than the TTL is declared gone, and whoever
    watches the object may have started a replacement meanwhile. ``Close`` (the default)
    closes the session that comes back and leaves the object Lost: an agent that rejoins a
    call after the TTL must not talk over a replacement. ``Recover`` takes the object back
    to Running, unless another session of the call started after the loss (then the stale
    copy is closed all the same).
    """

    CLOSE = "Close"
    RECOVER = "Recover"

    @classmethod
    def parse(cls, value: object) -> LostPolicy:
        """The policy ``value`` names; anything else (the schema refuses it) is the default."""
        for policy in cls:
            if value == policy.value:
                return policy
        return cls.CLOSE


def operator_class_of(spec: Mapping[str, Any]) -> str:
    """The operator class a spec names (``spec.operatorClass``; the default one when absent)."""
    return str_or_none(spec.get("operatorClass")) or DEFAULT_OPERATOR_CLASS


def finalizer_for(operator_class: str) -> str:
    """The finalizer an operator of ``operator_class`` puts on its objects.

    One per class: each operator adds and releases only its class's, so two classes in one
    cluster never release each other's objects. The default class keeps the
    plain name (objects of a single release keep theirs across an upgrade); another class
    ``tenant-b`` (a DNS label) gets ``tenant-b.callboard.dev/close-session``.
    """
    if operator_class == DEFAULT_OPERATOR_CLASS:
        return FINALIZER
    return f"{operator_class}.{FINALIZER}"


def owned_by(body: Mapping[str, Any], operator_class: str) -> bool:
    """Whether an operator of ``operator_class`` reconciles this AgentSession body.

    Two operators in one cluster (two releases, each with its own agent pools and registry)
    both watch every AgentSession; each acts only on the objects of its class, so an object
    gets one finalizer, one placement and one status writer. An object without the field
    belongs to the default class (``DEFAULT_OPERATOR_CLASS``).
    """
    spec = body.get("spec")
    return operator_class_of(spec if isinstance(spec, Mapping) else {}) == operator_class


@dataclass(frozen=True, slots=True)
class Spec:
    call_id: str
    call_type: str = "default"
    pool: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    max_duration_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    operator_class: str = DEFAULT_OPERATOR_CLASS
    lost_policy: LostPolicy = LostPolicy.CLOSE

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        params = data.get("params")
        return cls(
            call_id=str(data.get("callId", "")),
            call_type=str_or_none(data.get("callType")) or "default",
            pool=str_or_none(data.get("pool")),
            params=dict(params) if isinstance(params, Mapping) else {},
            max_duration_seconds=int_or_none(data.get("maxDurationSeconds")),
            ttl_seconds_after_finished=int_or_none(data.get("ttlSecondsAfterFinished")),
            operator_class=operator_class_of(data),
            lost_policy=LostPolicy.parse(data.get("lostPolicy")),
        )


@dataclass(frozen=True, slots=True)
class AgentSessionObject:
    """One AgentSession custom resource, typed.

    ``Object`` in the name: it is the Kubernetes object, not a running session (that is
    the launcher's ``AgentSession``, the Vision Agents name); the object points at its
    session through :attr:`session` once one is known.
    """

    namespace: str
    name: str
    uid: str
    spec: Spec
    status: Status
    generation: int = 1
    resource_version: str | None = None
    created_at: float | None = None
    deletion_at: float | None = None
    finalizers: tuple[str, ...] = ()
    adopted_session: tuple[str, str] | None = None
    """``(call_id, session_id)`` when the object mirrors a session started elsewhere."""

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def deleting(self) -> bool:
        return self.deletion_at is not None

    @property
    def has_finalizer(self) -> bool:
        return finalizer_for(self.spec.operator_class) in self.finalizers

    @property
    def session(self) -> tuple[str, str] | None:
        """``(call_id, session_id)`` of the session this object stands for, once known."""
        if self.adopted_session is not None:
            return self.adopted_session
        if self.status.session_id is not None:
            return (self.spec.call_id, self.status.session_id)
        return None

    def reference(self) -> dict[str, Any]:
        """An ``ObjectReference`` for Events."""
        ref: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }
        if self.resource_version:
            ref["resourceVersion"] = self.resource_version
        return ref

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AgentSessionObject:
        meta = body.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        labels = meta.get("labels") or {}
        adopted: tuple[str, str] | None = None
        marker = annotations.get(SESSION_ANNOTATION)
        if isinstance(marker, str) and marker.count("/") == 1 and labels.get(ADOPTED_LABEL) == "true":
            call_id, session_id = marker.split("/")
            if call_id and session_id:
                adopted = (call_id, session_id)
        generation = meta.get("generation")
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            spec=Spec.from_dict(body.get("spec") or {}),
            status=Status.from_dict(body.get("status") or {}),
            generation=generation if isinstance(generation, int) else 1,
            resource_version=str_or_none(meta.get("resourceVersion")),
            created_at=parse_time(meta.get("creationTimestamp")),
            deletion_at=parse_time(meta.get("deletionTimestamp")),
            finalizers=tuple(f for f in meta.get("finalizers") or () if isinstance(f, str)),
            adopted_session=adopted,
        )
