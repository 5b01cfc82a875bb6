"""A Celery worker inside a client's process, for `DownloadQueueService(start_worker=True)`.

It consumes the service's queue from the broker like any `downloader worker`, so a script
with an in-process worker takes its share of every client's jobs on that queue. (`downloader
get`, which runs only its own jobs, uses `downloader.worker.local` instead.)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from celery.worker import WorkController

if TYPE_CHECKING:
    from downloader.celery_app.app import DownloaderApp


log = logging.getLogger(__name__)


class _ReadyWorkController(WorkController):
    """A WorkController that tells when its consumer is ready to take messages."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: object) -> None:
        self.ready.set()


class InProcessWorker:
    """A Celery worker in a daemon thread of this process, with a thread pool.

    Built as `celery.contrib.testing.worker` builds one (app finalised, set current and
    default, no mingle, gossip or heartbeat), which is the set-up that really runs tasks in a
    thread. Celery's thread pool runs tasks with the process's default app, so a process can
    host in-process workers of one app at a time; a second app is refused with a clear error.
    """

    _active: dict[int, int] = {}
    _active_lock = threading.Lock()

    def __init__(self, app: DownloaderApp, concurrency: int, queues: list[str]) -> None:
        self.app = app
        self.queues = queues
        with self._active_lock:
            others = [key for key in self._active if key != id(app)]
            if others:
                raise RuntimeError(
                    "another DownloadQueueService of this process already runs an in-process "
                    "worker on a different connection; pass start_worker=False to this one, "
                    "or use one service per process"
                )
            self._active[id(app)] = self._active.get(id(app), 0) + 1
        app.finalize()
        app.set_current()
        app.set_default()
        self.controller = _ReadyWorkController(
            app=app,
            concurrency=concurrency,
            pool="threads",
            queues=queues,
            loglevel="WARNING",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=None,
        )
        self.thread = threading.Thread(
            target=self.controller.start, name="downloader-worker", daemon=True
        )

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        if not self.controller.ready.wait(timeout):
            raise TimeoutError("the in-process Celery worker did not start")
        self.app.orphan_watch(None, self.queues).start()  # no worker_ready here

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown: running downloads end (they see their lease lost) or finish.

        Bounded: Celery's shutdown runs in a thread of its own, which is left behind after
        `timeout` (kombu's channel close was seen waiting for ever on a Redis reply), and the
        process may start another in-process worker whatever became of this one."""
        try:
            stopper = threading.Thread(
                target=self.controller.stop,
                kwargs={"in_sighandler": False},
                name="downloader-worker-stop",
                daemon=True,
            )
            stopper.start()
            deadline = time.monotonic() + timeout
            stopper.join(timeout)
            self.thread.join(max(0.0, deadline - time.monotonic()))
            if stopper.is_alive() or self.thread.is_alive():
                log.warning("the in-process worker did not stop within %.0f s", timeout)
        finally:
            with self._active_lock:
                count = self._active.pop(id(self.app), 1) - 1
                if count:
                    self._active[id(self.app)] = count
