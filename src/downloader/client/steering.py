"""Steering one job of any queue by its id: pause, resume, retry, a new priority.

The store's scripts decide from the job's state and change it at once (`store.steering`);
this module turns their answers into what a caller sees: the job queued again where a
script says so, a multi-file job's parts steered with it, a refusal as an
`InvalidTransitionError`, and the job's record after the change. A running job is paused
by its worker, which sees the flag within a progress interval: `pause` waits for that (up to
`wait` seconds), so that what it answers is the job as it is after the pause.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from downloader.jobs import events as ev
from downloader.jobs.models import DownloadJobStatus
from downloader.jobs.record import JobRecord
from downloader.jobs.transitions import InvalidTransitionError
from downloader.store.bus import Announcement
from downloader.store.reservations import DestinationTakenError, Reservations
from downloader.store.steering import SteerResult
from downloader.worker.ending import final_paths
from downloader.worker.runtime import Runtime

STOP_WAIT = 10.0
"""Seconds `pause` and `cancel` wait by default for a running job's worker to stop it; a
worker sees the request within about a second, whatever the origin's pace."""

_POLL = 0.05
"""Seconds between two looks at a job whose worker is stopping it."""


def _state(record: JobRecord) -> str:
    """A job's state in a refusal: its status, `cancelled` for a cancelled error."""
    return "cancelled" if record.cancelled else record.status.value


def _stopping(record: JobRecord) -> bool:
    """Whether a job runs with a pause or a cancel asked of its worker."""
    running = record.status is DownloadJobStatus.RUNNING
    return running and (record.pause_requested or record.cancel_requested)


