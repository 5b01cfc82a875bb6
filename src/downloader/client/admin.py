"""`QueueAdmin`: every queue of a service's Redis, as an operator or a front end sees them.

`DownloadQueueService` is InvokeAI's API: one queue, the jobs its caller queued. The command
line and the REST API need more: any queue by its id, counts and pages by status, the running
jobs, the live workers, pausing, pruning and clearing, the stopped `get`s to take over, the
namespace's events. They ask `service.admin` for it instead of reaching into the store, so
that what a key or a script is stays inside `downloader.store`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from downloader.client import resume
from downloader.client.anyqueue import AnyQueueJobs
from downloader.client.enqueue import Enqueuer
from downloader.jobs.models import DownloadJob, MultiFileDownloadJob
from downloader.jobs.record import JobRecord
from downloader.store.admin import FAILED
from downloader.store.base import BATCH
from downloader.store.bus import Subscription
from downloader.store.connection import RedisTarget
from downloader.store.pauses import QueuePauses
from downloader.worker.runtime import Runtime

if TYPE_CHECKING:
    from downloader.celery_app.app import DownloaderApp

Job = DownloadJob | MultiFileDownloadJob
Record = JobRecord

__all__ = ["FAILED", "QueueAdmin"]


class QueueAdmin(AnyQueueJobs):
    """Any queue of the service's Redis: queue, look, steer, remove.

    Every method names its queue; none keeps state of its own, so one admin serves any
    number of queues (the REST API serves every queue with one). Reads page through the
    store's indexes: their cost follows the page, not the queue.
    """

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        celery: Callable[[], DownloaderApp],
        enqueuer: Enqueuer,
        embedded: Callable[[], bool],
    ) -> None:
        super().__init__(runtime, enqueuer)
        self._celery = celery  # raises RuntimeError once closed, or with no broker
        self._embedded = embedded

    @property
    def target(self) -> RedisTarget:
        """The Redis this service uses (the configured one, or the embedded server), with
        how to reach it (Sentinel, TLS, a user) and how to tell its failures."""
        return self._runtime().target

    @property
    def embedded(self) -> bool:
        """Whether the service runs on the embedded default Redis, this user's alone."""
        return self._embedded()

    # -- looking ------------------------------------------------------------------------------

    def queue_names(self) -> list[str]:
        """Every queue that holds a job, sorted."""
        return self._store.queue_names()

    def counts(self, queue_id: str) -> dict[str, int]:
        """Jobs of the queue per status (`waiting`, `running`, `paused`, `completed`, `error`,
        and `cancelled`, a part of `error`) and `total`: O(1), the indexes' sizes."""
        return self._store.counts(queue_id)

    def stats(self) -> dict[str, str]:
        """The namespace's counters, as `StoreAdmin.stats` answers them."""
        return self._store.stats()

    def live_workers(self, queue_id: str | None = None) -> list[str]:
        """Names of the workers whose heartbeat is current; with `queue_id`, only those
        started with that queue. From the heartbeats: no broadcast, O(workers)."""
        if queue_id is None:
            return self._store.live_workers()
        return self._store.live_workers(self._runtime().keys.celery_queue(queue_id))

    def queue_page(
        self, cursor: int, limit: int
    ) -> tuple[int, list[tuple[str, dict[str, int], bool]]]:
        """A page of the queues that hold jobs, by name: about `limit` of them after
        `cursor` (0: the first page), each with its `counts` and whether it is paused.

        Returns:
            The next page's cursor (0: this was the last) and (name, counts, paused).
        """
        return self._store.queue_page(cursor, limit)

    def worker_beats(self) -> list[tuple[str, dict[str, Any]]]:
        """The live workers, each with its last heartbeat (`jobs`, `seen`, and `queues` as
        queue ids)."""
        return self._store.worker_beats()

    def claimed(self) -> list[JobRecord]:
        """The records of every job a worker holds now, by id: O(running)."""
        return self._store.claimed()

    def consuming_workers(self, queue_id: str, timeout: float) -> list[str]:
        """The workers that consume the queue right now, asked over the broker: answers at
        once when no heartbeat is current, else as soon as every live worker replied (a
        worker that died without a word makes it wait `timeout` seconds)."""
        live = self.live_workers()
        if not live:
            return []
        from downloader.celery_app import control

        return control.consuming_workers(self._celery(), queue_id, timeout, len(live))

    def record(self, job_id: int) -> Record | None:
        """Job `job_id`'s record, in whichever queue it is, or None."""
        return self._runtime().store.record(job_id)

    def records(self, job_ids: Iterable[int]) -> list[Record]:
        """The records of these jobs that still exist, in order: a round trip per thousand."""
        return self._runtime().store.records(job_ids)

    def to_job(self, record: JobRecord) -> Job:
        """The job model of a record (a multi-file job's with its parts)."""
        return self._runtime().store.to_model(record)

    def find_job(self, job_id: int, queue_id: str | None = None) -> Job | None:
        """Job `job_id` (ids are unique in a namespace), or None when there is none, or
        none in `queue_id` when that is given."""
        record = self.record(job_id)
        if record is None or (queue_id is not None and record.queue_id != queue_id):
            return None
        return self.to_job(record)

    def page_ids(
        self,
        queue_id: str,
        status: str | None = None,
        *,
        after: int | None = None,
        offset: int = 0,
        count: int = 50,
    ) -> list[int]:
        """A page of the queue's ids, oldest first: O(offset + count).

        Args:
            queue_id: the queue.
            status: one of the store's statuses, `cancelled`, or `FAILED` (`error` without
                the cancelled jobs); None for every job.
            after: a cursor: only ids above it (ids only grow, so pages never shift).
            offset: ids to skip after the cursor.
            count: ids to answer at most; ask one more than a page to learn whether a next
                page exists.

        Returns:
            The ids, ascending.
        """
        return self._store.page_ids(queue_id, status, after=after, offset=offset, count=count)

    def listing(
        self,
        queue_ids: Sequence[str],
        statuses: Sequence[str] = (),
        *,
        newest_first: bool = False,
        parts: bool = False,
    ) -> Iterator[Job]:
        """The jobs of several queues, merged in id order and read a page at a time.

        Finished jobs past `DOWNLOADER_RESULT_TTL` are swept away first.

        Args:
            queue_ids: the queues (`queue_names()` for all).
            statuses: only jobs in these (`waiting`, `running`, `paused`, `completed`,
                `error`, which leaves the cancelled jobs out, and `cancelled`); empty for all.
            newest_first: descending ids (`list --limit N` takes the first N).
            parts: a multi-file job's parts too, not only the job.

        Yields:
            Each job's model, fresh from the store.
        """
        store = self._store
        walks = []
        for queue_id in queue_ids:
            self.sweep_expired(queue_id)
            indexes = [FAILED if word == "error" else word for word in statuses] or [None]
            walks += [store.walk_ids(queue_id, index, newest_first) for index in indexes]
        merged = heapq.merge(*walks, reverse=newest_first)
        ids = (job_id for job_id, _ in itertools.groupby(merged))
        while page := list(itertools.islice(ids, BATCH)):
            for record in store.store.records(page):
                if statuses and _status_word(record) not in statuses:
                    continue  # it changed since its index was read
                if record.parent_id is not None and not parts:
                    continue
                yield store.store.to_model(record)

    def running(self, queue_id: str) -> list[Record]:
        """The queue's running jobs' records, in id order: O(running)."""
        return self._runtime().store.running(queue_id)

    def sweep_expired(self, queue_id: str) -> int:
        """Retention: remove the queue's jobs that ended more than `DOWNLOADER_RESULT_TTL`
        seconds ago; answers how many went."""
        runtime = self._runtime()
        return runtime.store.sweep_expired(queue_id, runtime.settings.result_ttl)

    def subscribe(self, queue_id: str | None) -> Subscription:
        """The events of `queue_id` (of every queue with None) from now on; iterating yields
        each payload, and None after each quiet poll. Close it when done."""
        runtime = self._runtime()
        return Subscription(runtime.redis, runtime.settings.namespace, queue_id)

    # -- steering -----------------------------------------------------------------------------

    def is_paused(self, queue_id: str) -> bool:
        """Whether `pause` holds for the queue (its flag in Redis)."""
        return self._pauses().is_paused(queue_id)

    def pause(self, queue_id: str) -> None:
        """Workers stop taking the queue's jobs (running ones go on), and workers that
        start later leave it alone too, until `resume`. Celery workers are told at once;
        threads that run their own jobs without a broker (`downloader get`, the embedded
        default) read the flag before each job they start.

        Raises:
            TooManyPaused: `store.pauses.MAX_PAUSED` queues are paused already.
        """
        celery = self._broker()
        if celery is None:
            self._pauses().pause(queue_id)
            return
        from downloader.celery_app import control

        control.pause(celery, queue_id)

    def resume(self, queue_id: str) -> None:
        """The workers started with the queue take its jobs again."""
        celery = self._broker()
        if celery is None:
            self._pauses().resume(queue_id)
            return
        from downloader.celery_app import control

        control.resume(celery, queue_id)

    def _pauses(self) -> QueuePauses:
        runtime = self._runtime()
        return QueuePauses(runtime.redis, runtime.settings.namespace)

    def _broker(self) -> DownloaderApp | None:
        """The Celery app that tells the workers, or None for a service that runs its own
        jobs without a broker (its threads read the flag themselves)."""
        self._runtime()  # a closed service says so, rather than pausing nothing
        try:
            return self._celery()
        except RuntimeError:
            return None

    # -- stopped gets -------------------------------------------------------------------------

    def remember_stopped(self, dest: Path, jobs: Iterable[Job]) -> None:
        """Note a stopped `get`'s unfinished jobs into `dest` for the same `get` to take
        over (see `client.resume`)."""
        resume.remember(self._store, dest, jobs)

    def take_over_stopped(
        self, dest: Path, wanted: Mapping[str, str], restart: bool
    ) -> list[resume.TakenOver]:
        """Take over what a stopped `get` into `dest` left: its jobs are removed, and its
        partial files made the new jobs' to resume or, with `restart`, deleted.

        Args:
            dest: the `get`'s destination directory.
            wanted: how each file of the new `get` is remembered (its URL; a repo file's
                final path) to the URL its new job fetches: a partial begun on another URL
                cannot be resumed.
            restart: delete the partial files instead (`get --restart`).

        Returns:
            One `TakenOver` per partial file found, saying what became of it.
        """
        return resume.take_over(self._store, dest, wanted, restart)


def _status_word(record: JobRecord) -> str:
    return "cancelled" if record.cancelled else record.status.value
