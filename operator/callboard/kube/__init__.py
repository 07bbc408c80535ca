"""The Kubernetes operator: AgentSession objects drive and mirror agent sessions.

Needs the ``kube`` extra (``pip install 'callboard[kube]'``): kopf and its aiohttp.
``callboard operator`` runs it; :func:`run` does the same from Python.
"""

from callboard.kube.placing.policy import Strategy
from callboard.kube.resource.phases import Phase, Reason
from callboard.kube.running.entrypoint import LeadershipLost, run
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
