"""Pausing and resuming a queue's processing: workers stop and start taking its jobs.

A pause is a Redis flag (`Keys.paused`) plus a broadcast that tells
every worker to stop consuming the queue's Celery queue; running downloads go on. The flag
outlives the broadcast: every worker runs the consumer step `KeepPaused`, after its task
consumer is set up and before its event loop takes the first message, so a worker that
starts during a pause (a `downloader worker` or an in-process one, which sends no
`worker_ready`) and a worker that reconnects after a Redis outage leave a paused queue alone.

Resuming clears the flag and broadcasts `downloader_resume`, a control command that makes a
worker consume the queue again only when it was started with that queue: a worker dedicated
to other queues is not drawn into this one (Celery's plain `add_consumer` would).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis
from celery import bootsteps
from celery.signals import worker_init
from celery.worker.control import control_command, ok

from downloader.store.pauses import QueuePauses

if TYPE_CHECKING:
    from downloader.celery_app.app import DownloaderApp
    from downloader.worker.runtime import Runtime

log = logging.getLogger(__name__)

RESUME_COMMAND = "downloader_resume"


def is_paused(runtime: Runtime, queue_id: str) -> bool:
    return QueuePauses(runtime.redis, runtime.settings.namespace).is_paused(queue_id)


def pause(app: DownloaderApp, queue_id: str) -> None:
    """Workers stop taking the queue's jobs; the ones they run go on. Raises `TooManyPaused`
    when `MAX_PAUSED` other queues are paused (concurrent pauses may pass it by a few)."""
    runtime = app.runtime
    QueuePauses(runtime.redis, runtime.settings.namespace).pause(queue_id)
    app.control.cancel_consumer(runtime.keys.celery_queue(queue_id))


def resume(app: DownloaderApp, queue_id: str) -> None:
    """The workers started with this queue take its jobs again."""
    runtime = app.runtime
    QueuePauses(runtime.redis, runtime.settings.namespace).resume(queue_id)
    app.control.broadcast(RESUME_COMMAND, arguments={"queue": runtime.keys.celery_queue(queue_id)})


def consuming_workers(
    app: DownloaderApp, queue_id: str, timeout: float = 1.0, limit: int | None = None
) -> list[str]:
    """Names of the workers that answer and consume the queue right now; with `limit`, the
    answer comes as soon as that many workers replied instead of after `timeout`."""
    name = app.runtime.keys.celery_queue(queue_id)
    with control_connection(app) as connection:
        inspect = app.control.inspect(timeout=timeout, connection=connection, limit=limit)
        replies = inspect.active_queues()
    return sorted(
        worker
        for worker, queues in (replies or {}).items()
        if any(queue.get("name") == name for queue in queues or [])
    )


def control_connection(app: DownloaderApp) -> Any:
    """A broker connection of its own for one request that collects replies.

    After collecting until its timeout, kombu leaves a BRPOP pending on the reply queue; on a
    pooled connection that BRPOP swallows the replies to the next request, which then sees
    no worker at all. A connection per request, with a short poll, avoids that.
    """
    return app.connection_for_write(transport_options={"polling_interval": 0.1})


class KeepPaused(bootsteps.StartStopStep):
    """Consumer step: consume exactly the worker's own queues that are not paused.

    Runs at every (re)start of the consumer, after the task consumer exists and before the
    event loop fetches anything, so no message of a paused queue is taken in between.
    """

    label = "downloader pauses"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        # The queues the worker was started with (`-Q`, or the app's default queue).
        c.downloader_queues = frozenset(c.app.amqp.queues.consume_from)

    def start(self, c: Any) -> None:
        from downloader.celery_app.app import DownloaderApp

        app = c.app
        if not isinstance(app, DownloaderApp):
            return
        for name in sorted(c.downloader_queues):
            queue_id = app.runtime.keys.queue_of_celery(name)
            if queue_id is None:
                continue
            try:
                paused = is_paused(app.runtime, queue_id)
            except redis.RedisError:
                log.warning("could not read the pause flag of %s; leaving it as is", name)
                continue
            # Before the event loop, the queue is listed but not yet consumed (no tag).
            consuming = any(queue.name == name for queue in c.task_consumer.queues)
            if paused and consuming:
                log.info("queue %s is paused: not consuming it", name)
                c.cancel_task_queue(name)
            elif not paused and not consuming:
                c.add_task_queue(name)  # resumed while this worker was away


@worker_init.connect
def _install_keep_paused(sender: Any = None, **_: Any) -> None:
    """Every worker of a `DownloaderApp` (CLI or in-process) gets the `KeepPaused` step."""
    from downloader.celery_app.app import DownloaderApp

    app = getattr(sender, "app", None)
    if isinstance(app, DownloaderApp):
        app.steps["consumer"].add(KeepPaused)


@control_command(args=[("queue", str)], signature="<queue>")
def downloader_resume(state: Any, queue: str, **_: Any) -> dict[str, str]:
    """Consume the queue again, if this worker was started with it (downloader resume)."""
    consumer = state.consumer
    if queue not in getattr(consumer, "downloader_queues", ()):
        return ok(f"{queue} is not one of this worker's queues")
    consumer.call_soon(consumer.add_task_queue, queue)
    return ok(f"consuming from {queue}")
