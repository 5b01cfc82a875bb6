"""Queueing, cancelling and removing in any queue of a service's Redis, by its id: what a
front end that serves every queue with one service needs (the REST API; `admin.QueueAdmin`).

`DownloadQueueService`'s own methods work on its queue; these name the queue, and never
hand out live objects when the service does not follow its jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from downloader.client.enqueue import Enqueuer
from downloader.client.steering import STOP_WAIT, Steering
from downloader.jobs.models import DownloadJob, MultiFileDownloadJob, RemoteModelFile
from downloader.jobs.record import JobRecord
from downloader.store.admin import StoreAdmin
from downloader.worker import parents
from downloader.worker.runtime import Runtime

if TYPE_CHECKING:
    from downloader.hub import ResolvedRepo


class AnyQueueJobs:
    """Jobs queued into, cancelled in and removed from the queue each call names."""

    def __init__(self, runtime: Callable[[], Runtime], enqueuer: Enqueuer) -> None:
        self._runtime = runtime  # raises RuntimeError once the service is closed
        self._enqueuer = enqueuer
        self._steering = Steering(runtime)

    @property
    def _store(self) -> StoreAdmin:
        return StoreAdmin(self._runtime().store)

    def download_many(self, queue_id: str, items: Iterable[Mapping[str, Any]]) -> list[DownloadJob]:
        """`DownloadQueueService.download_many` into the queue `queue_id`.

        Args:
            queue_id: the queue the jobs go to (checked by the caller, see `jobs.queues`).
            items: each a mapping of `download`'s arguments by name (`source`, `dest`, and
                `priority`, `access_token`, `sha256`, `mirrors`, `untrusted` when given).

        Returns:
            The jobs, in the order of `items`.

        Raises:
            ValueError: a `dest` or a mirror that cannot be used; nothing is queued.
            DestinationTakenError: another unfinished job holds one of the paths.
        """
        return self._enqueuer.download_many(queue_id, items)

    def enqueue_many(self, queue_id: str, items: Iterable[Mapping[str, Any]]) -> list[JobRecord]:
        """`download_many`, answering the new jobs' records as they were written: what a
        front end shows of them without reading a thousand records back."""
        return [record for _, record in self._enqueuer.enqueue_many(queue_id, items)]

    def multifile_download(
        self,
        queue_id: str,
        parts: Sequence[RemoteModelFile],
        dest: str | Path,
        access_token: str | None = None,
        *,
        priority: int = 10,
        untrusted: bool = False,
        revision: str | None = None,
        bandwidth: str | int | None = None,
    ) -> MultiFileDownloadJob:
        """`DownloadQueueService.multifile_download` into the queue `queue_id`, with no
        callbacks (the job is not followed when the service does not follow its jobs).

        Raises:
            ValueError: no parts, two parts with one path, or a bad token.
            DestinationTakenError: another unfinished job holds one of the paths.
        """
        return self._enqueuer.multifile_download(
            queue_id,
            parts,
            dest,
            access_token,
            priority=priority,
            untrusted=untrusted,
            revision=revision,
            bandwidth=bandwidth,
        )

    def repo_download(
        self,
        queue_id: str,
        repo: ResolvedRepo,
        dest: str | Path,
        *,
        priority: int = 10,
        access_token: str | None = None,
        untrusted: bool = False,
        bandwidth: str | int | None = None,
    ) -> MultiFileDownloadJob:
        """A hub repo `hub.resolve_repo` resolved, as one multi-file job on `queue_id` (see
        `DownloadQueueService.repo_download`); `access_token` defaults to the hub's token."""
        return self._enqueuer.repo_download(
            queue_id,
            repo,
            dest,
            priority=priority,
            access_token=access_token,
            untrusted=untrusted,
            bandwidth=bandwidth,
        )

    def cancel(self, job_id: int) -> bool:
        """Cancel job `job_id`: at once if it waits, within a second if it runs; a multi-file
        job, every part; a part, its parent too. Answers False when there is no such job."""
        runtime = self._runtime()
        record = runtime.store.record(job_id)
        if record is None:
            return False
        if record.multifile:
            parents.cancel(runtime, record)
            return True
        runtime.cancel(job_id, record.queue_id)
        if record.parent_id is not None:
            parents.settle(runtime, record.parent_id)  # a cancelled part ends its parent
        return True

    def await_stopped(self, job_id: int, wait: float = STOP_WAIT) -> JobRecord | None:
        """Job `job_id` once its worker acted on a cancel or pause (or after `wait` s)."""
        return self._steering.await_stopped(job_id, wait)

    # -- steering one job (see `client.steering`; each answers the record after the change,
    # None when there is no such job, and raises `InvalidTransitionError` for a refusal) ----

    def pause_job(self, job_id: int, wait: float = STOP_WAIT) -> JobRecord | None:
        """Pause job `job_id`, waiting up to `wait` s for a running one's worker to stop."""
        return self._steering.pause(job_id, wait)

    def resume_job(self, job_id: int) -> JobRecord | None:
        """Queue paused job `job_id` again, to continue from its partial file."""
        return self._steering.resume(job_id)

    def retry_job(self, job_id: int) -> JobRecord | None:
        """Queue failed or cancelled job `job_id` again."""
        return self._steering.retry(job_id)

    def set_job_priority(self, job_id: int, priority: int) -> JobRecord | None:
        """Give job `job_id` a new priority; a waiting job moves in its queue."""
        return self._steering.set_priority(job_id, priority)

    def cancel_all_jobs(self, queue_id: str) -> None:
        """Cancel every unfinished job of `queue_id`, paging through the status indexes:
        parents first (each cancels its parts), then the rest in pipelined batches."""
        runtime = self._runtime()
        store = self._store
        unfinished = runtime.store.records(store.unfinished_ids(queue_id))
        for record in unfinished:
            if record.multifile:
                parents.cancel(runtime, record)
        singles = [record.id for record in unfinished if not record.multifile]
        runtime.cancel_many(singles, queue_id)

    def tidy_cancelled(self, job_id: int) -> None:
        """Remove what a cancelled job left on disk, from this process: for a job no worker
        will come for (a stopped `get`'s, on the embedded default)."""
        from downloader.worker.runner import tidy_cancelled

        tidy_cancelled(self._runtime(), job_id, "cli")

    # -- removing -----------------------------------------------------------------------------

    def remove(self, queue_id: str, job_ids: Iterable[int]) -> None:
        """Forget these jobs of `queue_id`: records, secrets, leases and index entries."""
        self._runtime().store.remove(queue_id, job_ids)

    def prune(self, queue_id: str, *, keep_unsettled_parts: bool = False) -> list[int]:
        """Remove the queue's finished jobs (completed, failed, cancelled).

        Args:
            queue_id: the queue.
            keep_unsettled_parts: keep a finished part of a multi-file job that still runs
                until its job ends (the REST API's `/prune`); else every finished job goes
                (`prune_jobs`, `downloader prune`).

        Returns:
            The ids removed.
        """
        if not keep_unsettled_parts:
            return self._runtime().store.prune(queue_id)
        ids = self._store.settled_ids(queue_id)
        self.remove(queue_id, ids)
        return ids

    def clear(self, queue_id: str, *, unfinished_only: bool = False) -> int:
        """Cancel every unfinished job of the queue, then remove jobs of it.

        Args:
            queue_id: the queue.
            unfinished_only: remove only the jobs that were unfinished (the REST API's
                `/clear`); else every job of the queue (`downloader clear`).

        Returns:
            How many jobs were removed.
        """
        if unfinished_only:
            ids = self._store.unfinished_ids(queue_id)
            self.cancel_all_jobs(queue_id)
        else:
            self.cancel_all_jobs(queue_id)
            ids = self._runtime().store.queue_ids(queue_id)
        self.remove(queue_id, ids)
        return len(ids)
