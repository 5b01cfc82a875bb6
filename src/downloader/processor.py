"""Pausing and resuming a queue's processing: workers stop and start taking its jobs.

A pause is a Redis flag plus a broadcast that tells every worker to stop consuming the
queue's Celery queue; running downloads go on. The flag outlives the broadcast: a worker that
starts while the queue is paused reads it and does not consume that queue either.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celery.signals import worker_ready

if TYPE_CHECKING:
    from downloader.celery_app import DownloaderApp

log = logging.getLogger(__name__)


def _flag(app: DownloaderApp, queue_id: str) -> str:
    return f"{app.keys.namespace}:queue:{queue_id}:paused"


def is_paused(app: DownloaderApp, queue_id: str) -> bool:
    return bool(app.redis.exists(_flag(app, queue_id)))


def pause(app: DownloaderApp, queue_id: str) -> None:
    app.redis.set(_flag(app, queue_id), 1)
    app.control.cancel_consumer(app.celery_queue(queue_id))


def resume(app: DownloaderApp, queue_id: str) -> None:
    app.redis.delete(_flag(app, queue_id))
    app.control.add_consumer(app.celery_queue(queue_id))


def consuming_workers(app: DownloaderApp, queue_id: str, timeout: float = 1.0) -> list[str]:
    """Names of the workers that answer and consume the queue right now."""
    name = app.celery_queue(queue_id)
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    return sorted(
        worker
        for worker, queues in replies.items()
        if any(queue.get("name") == name for queue in queues)
    )


def any_worker_answers(app: DownloaderApp, timeout: float = 1.0) -> bool:
    return bool(app.control.ping(timeout=timeout))


@worker_ready.connect
def _stay_paused(sender: object = None, **_: object) -> None:
    """A worker that starts during a pause leaves the paused queues alone."""
    from downloader.celery_app import DownloaderApp

    app = getattr(sender, "app", None)
    if not isinstance(app, DownloaderApp):
        return
    prefix = f"{app.keys.namespace}."
    for queue in list(sender.task_consumer.queues):  # type: ignore[attr-defined]
        if queue.name.startswith(prefix) and is_paused(app, queue.name[len(prefix) :]):
            log.info("queue %s is paused: not consuming it", queue.name)
            sender.cancel_task_queue(queue.name)  # type: ignore[attr-defined]
