"""callboard: every real-time AI agent session a cluster-wide fact.

The public API lives here; submodules are implementation details.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from callboard.errors import (
    CallboardError,
    CapacityError,
    ConfigurationError,
    DeposedLeaderError,
    InvalidIdError,
    InvalidValueError,
    MalformedRecordError,
    MaxConcurrentSessionsExceeded,
    MaxSessionsPerCallExceeded,
    NodeDrainingError,
    NodeIdInUseError,
    SessionConflictError,
    SessionNotFoundError,
    StartRequestGoneError,
    StoreError,
    StoreUnavailableError,
)
from callboard.launcher import (
    Agent,
    AgentLauncher,
    AgentSession,
    AgentStartError,
    CloseReason,
    CreateAgent,
    JoinCall,
    LauncherSettings,
)
from callboard.registry import (
    DEFAULT_KEY_PREFIX,
    CloseRequest,
    EndedInfo,
    InMemorySessionKVStore,
    NodeInfo,
    RedisSessionKVStore,
    SessionInfo,
    SessionKVStore,
    SessionRegistry,
    SessionStatus,
    store_from_url,
)

try:
    __version__ = _version("callboard")
except _PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "Agent",
    "AgentLauncher",
    "AgentSession",
    "AgentStartError",
    "CallboardError",
    "CapacityError",
    "CloseReason",
    "CloseRequest",
    "ConfigurationError",
    "CreateAgent",
    "DeposedLeaderError",
    "EndedInfo",
    "InMemorySessionKVStore",
    "InvalidIdError",
    "InvalidValueError",
    "JoinCall",
    "LauncherSettings",
    "MalformedRecordError",
    "MaxConcurrentSessionsExceeded",
    "MaxSessionsPerCallExceeded",
    "NodeDrainingError",
    "NodeIdInUseError",
    "NodeInfo",
    "RedisSessionKVStore",
    "SessionConflictError",
    "SessionInfo",
    "SessionKVStore",
    "SessionNotFoundError",
    "SessionRegistry",
    "SessionStatus",
    "StartRequestGoneError",
    "StoreError",
    "StoreUnavailableError",
    "__version__",
    "store_from_url",
]
