"""An in-memory Kubernetes API and agent nodes, for driving the operator's logic fast.

:class:`FakeKube` stands in for the API server behind :class:`~callboard.kube.k8s.client.KubeApi`:
AgentSessions (with status subresource, finalizers, deletion timestamps and resource
versions), pods, Events and Leases, with JSON merge-patch semantics. Each change is
delivered to ``watchers`` as a watch event would be, on the next loop iteration.
:class:`FakeNode` is an agent node on the shared registry that answers start requests.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from callboard.kube.k8s.client import ConflictError, KubeApi, KubeApiError, NotFoundError
from callboard.kube.resource.fields import format_time
from callboard.registry import SessionKVStore, SessionRegistry, StartRequest

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
        self.calls: list[tuple[str, str]] = []
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

    def add_pod(self, name: str, namespace: str = "agents") -> None:
        self.pods[(namespace, name)] = {"metadata": {"name": name, "namespace": namespace, "annotations": {}}}

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
        self.calls.append((method, path))
        if self.down:
            raise KubeApiError(0, "connection refused")
        parts = path.strip("/").split("/")
        if parts[:3] == ["apis", "callboard.dev", "v1alpha1"]:
            return self._agentsessions(method, parts[3:], body)
        if parts[:2] == ["api", "v1"] and parts[4] == "events":
            assert body is not None
            self.events.append(copy.deepcopy(dict(body)))
            return body
        if parts[:2] == ["api", "v1"] and parts[4] == "pods":
            pod = self.pods.get((parts[3], parts[5]))
            if pod is None:
                raise NotFoundError(404, "no pod")
            assert method == "PATCH" and body is not None
            self.pods[(parts[3], parts[5])] = merge_patch(pod, body)
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


class FakeNode:
    """An agent node: ``mode`` is accept, reject or ignore (never answers)."""

    def __init__(
        self,
        store: SessionKVStore,
        node_id: str,
        *,
        capacity: int | None = 2,
        pool: str | None = None,
        pod: str | None = None,
        mode: str = "accept",
        ttl: float = 30.0,
        deaf: bool = False,
    ) -> None:
        self.registry = SessionRegistry(store, node_id=node_id, ttl=ttl, foreign_scan_interval=None)
        self.registry.set_node_info(
            capacity=capacity, pool=pool, pod_name=pod, namespace="agents" if pod else None
        )
        self.mode = mode
        self.deaf = deaf
        """Ignore close requests (count them only)."""
        self.closes = 0
        self.requests: list[StartRequest] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def sessions(self) -> list[str]:
        return sorted(s.session_id for s in self.registry.local_sessions)

    async def start(self) -> None:
        await self.registry.start()
        starts = self.registry.start_requests()
        closes = self.registry.close_requests()
        self._tasks = [asyncio.create_task(self._starts(starts)), asyncio.create_task(self._closes(closes))]
        for request in await self.registry.pending_start_requests():
            await self._answer(request)

    async def kill(self) -> None:
        """Stop answering and heartbeating; records stay until their TTL."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def stop(self) -> None:
        await self.kill()
        for s in list(self.registry.local_sessions):
            await self.registry.remove(s.call_id, s.session_id)
        await self.registry.stop()

    async def end(self, session_id: str, reason: str = "done") -> None:
        for s in self.registry.local_sessions:
            if s.session_id == session_id:
                await self.registry.remove(s.call_id, s.session_id, reason=reason)
        await self.registry.heartbeat()

    async def _starts(self, stream: Any) -> None:
        async for request in stream:
            await self._answer(request)

    async def _answer(self, request: StartRequest) -> None:
        self.requests.append(request)
        if self.mode == "ignore":
            return
        if self.mode == "reject":
            await self.registry.answer_start(request, accepted=False, reason="at_capacity")
            return
        await self.registry.register(request.call_id, request.session_id)
        await self.registry.heartbeat()
        await self.registry.answer_start(request, accepted=True)

    async def _closes(self, stream: Any) -> None:
        async for request in stream:
            self.closes += 1
            if not self.deaf:
                await self.registry.remove(request.call_id, request.session_id, reason="close_requested")
                await self.registry.heartbeat()


class FakeKopf:
    """What kopf does for the operator: add the finalizer, run the delete handler, release."""

    def __init__(self, kube: FakeKube, runtime: Any) -> None:
        self.kube = kube
        self.runtime = runtime
        self.outcomes: dict[str, str] = {}
        self._deleting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        kube.watchers.append(self.on_event)

    def on_event(self, type_: str, body: dict[str, Any]) -> None:
        from callboard.kube.resource.constants import FINALIZER

        self.runtime.observe(type_, body)
        meta = body["metadata"]
        if type_ == "DELETED":
            return
        if meta.get("deletionTimestamp"):
            if FINALIZER in meta.get("finalizers", []) and meta["uid"] not in self._deleting:
                self._deleting.add(meta["uid"])
                self._spawn(self._delete(body))
        elif FINALIZER not in meta.get("finalizers", []):
            self._spawn(self._add_finalizer(meta["namespace"], meta["name"], meta.get("finalizers", [])))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _add_finalizer(self, namespace: str, name: str, finalizers: list[str]) -> None:
        from callboard.kube.k8s.client import agentsession_path
        from callboard.kube.resource.constants import FINALIZER

        await self.kube.merge_patch(
            agentsession_path(namespace, name), {"metadata": {"finalizers": [*finalizers, FINALIZER]}}
        )

    async def _delete(self, body: dict[str, Any]) -> None:
        from callboard.kube.k8s.client import agentsession_path
        from callboard.kube.resource.constants import FINALIZER

        meta = body["metadata"]
        self.outcomes[meta["name"]] = await self.runtime.close_for_deletion(body)
        current = self.kube.get_object(meta["name"], meta["namespace"])
        if current is not None:
            rest = [f for f in current["metadata"].get("finalizers", []) if f != FINALIZER]
            await self.kube.merge_patch(
                agentsession_path(meta["namespace"], meta["name"]), {"metadata": {"finalizers": rest or None}}
            )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
