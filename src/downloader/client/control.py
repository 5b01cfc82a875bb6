"""Looking at, waiting for, steering and cancelling the jobs of a service's queue: the second
room of `DownloadQueueService` (after `lifecycle.ServiceLifecycle`, before the queueing
methods). The steering itself is `client.steering`'s; here a job is looked up in this
service's queue and its live object brought up to date."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from downloader.client.lifecycle import ServiceLifecycle
from downloader.client.steering import STOP_WAIT
from downloader.jobs.models import DownloadJob, DownloadJobStatus, MultiFileDownloadJob
from downloader.jobs.record import JobRecord

Job = DownloadJob | MultiFileDownloadJob


class UnknownJobIDException(KeyError):
    """No job with that id in this queue."""


class QueueControl(ServiceLifecycle):
    """InvokeAI's listing, waiting and cancelling, on this service's queue."""

    # -- looking ------------------------------------------------------------------------------

    def list_jobs(self) -> list[Job]:
        """Every job of this queue in Redis, queued by any client, oldest first.

        Returns:
            The jobs; those this service queued are the live objects it handed out (brought
            up to date), the others fresh copies. A queue of millions is better walked with
            `iter_jobs`.
        """
        return list(self.iter_jobs())

    def iter_jobs(self, status: DownloadJobStatus | str | None = None) -> Iterator[Job]:
        """The queue's jobs, oldest first, read a page at a time in bounded memory.

        Finished jobs older than `DOWNLOADER_RESULT_TTL` are swept away first.

        Args:
            status: only the jobs in this status (`waiting`, `running`, `paused`, `completed` or
                `error`, cancelled ones included); None for all.

        Yields:
            Each job, as `list_jobs` answers it.

        Raises:
            ValueError: `status` is not a `DownloadJobStatus`.
        """
        store = self.app.store
        store.sweep_expired(self._queue_id, self._settings.result_ttl)
        wanted = None if status is None else DownloadJobStatus(status).value
        for record in store.iter_records(self._queue_id, wanted):
            yield self._live.live(store.to_model(record))

    def id_to_job(self, id: int) -> Job:
        """The job with this id.

        Args:
            id: the job's `id`.

        Returns:
            The live object when this service queued the job, else a fresh copy.

        Raises:
            UnknownJobIDException: no job `id` in this service's queue.
        """
        job = self.admin.find_job(id, self._queue_id)
        if job is None:
            raise UnknownJobIDException(f"no job {id} in queue {self._queue_id!r}")
        return self._live.live(job)

    # -- waiting ------------------------------------------------------------------------------

    def wait_for_job(self, job: Job, timeout: float | None = None) -> Job:
        """Block until `job` ends (completed, error or cancelled).

        Args:
            job: a job this service handed out (another is waited on by its status only).
            timeout: seconds to wait at most; None waits for ever.

        Returns:
            `job` itself, in its final state.

        Raises:
            TimeoutError: it did not end within `timeout` seconds.
        """
        return self._live.wait_for(job, timeout)

    def join(self) -> None:
        """Block until every job this service queued has ended."""
        self._live.join()

    # -- control ------------------------------------------------------------------------------

    def cancel_job(self, job: Job) -> None:
        """Stop `job`: at once if it waits, within a second if it runs.

        A multi-file job's parts are all cancelled; a cancelled part ends its multi-file
        job. The job's `on_cancelled` callback runs and its partial files are removed.

        Args:
            job: the job (only its `id` is read).

        Raises:
            UnknownJobIDException: no job with its id in Redis.
        """
        if not self.admin.cancel(job.id):
            raise UnknownJobIDException(f"no job {job.id} in queue {self._queue_id!r}")

    def pause_job(self, job: Job | int, wait: float = STOP_WAIT) -> Job:
        """Pause `job` (InvokeAI's `pause_job`): status `paused`, its partial file kept, no
        worker slot taken. A waiting job is paused at once; a running one's worker stops it
        within about a second (this waits up to `wait` seconds for that). A multi-file job
        pauses its unfinished parts. Events: `download_paused` (`multifile_download_paused`).

        Args:
            job: the job or its id.
            wait: seconds to wait at most for a running job's worker to stop it.

        Returns:
            The job after the pause (the live object when this service queued it).

        Raises:
            UnknownJobIDException: no such job in this service's queue.
            InvalidTransitionError: it has ended, or is being cancelled.
        """
        return self._steered(job, lambda job_id: self.admin.pause_job(job_id, wait))

    def resume_job(self, job: Job | int) -> Job:
        """Queue paused `job` again: it continues from its partial file with a Range request
        when the file's validators still match. A multi-file job resumes its paused parts.
        Resuming a job that waits or runs changes nothing. Events: `download_resumed`.

        Returns:
            The job after the resume.

        Raises:
            UnknownJobIDException: no such job in this service's queue.
            InvalidTransitionError: it has ended, or is being cancelled.
        """
        return self._steered(job, self.admin.resume_job)

    def retry_job(self, job: Job | int) -> Job:
        """Queue failed or cancelled `job` again. A failed job's partial file is resumed when
        its validators still match; a cancelled job's partial was removed by the cancel, so
        it starts over. A multi-file job retries its parts that did not complete. Its own
        access token went when it ended: the retry uses the origin's configured token
        (`DOWNLOADER_HOST_TOKENS`), if any. Events: `download_resumed` with `retried` true.

        Returns:
            The job after the retry; `wait_for_job` waits for its new end.

        Raises:
            UnknownJobIDException: no such job in this service's queue.
            InvalidTransitionError: it completed or has not ended, or it is a part of a
                multi-file job (retry that job).
        """
        self._find(job)
        self._live.revive(self._job_id(job))
        try:
            return self._steered(job, self.admin.retry_job)
        except Exception:
            self._live.settle(self._job_id(job))
            raise

    def set_priority(self, job: Job | int, priority: int) -> Job:
        """Give `job` a new priority (lower runs first). A waiting job moves in its queue: it
        starts in its new place when a worker slot frees. A running or paused job keeps its
        state; the priority counts when it is next queued. A multi-file job: every part.

        Returns:
            The job after the change.

        Raises:
            UnknownJobIDException: no such job in this service's queue.
            InvalidTransitionError: it has ended.
        """
        return self._steered(job, lambda job_id: self.admin.set_job_priority(job_id, priority))

    def _job_id(self, job: Job | int) -> int:
        return job if isinstance(job, int) else job.id

    def _find(self, job: Job | int) -> JobRecord:
        job_id = self._job_id(job)
        record = self.admin.record(job_id)
        if record is None or record.queue_id != self._queue_id:
            raise UnknownJobIDException(f"no job {job_id} in queue {self._queue_id!r}")
        return record

    def _steered(self, job: Job | int, steer: Callable[[int], JobRecord | None]) -> Job:
        """Steer a job of this queue, then answer it (its live object brought up to date)."""
        job_id = self._find(job).id
        fresh = None if steer(job_id) is None else self.admin.find_job(job_id, self._queue_id)
        if fresh is None:
            raise UnknownJobIDException(f"no job {job_id} in queue {self._queue_id!r}")
        if isinstance(fresh, MultiFileDownloadJob):
            for part in fresh.download_parts:
                self._live.live(part)
        return self._live.live(fresh)

    def cancel_all_jobs(self) -> None:
        """Cancel every unfinished job of this queue, queued by any client: parents first
        (each cancels its parts), then the rest in pipelined batches."""
        self.admin.cancel_all_jobs(self._queue_id)

    def prune_jobs(self) -> None:
        """Forget every finished job of this queue (completed, error, cancelled)."""
        self._live.forget(self.admin.prune(self._queue_id))
