"""The Celery app: Redis as broker and result backend, priorities, late acks, task events.

`create_app(url)` builds an app bound to one Redis; each `DownloadQueueService` gets its own,
so two services in one process may talk to two Redis servers. `celery -A
downloader.celery_app worker` finds the module attribute `app`, created on first access from
the settings (and the embedded Redis when no URL is configured), so importing this module
starts nothing.

Task events stay on (Flower shows every download), batched by the workers' own consumer
(`downloader.consumer`), which is named here rather than imported: a process that only
queues jobs never loads Celery's worker.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence

from celery import Celery
from celery.utils.nodenames import anon_nodename
from kombu import Queue
from kombu.common import maybe_declare
from kombu.connection import ConnectionPool
from kombu.pools import ProducerPool

from downloader.broker import Transport
from downloader.config import Settings
from downloader.core import DownloaderCore
from downloader.store import PRIORITY_LEVELS, celery_priority

__all__ = ["PRIORITY_LEVELS", "DownloaderApp", "celery_priority", "create_app"]

MAX_DECLARED = 1024
"""Queue declarations kombu remembers per broker connection before they are forgotten (and
made again, an idempotent SADD, when next needed): a process that sends for callers' queues
(the REST API) would otherwise remember every queue id it was ever given."""


def kombu_url(url: str) -> str:
    """redis-py says `unix://` for a socket where kombu says `redis+socket://`."""
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


class DownloaderApp(DownloaderCore, Celery):
    """A Celery app that also knows its job store and event publisher, and sends the jobs
    of other processes' workers as broker messages."""

    def __init__(self, redis_url: str, settings: Settings) -> None:
        Celery.__init__(self, "downloader", set_as_current=False)
        DownloaderCore.__init__(self, redis_url, settings)
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
            worker_consumer="downloader.consumer:Consumer",
            # No `task-sent` event: it was a second publish for every job queued, and the
            # queue's waiting jobs are in the job store (list, /status, /metrics); Flower shows
            # a task from the moment a worker receives it.
            task_send_sent_event=False,
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

    def broker_queue(self, queue_id: str) -> Queue:
        """The kombu queue messages for `queue_id` are sent to, made afresh each time.

        Celery's registry (`amqp.queues`) would keep every queue name it is asked for, and a
        queue of its own exchange leaves a binding key in Redis for ever: a process that
        sends for callers' queues (the REST API) would grow with the names. On the default
        exchange a message goes straight to the queue's list, where its workers take it.
        """
        name = self.celery_queue(queue_id)
        return Queue(name, routing_key=name)

    def send(self, jobs: Sequence[tuple[int, str, int]]) -> None:
        """Send (job id, queue id, priority) triples to the broker over one producer.

        The store notes the dispatch time first (so a message lost on the way is found again
        by the orphan watch), and the time goes into the task id too: the watch compares it
        with the oldest message still in the broker. No result is stored: clients follow the
        job store, and Flower reads task events.
        """
        now = time.time()
        self.store.dispatched(jobs, now)
        task = self.tasks["downloader.download"]
        origin = anon_nodename()  # Celery would work out the same for every message
        with self.producer_or_acquire() as producer:
            queues = {queue_id: self.broker_queue(queue_id) for _, queue_id, _ in jobs}
            declared = producer.channel.connection.client.declared_entities
            if len(declared) > MAX_DECLARED:
                declared.clear()
            for queue in queues.values():
                maybe_declare(queue, producer.channel)
            # kombu's publish batch sends the messages in pipelined round trips, not one each;
            # the queues are declared above, once, and a failure shows when the batch is sent
            # (a retry per message, inside a pipeline, could mend nothing).
            with producer.batch():
                for job_id, queue_id, priority in jobs:
                    task.apply_async(
                        (job_id,),
                        queue=queues[queue_id],
                        priority=celery_priority(priority),
                        task_id=dispatch_task_id(job_id, now),
                        ignore_result=True,
                        producer=producer,
                        declare=[],
                        retry=False,
                        argsrepr=f"({job_id},)",  # what Flower shows, without a saferepr each
                        kwargsrepr="{}",
                        origin=origin,
                    )

    def oldest_dispatch(self, queue_id: str, levels: Iterable[int]) -> list[float | None]:
        """When the oldest message still in the broker for each level was sent (None: the
        level's list is empty). Anything sent before it has left the list."""
        pipe = self.redis.pipeline(transaction=False)
        for level in levels:
            pipe.lindex(self.broker_list(queue_id, level), -1)
        return [_dispatch_time(raw) for raw in pipe.execute()]

    def send_discard(self, job_id: int, queue_id: str) -> None:
        self.tasks["downloader.discard"].si(job_id).apply_async(
            queue=self.broker_queue(queue_id), priority=0, ignore_result=True
        )

    def disconnect(self) -> None:
        self.pool.force_close_all()
        backend_client = getattr(self.backend, "client", None)
        if backend_client is not None:
            backend_client.connection_pool.disconnect()
        super().disconnect()


def dispatch_task_id(job_id: int, sent: float) -> str:
    """`<job id>-<send time in ms>-<random>`: readable in Flower, and dated for the watch."""
    return f"{job_id}-{int(sent * 1000)}-{uuid.uuid4().hex[:8]}"


def _dispatch_time(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        task_id = json.loads(raw)["headers"]["id"]
        return int(task_id.split("-")[1]) / 1000
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return 0.0  # a message not sent by `submit_many`: treat every job as possibly behind it


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
