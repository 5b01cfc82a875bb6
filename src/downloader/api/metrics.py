"""Prometheus metrics, read from the counters the job store keeps: cheap at any queue size.

Nothing here counts in process memory: every figure comes from Redis (the per-status indexes'
cardinalities, the namespace's stats hash, the worker heartbeats), so any API process or
worker renders the same numbers, and rendering costs a few round trips whatever the number
of jobs. `render(figures)` answers the text format for an HTTP route (the REST API's
`/metrics`, from its service's `admin`); `serve(figures, port)` starts prometheus_client's own
server (for `downloader worker --metrics-port`, from a `store.admin.StoreAdmin`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from downloader.store.keys import CANCELLED, DURATION_BUCKETS, STATUSES

if TYPE_CHECKING:
    from downloader.client.limits import LimitsReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
"""The label of every host the limits do not name: the label set stays bounded."""
_HOST_COUNTERS = (
    ("bytes", "downloader_host_bytes", "Bytes read from each host"),
    ("waits", "downloader_host_slot_waits", "Connections that waited for a host's slot"),
    ("pauses", "downloader_host_pauses", "Fleet-wide pauses of a host after a 429 or 503"),
)


class Figures(Protocol):
    """Where the figures come from: a `StoreAdmin`, or a service's `QueueAdmin`."""

    def queue_names(self) -> list[str]: ...
    def counts(self, queue_id: str) -> dict[str, int]: ...
    def stats(self) -> dict[str, str]: ...
    def live_workers(self) -> list[str]: ...


class StoreCollector(Collector):
    """Collects from the store on every scrape."""

    def __init__(self, store: Figures) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        store = self.store
        jobs = GaugeMetricFamily(
            "downloader_jobs", "Jobs in Redis by queue and status", labels=["queue", "status"]
        )
        for queue_id in store.queue_names():
            counts = store.counts(queue_id)
            for status in (*STATUSES, CANCELLED):
                jobs.add_metric([queue_id, status], counts[status])
        yield jobs

        stats = store.stats()
        ended = CounterMetricFamily(
            "downloader_jobs_ended",
            "Jobs that ended, by queue and outcome",
            labels=["queue", "outcome"],
        )
        for key, value in sorted(stats.items()):
            if key.startswith("ended:"):
                _, queue_id, outcome = key.rsplit(":", 2)
                ended.add_metric([queue_id, outcome], int(value))
        yield ended
        yield CounterMetricFamily(
            "downloader_downloaded_bytes",
            "Bytes of completed downloads",
            value=int(stats.get("bytes", 0)),
        )
        yield CounterMetricFamily(
            "downloader_retries",
            "Transfers retried after a transient failure",
            value=int(stats.get("retries", 0)),
        )
        buckets, cumulative = [], 0
        for le in (*(str(b) for b in DURATION_BUCKETS), "+Inf"):
            cumulative += int(stats.get(f"duration_le:{le}", 0))
            buckets.append((le, cumulative))
        yield HistogramMetricFamily(
            "downloader_job_duration_seconds",
            "From first start to end, per download",
            buckets=buckets,
            sum_value=float(stats.get("duration_sum", 0)),
        )
        yield GaugeMetricFamily(
            "downloader_live_workers",
            "Workers whose heartbeat is current",
            value=len(store.live_workers()),
        )


class HostFigures(Protocol):
    """Where the per-host figures come from: a service's `limits` (`client.limits`)."""

    def counters(self) -> dict[str, int]: ...
    def report(self) -> LimitsReport: ...


class HostCollector(Collector):
    """Per host, labelled by the hosts the limits name plus `other`: bytes, slot waits and
    pauses (counters), connections in use and the pause left (gauges)."""

    def __init__(self, limits: HostFigures) -> None:
        self.limits = limits

    def collect(self) -> Iterator[Metric]:
        counters = self.limits.counters()
        report = self.limits.report()
        named = sorted(report.limits.hosts)
        for what, name, text in _HOST_COUNTERS:
            family = CounterMetricFamily(name, text, labels=["host"])
            for label in (*named, OTHER):
                family.add_metric([label], counters.get(f"{what}:{label}", 0))
            yield family
        held: Counter[str] = Counter()
        paused = GaugeMetricFamily(
            "downloader_host_paused_seconds", "Seconds a host's pause lasts still", labels=["host"]
        )
        for use in report.usage:
            label = use.host if use.host in report.limits.hosts else OTHER
            held[label] += use.connections
            if label != OTHER:
                paused.add_metric([label], use.paused_for)
        connections = GaugeMetricFamily(
            "downloader_host_connections", "Connection slots held per host", labels=["host"]
        )
        for label in (*named, OTHER):
            connections.add_metric([label], held[label])
        yield connections
        yield paused


def registry_for(store: Figures, hosts: HostFigures | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    if hosts is not None:
        registry.register(HostCollector(hosts))
    return registry


def render(store: Figures, hosts: HostFigures | None = None) -> bytes:
    """The metrics in Prometheus' text format (`CONTENT_TYPE`), per host too when `hosts`
    is given."""
    return generate_latest(registry_for(store, hosts))


def serve(
    store: Figures, port: int, addr: str = "0.0.0.0", hosts: HostFigures | None = None
) -> None:
    """Serve `/metrics` on `port` from a daemon thread of this process (per host too when
    `hosts` is given)."""
    start_http_server(port, addr=addr, registry=registry_for(store, hosts))
