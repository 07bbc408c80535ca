"""Demo nodes: real ``callboard serve`` processes, or in-process nodes over one memory store.

Both kinds answer on a real loopback HTTP port and can be killed:

- :class:`ProcessNode`: a child ``callboard serve``; ``kill()`` is SIGKILL, so the node dies
  without deregistering and its sessions leave the registry only by TTL.
- :class:`InProcessNode`: a :class:`~callboard.server.NodeServer` in this event loop over a
  store shared by all nodes; ``kill()`` cuts it off the store first (what a dead process
  looks like to the others) and then stops it, so its records expire the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Protocol

from callboard import __version__
from callboard._process import ProcessHandle
from callboard.demo.agent import create_agent, join_call
from callboard.errors import StoreUnavailableError
from callboard.launcher import AgentLauncher, LauncherSettings
from callboard.registry import PubSubSupport, SessionKVStore, SessionRegistry, Subscription
from callboard.server import NodeClient, NodeServer

__all__ = ["DemoNode", "InProcessNode", "ProcessNode", "serve_command"]


class DemoNode(Protocol):
    """What the demo does with a node of either kind."""

    name: str
    node_id: str
    url: str

    async def start(self) -> object: ...
    async def wait_ready(self, timeout: float = 30.0) -> None: ...
    async def kill(self) -> None: ...
    async def stop(self) -> int: ...


def serve_command(
    *,
    node_id: str,
    port: int,
    redis_url: str,
    key_prefix: str,
    ttl: float,
    maintenance_interval: float,
    extra: list[str] | None = None,
    log_level: str = "info",
) -> list[str]:
    """The argv of one ``callboard serve`` child, run with this interpreter."""
    return [
        sys.executable,
        "-c",
        "from callboard.cli import main; main()",
        "--log-level",
        log_level,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--node-id",
        node_id,
        "--redis-url",
        redis_url,
        "--key-prefix",
        key_prefix,
        "--ttl",
        str(ttl),
        "--maintenance-interval",
        str(maintenance_interval),
        *(extra or []),
    ]


class ProcessNode(ProcessHandle):
    """One ``callboard serve`` child process; its output goes to ``log_path``.

    It gets this environment without any ``CALLBOARD_*`` variable (its settings are its
    flags, nothing of the caller's shell leaks in), in a session of its own (Ctrl-C of the
    demo is handled by the demo, which then stops its nodes).
    """

    def __init__(self, name: str, node_id: str, port: int, argv: list[str], log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOARD_")}
        super().__init__(argv, name=name, log_path=log_path, env=env, new_session=True)
        self.node_id = node_id
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def alive(self) -> bool:
        return self.running

    async def wait_ready(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with NodeClient(self.url, timeout=1.0) as client:
            while not await client.ready():
                if not self.alive:
                    raise RuntimeError(f"node {self.node_id} exited:\n{self.log_tail()}")
                if loop.time() > deadline:
                    raise TimeoutError(f"node {self.node_id} not ready within {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (drain), then SIGKILL after ``timeout``; returns the exit code."""
        return await super().stop(timeout)


class _CuttableStore(SessionKVStore, PubSubSupport):
    """One node's view of the shared memory store; :attr:`cut` makes every call fail."""

    def __init__(self, inner: SessionKVStore) -> None:
        if not isinstance(inner, PubSubSupport):
            raise TypeError("the shared store must support publish/subscribe")
        self.inner = inner
        self.pubsub: PubSubSupport = inner
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise StoreUnavailableError("this node is cut off (demo)")

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        """The shared store outlives each node; the demo closes it at the end."""

    async def set(self, key: str, value: bytes, ttl: float, *, only_if_exists: bool = False) -> None:
        self._check()
        await self.inner.set(key, value, ttl, only_if_exists=only_if_exists)

    async def mset(self, items: list[tuple[str, bytes, float]]) -> None:
        self._check()
        await self.inner.mset(items)

    async def expire(self, *keys: str, ttl: float) -> None:
        self._check()
        await self.inner.expire(*keys, ttl=ttl)

    async def get(self, key: str) -> bytes | None:
        self._check()
        return await self.inner.get(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self._check()
        return await self.inner.mget(keys)

    async def keys(self, prefix: str) -> list[str]:
        self._check()
        return await self.inner.keys(prefix)

    async def delete(self, keys: list[str]) -> None:
        self._check()
        await self.inner.delete(keys)

    async def publish(self, channel: str, message: bytes) -> None:
        self._check()
        await self.pubsub.publish(channel, message)

    async def subscribe(self, channel: str) -> Subscription:
        self._check()
        return await self.pubsub.subscribe(channel)


class InProcessNode:
    """A node in this process over ``shared`` (an in-memory store all demo nodes use)."""

    def __init__(
        self,
        name: str,
        node_id: str,
        port: int,
        shared: SessionKVStore,
        *,
        ttl: float,
        launcher_settings: LauncherSettings,
        drain_timeout: float,
    ) -> None:
        self.name = name
        self.node_id = node_id
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.store = _CuttableStore(shared)
        registry = SessionRegistry(self.store, node_id=node_id, ttl=ttl, foreign_scan_interval=None)
        registry.set_node_info(
            address=self.url, capacity=launcher_settings.max_concurrent_sessions, version=__version__
        )
        launcher = AgentLauncher.from_settings(create_agent, join_call, launcher_settings, registry=registry)
        self.server = NodeServer(launcher, host="127.0.0.1", port=port, drain_timeout=drain_timeout)
        self._shutdown = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.run(self._shutdown), name=f"demo-node:{self.node_id}")

    async def wait_ready(self, timeout: float = 30.0) -> None:
        waiter = asyncio.create_task(self.server.wait_started(timeout))
        assert self._task is not None
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()
            raise RuntimeError(f"node {self.node_id} stopped during start-up")
        waiter.result()

    async def kill(self) -> None:
        """Cut it off the store, then stop it at once: its records are left to expire."""
        self.store.cut = True
        self.server.drain_timeout = 0.0
        await self.stop()

    async def stop(self) -> int:
        self._shutdown.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        return 0
