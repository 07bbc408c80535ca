"""Run one sidecar process: store, registry, service and HTTP server, then drain and exit.

The caller (the CLI) owns signals: it sets ``terminate`` on SIGTERM/SIGINT (drain, then exit)
and ``force`` on a second one (stop waiting for sessions). uvicorn is told not to install its
own handlers, since its shutdown would cut the drain short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from callboard._aio import guarded_task
from callboard.errors import ConfigurationError
from callboard.registry import SessionRegistry, store_from_url
from callboard.sidecar.api import create_app
from callboard.sidecar.service import SidecarService
from callboard.sidecar.settings import SidecarSettings

__all__ = ["bind", "run_sidecar"]

logger = logging.getLogger(__name__)

#: Seconds uvicorn waits for open connections at exit once the event streams have ended:
#: what is left then is an idle keep-alive connection or a stuck client.
HTTP_SHUTDOWN_TIMEOUT = 2


class _Server(uvicorn.Server):
    """uvicorn without signal handlers: the sidecar drains first, then stops the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(settings: SidecarSettings) -> socket.socket:
    """Open the listening socket now, so a taken port is a clear configuration error."""
    host, port = settings.api.host, settings.api.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigurationError(
            f"CALLBOARD_LISTEN={settings.api.listen}: cannot listen there: {exc}"
        ) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()  # not left to the garbage collector (a ResourceWarning there)
        raise ConfigurationError(
            f"CALLBOARD_LISTEN={settings.api.listen}: cannot listen there: {exc}"
        ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def run_sidecar(
    settings: SidecarSettings,
    *,
    terminate: asyncio.Event,
    force: asyncio.Event | None = None,
    sock: socket.socket | None = None,
) -> int:
    """Serve until ``terminate``, drain, stop; return the exit code (0 after a clean drain)."""
    store = store_from_url(settings.registry.redis_url, key_prefix=settings.registry.key_prefix)
    sock = sock or bind(settings)
    registry = SessionRegistry(store, node_id=settings.node.node_id, ttl=settings.registry.ttl)
    service = SidecarService(settings, registry=registry)
    config = uvicorn.Config(
        create_app(service),
        log_config=None,  # the CLI configured logging; uvicorn must not replace it
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=HTTP_SHUTDOWN_TIMEOUT,
    )
    server = _Server(config)
    await service.start()
    http = guarded_task(server.serve(sockets=[sock]), name="sidecar:http", logger=logger)
    extra = {"node_id": registry.node_id}
    logger.info("sidecar listening on http://%s", settings.api.listen, extra=extra)
    stop = asyncio.ensure_future(terminate.wait())
    try:
        await asyncio.wait([stop, http], return_when=asyncio.FIRST_COMPLETED)
        if http.done():
            logger.error("the HTTP server stopped unexpectedly", extra=extra)
            return 1
        cut = await service.drain(force=force)
        logger.info("drained (%d sessions cut off at the timeout); exiting", cut, extra=extra)
        service.events.close()  # end the event streams so their connections close
        server.should_exit = True
        await asyncio.wait([http], timeout=HTTP_SHUTDOWN_TIMEOUT + 1)
        return 0
    finally:
        stop.cancel()
        if not http.done():
            server.force_exit = True
            http.cancel()
        await service.stop()
        sock.close()
