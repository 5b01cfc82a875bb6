"""The transfer engine's view of a running job: where its bytes are reported, and where it
hears that it must stop (a cancel, a removal, a lost lease, the worker's shutdown).

The engine calls `started` once the first answer names the file, `progress` as bytes come in
and `check` every half second from its watchdog, whatever the origin's pace; a stop is an
exception raised into the transfer, which the runner turns into the attempt's end. A file
whose announced size is at most one read (`chunk_size`, and no more than `LEAN_BYTES`, which
even a slow link brings in well within a progress interval) publishes no progress before its
end, which carries the last one: for small files that was a round trip, a Flower event and
an event for every follower per job. One without a size reports as any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

from downloader.engine.errors import DownloadJobCancelledException
from downloader.engine.transfer import TransferHooks, TransferResult
from downloader.jobs import events as ev
from downloader.jobs.models import JobVanishedError
from downloader.store.bus import Announcement
from downloader.store.connection import is_redis_error, transient
from downloader.store.lifecycle import Standing
from downloader.worker import parents
from downloader.worker.attempt import Attempt, JobPaused, LeaseLost, WorkerStopping
from downloader.worker.throttle import Throttle

log = logging.getLogger(__name__)

LEAN_BYTES = 256 << 10
"""The largest announced size that has no progress event before its end."""


class JobHooks:
    """Reports an attempt's progress and tells it when to stop."""

    def __init__(
        self, attempt: Attempt, listener: Callable[[int, int], None] | None = None
    ) -> None:
        self.attempt = attempt
        self.listener = listener
        """Told of every published progress (the task forwards it to Flower)."""
        self.throttle = Throttle(attempt.app.settings.progress_interval)
        self.last_report = 0.0
        """When the store was last asked whether the job goes on (monotonic seconds)."""
        self.started_published = False
        self.deferred: TransferResult | None = None
        """A small file's start, held back for its end (see `starting`)."""
        self.small = min(attempt.app.settings.chunk_size, LEAN_BYTES)
        """A file of at most this many bytes (announced) has no progress event of its own
        before its end: it is one read, and its end carries its progress."""

    def for_transfer(self) -> TransferHooks:
        return TransferHooks(started=self.starting, progress=self.progress, check=self.check)

    def starting(self, result: TransferResult) -> None:
        """`started`, from inside the transfer: a start Redis cannot take yet is stored with
        the job's end instead (`ending`), and no progress goes out before it. So is the start
        of a file of at most one read (the lean path): its end follows within a read, and
        one round trip stores and publishes both. Not where writes wait for a replica: an
        end lost with a primary that died before the replica had it would also lose the
        start, and the job's next run, not knowing its file, would fetch it whole again
        rather than ask whether the file it finds is still current."""
        lean = not self.attempt.app.durability.needed()
        if lean and result.total_bytes and result.total_bytes <= self.small:
            self.attempt.record.download_path = result.download_path  # the end releases it
            self.attempt.record.etag = result.etag
            self.deferred = result
            return
        self.look(lambda: self.started(result))

    def store_deferred_start(self) -> None:
        """Before an end that keeps the partial file for a later attempt (a pause, a
        hand-back, a failure): store the start the lean path held back, so that the next
        attempt knows the path to resume."""
        deferred = self.deferred
        if deferred is not None and not self.started_published:
            self.look(lambda: self.started(deferred))

    def started(self, result: TransferResult) -> None:
        """Store the path and headers the first answer gave, and publish download_started
        (one script: the event goes out after the write)."""
        started, fields = self.start_of(result)
        self.attempt.app.store.update(self.attempt.job_id, events=[started], **fields)
        self.started_published = True

    def start_of(self, result: TransferResult) -> tuple[Announcement, dict[str, Any]]:
        """The download_started event and the record fields of a start: what `started`
        stores now, or the job's end with its own (see `starting`)."""
        attempt = self.attempt
        # A retry resumes at this path (the partial's own state says whether it still may).
        attempt.record.download_path, attempt.record.etag = result.download_path, result.etag
        record = attempt.record
        started = attempt.event(
            ev.DOWNLOAD_STARTED,
            source=attempt.source,
            download_path=result.download_path,
            # The job as it starts (the claim's record and this answer), so that a client
            # follows it from the event without reading the record.
            job_started=record.job_started.isoformat() if record.job_started else None,
            current_bytes=result.bytes,
            total_bytes=result.total_bytes,
            content_type=result.content_type,
            etag=result.etag,
            final_url=result.final_url,
            job_sequence=record.job_sequence,
            attempts=record.attempts,
        )
        fields = {
            "download_path": result.download_path,
            "bytes": result.bytes,
            "total_bytes": result.total_bytes,
            "content_type": result.content_type,
            "etag": result.etag,
            "final_url": result.final_url,
        }
        return started, fields

    def check(self, current: int, total: int) -> None:
        """Whether the job must stop; the transfer's watchdog asks every half second (and the
        transfer once more before the rename), so a cancel, a removal or the worker's shutdown
        is heard whatever the origin's pace: a cancel that comes before the file is in
        place wins over it.

        Raises:
            DownloadJobCancelledException: the job was cancelled, or removed.
            JobPaused: a caller paused the job (unless the last byte is in).
            JobVanishedError: its record went with Redis's data.
            WorkerStopping: the worker shuts down (unless the last byte is in).
            LeaseLost: another attempt holds the job now.
        """
        attempt = self.attempt
        store = attempt.app.store
        whole = bool(total) and current >= total
        if whole and attempt.pacing is not None:
            attempt.pacing.finishing()
        self.last_report = time.monotonic()
        if self.started_published:
            standing = self.look(lambda: store.report_progress(attempt.job_id, current, total))
        else:
            standing = self.look(lambda: store.standing(attempt.job_id))
        if not (whole and standing is Standing.PAUSED):  # a whole file is finished instead
            self.heed(standing)
        if attempt.app.stopping.is_set() and not whole:
            raise WorkerStopping  # a download whose last byte is in finishes instead
        keeper = attempt.keeper
        if keeper is not None and keeper.lost:
            if keeper.gone:
                self.gone()
            raise LeaseLost

    def look(self, call: Callable[[], Standing | None]) -> Standing:
        """A look at (or a report of) the job from inside its transfer, which Redis out of
        reach for longer than its client rides out (a slow failover) must not fail: the look
        is skipped and the transfer goes on. The lease keeper decides whether the job is
        still this attempt's, and the job's end, which must be stored, waits for Redis."""
        try:
            return call() or Standing.GO_ON
        except Exception as exc:
            if not (is_redis_error(exc) and transient(exc)):
                raise
            log.warning("job %s: cannot reach Redis (%s); going on", self.attempt.job_id, exc)
            return Standing.GO_ON

    def heed(self, standing: Standing) -> None:
        """Stop the attempt if its job was cancelled or paused, or is gone from Redis."""
        if standing is Standing.CANCELLED:
            raise DownloadJobCancelledException(f"job {self.attempt.job_id} was cancelled")
        if standing is Standing.PAUSED:
            raise JobPaused(f"job {self.attempt.job_id} was paused")
        if standing is Standing.GONE:
            self.gone()

    def gone(self) -> NoReturn:
        """The job's record is no longer in Redis. When Redis lost its data, the job vanished
        with everything else: the attempt stops and keeps its partial file (the file queued
        again resumes it). Otherwise someone removed the job (`downloader clear` cancels and
        forgets): as for a cancel, the partial file goes."""
        job_id = self.attempt.job_id
        if self.attempt.app.redis_lost():
            raise JobVanishedError(job_id, redis_lost=True)
        raise DownloadJobCancelledException(f"job {job_id} was removed from its queue")

    def progress(self, current: int, total: int) -> None:
        """Bytes came in: publish progress through the throttle (1% or the interval)."""
        # Bytes that arrive are a chance to look too: a small file may be over before the
        # watchdog's first look.
        if time.monotonic() - self.last_report >= self.attempt.app.settings.progress_interval:
            self.check(current, total)
        if not self.started_published or (total and (current >= total or total <= self.small)):
            # The last byte's progress goes out with the job's end, in the same call; a file
            # no longer than one read (the lean path of small files) reports nothing before,
            # and none goes out before the start is stored.
            return
        if self.throttle.ready(current, total):
            self.attempt.publish(ev.DOWNLOAD_PROGRESS, **self.progress_fields(current, total))
            self.progressed(current, total)

    def waiting(self, reason: str | None) -> None:
        """The job waits for the fleet's limits (None: no longer): its record says why, and
        a download_waiting event tells its followers (one script: the event after the
        write)."""
        attempt = self.attempt
        waiting = attempt.event(ev.DOWNLOAD_WAITING, source=attempt.source, reason=reason)
        attempt.app.store.update(attempt.job_id, events=[waiting], waiting_for=reason)

    def progress_fields(self, current: int, total: int) -> dict[str, Any]:
        """A download_progress event's own fields."""
        return {
            "source": self.attempt.source,
            "download_path": self.attempt.record.download_path,
            "current_bytes": current,
            "total_bytes": total,
        }

    def progressed(self, current: int, total: int) -> None:
        """After a progress event: the parent's summed progress, and the task's listener."""
        parent_id = self.attempt.record.parent_id
        if parent_id is not None:
            self.look(lambda: parents.part_progressed(self.attempt.app, parent_id))
        if self.listener is not None:
            self.listener(current, total)

    def pause(self, seconds: float) -> None:
        """Sleep (before a retry), still answering a cancel or a worker shutdown.

        Raises:
            DownloadJobCancelledException, JobPaused, JobVanishedError, WorkerStopping: as
                `check`.
        """
        app = self.attempt.app
        if self.attempt.pacing is not None:
            self.attempt.pacing.give_back()  # not held through the wait
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, app.settings.progress_interval or 0.25))
            self.heed(self.look(lambda: app.store.standing(self.attempt.job_id)))
            if app.stopping.is_set():
                raise WorkerStopping
