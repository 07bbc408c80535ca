"""``create_app(launcher, settings)``: the FastAPI app of one node.

Everything the app needs comes in as arguments (the launcher, the settings); nothing is
read from the environment here, and nothing is global, so a process can hold several apps
(tests, the in-memory demo). With ``manage_launcher`` the app's lifespan starts and stops
the launcher, as the documented Vision Agents server does; :class:`~callboard.server.NodeServer`
manages it itself instead, to drain between "stop taking work" and "stop serving".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from callboard import __version__
from callboard._bearer import bearer_auth
from callboard._http import RequestLimits
from callboard.launcher import AgentLauncher
from callboard.server.errors import install_exception_handlers
from callboard.server.hooks import AuthorizationHooks
from callboard.server.metrics import NODE_HEADER, HttpMetricsMiddleware, NodeMetrics
from callboard.server.models import ErrorResponse
from callboard.server.routes import api_routes, probe_routes
from callboard.server.settings import ServerSettings

__all__ = ["create_app"]

DESCRIPTION = """\
The HTTP API of one callboard node: start agent sessions here, and see or close the
sessions of every node of the cluster. Every response carries the answering node's id in
the `X-Callboard-Node` header; session bodies carry `node_id`, the node that runs it.
"""


def create_app(
    launcher: AgentLauncher[Any],
    settings: ServerSettings | None = None,
    *,
    manage_launcher: bool = True,
    hooks: AuthorizationHooks | None = None,
) -> FastAPI:
    """The node API over ``launcher``; ``settings`` default to :class:`ServerSettings()`.

    ``hooks`` are the four authorization hooks (:mod:`callboard.server.hooks`); by default the
    ones the settings name by import path, else allow-all.
    """
    settings = settings if settings is not None else ServerSettings()
    hooks = hooks if hooks is not None else AuthorizationHooks.from_settings(settings)
    token = settings.bearer_token

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_launcher:
            await launcher.start()
        try:
            yield
        finally:
            if manage_launcher:
                await launcher.stop()

    app = FastAPI(
        title="callboard node API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    metrics = NodeMetrics(launcher)
    app.state.launcher = launcher
    app.state.metrics = metrics
    install_exception_handlers(app)
    app.dependency_overrides.update(hooks.overrides())

    protected: dict[str, Any] = {}
    if token is not None:
        protected = {
            "dependencies": [Depends(bearer_auth(token))],
            "responses": {401: {"model": ErrorResponse, "description": "Missing or invalid bearer token"}},
        }
    app.include_router(probe_routes(launcher, settings))
    app.include_router(api_routes(launcher, settings, metrics), **protected)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=False,  # the token is a header; cookies are never needed
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=[NODE_HEADER],
        )
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics, node_id=launcher.node_id)
    # Outermost: a refused body is counted by neither the routes nor the metrics' handlers.
    app.add_middleware(
        RequestLimits, max_body_bytes=settings.max_body_bytes, error_body=lambda detail: {"detail": detail}
    )
    return app
