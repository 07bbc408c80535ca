"""The node HTTP API (FastAPI) over an :class:`~callboard.launcher.AgentLauncher`.

Layer: imports the launcher and the registry; imported by the CLI and the demo.
"""

from callboard.server.app import create_app
from callboard.server.client import NodeApiError, NodeClient
from callboard.server.hooks import AuthorizationHooks
from callboard.server.metrics import NODE_HEADER, NodeMetrics
from callboard.server.node import ServeSettings, build_launcher
from callboard.server.runner import NodeServer
from callboard.server.settings import ServerSettings

__all__ = [
    "NODE_HEADER",
    "AuthorizationHooks",
    "NodeApiError",
    "NodeClient",
    "NodeMetrics",
    "NodeServer",
    "ServeSettings",
    "ServerSettings",
    "build_launcher",
    "create_app",
]
