"""The one in-memory Kubernetes API of the tests, for driving the operator's logic fast.

:class:`FakeKube` stands in for the API server behind :class:`~callboard.kube.k8s.client.KubeApi`:
AgentSessions (with status subresource, finalizers, deletion timestamps and resource
versions), pods, Events, Leases and Deployments' scale subresource, with JSON merge-patch
semantics (and RFC 6902 JSON patches of an AgentSession, whose failed ``test`` is a 422 as
the API server's). Each change of an AgentSession is delivered to ``watchers`` as a watch event
would be, on the next loop iteration. :class:`FakeDeployment` plays the ReplicaSet
controller: it keeps ``replicas`` pods and removes the ones the real controller would.
Every request is recorded in ``calls`` as ``(method, path, body)``.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch  # type: ignore[import-untyped]  # kopf's dependency

from callboard.kube.k8s.client import JSON_PATCH, ConflictError, KubeApi, KubeApiError, NotFoundError
from callboard.kube.resource.constants import POD_DELETION_COST
from callboard.kube.resource.fields import format_time

Watcher = Callable[[str, dict[str, Any]], None]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKube(KubeApi):
    def __init__(self) -> None:
        super().__init__(lambda: None)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.watchers: list[Watcher] = []
        self.calls: list[tuple[str, str, Any]] = []
        self.deployments: dict[tuple[str, str], FakeDeployment] = {}
        self.on_pod_patch: Callable[[str, dict[str, Any]], None] | None = None
        """Called with a pod's name and the patch, after a pod PATCH was applied."""
        self.down = False
        self._rv = itertools.count(1)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- test helpers ----------------------------------------------------------------------

    def apply(self, name: str, call_id: str, namespace: str = "ns", **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "callboard.dev/v1alpha1",
            "kind": "AgentSession",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"callId": call_id, **spec},
        }
        return self._create_object(namespace, body)

    def delete_object(self, name: str, namespace: str = "ns") -> None:
        obj = self.objects[(namespace, name)]
        if obj["metadata"].get("finalizers"):
            obj["metadata"].setdefault("deletionTimestamp", format_time(time.time()))
            self._bump(obj, "MODIFIED")
        else:
            del self.objects[(namespace, name)]
            self._notify("DELETED", obj)

    def get_object(self, name: str, namespace: str = "ns") -> dict[str, Any] | None:
        return self.objects.get((namespace, name))

    def add_pod(
        self,
        name: str,
        namespace: str = "agents",
        *,
        labels: Mapping[str, str] | None = None,
        created: str | None = None,
        ready: bool | None = None,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": {}}
        if labels is not None:
            meta["labels"] = dict(labels)
        if created is not None:
            meta["creationTimestamp"] = created
        pod: dict[str, Any] = {"metadata": meta}
        if ready is not None:
            pod["status"] = {
                "phase": "Running" if ready else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            }
        self.pods[(namespace, name)] = pod
        return pod

    def add_deployment(
        self, name: str, namespace: str = "agents", *, replicas: int, labels: Mapping[str, str] | None = None
    ) -> FakeDeployment:
        """A Deployment whose controller starts ``replicas`` pods at once."""
        deployment = FakeDeployment(self, namespace, name, replicas=replicas, labels=labels or {"app": name})
        self.deployments[(namespace, name)] = deployment
        return deployment

    def reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in self.events if e["involvedObject"]["name"] == name]

    # -- the API ---------------------------------------------------------------------------

    def _notify(self, type_: str, obj: dict[str, Any]) -> None:
        snapshot = copy.deepcopy(obj)
        loop = asyncio.get_running_loop()
        for watcher in list(self.watchers):
            loop.call_soon(watcher, type_, snapshot)

    def _bump(self, obj: dict[str, Any], type_: str) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self._notify(type_, obj)

    def _create_object(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if (namespace, name) in self.objects:
            raise ConflictError(409, f"{name} exists", reason="AlreadyExists")
        obj = copy.deepcopy(dict(body))
        obj.pop("status", None)
        obj["metadata"].update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            generation=1,
            creationTimestamp=format_time(time.time()),
        )
        obj["spec"].setdefault("callType", "default")
        self.objects[(namespace, name)] = obj
        self._bump(obj, "ADDED")
        return copy.deepcopy(obj)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        await asyncio.sleep(0)
        self.check_guard(method, path)
        self.calls.append((method, path, copy.deepcopy(body)))
        if self.down:
            raise KubeApiError(0, "connection refused")
        parts = path.strip("/").split("/")
        if parts[:3] == ["apis", "apps", "v1"]:
            return self._scale(method, parts[3:], body)
        if parts[:2] == ["api", "v1"] and parts[4] == "pods" and len(parts) == 5:
            assert method == "GET" and params is not None
            selector = params["labelSelector"]
            # Only the autoscaler lists pods, by the selector its Deployment's scale reported.
            assert any(
                d.namespace == parts[3] and d.selector == selector for d in self.deployments.values()
            ), f"pods listed by {selector!r}, which is no Deployment's selector"
            return {"items": [copy.deepcopy(p) for p in self._select(parts[3], selector)]}
        if parts[:3] == ["apis", "callboard.dev", "v1alpha1"]:
            if content_type == JSON_PATCH:
                return self._json_patch(method, parts[3:], body)
            return self._agentsessions(method, parts[3:], body)
        if parts[:2] == ["api", "v1"] and parts[4] == "events":
            assert body is not None
            self.events.append(copy.deepcopy(dict(body)))
            return body
        if parts[:2] == ["api", "v1"] and parts[4] == "pods":
            pod = self.pods.get((parts[3], parts[5]))
            if pod is None:
                raise NotFoundError(404, "no pod")
            if method == "GET":
                return copy.deepcopy(pod)
            assert method == "PATCH" and body is not None
            self.pods[(parts[3], parts[5])] = merge_patch(pod, body)
            if self.on_pod_patch is not None:
                self.on_pod_patch(parts[5], dict(body))
            return self.pods[(parts[3], parts[5])]
        if parts[:3] == ["apis", "coordination.k8s.io", "v1"]:
            return self._leases(method, parts[3:], body)
        raise AssertionError(f"unexpected call {method} {path}")

    def _agentsessions(self, method: str, parts: list[str], body: Mapping[str, Any] | None) -> Any:
        if parts == ["agentsessions"]:
            return {"items": copy.deepcopy(list(self.objects.values())), "metadata": {}}
        namespace = parts[1]
        if len(parts) == 3:
            if method == "GET":
                return {
                    "items": [copy.deepcopy(o) for (ns, _), o in self.objects.items() if ns == namespace],
                    "metadata": {},
                }
            assert method == "POST" and body is not None
            return self._create_object(namespace, body)
        key = (namespace, parts[3])
        obj = self.objects.get(key)
        if obj is None:
            raise NotFoundError(404, f"{parts[3]} not found")
        if method == "GET":
            return copy.deepcopy(obj)
        if method == "DELETE":
            self.delete_object(parts[3], namespace)
            return {}
        assert method == "PATCH" and body is not None
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            raise ConflictError(409, "the object has been modified", reason="Conflict")
        if len(parts) == 5 and parts[4] == "status":
            obj["status"] = merge_patch(obj.get("status") or {}, body.get("status") or {})
        else:
            meta = merge_patch(obj["metadata"], body.get("metadata") or {})
            obj["metadata"] = meta
            if "spec" in body:
                obj["spec"] = merge_patch(obj["spec"], body["spec"])
                obj["metadata"]["generation"] += 1
            if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
                del self.objects[key]
                self._notify("DELETED", obj)
                return copy.deepcopy(obj)
        self._bump(obj, "MODIFIED")
        return copy.deepcopy(obj)

    def _json_patch(self, method: str, parts: list[str], body: Any) -> Any:
        assert method == "PATCH" and len(parts) == 4 and isinstance(body, list)
        key = (parts[1], parts[3])
        obj = self.objects.get(key)
        if obj is None:
            raise NotFoundError(404, f"{parts[3]} not found")
        try:
            patched = jsonpatch.apply_patch(obj, body)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise KubeApiError(422, f"the test operation failed: {exc}", reason="Invalid") from exc
        obj["metadata"] = patched["metadata"]
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            del self.objects[key]
            self._notify("DELETED", obj)
            return copy.deepcopy(obj)
        self._bump(obj, "MODIFIED")
        return copy.deepcopy(obj)

    def _leases(self, method: str, parts: list[str], body: Mapping[str, Any] | None) -> Any:
        namespace = parts[1]
        if len(parts) == 3:
            assert method == "POST" and body is not None
            key = (namespace, body["metadata"]["name"])
            if key in self.leases:
                raise ConflictError(409, "exists")
            lease = copy.deepcopy(dict(body))
            lease["metadata"]["resourceVersion"] = str(next(self._rv))
            self.leases[key] = lease
            return copy.deepcopy(lease)
        key = (namespace, parts[3])
        if key not in self.leases:
            raise NotFoundError(404, "no lease")
        if method == "GET":
            return copy.deepcopy(self.leases[key])
        assert method == "PUT" and body is not None
        if body["metadata"].get("resourceVersion") != self.leases[key]["metadata"]["resourceVersion"]:
            raise ConflictError(409, "the object has been modified")
        lease = copy.deepcopy(dict(body))
        lease["metadata"]["resourceVersion"] = str(next(self._rv))
        self.leases[key] = lease
        return copy.deepcopy(lease)

    def _select(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods of ``namespace`` matching an equality label selector (``a=b,c=d``)."""
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        return [
            pod
            for (ns, _), pod in self.pods.items()
            if ns == namespace and wanted.items() <= (pod["metadata"].get("labels") or {}).items()
        ]

    def _scale(self, method: str, parts: list[str], body: Mapping[str, Any] | None) -> Any:
        assert parts[0] == "namespaces" and parts[2] == "deployments" and parts[4:] == ["scale"], parts
        deployment = self.deployments.get((parts[1], parts[3]))
        if deployment is None:
            raise NotFoundError(404, f"deployments {parts[3]!r} not found")
        if method == "GET":
            return {
                "metadata": {
                    "name": deployment.name,
                    "namespace": deployment.namespace,
                    "resourceVersion": str(deployment.version),
                },
                "spec": {"replicas": deployment.replicas},
                "status": {"replicas": len(deployment.pods), "selector": deployment.selector},
            }
        assert method == "PATCH" and body is not None
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != str(deployment.version):
            raise ConflictError(409, "the object has been modified")
        deployment.scale(body["spec"]["replicas"])
        return None


class FakeDeployment:
    """A Deployment's replica count and the pods its ReplicaSet controller keeps.

    Scaling down removes the pod the controller would: not ready first, then the lowest
    ``controller.kubernetes.io/pod-deletion-cost``, then the newest.
    """

    def __init__(
        self, kube: FakeKube, namespace: str, name: str, *, replicas: int, labels: Mapping[str, str]
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.labels = dict(labels)
        self.replicas = replicas
        self.version = 1
        """The scale subresource's resourceVersion; a test bumps it to play ``kubectl scale``."""
        self.deleted: list[str] = []
        self.scale_patches: list[int] = []
        self._clock = itertools.count(1)
        self._names = itertools.count()
        self._reconcile()

    @property
    def selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels.items())

    @property
    def pods(self) -> dict[str, dict[str, Any]]:
        """The Deployment's pods by name, oldest first (the dicts are the fake's own)."""
        return {pod["metadata"]["name"]: pod for pod in self.kube._select(self.namespace, self.selector)}

    def add_pod(self, *, ready: bool = True) -> str:
        name = f"{self.name}-{next(self._names):02}"
        self.kube.add_pod(
            name,
            self.namespace,
            labels=self.labels,
            created=f"2026-01-01T00:{next(self._clock):02}:00Z",
            ready=ready,
        )
        return name

    def cost(self, name: str) -> str | None:
        annotations: dict[str, str] = self.pods[name]["metadata"]["annotations"]
        return annotations.get(POD_DELETION_COST)

    def scale(self, replicas: int) -> None:
        self.replicas = replicas
        self.scale_patches.append(replicas)
        self.version += 1
        self._reconcile()

    @staticmethod
    def _rank(pod: dict[str, Any]) -> tuple[int, int, str]:
        ready = pod["status"]["phase"] == "Running"
        cost = int(pod["metadata"]["annotations"].get(POD_DELETION_COST, "0"))
        # Not-ready first, then the lowest cost, then the newest.
        return (
            1 if ready else 0,
            cost,
            "".join(chr(255 - ord(c)) for c in pod["metadata"]["creationTimestamp"]),
        )

    def _reconcile(self) -> None:
        while len(self.pods) < self.replicas:
            self.add_pod()
        while len(self.pods) > self.replicas:
            victim = min(self.pods.values(), key=self._rank)["metadata"]["name"]
            del self.kube.pods[(self.namespace, victim)]
            self.deleted.append(victim)
