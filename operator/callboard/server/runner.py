"""NodeServer: one node's launcher and HTTP API under uvicorn, with a drain on shutdown.

Shutdown happens in the order Kubernetes expects of a pod that got SIGTERM:

1. ``shutdown`` is set (the CLI sets it on SIGTERM/SIGINT: only the CLI touches signals);
2. the launcher drains: new starts get 503, ``/ready`` turns 503 so the endpoint is taken
   out of the Service, live sessions get ``drain_timeout`` seconds to end, then are closed;
3. uvicorn stops serving, and the launcher stops (final deregistration).

The API keeps answering reads and cross-node closes during the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from callboard.launcher import AgentLauncher
from callboard.server.app import create_app
from callboard.server.hooks import AuthorizationHooks
from callboard.server.settings import ServerSettings

__all__ = ["NodeServer"]

logger = logging.getLogger(__name__)

#: Seconds uvicorn waits for open connections once the drain is over: requests in flight
#: are short (no streaming routes), so a few seconds is plenty.
GRACEFUL_HTTP_SHUTDOWN = 5


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class NodeServer:
    """Serve ``launcher`` on ``host:port`` until ``shutdown`` is set, then drain and stop.

    ``hooks`` are the node API's authorization hooks (:mod:`callboard.server.hooks`); by
    default the ones ``settings`` name, else allow-all.
    """

    def __init__(
        self,
        launcher: AgentLauncher[Any],
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        settings: ServerSettings | None = None,
        drain_timeout: float = 20.0,
        access_log: bool = False,
        hooks: AuthorizationHooks | None = None,
    ) -> None:
        self.launcher = launcher
        self.host = host
        self.port = port
        self.drain_timeout = drain_timeout
        self.app = create_app(launcher, settings, manage_launcher=False, hooks=hooks)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_config=None,
            access_log=access_log,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_HTTP_SHUTDOWN,
        )
        self._server = _Server(config)
        self.forced_closes = 0

    @property
    def started(self) -> bool:
        """True once the HTTP port accepts connections."""
        return bool(self._server.started)

    async def wait_started(self, timeout: float = 10.0) -> None:
        """Wait until the port accepts connections (uvicorn exposes a flag, not an event)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._server.started:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"node API did not start on {self.host}:{self.port} within {timeout}s")
            await asyncio.sleep(0.01)

    def _bind(self) -> socket.socket:
        """Listen before anything starts, so a taken port is an ``OSError`` here, not an exit
        from inside uvicorn. With port 0 the OS picks one (read :attr:`port` afterwards)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        return sock

    async def run(self, shutdown: asyncio.Event) -> None:
        """Start the launcher, serve, and on ``shutdown`` drain then stop everything.

        Raises ``OSError`` when the port cannot be bound (before the launcher starts), and
        :class:`~callboard.errors.StoreUnavailableError` when the registry is unreachable.
        """
        sock = self._bind()
        try:
            await self.launcher.start()
        except BaseException:
            sock.close()
            raise
        try:
            serving = asyncio.create_task(
                self._server.serve(sockets=[sock]), name=f"http:{self.launcher.node_id}"
            )
            stopping = asyncio.create_task(shutdown.wait(), name=f"shutdown:{self.launcher.node_id}")
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not serving.done():
                self.forced_closes = await self.launcher.drain(self.drain_timeout)
                self._server.should_exit = True
            else:
                stopping.cancel()
            try:
                await serving
            finally:
                stopping.cancel()
        finally:
            self._server.should_exit = True
            await self.launcher.stop()
