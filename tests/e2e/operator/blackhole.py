"""A TCP proxy in front of the API server that can black-hole one operator's traffic.

:class:`BlackHoleProxy` forwards bytes both ways (TLS passes through untouched: the API
server's certificate names 127.0.0.1 whatever the port). :meth:`BlackHoleProxy.cut` stops
forwarding without closing anything, as a network path that drops packets does: calls in
flight and new connections hang, no error ever comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from urllib.parse import urlsplit


class BlackHoleProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 443
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.open = asyncio.Event()
        self.open.set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.open.clear()

    def kubeconfig(self, source: Path, target: Path) -> Path:
        """``source`` with its cluster's server replaced by this proxy."""
        config = json.loads(source.read_text())
        config["clusters"][0]["cluster"]["server"] = self.url
        target.write_text(json.dumps(config))
        return target

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.open.wait()  # a black-holed SYN: the connection attempt just hangs
        try:
            up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.close()
            return
        for pair in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(*pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.open.wait()  # black-holed: hold the bytes forever
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
