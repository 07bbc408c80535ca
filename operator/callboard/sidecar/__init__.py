"""The sidecar registry agent: the registry node of an agent pod, for apps in any language.

The app talks HTTP to ``callboard sidecar`` on localhost (register and end sessions, follow
one event stream); the sidecar talks to the registry store, owns the node record, and
drains on SIGTERM, as a game server talks to the Agones SDK server. Python apps may use
:class:`SidecarClient`.
"""

from callboard.sidecar.client import (
    DEFAULT_URL,
    PROCESS_INSTANCE_ID,
    LiveSession,
    SidecarClient,
    SidecarEvent,
)
from callboard.sidecar.errors import (
    AppInstanceReplacedError,
    SidecarRequestError,
    SidecarUnavailableError,
    StartRequestMismatchError,
    UnknownStartRequestError,
)
from callboard.sidecar.events import Event, EventLog, EventType
from callboard.sidecar.settings import SidecarSettings

__all__ = [
    "DEFAULT_URL",
    "PROCESS_INSTANCE_ID",
    "AppInstanceReplacedError",
    "Event",
    "EventLog",
    "EventType",
    "LiveSession",
    "SidecarClient",
    "SidecarEvent",
    "SidecarRequestError",
    "SidecarSettings",
    "SidecarUnavailableError",
    "StartRequestMismatchError",
    "UnknownStartRequestError",
]
