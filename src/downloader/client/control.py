"""Looking at, waiting for and cancelling the jobs of a service's queue: the second room of
`DownloadQueueService` (after `lifecycle.ServiceLifecycle`, before the queueing methods)."""

from __future__ import annotations

from collections.abc import Iterator

from downloader.client.lifecycle import ServiceLifecycle
from downloader.jobs.models import DownloadJob, DownloadJobStatus, MultiFileDownloadJob

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
            status: only the jobs in this status (`waiting`, `running`, `completed` or
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

    def cancel_all_jobs(self) -> None:
        """Cancel every unfinished job of this queue, queued by any client: parents first
        (each cancels its parts), then the rest in pipelined batches."""
        self.admin.cancel_all_jobs(self._queue_id)

    def prune_jobs(self) -> None:
        """Forget every finished job of this queue (completed, error, cancelled)."""
        self._live.forget(self.admin.prune(self._queue_id))
