"""Fake neighbours of the operator for its unit tests: agent nodes and kopf.

:class:`FakeNode` is an agent node on the shared registry that answers start requests;
:class:`FakeKopf` does what kopf does for the operator (finalizer, delete handler). The
Kubernetes API itself is faked once for every tier, in :mod:`tests.support.fake_kube`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from callboard.registry import SessionKVStore, SessionRegistry, StartRequest
from tests.support.fake_kube import FakeKube


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
