"""The in-process node: AgentLauncher runs this node's agent sessions over a SessionRegistry.

Layer: imports only :mod:`callboard.registry` (and the shared errors/helpers); the HTTP API,
sidecar, operator and CLI build on it.
"""

from callboard.launcher.agent import (
    Agent,
    AgentStartError,
    CreateAgent,
    JoinCall,
    SupportsToDict,
    agent_metrics,
)
from callboard.launcher.launcher import AgentLauncher
from callboard.launcher.maintenance import FixedRateStats, run_fixed_rate
from callboard.launcher.session import AgentSession, CloseReason
from callboard.launcher.settings import LauncherSettings
from callboard.launcher.shutdown import ShutdownBudget
from callboard.launcher.start_requests import StartRejection
from callboard.launcher.stats import LauncherStats

__all__ = [
    "Agent",
    "AgentLauncher",
    "AgentSession",
    "AgentStartError",
    "CloseReason",
    "CreateAgent",
    "FixedRateStats",
    "JoinCall",
    "LauncherSettings",
    "LauncherStats",
    "ShutdownBudget",
    "StartRejection",
    "SupportsToDict",
    "agent_metrics",
    "run_fixed_rate",
]
