"""Fake neighbours of the operator for its unit tests: agent nodes and kopf.

:class:`FakeNode` is an agent node on the shared registry that answers start requests;
:class:`FakeKopf` does what kopf does for the operator (relays watch events). The
Kubernetes API itself is faked once for every tier, in :mod:`tests.support.fake_kube`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from callboard.registry import SessionKVStore, SessionRegistry, StartClaim, StartRequest
from tests.support.fake_kube import FakeKube


class FakeNode:
    """An agent node: ``mode`` is accept, reject or ignore (never answers).

    It follows the start-request protocol as the launcher and the sidecar do: claim on
    receipt, then (after ``accept_delay`` seconds: an app that joins the call before it
    accepts) commit, and register only when the commit says ``started``.
    """

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
        accept_delay: float = 0.0,
    ) -> None:
        self.registry = SessionRegistry(store, node_id=node_id, ttl=ttl, foreign_scan_interval=None)
        self.registry.set_node_info(
            capacity=capacity, pool=pool, pod_name=pod, namespace="agents" if pod else None
        )
        self.mode = mode
        self.deaf = deaf
        """Ignore close requests (count them only)."""
        self.closes = 0
        self.accept_delay = accept_delay
        self.requests: list[StartRequest] = []
        self.not_started: list[tuple[StartRequest, StartClaim]] = []
        """Requests this node received but must not start (claim or commit refused)."""
        self.answering: set[asyncio.Task[None]] = set()
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
        for task in [*self._tasks, *self.answering]:
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
            task = asyncio.create_task(self._answer(request))
            self.answering.add(task)
            task.add_done_callback(self.answering.discard)

    async def _answer(self, request: StartRequest) -> None:
        self.requests.append(request)
        if self.mode == "ignore":
            return
        claim = await self.registry.claim_start(request)
        if claim is not StartClaim.CLAIMED:
            self.not_started.append((request, claim))
            return
        if self.mode == "reject":
            await self.registry.answer_start(request, accepted=False, reason="at_capacity")
            return
        if self.accept_delay:
            await asyncio.sleep(self.accept_delay)
        claim = await self.registry.commit_start(request)
        if claim is not StartClaim.STARTED:
            self.not_started.append((request, claim))
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
    """What kopf does for the operator: relay each watch event to ``runtime.observe``.

    The finalizer is the runtime's own; ``outcomes`` records what each delete's close said
    (by object name), through the runtime's :attr:`Finalizers.close`.
    """

    def __init__(self, kube: FakeKube, runtime: Any) -> None:
        self.kube = kube
        self.runtime = runtime
        self.outcomes: dict[str, str] = {}
        close = runtime.finalizers.close

        async def recording(obj: Any) -> str:
            outcome: str = await close(obj)
            self.outcomes[obj.name] = outcome
            return outcome

        runtime.finalizers.close = recording
        kube.watchers.append(self.on_event)

    def on_event(self, type_: str, body: dict[str, Any]) -> None:
        self.runtime.observe(type_, body)

    async def stop(self) -> None:
        return None
