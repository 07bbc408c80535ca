"""``callboard operator``: run the Kubernetes operator for AgentSession objects.

Each flag also reads one ``CALLBOARD_*`` environment variable (shown by ``--help``), so
the Deployment configures it with ``env:``. The lease namespace and this replica's
identity default to the downward-API variables ``POD_NAMESPACE`` and ``POD_NAME``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from callboard.errors import ConfigurationError
from callboard.registry import DEFAULT_KEY_PREFIX

__all__ = ["command"]


def _split_namespaces(values: tuple[str, ...]) -> tuple[str, ...]:
    names: list[str] = []
    for value in values:
        names.extend(part for part in value.replace(",", " ").split() if part)
    return tuple(dict.fromkeys(names))


def _port(value: int) -> int | None:
    return value or None


@click.command("operator")
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    envvar="CALLBOARD_NAMESPACES",
    show_envvar=True,
    help="Watch only this namespace (repeat, or comma-separate in the variable). None: the whole cluster.",
)
@click.option(
    "--redis-url",
    envvar="CALLBOARD_REDIS_URL",
    show_envvar=True,
    default="redis://localhost:6379/0",
    show_default=True,
    help="Session registry shared with the agent nodes.",
)
@click.option(
    "--key-prefix",
    envvar="CALLBOARD_KEY_PREFIX",
    show_envvar=True,
    default=DEFAULT_KEY_PREFIX,
    show_default=True,
    help="Registry key prefix (must match the nodes').",
)
@click.option(
    "--ttl",
    "registry_ttl",
    envvar="CALLBOARD_TTL",
    show_envvar=True,
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds start requests and close flags live in the registry.",
)
@click.option(
    "--adopt-namespace",
    envvar="CALLBOARD_ADOPT_NAMESPACE",
    show_envvar=True,
    default=None,
    help="Mirror sessions started outside Kubernetes as AgentSessions in this namespace "
    "(must be watched). Unset: no adoption.",
)
@click.option(
    "--adopt-ttl",
    envvar="CALLBOARD_ADOPT_TTL",
    show_envvar=True,
    type=int,
    default=300,
    show_default=True,
    help="ttlSecondsAfterFinished of adopted objects.",
)
@click.option(
    "--adopt-grace",
    envvar="CALLBOARD_ADOPT_GRACE",
    show_envvar=True,
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds a session stays unclaimed before it is adopted or closed as a leftover.",
)
@click.option(
    "--placement",
    envvar="CALLBOARD_PLACEMENT",
    show_envvar=True,
    type=click.Choice(["packed", "spread"]),
    default="packed",
    show_default=True,
    help="packed: fill busy nodes first; spread: emptiest node first.",
)
@click.option(
    "--start-timeout",
    envvar="CALLBOARD_START_TIMEOUT",
    show_envvar=True,
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds a node has to confirm a start before it is tried elsewhere.",
)
@click.option(
    "--max-start-attempts",
    envvar="CALLBOARD_MAX_START_ATTEMPTS",
    show_envvar=True,
    type=int,
    default=3,
    show_default=True,
    help="Start attempts before an AgentSession is Failed.",
)
@click.option(
    "--delete-timeout",
    envvar="CALLBOARD_DELETE_TIMEOUT",
    show_envvar=True,
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds a delete waits for its session to close before releasing the finalizer.",
)
@click.option(
    "--sync-interval",
    envvar="CALLBOARD_SYNC_INTERVAL",
    show_envvar=True,
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between two reads of the registry mirrored into status.",
)
@click.option(
    "--heartbeat-refresh",
    envvar="CALLBOARD_HEARTBEAT_REFRESH",
    show_envvar=True,
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between lastHeartbeatAt/metrics updates of a Running object.",
)
@click.option(
    "--lost-grace",
    envvar="CALLBOARD_LOST_GRACE",
    show_envvar=True,
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds a session must stay missing with its node before it is Lost.",
)
@click.option(
    "--pod-annotations/--no-pod-annotations",
    envvar="CALLBOARD_POD_ANNOTATIONS",
    show_envvar=True,
    default=True,
    show_default=True,
    help="Keep pod-deletion-cost and safe-to-evict of agent pods.",
)
@click.option(
    "--pod-annotation-interval",
    envvar="CALLBOARD_POD_ANNOTATION_INTERVAL",
    show_envvar=True,
    type=float,
    default=5.0,
    show_default=True,
    help="Minimum seconds between two patches of one pod.",
)
@click.option(
    "--leader-election/--no-leader-election",
    envvar="CALLBOARD_LEADER_ELECTION",
    show_envvar=True,
    default=True,
    show_default=True,
    help="Hold a Lease: only one replica is active.",
)
@click.option(
    "--lease-namespace",
    envvar="CALLBOARD_LEASE_NAMESPACE",
    show_envvar=True,
    default=None,
    help="Namespace of the Lease  [default: $POD_NAMESPACE, else default]",
)
@click.option(
    "--lease-name",
    envvar="CALLBOARD_LEASE_NAME",
    show_envvar=True,
    default="callboard-operator",
    show_default=True,
    help="Name of the Lease.",
)
@click.option(
    "--lease-duration",
    envvar="CALLBOARD_LEASE_DURATION",
    show_envvar=True,
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds without renewal after which a standby takes over (renewed every third).",
)
@click.option(
    "--listen-host",
    envvar="CALLBOARD_LISTEN_HOST",
    show_envvar=True,
    default="0.0.0.0",
    show_default=True,
    help="Address of the liveness and metrics listeners.",
)
@click.option(
    "--liveness-port",
    envvar="CALLBOARD_LIVENESS_PORT",
    show_envvar=True,
    type=int,
    default=8080,
    show_default=True,
    help="kopf liveness endpoint /healthz (0: off).",
)
@click.option(
    "--metrics-port",
    envvar="CALLBOARD_METRICS_PORT",
    show_envvar=True,
    type=int,
    default=9090,
    show_default=True,
    help="Prometheus /metrics (0: off).",
)
def command(
    namespaces: tuple[str, ...],
    redis_url: str,
    key_prefix: str,
    registry_ttl: float,
    adopt_namespace: str | None,
    adopt_ttl: int,
    adopt_grace: float,
    placement: str,
    start_timeout: float,
    max_start_attempts: int,
    delete_timeout: float,
    sync_interval: float,
    heartbeat_refresh: float,
    lost_grace: float,
    pod_annotations: bool,
    pod_annotation_interval: float,
    leader_election: bool,
    lease_namespace: str | None,
    lease_name: str,
    lease_duration: float,
    listen_host: str,
    liveness_port: int,
    metrics_port: int,
) -> None:
    """Run the AgentSession operator (kopf).

    `kubectl apply` of an AgentSession places the session on an agent node with free
    capacity through the registry and follows it to Running; `kubectl delete` closes it
    wherever it runs. Status mirrors the registry; sessions started elsewhere can be
    adopted; agent pods carry pod-deletion-cost and safe-to-evict for autoscaling.
    Credentials: the pod's service account, else $KUBECONFIG or ~/.kube/config.
    """
    from callboard.kube.placing.policy import Strategy
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

    settings = Settings(
        namespaces=_split_namespaces(namespaces),
        registry=RegistrySettings(url=redis_url, key_prefix=key_prefix, ttl=registry_ttl),
        placement=PlacementSettings(
            strategy=Strategy(placement), start_timeout=start_timeout, max_attempts=max_start_attempts
        ),
        sync=SyncSettings(interval=sync_interval, heartbeat_refresh=heartbeat_refresh, lost_grace=lost_grace),
        deletion=DeletionSettings(timeout=delete_timeout),
        adoption=AdoptionSettings(
            namespace=adopt_namespace or None, grace=adopt_grace, ttl_seconds_after_finished=adopt_ttl
        ),
        pods=PodSettings(enabled=pod_annotations, min_interval=pod_annotation_interval),
        leader=LeaderSettings(
            enabled=leader_election,
            namespace=lease_namespace or os.environ.get("POD_NAMESPACE") or "default",
            name=lease_name,
            lease_duration=lease_duration,
            renew_interval=lease_duration / 3,
            identity=os.environ.get("POD_NAME") or None,
        ),
        serving=ServingSettings(
            host=listen_host, liveness_port=_port(liveness_port), metrics_port=_port(metrics_port)
        ),
    )
    from callboard.kube.autoscaling.policy import AutoscaleSettings

    try:
        settings.autoscale = AutoscaleSettings.from_env(
            os.environ, default_namespace=os.environ.get("POD_NAMESPACE") or "default"
        )
        settings.validate()
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc

    from callboard.kube.running.entrypoint import LeadershipLost, run

    # kopf logs every handler call at INFO ("Handler 'observe' succeeded": one line per watch
    # event) and its probe server every request; keep warnings, unless debugging.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("kopf.objects", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)

    try:
        asyncio.run(run(settings))
    except LeadershipLost as exc:
        click.echo(f"callboard operator: {exc}", err=True)
        sys.exit(1)