class Steering:
    """Pause, resume, retry and reprioritise jobs of any queue of one runtime."""

    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self._runtime = runtime  # raises RuntimeError once the service is closed

    # -- pause and resume ---------------------------------------------------------------------

    def pause(self, job_id: int, wait: float = STOP_WAIT) -> JobRecord | None:
        """Pause a job: at once if it waits; a running one's worker stops it, keeping the
        partial file, within about a second. A multi-file job pauses every unfinished part.

        Args:
            job_id: the job.
            wait: seconds to wait at most for a running job's worker to stop it.

        Returns:
            The job's record after the pause (still `running` if its worker did not stop it
            within `wait`), or None when there is no such job.

        Raises:
            InvalidTransitionError: the job has ended, or is being cancelled.
        """
        record = self._record(job_id)
        if record is None:
            return None
        store = self._runtime().store
        kind = ev.MULTIFILE_PAUSED if record.multifile else ev.DOWNLOAD_PAUSED
        result = store.pause(job_id, [self._event(kind, record)])
        self._refuse(record, "pause", result)
        if record.multifile:
            parts = store.records(record.part_ids)
            store.steer_many(
                "pause", [(part.id, self._event(ev.DOWNLOAD_PAUSED, part)) for part in parts]
            )
            self._await_stopped(record.part_ids, wait)
        elif result is SteerResult.REQUESTED:
            self._await_stopped([job_id], wait)
        return self._record(job_id)

    def resume(self, job_id: int) -> JobRecord | None:
        """Queue a paused job again; it continues from its partial file with a Range request
        when the file's validators still match. A multi-file job resumes its paused parts. A
        running job whose pause its worker has not acted on yet goes on; a waiting or running
        job stays as it is.

        Returns:
            The job's record after the resume, or None when there is no such job.

        Raises:
            InvalidTransitionError: the job has ended, or is being cancelled.
        """
        record = self._record(job_id)
        if record is None:
            return None
        store = self._runtime().store
        kind = ev.MULTIFILE_RESUMED if record.multifile else ev.DOWNLOAD_RESUMED
        result = store.resume(job_id, [self._event(kind, record, retried=False)])
        self._refuse(record, "resume", result)
        if record.multifile:
            parts = store.records(record.part_ids)
            results = store.steer_many(
                "resume",
                [(p.id, self._event(ev.DOWNLOAD_RESUMED, p, retried=False)) for p in parts],
            )
            self._submit(parts, results, SteerResult.RESUMED)
        elif result is SteerResult.RESUMED:
            self._submit([record], [result], SteerResult.RESUMED)
        return self._record(job_id)

    # -- retry --------------------------------------------------------------------------------

    def retry(self, job_id: int) -> JobRecord | None:
        """Queue a failed or cancelled job again. Its partial file is resumed when its
        validators still match (a cancel removed it: the job starts over). A multi-file job
        retries the parts that did not complete; a part is retried through its job.

        Returns:
            The job's record after the retry, or None when there is no such job.

        Raises:
            InvalidTransitionError: the job completed or has not ended, a part of a
                multi-file job was named, or a multi-file job's parts are still stopping.
        """
        record = self._record(job_id)
        if record is None:
            return None
        if record.parent_id is not None:
            raise InvalidTransitionError(
                job_id, "retry", _state(record), f"it is a part: retry job {record.parent_id}"
            )
        store = self._runtime().store
        parts: list[JobRecord] = []
        if record.multifile and record.status is DownloadJobStatus.ERROR:
            parts = store.records(record.part_ids)
            if any(not part.status.finished for part in parts):
                raise InvalidTransitionError(
                    job_id, "retry", _state(record), "its parts are still stopping; try again"
                )
        failed = [part for part in parts if part.status is DownloadJobStatus.ERROR]
        owned = self._reserve(record, failed if record.multifile else [record])
        kind = ev.MULTIFILE_RESUMED if record.multifile else ev.DOWNLOAD_RESUMED
        result = store.requeue_failed(job_id, [self._event(kind, record, retried=True)])
        if result is not SteerResult.RETRIED:
            Reservations(store).release(owned)
        self._refuse(record, "retry", result)
        if record.multifile:
            results = store.steer_many(
                "requeue",
                [(p.id, self._event(ev.DOWNLOAD_RESUMED, p, retried=True)) for p in failed],
            )
            self._submit(failed, results, SteerResult.RETRIED)
        else:
            self._submit([record], [result], SteerResult.RETRIED)
        self._runtime().durability.settle(f"retry of job {job_id}")
        return self._record(job_id)

    def _reserve(self, record: JobRecord, jobs: Sequence[JobRecord]) -> list[tuple[int, Path]]:
        """Take back the final paths of the jobs a retry queues again (their end released
        them), so that a path another job has taken since is refused now, not by a worker.

        Raises:
            InvalidTransitionError: another unfinished job holds one of the paths.
        """
        if record.status is not DownloadJobStatus.ERROR:
            return []  # the script refuses it
        owned = [(job.id, path) for job in jobs for path in final_paths(job)]
        try:
            Reservations(self._runtime().store).acquire(owned)
        except DestinationTakenError as exc:
            why = f"job {exc.holder} holds its path {exc.path} now"
            raise InvalidTransitionError(record.id, "retry", _state(record), why) from exc
        return owned

    # -- priority -----------------------------------------------------------------------------

    def set_priority(self, job_id: int, priority: int) -> JobRecord | None:
        """Give a job a new priority (lower runs first). A waiting job moves in its queue
        (sent again at its new level when the level changes); a running or paused one
        keeps its state, with the priority recorded for its next start. A multi-file job
        gives it to each unfinished part.

        Returns:
            The job's record after the change, or None when there is no such job.

        Raises:
            InvalidTransitionError: the job has ended.
        """
        record = self._record(job_id)
        if record is None:
            return None
        store = self._runtime().store
        result = store.reprioritize(job_id, priority, record.multifile)
        self._refuse(record, "priority", result)
        if record.multifile:
            parts = store.records(record.part_ids)
            results = store.reprioritize_many([part.id for part in parts], priority)
            self._submit(parts, results, SteerResult.MOVED, priority)
        else:
            self._submit([record], [result], SteerResult.MOVED, priority)
        return self._record(job_id)

    # -- waiting for a stop -------------------------------------------------------------------

    def await_stopped(self, job_id: int, wait: float = STOP_WAIT) -> JobRecord | None:
        """The job's record once its worker stopped it (a cancel, a pause), or as it is after
        `wait` seconds; None when there is no such job."""
        record = self._record(job_id)
        if record is not None and record.multifile:
            self._await_stopped(record.part_ids, wait)
        else:
            self._await_stopped([job_id], wait)
        return self._record(job_id)

    def _await_stopped(self, job_ids: Sequence[int], wait: float) -> None:
        """Poll until none of these jobs runs with a stop asked for, or `wait` passes."""
        deadline = time.monotonic() + wait
        store = self._runtime().store
        while True:
            stopping = [r for r in store.records(job_ids) if _stopping(r)]
            if not stopping or time.monotonic() >= deadline:
                return
            job_ids = [r.id for r in stopping]
            time.sleep(_POLL)

    # -- helpers ------------------------------------------------------------------------------

    def _record(self, job_id: int) -> JobRecord | None:
        return self._runtime().store.record(job_id)

    def _event(self, kind: str, record: JobRecord, **fields: object) -> Announcement:
        if not record.multifile:
            fields["source"] = record.source
        publisher = self._runtime().publisher
        return publisher.prepare(kind, record.queue_id, record.id, record.follower, **fields)

    def _submit(
        self,
        records: Sequence[JobRecord],
        results: Sequence[SteerResult],
        wanted: SteerResult,
        priority: int | None = None,
    ) -> None:
        """Queue the jobs whose script answered `wanted`, at their (new) priority."""
        due = [
            (r.id, r.queue_id, r.priority if priority is None else priority)
            for r, result in zip(records, results, strict=True)
            if result is wanted
        ]
        if due:
            self._runtime().submit_many(due)

    @staticmethod
    def _refuse(record: JobRecord, action: str, result: SteerResult) -> None:
        """Raise the refusal a script's answer means, if it is one."""
        why = {
            SteerResult.FINISHED: "it has ended",
            SteerResult.COMPLETED: "it has completed",
            SteerResult.ACTIVE: "it has not ended (only a failed or cancelled job is retried)",
            SteerResult.CANCELLING: "it is being cancelled",
        }.get(result)
        if result is SteerResult.ACTIVE and action != "retry":
            return  # resuming a job that waits or runs changes nothing
        if why is not None:
            raise InvalidTransitionError(record.id, action, _state(record), why)
