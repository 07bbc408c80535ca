"""The Kubernetes operator: AgentSession objects drive and mirror agent sessions.

Needs the ``kube`` extra (``pip install 'callboard[kube]'``): kopf and its aiohttp.
``callboard operator`` runs it; :func:`run` does the same from Python.
"""

from callboard.kube.phases import Phase, Reason
from callboard.kube.placement import Strategy
from callboard.kube.runner import LeadershipLost, run
from callboard.kube.settings import (
    AdoptionSettings,
    DeletionSettings,
    LeaderSettings,
    PlacementSettings,
    PodSettings,
    RegistrySettings,
    ServingSettings,
    Settings,
    SyncSettings,
)

__all__ = [
    "AdoptionSettings",
    "DeletionSettings",
    "LeaderSettings",
    "LeadershipLost",
    "Phase",
    "PlacementSettings",
    "PodSettings",
    "Reason",
    "RegistrySettings",
    "ServingSettings",
    "Settings",
    "Strategy",
    "SyncSettings",
    "run",
]
