"""A worker for a service's own jobs only: its threads take job ids without a broker.

`downloader get` on the embedded default runs the jobs it queues and no others; a
`DownloadQueueService()` on the embedded default (no Redis configured) runs its own jobs the
same way, and at start the jobs its queue still holds waiting. A Celery
worker in the process did that through the broker at a price every get paid, however small
its file: the import of Celery's worker, its boot steps and consumer connection, and at
shutdown the wait for its last BRPOP, together about a third of a 1 KiB get. Jobs that never
leave the process need no broker: the `Runtime` hands their ids to this `Dispatcher`, a
priority queue, which a few threads drain through the runner a Celery task calls.

The jobs are still records of the shared store, with their leases, events and cancels; what
this process does not run before it stops (a job handed back, a job not yet begun) stays
waiting there, where the next identical `get` resumes it from its partial file. Such a
process keeps no heartbeat and watches no other worker's jobs (it sends no message, so it
cannot requeue them), but it sweeps the store's expired jobs once in a while, so that a store
used only by gets stays the size of its retention.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import redis

from downloader.jobs.models import DownloadJobStatus
from downloader.store.keys import celery_priority
from downloader.store.pauses import QueuePauses
from downloader.worker.recovery import sweep_expired
from downloader.worker.runner import run_download, tidy_cancelled

if TYPE_CHECKING:
    from downloader.worker.runtime import Dispatch, Runtime

log = logging.getLogger(__name__)

Task = Callable[["Runtime", int, str], object]
"""What a thread does with a job id: the runner's entry points, as the Celery tasks call them."""

_STOP = -1
"""The rank of the stop marks: ahead of every job, so no job starts once `stop` is called."""

SWEEP_EVERY = 60.0
"""Seconds between two retention sweeps by local workers, across every process of a store."""

PAUSE_LOOK = 0.5
"""Seconds a read of the queue's pause flag holds for every thread of the process: a pause
(`downloader pause`) is followed within this, for one Redis read per interval, not per job."""


class LocalWorker:
    """`concurrency` threads running the jobs of queue `queue_id` that this process queues."""

    def __init__(self, app: Runtime, concurrency: int, queue_id: str) -> None:
        self.app = app
        self.queue_id = queue_id
        self.name = f"local-{os.getpid()}@{socket.gethostname()}"
        self._todo: queue.PriorityQueue[tuple[int, int, int, Task | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        """Ties within a priority level go first come, first served, as in the broker."""
        self._stopping = False
        self._pauses = QueuePauses(app.redis, app.settings.namespace)
        self._paused_at = (float("-inf"), False)
        """When the pause flag was last read (monotonic seconds), and what it said."""
        self._threads = [
            threading.Thread(target=self._work, name=f"downloader-local-{n}", daemon=True)
            for n in range(concurrency)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def takes(self, queue_id: str) -> bool:
        return queue_id == self.queue_id

    def submit(self, jobs: Iterable[Dispatch]) -> None:
        """Queue (job id, queue id, priority) triples of this worker's queue. After `stop`,
        nothing is taken: the jobs stay waiting in the store for a later run."""
        if self._stopping:
            return
        for job_id, _, priority in jobs:
            self._todo.put((celery_priority(priority), next(self._order), job_id, run_download))

    def adopt_waiting(self) -> None:
        """Take the jobs of the queue that wait in the store: those a service on this queue
        queued and did not run before it closed have no message that a later worker could
        take. Multi-file jobs are run through their parts; a job another process runs in
        the meantime is refused by its claim."""
        waiting = DownloadJobStatus.WAITING.value
        self.submit(
            (record.id, self.queue_id, record.priority)
            for record in self.app.store.iter_records(self.queue_id, waiting)
            if not record.multifile
        )

    def discard(self, job_id: int, queue_id: str) -> None:
        """Remove the partial file of job `job_id`, cancelled while no attempt of it ran."""
        if not self._stopping:
            self._todo.put((0, next(self._order), job_id, tidy_cancelled))

    def stop(self, timeout: float = 30.0) -> None:
        """Let the running jobs hand themselves back (the service has set `app.stopping`)
        and start no other."""
        self._stopping = True
        for _ in self._threads:
            self._todo.put((_STOP, next(self._order), 0, None))
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("a download thread did not stop within %.0f s", timeout)
        try:
            if self.app.store.sweep_due(SWEEP_EVERY):
                sweep_expired(self.app)
        except Exception:  # the downloads are over; retention can wait for the next run
            log.warning("could not sweep the expired jobs", exc_info=True)

    def _work(self) -> None:
        while True:
            _, _, job_id, task = self._todo.get()
            if task is None:
                return
            if task is run_download and not self._wait_while_paused():
                continue  # stopping during a pause: the job stays waiting in the store
            try:
                task(self.app, job_id, self.name)
            except Exception:  # the runner records a job's failures; this is a bug or Redis
                log.exception("job %s failed outside its own error handling", job_id)

    def _wait_while_paused(self) -> bool:
        """Hold a job back while its queue is paused (a queue pause holds for every worker,
        these threads too); answers False when the worker stops meanwhile."""
        while self._paused():
            if self._stopping:
                return False
            time.sleep(PAUSE_LOOK)
        return not self._stopping

    def _paused(self) -> bool:
        """The queue's pause flag, read at most every `PAUSE_LOOK` seconds by the process
        (a Redis that cannot answer leaves it as last read: the job's own steps will say)."""
        read_at, paused = self._paused_at
        now = time.monotonic()
        if now - read_at >= PAUSE_LOOK:
            try:
                paused = self._pauses.is_paused(self.queue_id)
            except redis.RedisError:  # the job's own claim rides it out, or says why
                log.debug("could not read the pause flag of %s", self.queue_id, exc_info=True)
            self._paused_at = (now, paused)
        return paused
