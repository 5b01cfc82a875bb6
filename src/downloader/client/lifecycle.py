"""A service's life: its Redis (the configured one or the embedded server), the worker it
may run in its process, the live jobs' listener, and closing all of them, also at exit.

`ServiceLifecycle` is the first of the three rooms `DownloadQueueService` is built from (then
`control.QueueControl`: looking, waiting, cancelling; then `service`: queueing).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

import requests

from downloader.client.admin import QueueAdmin
from downloader.client.enqueue import Enqueuer
from downloader.client.following import EventBus
from downloader.client.limits import FleetLimits
from downloader.client.livejobs import LiveJobs
from downloader.config import Settings
from downloader.jobs.queues import check_queue_id
from downloader.store.embedded import EmbeddedRedis
from downloader.worker.notices import RetryListener
from downloader.worker.runtime import Runtime

if TYPE_CHECKING:
    from downloader.celery_app.app import DownloaderApp
    from downloader.celery_app.inprocess import InProcessWorker
    from downloader.worker.local import LocalWorker

_open_services: weakref.WeakSet[ServiceLifecycle] = weakref.WeakSet()


@atexit.register
def _close_open_services() -> None:
    """A script that never called close() must not leave its embedded redis-server behind."""
    for service in list(_open_services):
        service.close()


@functools.cache
def _close_before_threads_join() -> None:
    """Close the open services at exit *before* the interpreter joins its threads.

    A script that ends (or raises) with a service open would otherwise exit in this order:
    the interpreter first joins every non-daemon thread, among them the Celery thread pool's,
    so a running download went on to its end (minutes, for a large file) instead of being
    handed back; then multiprocessing's exit hook, registered after ours and so run before
    it, restored the kombu channel's unacknowledged messages while the in-process consumer
    still ran, and a message it took after that stayed in Redis's unacked set until the
    visibility timeout (and kombu asserted when the channel closed). Hooks registered with
    `threading._register_atexit` (CPython's, as `concurrent.futures` uses it) run before the
    threads are joined, newest first: registered after `concurrent.futures.thread`'s own,
    this one closes the services first, so running jobs are handed back and every message
    the worker took is restored at once.
    """
    import concurrent.futures.thread  # noqa: F401  (its hook joins the pool: ours goes after)

    # RuntimeError: the interpreter is already exiting; the atexit hook closes them then.
    with contextlib.suppress(RuntimeError):
        threading._register_atexit(_close_open_services)  # type: ignore[attr-defined]


class ServiceLifecycle:
    """Connecting, starting and stopping; see `DownloadQueueService` for the arguments."""

    def __init__(
        self,
        max_parallel_dl: int = 5,
        event_bus: EventBus | Callable[[str, dict[str, Any]], None] | None = None,
        requests_session: requests.Session | None = None,
        *,
        redis_url: str | None = None,
        queue_id: str = "default",
        start_worker: bool = True,
        follow: bool = True,
        own_jobs_only: bool | None = None,
        settings: Settings | None = None,
        on_retry: RetryListener | None = None,
    ) -> None:
        self._settings = settings if settings is not None else Settings()
        self._own_jobs_only = own_jobs_only
        self._max_parallel_dl = max_parallel_dl
        self._requests_session = requests_session
        self._redis_url = redis_url or self._settings.redis_url
        self._queue_id = check_queue_id(queue_id)
        self._start_worker = start_worker
        self._on_retry = on_retry
        self._live = LiveJobs(
            self._settings.namespace,
            queue_id,
            uuid.uuid4().hex,
            event_bus,
        )
        self._app: Runtime | None = None
        self._celery: DownloaderApp | None = None
        self._worker: InProcessWorker | LocalWorker | None = None
        self._uses_embedded = False
        # Without `follow` jobs are queued and forgotten: no live objects, callbacks or
        # record naming this client, for enqueue-only front ends (the REST API) whose memory
        # must not grow with the jobs they queue.
        live = self._live if follow else None
        self._enqueuer = Enqueuer(lambda: self.app, self._settings, live, requests_session)
        self._admin = QueueAdmin(
            lambda: self.app, lambda: self.celery, self._enqueuer, lambda: self._uses_embedded
        )
        self._limits = FleetLimits(lambda: self.app)
        self.start()

    def start(self, *args: Any, **kwargs: Any) -> None:
        """Connect, subscribe and (if asked) start the in-process worker.

        Idempotent, and called by the constructor: InvokeAI's callers call it again. The
        arguments are accepted and ignored, as InvokeAI's `start(invoker)` takes one.
        """
        if self._app is not None:
            return
        url = self._redis_url
        if url is None:
            url = EmbeddedRedis.acquire(self._settings)
            self._uses_embedded = True
        # Unset, it follows the Redis: the embedded one is this user's alone, so its jobs
        # need no broker (see LocalWorker); with a Redis URL the worker takes its share.
        own_jobs_only = self._own_jobs_only
        if own_jobs_only is None:
            own_jobs_only = self._uses_embedded
        if self._start_worker and own_jobs_only:
            runtime = Runtime(url, self._settings)  # sends nothing: no Celery
            from downloader.worker.local import LocalWorker

            local = LocalWorker(runtime, self._max_parallel_dl, self._queue_id)
            runtime.dispatchers.append(local)
            self._worker = local
            if self._own_jobs_only is None:
                # No later worker would take the jobs an earlier service left waiting (they
                # have no message): this one does, as its Celery worker would have.
                local.adopt_waiting()
        else:
            from downloader.celery_app import create_app

            app = self._celery = create_app(url, self._settings)
            runtime = app.runtime
            if self._start_worker:
                from downloader.celery_app.inprocess import InProcessWorker

                # Poll the broker every 0.05 s instead of 1 s, so that close() does not wait
                # for the last BRPOP to time out: an idle in-process worker costs about 0.8% of
                # a core this way (0.3% at 0.2 s), and a script ends 0.25 s sooner.
                options = app.conf.broker_transport_options
                app.conf.broker_transport_options = {**options, "polling_interval": 0.05}
                self._worker = InProcessWorker(
                    app, self._max_parallel_dl, [runtime.keys.celery_queue(self._queue_id)]
                )
        runtime.session_override = self._requests_session
        if self._on_retry is not None:
            runtime.retry_listeners.append(self._on_retry)
        self._app = runtime
        runtime.remember_redis()
        self._live.start(runtime)
        _open_services.add(self)
        _close_before_threads_join()
        if self._worker is not None:
            self._worker.start()

    def stop(self, *args: Any, **kwargs: Any) -> None:
        """`close()`, under the name InvokeAI's service uses (its `stop(invoker)`)."""
        self.close()

    def close(self) -> None:
        """Stop what this service started; jobs still queued stay in Redis for a later worker.

        Running downloads of the in-process worker are handed back (their partial files kept
        for the next attempt to resume); the embedded Redis stops once its last user closes.
        Idempotent.
        """
        app, self._app = self._app, None
        if app is None:
            return
        self._live.begin_stop()  # the listener winds down while the worker does
        if self._worker is not None:
            app.stopping.set()
            self._worker.stop()
            self._worker = None
        self._live.stop()
        celery, self._celery = self._celery, None
        (celery or app).disconnect()
        if self._uses_embedded:
            EmbeddedRedis.release()
            self._uses_embedded = False
        _open_services.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def app(self) -> Runtime:
        """What this service holds on its Redis: the job store, events, settings.

        Raises:
            RuntimeError: the service is closed.
        """
        if self._app is None:
            raise RuntimeError("the download queue is closed")
        return self._app

    @property
    def celery(self) -> DownloaderApp:
        """The Celery app, for what goes through the broker (pausing a queue, asking the
        workers).

        Raises:
            RuntimeError: the service is closed, or runs its own jobs only and so has no
                broker to talk to.
        """
        self.app  # noqa: B018  (raises when closed)
        if self._celery is None:
            raise RuntimeError("a service of its own jobs only has no broker to talk to")
        return self._celery

    @property
    def admin(self) -> QueueAdmin:
        """Every queue of this service's Redis, for operators and front ends (the CLI, the
        REST API): counts, pages, workers, pausing, pruning (see `client.admin`)."""
        return self._admin

    @property
    def limits(self) -> FleetLimits:
        """The limits every worker and client of this Redis share: read, set, unset (see
        `client.limits`)."""
        return self._limits

    @property
    def queue_id(self) -> str:
        """The queue this service's jobs go to, and the one it lists."""
        return self._queue_id
