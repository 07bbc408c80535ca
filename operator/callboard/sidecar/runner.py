"""Run one sidecar process: store, registry, service and HTTP servers, then drain and exit.

Two listeners: the session API on loopback (``CALLBOARD_LISTEN``) and, unless turned off, the
probe API (``CALLBOARD_PROBE_LISTEN``: probes and metrics, safe to expose). Both sockets are
opened before anything starts, so a taken port is a configuration error at once.

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
from callboard.sidecar.api import create_app, create_probe_app
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


def bind(settings: SidecarSettings, *, probe: bool = False) -> socket.socket:
    """Open a listening socket now, so a taken port is a clear configuration error.

    The session API's (``CALLBOARD_LISTEN``), or with ``probe`` the probe API's
    (``CALLBOARD_PROBE_LISTEN``, which must be set).
    """
    name, listen = "CALLBOARD_LISTEN", settings.api.listen
    if probe:
        assert settings.api.probe_listen is not None
        name, listen = "CALLBOARD_PROBE_LISTEN", settings.api.probe_listen
    host, _, port_text = listen.rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigurationError(f"{name}={listen}: cannot listen there: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()  # not left to the garbage collector (a ResourceWarning there)
        raise ConfigurationError(f"{name}={listen}: cannot listen there: {exc}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def run_sidecar(
    settings: SidecarSettings,
    *,
    terminate: asyncio.Event,
    force: asyncio.Event | None = None,
    sock: socket.socket | None = None,
    probe_sock: socket.socket | None = None,
) -> int:
    """Serve until ``terminate``, drain, stop; return the exit code (0 after a clean drain)."""
    store = store_from_url(settings.registry.redis_url, key_prefix=settings.registry.key_prefix)
    token = settings.api.bearer_token
    sock = sock or bind(settings)
    if probe_sock is None and settings.api.probe_listen is not None:
        try:
            probe_sock = bind(settings, probe=True)
        except BaseException:
            sock.close()
            raise
    registry = SessionRegistry(store, node_id=settings.node.node_id, ttl=settings.registry.ttl)
    service = SidecarService(settings, registry=registry)
    servers = [(_server(create_app(service, token=token)), sock, "sidecar:http")]
    if probe_sock is not None:
        servers.append((_server(create_probe_app(service)), probe_sock, "sidecar:probes"))
    await service.start()
    tasks = [guarded_task(srv.serve(sockets=[s]), name=name, logger=logger) for srv, s, name in servers]
    extra = {"node_id": registry.node_id}
    logger.info(
        "sidecar session API on http://%s%s, probes on %s",
        settings.api.listen,
        " (bearer token required)" if token else "",
        f"http://{settings.api.probe_listen}" if probe_sock is not None else "the session API only",
        extra=extra,
    )
    stop = asyncio.ensure_future(terminate.wait())
    try:
        await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if any(task.done() for task in tasks):
            logger.error("an HTTP server stopped unexpectedly", extra=extra)
            return 1
        cut = await service.drain(force=force)
        logger.info("drained (%d sessions cut off at the timeout); exiting", cut, extra=extra)
        service.events.close()  # end the event streams so their connections close
        for srv, _, _ in servers:
            srv.should_exit = True
        await asyncio.wait(tasks, timeout=HTTP_SHUTDOWN_TIMEOUT + 1)
        return 0
    finally:
        stop.cancel()
        for (srv, _, _), task in zip(servers, tasks, strict=True):
            if not task.done():
                srv.force_exit = True
                task.cancel()
        await service.stop()
        sock.close()
        if probe_sock is not None:
            probe_sock.close()


def _server(app: object) -> _Server:
    return _Server(
        uvicorn.Config(
            app,  # type: ignore[arg-type]
            log_config=None,  # the CLI configured logging; uvicorn must not replace it
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=HTTP_SHUTDOWN_TIMEOUT,
        )
    )
