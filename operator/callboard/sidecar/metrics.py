"""Prometheus metrics of the sidecar, read from the service at scrape time.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (never the process-wide
default), so several sidecars in one process (the tests) do not collide, and the figures are
computed when scraped instead of being updated all over the service.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from callboard.sidecar.service import SidecarService

__all__ = ["SidecarCollector", "metrics_registry"]


class SidecarCollector(Collector):
    """Gauges of the node's state and counters of what happened since start."""

    def __init__(self, service: SidecarService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        status = service.status()
        stats = service.stats
        labels = ["node_id"]
        node = [status.node_id]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"callboard_sidecar_{name}", doc, labels=labels)
            family.add_metric(node, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"callboard_sidecar_{name}", doc, labels=labels)
            family.add_metric(node, value)
            return family

        def counter_by(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
            family = CounterMetricFamily(f"callboard_sidecar_{name}", doc, labels=[*labels, label])
            for key, value in sorted(values.items()):
                family.add_metric([*node, key], value)
            return family

        yield gauge("sessions", "Live sessions of this node.", status.active)
        yield gauge("capacity", "Maximum concurrent sessions of this node.", status.capacity)
        yield gauge(
            "free_slots", "Sessions this node can still take (0 when draining).",
            0 if status.draining else max(status.capacity - status.active, 0),
        )  # fmt: skip
        yield gauge("draining", "1 while the node drains.", float(status.draining))
        yield gauge("connected", "1 once connected to the registry store.", float(status.connected))
        yield gauge(
            "app_healthy", "0 while the app's health URL fails past the threshold.", float(status.app_healthy)
        )
        yield gauge("event_consumers", "Readers of the event stream right now.", status.event_consumers)
        yield gauge(
            "pending_start_requests",
            "Start requests the app has not answered.",
            status.pending_start_requests,
        )
        yield counter("sessions_registered", "Sessions registered (restores included).", stats.registered)
        yield counter(
            "sessions_restored", "Sessions re-asserted by the app after a sidecar restart.", stats.restored
        )
        yield counter_by("sessions_ended", "Sessions ended, by who ended them.", "by", stats.ended)
        yield counter_by(
            "registrations_refused", "Registrations refused, by reason.", "reason", stats.refused
        )
        yield counter_by("events", "Events put on the app's stream, by type.", "type", stats.events)
        yield counter("heartbeats", "Successful heartbeats.", stats.heartbeats)
        yield counter(
            "heartbeat_failures", "Failed heartbeats (store unreachable).", stats.heartbeat_failures
        )
        yield counter("app_probes", "Probes of the app's health URL.", stats.app_probes)
        yield counter(
            "app_probe_failures", "Failed probes of the app's health URL.", stats.app_probe_failures
        )
        yield counter(
            "app_unhealthy_cleanups", "Times the sessions of an app that looked dead were removed.",
            stats.app_unhealthy_cleanups,
        )  # fmt: skip
        yield counter(
            "app_restarts", "Times a new app instance replaced the previous one (its sessions removed).",
            stats.app_restarts,
        )  # fmt: skip


def metrics_registry(service: SidecarService) -> CollectorRegistry:
    """A fresh registry holding only this service's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SidecarCollector(service))
    return registry
