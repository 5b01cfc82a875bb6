"""The Celery app: Redis as broker and result backend, priorities, late acks, task events.

`create_app(url)` builds an app bound to one Redis; each `DownloadQueueService` gets its own,
so two services in one process may talk to two Redis servers. The app holds the process's
`Runtime` (store, events, leases) and gives it a dispatcher that sends jobs as broker
messages (`celery_app.dispatch`).

Task events stay on (Flower shows every download), batched by the workers' own consumer
(`celery_app.consumer`), which is named here rather than imported: a process that only
queues jobs never loads Celery's worker.
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery
from celery.app.amqp import AMQP
from kombu.connection import ConnectionPool
from kombu.pools import ProducerPool

from downloader.celery_app.dispatch import BrokerDispatcher, redispatch_lost
from downloader.celery_app.transport import BrokerConnection
from downloader.config import Settings
from downloader.store.keys import PRIORITY_LEVELS
from downloader.worker.recovery import OrphanWatch
from downloader.worker.runtime import Runtime


class BrokerAMQP(AMQP):
    """Celery's messaging side, on connections that keep our transport (see
    `transport.BrokerConnection`)."""

    Connection = BrokerConnection


class DownloaderApp(Celery):
    """The Celery app of one Redis, holding the `Runtime` its tasks run jobs with."""

    def __init__(self, redis_url: str, settings: Settings) -> None:
        super().__init__("downloader", set_as_current=False, amqp=BrokerAMQP)
        self.runtime = Runtime(redis_url, settings)
        self.fatal_error: BaseException | None = None
        """What stopped this app's worker, if its consumer failed for good."""
        self.broker = BrokerDispatcher(self, self.runtime)
        self.runtime.dispatchers.append(self.broker)
        keys = self.runtime.keys
        prefix = keys.celery_prefix
        broker = self.runtime.target.broker(
            {
                "priority_steps": list(range(PRIORITY_LEVELS)),
                "sep": ":",
                "queue_order_strategy": "priority",
                "visibility_timeout": settings.visibility_timeout,
                # Look for messages past their visibility timeout every few seconds, not
                # every 100 (kombu's default of 10 s x 10).
                "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 3)),
                "unacked_restore_throttle": 1,
                "global_keyprefix": prefix,
            }
        )
        self.conf.update(
            broker_url=broker.url,
            # Our transport (it survives a Redis restart), by the name it is registered under,
            # so the configuration stays plain data (`celery inspect stats` reports it). kombu
            # lets a `redis+socket://` URL (the embedded server) pick its own, the stock one.
            broker_transport=broker.transport,
            broker_use_ssl=broker.use_ssl,
            redis_backend_use_ssl=broker.use_ssl,
            result_backend=broker.backend_url,
            broker_connection_retry_on_startup=True,
            broker_transport_options=broker.transport_options,
            result_backend_transport_options=broker.backend_options,
            task_default_queue=keys.celery_queue(settings.queue_id),
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=1,
            worker_pool="threads",
            worker_concurrency=settings.concurrency,
            worker_send_task_events=True,
            worker_consumer="downloader.celery_app.consumer:Consumer",
            # No `task-sent` event: it was a second publish for every job queued, and the
            # queue's waiting jobs are in the job store (list, /status, /metrics); Flower shows
            # a task from the moment a worker receives it.
            task_send_sent_event=False,
            task_track_started=True,
            result_expires=24 * 3600,
            worker_hijack_root_logger=False,
            worker_redirect_stdouts=False,
        )
        self.conf.include = ["downloader.celery_app.tasks", "downloader.celery_app.control"]

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

    def orphan_watch(self, worker_name: str | None, queues: Iterable[str]) -> OrphanWatch:
        """The watch each worker of this app runs: the runtime's rounds, and the messages
        lost on their way to a worker sent again."""
        return OrphanWatch(
            self.runtime, worker_name, queues, steps=[lambda: redispatch_lost(self.broker)]
        )

    def disconnect(self) -> None:
        self.pool.force_close_all()
        backend_client = getattr(self.backend, "client", None)
        if backend_client is not None:
            backend_client.connection_pool.disconnect()
        self.runtime.disconnect()
