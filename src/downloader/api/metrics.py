"""Prometheus metrics, read from the counters the job store keeps: cheap at any queue size.

Nothing here counts in process memory: every figure comes from Redis (the per-status indexes'
cardinalities, the namespace's stats hash, the worker heartbeats), so any API process or
worker renders the same numbers, and rendering costs a few round trips whatever the number
of jobs. `render(figures)` answers the text format for an HTTP route (the REST API's
`/metrics`, from its service's `admin`); `serve(figures, port)` starts prometheus_client's own
server (for `downloader worker --metrics-port`, from a `store.admin.StoreAdmin`).

Every figure adds up: each job (a single job, a multi-file parent, each of its parts) is in
exactly one `downloader_jobs` status series, `error` not counting the cancelled ones; bytes are
counted once, by the jobs that downloaded them (parts, not parents). The `queue` label names
known queues only, those configured (`DOWNLOADER_QUEUE_ID`, `DOWNLOADER_METRICS_QUEUES`) and
those a live worker consumes, at most `MAX_QUEUE_SERIES` of them; every other queue's figures
are summed under `queue="other"`, so the queue names a caller puts in URLs create no series.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from downloader.jobs.models import DownloadJobStatus
from downloader.store.keys import CANCELLED, DURATION_BUCKETS, STATUSES

if TYPE_CHECKING:
    from downloader.client.limits import LimitsReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
"""The label of every host the limits do not name, and of every queue that is not known:
the label sets stay bounded."""
_HOST_COUNTERS = (
    ("bytes", "downloader_host_bytes", "Bytes read from each host"),
    ("waits", "downloader_host_slot_waits", "Connections that waited for a host's slot"),
    ("pauses", "downloader_host_pauses", "Fleet-wide pauses of a host after a 429 or 503"),
)

MAX_QUEUE_SERIES = 100
"""Known queues with series of their own, at most (the first by name; the rest: `OTHER`)."""

JOB_STATUSES = (*STATUSES, CANCELLED)
"""The `status` label's values: `error` is a failure, `cancelled` a cancellation."""


class Figures(Protocol):
    """Where the figures come from: a `StoreAdmin`, or a service's `QueueAdmin`."""

    def queue_names(self) -> list[str]: ...
    def counts(self, queue_id: str) -> dict[str, int]: ...
    def stats(self) -> dict[str, str]: ...
    def live_workers(self) -> list[str]: ...
    def worker_beats(self) -> list[tuple[str, dict[str, Any]]]: ...


def known_queues(store: Figures, configured: Collection[str]) -> frozenset[str]:
    """The queues with series of their own: `configured` and those live workers consume."""
    known = set(configured)
    for _, beat in store.worker_beats():
        known.update(beat.get("queues", ()))
    return frozenset(sorted(known)[:MAX_QUEUE_SERIES])


class StoreCollector(Collector):
    """Collects from the store on every scrape."""

    def __init__(self, store: Figures, configured: Collection[str] = ()) -> None:
        self.store = store
        self.configured = tuple(configured)

    def collect(self) -> Iterator[Metric]:
        store = self.store
        known = known_queues(store, self.configured)
        jobs = GaugeMetricFamily(
            "downloader_jobs",
            "Jobs in Redis by queue and status (each job in one status)",
            labels=["queue", "status"],
        )
        summed: dict[tuple[str, str], int] = {}
        for queue_id in store.queue_names():
            label = queue_id if queue_id in known else OTHER
            counts = store.counts(queue_id)
            error = DownloadJobStatus.ERROR.value
            exclusive = {**counts, error: counts[error] - counts[CANCELLED]}
            for status in JOB_STATUSES:
                summed[label, status] = summed.get((label, status), 0) + exclusive[status]
        for (label, status), value in sorted(summed.items()):
            jobs.add_metric([label, status], value)
        yield jobs

        stats = store.stats()
        ended = CounterMetricFamily(
            "downloader_jobs_ended",
            "Jobs that ended, by queue and outcome (completed, error or cancelled)",
            labels=["queue", "outcome"],
        )
        summed.clear()
        for key, value in stats.items():
            if key.startswith("ended:"):
                _, queue_id, outcome = key.rsplit(":", 2)
                label = queue_id if queue_id in known else OTHER
                summed[label, outcome] = summed.get((label, outcome), 0) + int(value)
        for labels, value in sorted(summed.items()):
            ended.add_metric(list(labels), value)
        yield ended
        yield CounterMetricFamily(
            "downloader_downloaded_bytes",
            "Bytes of completed downloads, counted once (a multi-file job's by its parts)",
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


def registry_for(
    store: Figures, hosts: HostFigures | None = None, configured: Collection[str] = ()
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, configured))
    if hosts is not None:
        registry.register(HostCollector(hosts))
    return registry


def render(
    store: Figures, hosts: HostFigures | None = None, configured: Collection[str] = ()
) -> bytes:
    """The metrics in Prometheus' text format (`CONTENT_TYPE`).

    Args:
        store: where the job figures come from.
        hosts: where the per-host figures come from (None: no per-host figures).
        configured: queues that always have series of their own (see `known_queues`).
    """
    return generate_latest(registry_for(store, hosts, configured))


def serve(
    store: Figures,
    port: int,
    addr: str = "0.0.0.0",
    hosts: HostFigures | None = None,
    configured: Collection[str] = (),
) -> None:
    """Serve `/metrics` on `port` from a daemon thread of this process (per host too when
    `hosts` is given; `configured` as for `render`)."""
    start_http_server(port, addr=addr, registry=registry_for(store, hosts, configured))
