"""The Celery app: Redis as broker and result backend, priorities, late acks, task events.

`create_app(url)` builds an app bound to one Redis; each `DownloadQueueService` gets its own,
so two services in one process may talk to two Redis servers. `celery -A
downloader.celery_app worker` finds the module attribute `app`, created on first access from
the settings (and the embedded Redis when no URL is configured), so importing this module
starts nothing.
"""

from __future__ import annotations

import threading
from functools import cached_property

import redis
import requests
from celery import Celery, Signature, chord
from kombu.connection import ConnectionPool
from kombu.pools import ProducerPool
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from downloader.broker import Transport
from downloader.config import Settings
from downloader.events import DOWNLOAD_CANCELLED, EventPublisher
from downloader.store import CancelResult, JobStore, Keys

PRIORITY_LEVELS = 10
"""Celery's Redis transport serves levels 0 (first) .. 9 (last), FIFO within a level."""


def celery_priority(priority: int) -> int:
    """Map the seed's priority (lower runs first, default 10) onto the transport's 0..9.

    Steps of ten: below 10 is level 0, 10..19 level 1 (the default), ..., 90 and above level
    9. Monotonic, so a lower priority never starts after a higher one queued at the same time.
    """
    return min(max(priority // 10, 0), PRIORITY_LEVELS - 1)


def kombu_url(url: str) -> str:
    """redis-py says `unix://` for a socket where kombu says `redis+socket://`."""
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


def redis_py_url(url: str) -> str:
    prefix = "redis+socket://"
    return "unix://" + url.removeprefix(prefix) if url.startswith(prefix) else url


class DownloaderApp(Celery):
    """A Celery app that also knows its job store and event publisher."""

    def __init__(self, redis_url: str, settings: Settings) -> None:
        super().__init__("downloader", set_as_current=False)
        self.redis_url = redis_py_url(redis_url)
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.session_override: requests.Session | None = None
        """The session in-process workers download with (the seed's `requests_session`)."""
        self.stopping = threading.Event()
        """Set when this process's worker shuts down: running jobs hand themselves back."""
        broker = kombu_url(self.redis_url)
        prefix = f"{settings.namespace}:celery:"
        self.conf.update(
            broker_url=broker,
            # The transport that survives a Redis restart; kombu lets a `redis+socket://`
            # URL (the embedded server) pick its own, which is the stock one.
            broker_transport=Transport,
            result_backend=broker,
            broker_connection_retry_on_startup=True,
            broker_transport_options={
                "priority_steps": list(range(PRIORITY_LEVELS)),
                "sep": ":",
                "queue_order_strategy": "priority",
                "visibility_timeout": settings.visibility_timeout,
                # Look for messages past their visibility timeout every few seconds, not
                # every 100 (kombu's default of 10 s x 10).
                "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 3)),
                "unacked_restore_throttle": 1,
                "global_keyprefix": prefix,
            },
            result_backend_transport_options={"global_keyprefix": prefix},
            task_default_queue=self.keys.celery_queue(settings.queue_id),
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=1,
            worker_pool="threads",
            worker_concurrency=settings.concurrency,
            worker_send_task_events=True,
            task_send_sent_event=True,
            task_track_started=True,
            result_expires=24 * 3600,
            worker_hijack_root_logger=False,
            worker_redirect_stdouts=False,
        )
        self.conf.include = ["downloader.tasks", "downloader.processor"]

    @property
    def pool(self) -> ConnectionPool:
        """This app's own broker connections and producers.

        Celery's default is kombu's process-wide pool for the broker URL, shared by every app
        on that URL: closing one service closed it for the next service of the process
        (`Acquire on closed pool`), and for any other service still open on the same Redis.
        """
        if self._pool is None:
            self._pool = self.connection_for_write().Pool(limit=self.conf.broker_pool_limit)
            self.amqp._producer_pool = ProducerPool(self._pool, limit=self._pool.limit)
        return self._pool

    @cached_property
    def redis(self) -> redis.Redis:
        """The client of the job store and events; it rides out a Redis restart by retrying
        each command for about half a minute before giving up."""
        return redis.Redis.from_url(
            self.redis_url,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=20),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self.redis, self.settings.namespace)

    @cached_property
    def publisher(self) -> EventPublisher:
        return EventPublisher(self.redis, self.settings.namespace)

    def celery_queue(self, queue_id: str) -> str:
        return self.keys.celery_queue(queue_id)

    def _download_signature(self, job_id: int, queue_id: str, priority: int) -> Signature:
        return self.tasks["downloader.download"].si(job_id).set(
            queue=self.celery_queue(queue_id), priority=celery_priority(priority)
        )

    def submit(self, job_id: int, queue_id: str, priority: int) -> None:
        """Queue job `job_id` for any worker consuming its queue, at its mapped priority."""
        # No result to store: clients follow the job store, and Flower reads task events.
        # (Chord parts keep theirs: the chord counts them.)
        self._download_signature(job_id, queue_id, priority).apply_async(ignore_result=True)

    def submit_multifile(
        self, parent_id: int, part_ids: list[int], queue_id: str, priority: int
    ) -> None:
        """Queue the parts as the header of a chord whose body settles the parent."""
        header = [self._download_signature(part, queue_id, priority) for part in part_ids]
        body = self.tasks["downloader.finish_multifile"].si(parent_id).set(
            queue=self.celery_queue(queue_id), priority=celery_priority(priority)
        )
        chord(header)(body)

    def cancel(self, job_id: int, queue_id: str) -> CancelResult:
        """Cancel one job; one that never started is over at once and says so on the bus."""
        result = self.store.cancel(job_id)
        if result is CancelResult.CANCELLED:
            record = self.store.record(job_id) or {}
            self.publisher.publish(
                DOWNLOAD_CANCELLED, queue_id, job_id, source=record.get("source")
            )
        return result


def create_app(redis_url: str, settings: Settings | None = None) -> DownloaderApp:
    import downloader.tasks  # noqa: F401  (registers the shared tasks on every app)

    return DownloaderApp(redis_url, settings or Settings())


def __getattr__(name: str) -> DownloaderApp:
    """`app`, the module-level app that `celery -A downloader.celery_app` looks for."""
    if name != "app":
        raise AttributeError(name)
    from downloader.embedded import resolve_redis_url

    settings = Settings()
    created = create_app(resolve_redis_url(settings), settings)
    globals()["app"] = created
    return created
