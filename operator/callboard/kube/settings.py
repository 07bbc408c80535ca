"""Settings of the operator: one dataclass per concern, gathered in :class:`Settings`.

Every field has a type, a default and a docstring with its unit and the reason for the
default. ``callboard operator`` maps its flags (and ``CALLBOARD_*`` variables) onto these;
nothing below reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callboard.errors import ConfigurationError
from callboard.kube.autoscaling.policy import AutoscaleSettings
from callboard.kube.placing.policy import Strategy
from callboard.registry import DEFAULT_KEY_PREFIX

__all__ = [
    "AdoptionSettings",
    "DeletionSettings",
    "LeaderSettings",
    "PlacementSettings",
    "PodSettings",
    "RegistrySettings",
    "ServingSettings",
    "Settings",
    "SyncSettings",
]


@dataclass
class RegistrySettings:
    url: str = "redis://localhost:6379/0"
    """The session registry shared with the agent nodes (``redis://``, ``rediss://``, ``unix://``)."""
    key_prefix: str = DEFAULT_KEY_PREFIX
    """Key prefix of the registry; must match the nodes'."""
    ttl: float = 30.0
    """Seconds a start request or close flag the operator sends stays in the registry: the
    registry's default node TTL, so a node that reconnects within it still sees them."""


@dataclass
class PlacementSettings:
    strategy: Strategy = Strategy.PACKED
    """``packed`` fills busy nodes first (idle ones can be scaled down); ``spread`` the emptiest."""
    start_timeout: float = 10.0
    """Seconds a node has to confirm a start request before the session is tried elsewhere.
    An agent joins a call in a second or two; ten leaves room for a cold start."""
    max_attempts: int = 3
    """Start attempts (on different nodes where possible) before the object is Failed."""
    node_freshness: float = 15.0
    """A node whose last heartbeat is older (seconds) is not given new sessions: half the
    registry's default TTL, so a node that stopped heartbeating is avoided before it expires."""
    workers: int = 64
    """Objects placed concurrently. Each mostly waits on the node; 64 keeps a burst of 1,000
    new objects moving without flooding the API server."""
    poll_interval: float = 0.1
    """Seconds between the batched reads (one MGET for all pending starts) of start answers."""


@dataclass
class SyncSettings:
    interval: float = 1.0
    """Seconds between two reads of the whole registry (one SCAN+MGET of sessions and nodes)
    mirrored into the objects' status. Changes are patched only when they matter."""
    heartbeat_refresh: float = 60.0
    """Seconds between updates of ``status.lastHeartbeatAt``/``metrics`` of a Running object
    (jittered by up to 25%): 1,000 sessions cost ~17 status patches a second at 60."""
    lost_grace: float = 10.0
    """Seconds a session must stay missing, with its node gone, before it is declared Lost
    (counted after the node's TTL expired its records): rides out a registry restart or
    flush, after which the nodes write their sessions back within one heartbeat (~10 s at
    the default 30 s TTL)."""
    concurrency: int = 16
    """API calls a sync cycle makes at once (status patches, deletes, adoptions)."""


@dataclass
class DeletionSettings:
    timeout: float = 60.0
    """Seconds a deleted object waits for its session to close (counted from the later of the
    deletion and the operator's start) before the finalizer is released anyway, with a
    Warning Event. The owner died or the registry is down: a delete must not hang forever."""


@dataclass
class AdoptionSettings:
    namespace: str | None = None
    """Namespace where sessions started outside Kubernetes appear as AgentSession objects;
    None turns adoption off."""
    grace: float = 3.0
    """Seconds a session must stay unclaimed by any object before it is adopted (or, if the
    operator placed it for an object now gone, closed): a placement in flight is not an orphan."""
    ttl_seconds_after_finished: int = 300
    """``spec.ttlSecondsAfterFinished`` of adopted objects: they go away once their session ended."""
    prime_timeout: float = 30.0
    """Seconds to wait, at start, for the watch to deliver every existing object before
    adopting or closing anything anyway (normally it takes well under a second)."""


@dataclass
class PodSettings:
    enabled: bool = True
    """Keep pod-deletion-cost and safe-to-evict of agent pods in step with their sessions."""
    min_interval: float = 5.0
    """Seconds between two patches of one pod: a pod running short sessions must not cost a
    PATCH per session; its last count is written once the interval passed."""


@dataclass
class LeaderSettings:
    enabled: bool = True
    """Run only while holding a coordination.k8s.io Lease: one active replica."""
    namespace: str = "default"
    """Namespace of the Lease (the operator's own, from ``POD_NAMESPACE``, in a cluster)."""
    name: str = "callboard-operator"
    lease_duration: float = 15.0
    """Seconds after its last renewal that a lease is considered abandoned (client-go's default)."""
    renew_interval: float = 5.0
    """Seconds between renewals; a third of the duration tolerates two failed renewals."""
    identity: str | None = None
    """This replica's name in the Lease (default: ``POD_NAME``, else host name + random)."""


@dataclass
class ServingSettings:
    host: str = "0.0.0.0"
    """Address of the probe and metrics listeners (all interfaces: kubelet and Prometheus)."""
    liveness_port: int | None = 8080
    """kopf's liveness endpoint (``/healthz``); None turns it off."""
    metrics_port: int | None = 9090
    """Prometheus ``/metrics``; None turns it off."""


@dataclass
class Settings:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means the whole cluster."""
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    deletion: DeletionSettings = field(default_factory=DeletionSettings)
    adoption: AdoptionSettings = field(default_factory=AdoptionSettings)
    pods: PodSettings = field(default_factory=PodSettings)
    leader: LeaderSettings = field(default_factory=LeaderSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    autoscale: AutoscaleSettings = field(default_factory=AutoscaleSettings)
    """The agent pool's buffer policy (off by default; the chart sets CALLBOARD_AUTOSCALE*)."""

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    def watches(self, namespace: str) -> bool:
        return self.clusterwide or namespace in self.namespaces

    def validate(self) -> None:
        """Raise :class:`~callboard.errors.ConfigurationError` for settings that cannot work."""
        self.autoscale.validate()
        adoption = self.adoption.namespace
        if adoption is not None and not self.watches(adoption):
            raise ConfigurationError(
                f"the adoption namespace {adoption!r} must be one of the watched namespaces "
                f"({', '.join(self.namespaces)}): the operator must see the objects it creates"
            )
        if self.placement.max_attempts < 1:
            raise ConfigurationError("max start attempts must be >= 1")
        for name, value in (
            ("start timeout", self.placement.start_timeout),
            ("sync interval", self.sync.interval),
            ("delete timeout", self.deletion.timeout),
            ("registry ttl", self.registry.ttl),
        ):
            if value <= 0:
                raise ConfigurationError(f"{name} must be > 0")
        if self.registry.ttl < self.placement.start_timeout:
            raise ConfigurationError(
                "the registry ttl must be >= the start timeout: a start request must outlive its wait"
            )
        if self.leader.enabled and self.leader.renew_interval >= self.leader.lease_duration:
            raise ConfigurationError("the lease renew interval must be shorter than its duration")
