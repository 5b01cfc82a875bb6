"""How an attempt ends, in one store call each: completed, failed, cancelled, handed back;
and the job's files on the volume, which the end releases (or, for a cancel, removes).

Every end but a hand-back is `JobStore.finish`: the job's status and fields, its lease and
path reservations released, the token deleted, its last progress and its end published, in
one round trip. The lease's renewal stops first, so the renewer never sees it vanish.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from downloader.engine.destdir import remove_empty
from downloader.engine.filestate import discard_partial, partial_path
from downloader.engine.redact import scrub
from downloader.engine.transfer import TransferResult
from downloader.jobs import events as ev
from downloader.jobs.failure import CANCELLED_ERROR_TYPE, cancellation
from downloader.jobs.models import DownloadJobStatus
from downloader.jobs.record import JobRecord, utcnow
from downloader.store.bus import Announcement
from downloader.store.reservations import Reservations
from downloader.worker.attempt import Attempt, job_root, log
from downloader.worker.hooks import JobHooks
from downloader.worker.outcome import Outcome, error_type, failure_of

END_REWRITES = 3
"""Times an end the replicas did not confirm is written again before it is announced."""


def final_paths(record: JobRecord) -> list[Path]:
    """The final paths a job may own: its explicit `dest`, and the name it was given."""
    paths = [record.download_path] if record.download_path else []
    if record.dest_is_dir is False:
        paths.append(record.dest)
    return paths


class JobEnd:
    """Ends one attempt, and knows the files its job may own."""

    def __init__(self, attempt: Attempt, hooks: JobHooks, reservations: Reservations) -> None:
        self.attempt = attempt
        self.hooks = hooks
        self.reservations = reservations

    # -- the ends ---------------------------------------------------------------------------

    def completed(self, result: TransferResult) -> Outcome:
        """The file is in place: completed, with the last progress if the throttle lets it,
        and its start if that was not stored yet (a small file's, or one Redis could not take
        then): download_started goes out first, in the same round trip."""
        attempt, hooks = self.attempt, self.hooks
        events, start = [], {}
        if not hooks.started_published:  # stored with the end, in its round trip
            started, start = hooks.start_of(result)
            events.append(started)
        current, total = result.bytes, result.total_bytes
        ended = utcnow()
        last_progress = hooks.throttle.ready(current, total)
        if last_progress:
            events.append(
                attempt.event(ev.DOWNLOAD_PROGRESS, **hooks.progress_fields(current, total))
            )
        events.append(
            attempt.event(
                ev.DOWNLOAD_COMPLETE,
                source=attempt.source,
                download_path=result.download_path,
                total_bytes=total,
                # The job as it ends, so that a client finishes it without reading the record.
                current_bytes=current,
                attempts=attempt.record.attempts,
                job_ended=ended.isoformat(),
            )
        )
        self.end(
            DownloadJobStatus.COMPLETED,
            events,
            **{**start, "bytes": current, "total_bytes": total, "job_ended": ended},
        )
        if last_progress:
            hooks.progressed(current, total)
        return Outcome.COMPLETED

    def failed(self, exc: BaseException) -> Outcome:
        """An error: `error_type` and `error` (the traceback) as InvokeAI has them, the
        structured failure beside them. Called while `exc` is being handled."""
        said = {"error_type": error_type(exc), "error": scrub(traceback.format_exc())}
        self.hooks.store_deferred_start()
        failed = self.attempt.event(ev.DOWNLOAD_ERROR, source=self.attempt.source, **said)
        self.remove_made_dirs()
        self.end(DownloadJobStatus.ERROR, [failed], failure=failure_of(exc), **said)
        return Outcome.ERROR

    def cancelled(self) -> Outcome:
        """A cancelled job leaves nothing behind: its partial file and state go."""
        self.discard_partials()
        self.remove_made_dirs()
        attempt = self.attempt
        cancelled = attempt.event(ev.DOWNLOAD_CANCELLED, source=attempt.source)
        self.end(
            DownloadJobStatus.ERROR,
            [cancelled],
            cancelled=True,
            error_type=CANCELLED_ERROR_TYPE,
            failure=cancellation(attempt.job_id),
        )
        return Outcome.CANCELLED

    def paused(self) -> Outcome:
        """A caller paused the job: it is marked paused, its lease released and its partial
        file, state and path kept for the resume, in one round trip. A resume that came
        while the transfer stopped withdrew the pause: the job goes back to the queue."""
        attempt = self.attempt
        self.hooks.store_deferred_start()
        if attempt.keeper is not None:
            attempt.keeper.done = True  # before the lease goes, so the renewer does not miss it
        paused = attempt.event(
            ev.DOWNLOAD_PAUSED, source=attempt.source, download_path=attempt.record.download_path
        )
        if attempt.app.store.pause_stopped(attempt.job_id, attempt.owner, [paused]):
            return Outcome.PAUSED
        attempt.app.store.release(attempt.job_id, attempt.owner)
        return self.hand_back()

    def hand_back(self) -> Outcome:
        """Put the job back as waiting and queue it again; its partial file stays to resume."""
        attempt = self.attempt
        self.hooks.store_deferred_start()
        attempt.app.store.requeue(attempt.job_id)
        attempt.app.submit(attempt.job_id, attempt.queue_id, attempt.record.priority)
        return Outcome.HANDED_BACK

    def lease_lost(self) -> Outcome:
        """Another attempt holds the job: it is that attempt's to end."""
        log.warning(
            "job %s: lease lost; leaving the job to the attempt that holds it",
            self.attempt.job_id,
        )
        return Outcome.LEASE_LOST

    def vanished(self) -> Outcome:
        """The job's record went with Redis's data: stop, and keep the partial to resume."""
        known = self.attempt.record.download_path
        log.warning(
            "job %s vanished: Redis lost its data, and this job with it; stopping, and "
            "keeping %s to resume (give Redis persistence and maxmemory-policy noeviction)",
            self.attempt.job_id,
            f"its partial file {partial_path(known)}" if known else "no partial file",
        )
        return Outcome.VANISHED

    def end(self, status: DownloadJobStatus, events: list[Announcement], **fields: Any) -> None:
        """End the attempt in one round trip: the job's status and `fields`, the lease, the
        path reservations and the connection slots the transfer left for it released, then
        `events` published.

        With replicas to wait for, the end is announced only once one has it: an end that a
        failover lost was never heard of, so the job, run again, ends once in everyone's
        eyes. An end the replicas did not confirm is written again where the primary is now
        (it changes nothing where it had arrived) before it is announced."""
        attempt = self.attempt
        app = attempt.app
        if attempt.keeper is not None:
            attempt.keeper.done = True  # before the lease goes, so the renewer does not miss it
        deferred = app.durability.needed() > 0
        paths = [self.reservations.key(path) for path in self.final_paths()]
        slots = attempt.pacing.ending() if attempt.pacing is not None else []

        def finish(events: list[Announcement]) -> bool:
            return app.store.finish(
                attempt.job_id,
                status,
                owner=attempt.owner,
                paths=paths,
                events=events,
                slots=slots,
                **fields,
            )

        recorded = finish([] if deferred else events)
        what = f"end of job {attempt.job_id}"
        if deferred:
            for _ in range(END_REWRITES):
                if app.durability.settle(what):
                    break
                recorded = finish([])
            app.publisher.announce(events)
        else:
            app.durability.settle(what)
        if recorded and attempt.pacing is not None:
            attempt.pacing.ended(slots)  # else the run gives them back after the end
        if not recorded:
            log.warning(
                "job %s ended %s, but its record is gone from Redis: nobody hears of its end",
                attempt.job_id,
                status.value,
            )

    # -- the job's files --------------------------------------------------------------------

    def final_paths(self) -> list[Path]:
        """The final paths this job may own: its explicit `dest`, and the name it was given."""
        return final_paths(self.attempt.record)

    def tidy_if_cancelled(self) -> None:
        """A job cancelled while no worker ran it (its own was gone) may have left a partial
        file and its reservation: remove them, here where the volume is. The record is the
        claim's (or a fresh read)."""
        if self.attempt.record.cancelled:
            self.discard_partials()
            job_id = self.attempt.job_id
            self.reservations.release((job_id, path) for path in self.final_paths())

    def remove_made_dirs(self) -> None:
        """Remove the directories this attempt made that are empty (a part's subdirectories),
        before the end is told, so a failed or cancelled multi-file job leaves none behind;
        never one that was there before."""
        attempt = self.attempt
        if attempt.made_dirs:
            remove_empty(attempt.made_dirs, job_root(attempt.record, attempt.app.settings))

    def discard_partials(self) -> None:
        """Remove the partial files and states of this job (only those it owns)."""
        attempt = self.attempt
        root = job_root(attempt.record, attempt.app.settings)
        for path in self.final_paths():
            discard_partial(path, attempt.job_id, root)
