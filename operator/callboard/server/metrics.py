"""Prometheus metrics of one node, on the app's own :class:`CollectorRegistry`.

Never the process-wide default registry: a test (or the in-memory demo) runs several apps
in one process, and each must count only its own. Launcher figures are read from
:class:`~callboard.launcher.LauncherStats` at scrape time, so they cost nothing between
scrapes; HTTP figures are counted by a small ASGI middleware keyed by route template (not
raw path, which would give one series per session id).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callboard.launcher import AgentLauncher

__all__ = ["CONTENT_TYPE_LATEST", "NODE_HEADER", "HttpMetricsMiddleware", "NodeMetrics"]

#: Response header naming the node that answered (bodies carry the *session's* node_id).
NODE_HEADER = "X-Callboard-Node"
#: Request latency buckets in seconds: a start or a registry read on loopback takes
#: milliseconds; a start that waits on a slow create_agent can take seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _LauncherCollector(Collector):
    def __init__(self, launcher: AgentLauncher[Any]) -> None:
        self.launcher = launcher

    def collect(self) -> Iterator[Metric]:
        launcher = self.launcher
        stats = launcher.stats
        node = launcher.registry.node
        gauges = [
            ("callboard_sessions_active", "Live sessions on this node.", len(launcher.sessions)),
            ("callboard_node_draining", "1 while the node drains.", float(launcher.draining)),
            (
                "callboard_registry_up",
                "1 if the last heartbeat reached the registry.",
                float(stats.registry_ok),
            ),
            (
                "callboard_maintenance_last_duration_seconds",
                "Duration of the last maintenance cycle.",
                stats.maintenance.last_duration,
            ),
        ]
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        if node.capacity is not None:
            yield GaugeMetricFamily(
                "callboard_node_capacity", "Max concurrent sessions.", value=node.capacity
            )
            free = 0 if launcher.draining else max(node.capacity - len(launcher.sessions), 0)
            yield GaugeMetricFamily(
                "callboard_node_free_slots",
                "Sessions the node can still take (0 while draining).",
                value=free,
            )
        if stats.last_heartbeat_at is not None:
            yield GaugeMetricFamily(
                "callboard_heartbeat_age_seconds",
                "Seconds since the last successful heartbeat.",
                value=max(time.time() - stats.last_heartbeat_at, 0.0),
            )
        yield CounterMetricFamily("callboard_sessions_started", "Sessions started.", value=stats.started)
        counters = [
            ("callboard_sessions_closed", "Sessions ended, by reason.", "reason", stats.closed),
            ("callboard_sessions_rejected", "Refused starts, by reason.", "reason", stats.rejected),
            ("callboard_start_requests", "Answers to start requests.", "result", stats.start_requests),
            ("callboard_maintenance_errors", "Failed maintenance steps.", "step", stats.errors),
        ]
        for name, doc, label, values in counters:
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, count in sorted(values.items()):
                family.add_metric([key], count)
            yield family
        yield CounterMetricFamily(
            "callboard_maintenance_cycles", "Maintenance cycles run.", value=stats.maintenance.cycles
        )
        yield CounterMetricFamily(
            "callboard_maintenance_skipped_ticks",
            "Maintenance ticks skipped because a cycle overran.",
            value=stats.maintenance.skipped_ticks,
        )


class NodeMetrics:
    """The metrics of one app: HTTP counters plus the launcher's figures."""

    def __init__(self, launcher: AgentLauncher[Any]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "callboard_http_requests",
            "HTTP requests, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "callboard_http_request_duration_seconds",
            "HTTP request latency, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LauncherCollector(launcher))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HttpMetricsMiddleware:
    """Counts requests per route template and tags each response with the answering node."""

    def __init__(self, app: ASGIApp, *, metrics: NodeMetrics, node_id: str) -> None:
        self.app = app
        self.metrics = metrics
        self.node_header = (NODE_HEADER.lower().encode(), node_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tagged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), self.node_header]
            await send(message)

        try:
            await self.app(scope, receive, tagged_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
