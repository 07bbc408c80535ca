"""Running the operator: credentials, leader lease, probes, metrics, then kopf.

:func:`run` is what ``callboard operator`` calls. In order:

1. log in (service account in a pod, else ``$KUBECONFIG``/``~/.kube/config``);
2. serve ``/metrics`` (all the time) and, while waiting for the leader lease, a liveness
   endpoint that says "standby" (kopf's own takes the port over once this replica leads);
3. hold the Lease; start the runtime (registry, loops); run kopf until SIGTERM/SIGINT or
   until the lease is lost;
4. stop kopf, the loops, and release the lease so a standby takes over at once.

The Lease is renewed from a thread with its own event loop and its own client (a connection
pool), with calls bounded by the renew deadline (:mod:`callboard.kube.k8s.lease_thread`): neither
kopf's start-up, a slow list, a burst that holds the main loop, nor a pool saturated by
placement can delay a renewal. Renewals start the moment the lease is held. Events have
one too (a few connections): a burst's Events cannot delay the status patches. The main
client and the registry handle refuse writes as soon as the lease is no longer
:meth:`~callboard.kube.k8s.lease.LeaderLease.valid`, before the loops have even stopped.

Exit status: 0 after a signal, 1 when the lease was lost (the pod restarts as a standby).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
from aiohttp import web

from callboard._aio import guarded_task, stop_tasks
from callboard.errors import CallboardError
from callboard.kube.autoscaling.loop import AutoscalerMetrics, run_autoscaler
from callboard.kube.autoscaling.policy import ScalingMode
from callboard.kube.k8s.client import KubeApi
from callboard.kube.k8s.event_poster import CONNECTIONS as EVENT_CONNECTIONS
from callboard.kube.k8s.lease import default_identity
from callboard.kube.k8s.lease_thread import ThreadedLease
from callboard.kube.running.kopf_handlers import build_kopf_registry, build_kopf_settings
from callboard.kube.running.wiring import Runtime
from callboard.kube.settings import Settings
from callboard.kube.views.metrics import CONTENT_TYPE, OperatorMetrics
from callboard.registry import store_from_url

__all__ = ["LeadershipLost", "login", "run"]

logger = logging.getLogger(__name__)


class LeadershipLost(CallboardError, RuntimeError):
    """Another replica holds the lease now: this process must stop."""


def login() -> Any:
    """The pod's service account; else the kubeconfig, through the kubernetes client when it is
    installed (it runs exec plugins: EKS, GKE, AKS), else kopf's minimal kubeconfig reader."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings)
    if info is None:
        try:
            info = kopf.login_via_client(settings=settings, logger=logger)
        except kopf.LoginError:
            info = None
    if info is None:
        info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no Kubernetes credentials: not in a pod and no KUBECONFIG or ~/.kube/config")
    return info


@contextlib.asynccontextmanager
async def _http(
    host: str, port: int | None, routes: dict[str, Callable[[web.Request], Any]]
) -> AsyncIterator[None]:
    if port is None:
        yield
        return
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()


async def run(
    settings: Settings,
    *,
    login_fn: Callable[[], Any] = login,
    metrics: OperatorMetrics | None = None,
    stop_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator until a signal, ``stop_flag``, or the loss of the leader lease."""
    settings.validate()
    metrics = metrics if metrics is not None else OperatorMetrics()
    # Once per process: a new leadership term must not register the same gauges again.
    autoscaler_metrics = AutoscalerMetrics(metrics.registry)
    serving = settings.serving

    async def render_metrics(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def standby(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    identity = settings.leader.identity or default_identity()
    async with (
        KubeApi(login_fn) as api,
        KubeApi(login_fn, connections=EVENT_CONNECTIONS) as events_api,
        _http(serving.host, serving.metrics_port, {"/metrics": render_metrics}),
        contextlib.AsyncExitStack() as stack,
    ):
        lease: ThreadedLease | None = None
        if settings.leader.enabled:
            lease = await stack.enter_async_context(
                ThreadedLease(
                    lambda: KubeApi(login_fn, timeout=settings.leader.renew_deadline),
                    settings.leader,
                    identity=identity,
                )
            )
            async with _http(serving.host, serving.liveness_port, {"/healthz": standby}):
                await lease.acquire()
            api.guard = lease.valid
            events_api.guard = lease.valid
            metrics.leader.set(1)
        try:
            await _lead(
                settings,
                api=api,
                metrics=metrics,
                autoscaler_metrics=autoscaler_metrics,
                identity=identity,
                login_fn=login_fn,
                lease=lease,
                stop_flag=stop_flag,
                events_api=events_api,
            )
        finally:
            metrics.leader.set(0)
            if lease is not None:
                await lease.release()


async def _lead(
    settings: Settings,
    *,
    api: KubeApi,
    metrics: OperatorMetrics,
    autoscaler_metrics: AutoscalerMetrics,
    identity: str,
    login_fn: Callable[[], Any],
    lease: ThreadedLease | None,
    stop_flag: asyncio.Event | None,
    events_api: KubeApi | None = None,
) -> None:
    store = store_from_url(settings.registry.url, key_prefix=settings.registry.key_prefix)
    runtime = Runtime(
        settings=settings,
        api=api,
        store=store,
        metrics=metrics,
        instance=identity,
        guard=None if lease is None else lease.valid,
        fencing_token=None if lease is None else lease.transitions,
        advance_term=None if lease is None else lease.advance,
        events_api=events_api,
    )
    await runtime.start()
    stop = asyncio.Event()
    watchers: list[asyncio.Task[None]] = []
    if lease is not None:
        # The renewals run on the lease's own thread since it was acquired; this only relays a loss.
        watchers.append(
            guarded_task(_step_down(lease.lost, stop, metrics), name="lease-watch", logger=logger)
        )
    if stop_flag is not None:
        watchers.append(guarded_task(_relay(stop_flag, stop), name="stop-flag", logger=logger))
    if settings.autoscale.mode is not ScalingMode.OFF:
        watchers.append(
            guarded_task(
                run_autoscaler(
                    settings=settings.autoscale,
                    registry=runtime.registry,
                    api=api,
                    stop=stop,
                    metrics=autoscaler_metrics,
                    pending=lambda: runtime.cache.pending(settings.autoscale.pool),
                ),
                name="autoscaler",
                logger=logger,
            )
        )
    liveness = (
        None
        if settings.serving.liveness_port is None
        else f"http://{settings.serving.host}:{settings.serving.liveness_port}/healthz"
    )
    try:
        await kopf.operator(
            registry=build_kopf_registry(runtime, login=login_fn, stop_flag=stop),
            settings=build_kopf_settings(clusterwide=settings.clusterwide),
            clusterwide=settings.clusterwide,
            namespaces=list(settings.namespaces),
            standalone=True,
            liveness_endpoint=liveness,
            stop_flag=stop,
        )
    finally:
        await stop_tasks(watchers, timeout=2.0, logger=logger)
        await runtime.stop()
    if lease is not None and lease.lost.is_set():
        raise LeadershipLost(f"lost the leader lease {settings.leader.name}")


async def _step_down(lost: asyncio.Event, stop: asyncio.Event, metrics: OperatorMetrics) -> None:
    """The lease is lost: say so at once (``callboard_operator_leader`` 0), then stop kopf and
    the loops (the guards refuse their writes already)."""
    await lost.wait()
    metrics.leader.set(0)
    stop.set()


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
