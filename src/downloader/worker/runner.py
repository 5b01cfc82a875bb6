"""Running one download job on a worker: claim, lease, transfer, record, publish.

This is the glue between the job store, the events and the transfer engine; the Celery task
is a one-line call into it, which keeps it runnable (and readable) without Celery.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import requests

from downloader.engine.filestate import discard_partial, partial_path
from downloader.engine.mirrors import Mirrors
from downloader.engine.netguard import public_only_session
from downloader.engine.redact import holding, scrub
from downloader.engine.retry import backoff, is_retriable
from downloader.engine.transfer import TransferHooks, TransferRequest, TransferResult, fetch
from downloader.jobs import events as ev
from downloader.jobs.failure import CANCELLED_ERROR_TYPE, cancellation
from downloader.jobs.models import (
    DownloadJobCancelledException,
    DownloadJobStatus,
    JobVanishedError,
)
from downloader.jobs.record import JobRecord
from downloader.store.jobs import Announcement, ClaimResult, Standing
from downloader.store.reservations import Reservations
from downloader.worker import parents
from downloader.worker.leases import Lease
from downloader.worker.outcome import Outcome, error_type, failure_of
from downloader.worker.throttle import Throttle

if TYPE_CHECKING:
    from downloader.config import Settings
    from downloader.worker.runtime import Runtime

log = logging.getLogger(__name__)


class WorkerStopping(Exception):
    """The worker is shutting down; the job goes back to the queue to resume elsewhere."""


class LeaseLost(Exception):
    """Another attempt owns the job now (this one could not renew its lease): step aside."""


def attempt_owner(worker: str) -> str:
    """A lease owner unique per attempt, so a redelivered copy on the same worker is still
    refused: `<worker node>#<random>`."""
    return f"{worker}#{uuid.uuid4().hex[:12]}"


class JobRun:
    """One attempt at one job on this worker, from the record its claim answered."""

    def __init__(
        self,
        app: Runtime,
        record: JobRecord,
        owner: str,
        token: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.app = app
        self.job_id = record.id
        self.record = record
        self.owner = owner
        self.token = token
        """The job's own access token, as its claim read it."""
        self.progress_listener = on_progress
        """Told of every published progress (the task forwards it to Flower)."""
        self.keeper: Lease | None = None
        self.throttle = Throttle(app.settings.progress_interval)
        self.last_report = 0.0
        self.started_published = False
        self.reservations = Reservations(app.store)
        self.mirrors = Mirrors(record.source or "", record.mirrors)
        """The job's URLs and how each fared: every retry of this attempt starts elsewhere."""

    @property
    def queue_id(self) -> str:
        return self.record.queue_id

    @property
    def source(self) -> str:
        return self.record.source or ""

    def publish(self, event: str, **fields: Any) -> None:
        self.app.publisher.publish(event, self.queue_id, self.job_id, **fields)

    def event(self, event: str, **fields: Any) -> Announcement:
        """An event of this job, for the store call that makes the change it reports."""
        return self.app.publisher.prepare(event, self.queue_id, self.job_id, **fields)

    # -- transfer hooks -------------------------------------------------------------------

    def on_started(self, result: TransferResult) -> None:
        # A retry resumes at this path (the partial's own state says whether it still may).
        self.record.download_path, self.record.etag = result.download_path, result.etag
        started = self.event(
            ev.DOWNLOAD_STARTED, source=self.source, download_path=result.download_path
        )
        self.app.store.update(
            self.job_id,
            events=[started],
            download_path=result.download_path,
            bytes=result.bytes,
            total_bytes=result.total_bytes,
            content_type=result.content_type,
            etag=result.etag,
            final_url=result.final_url,
        )
        self.started_published = True

    def on_check(self, current: int, total: int) -> None:
        """Whether the job must stop; the transfer's watchdog asks every half second (and the
        transfer once more before the rename), so a cancel, a removal or the worker's shutdown
        is heard whatever the origin's pace."""
        self.last_report = time.monotonic()
        store = self.app.store
        if self.started_published:
            self.heed(store.report_progress(self.job_id, current, total))
        else:
            self.heed(store.standing(self.job_id))
        if self.app.stopping.is_set() and not (total and current >= total):
            raise WorkerStopping  # a download whose last byte is in finishes instead
        if self.keeper is not None and self.keeper.lost.is_set():
            if self.keeper.gone:
                self.gone()
            raise LeaseLost

    def heed(self, standing: Standing) -> None:
        """Stop the attempt if its job was cancelled or is gone from Redis."""
        if standing is Standing.CANCELLED:
            raise DownloadJobCancelledException(f"job {self.job_id} was cancelled")
        if standing is Standing.GONE:
            self.gone()

    def gone(self) -> NoReturn:
        """The job's record is no longer in Redis. When Redis lost its data, the job vanished
        with everything else: the attempt stops and keeps its partial file (the file queued
        again resumes it). Otherwise someone removed the job (`downloader clear` cancels and
        forgets): as for a cancel, the partial file goes."""
        if self.app.redis_lost():
            raise JobVanishedError(self.job_id, redis_lost=True)
        raise DownloadJobCancelledException(f"job {self.job_id} was removed from its queue")

    def on_progress(self, current: int, total: int) -> None:
        # Bytes that arrive are a chance to look too: a small file may be over before the
        # watchdog's first look.
        if time.monotonic() - self.last_report >= self.app.settings.progress_interval:
            self.on_check(current, total)
        if total and current >= total:
            return  # the last byte's progress goes out with the job's end, in the same call
        if self.throttle.ready(current, total):
            self.publish_progress(current, total)

    def publish_progress(self, current: int, total: int) -> None:
        self.publish(ev.DOWNLOAD_PROGRESS, **self.progress_fields(current, total))
        self.progressed(current, total)

    def progress_fields(self, current: int, total: int) -> dict[str, Any]:
        return {
            "source": self.source,
            "download_path": self.record.download_path,
            "current_bytes": current,
            "total_bytes": total,
        }

    def progressed(self, current: int, total: int) -> None:
        """After a progress event: the parent's summed progress, and the task's listener."""
        if self.record.parent_id is not None:
            parents.part_progressed(self.app, self.record.parent_id)
        if self.progress_listener is not None:
            self.progress_listener(current, total)

    # -- the attempt ------------------------------------------------------------------------

    def request(self) -> TransferRequest:
        settings = self.app.settings
        return TransferRequest(
            url=self.source,
            dest=self.record.dest,
            dest_is_dir=self.record.dest_is_dir,
            root=job_root(self.record, settings),
            access_token=self.access_token(),
            download_path=self.record.download_path,
            owner=self.job_id,
            sha256=self.record.sha256,
            size=self.record.size,
            chunk_size=settings.chunk_size,
            timeout=(settings.connect_timeout, settings.read_timeout),
            segments=settings.segments,
            segment_threshold=settings.segment_threshold,
            lowest_speed=settings.lowest_speed,
            speed_window=settings.lowest_speed_window,
            reserve=lambda path: self.reservations.try_acquire(self.job_id, path),
            release=lambda path: self.reservations.release([(self.job_id, path)]),
            mirrors=self.mirrors,
        )

    def final_paths(self) -> list[Path]:
        """The final paths this job may own: its explicit `dest`, and the name it was given."""
        record = self.record
        paths = [record.download_path] if record.download_path else []
        if record.dest_is_dir is False:
            paths.append(record.dest)
        return paths

    def release_paths(self) -> None:
        self.reservations.release((self.job_id, path) for path in self.final_paths())

    def tidy_if_cancelled(self) -> None:
        """A job cancelled while no worker ran it (its own was gone) may have left a partial
        file and its reservation: remove them, here where the volume is. `record` is fresh."""
        if self.record.cancelled:
            self.discard_partials()
            self.release_paths()

    def discard_partials(self) -> None:
        """A cancelled job leaves nothing behind: its partial file and state go."""
        root = job_root(self.record, self.app.settings)
        for path in self.final_paths():
            discard_partial(path, self.job_id, root)

    def access_token(self) -> str | None:
        """The job's own token (read by the claim), else the one configured for the source's
        origin. An untrusted (REST) job gets it too, on that exact origin: the operator
        configured it for the fleet, and the caller chooses neither scheme nor port."""
        return self.token or self.app.settings.host_token(self.source)

    def after_claim(self, result: ClaimResult) -> Outcome:
        """Act on what the claim decided: run a claimed job, end one cancelled before it
        started, tidy after one that ended while its worker was gone."""
        if result is ClaimResult.CANCELLED:
            self.finish_cancelled()
            return Outcome.CANCELLED
        if result is ClaimResult.FINISHED:
            self.tidy_if_cancelled()
        if result is not ClaimResult.CLAIMED:
            return Outcome(result.value)
        # The claim has just looked at the cancel flag: the next look is due an interval on.
        self.last_report = time.monotonic()
        if self.record.parent_id is not None:
            parents.part_started(self.app, self.record.parent_id)
        self.keeper = self.app.leases.keep(self.job_id, self.owner)
        try:
            with holding(self.access_token()):  # so that its errors are scrubbed of it
                return self.attempt(session_for(self.app, self.record))
        finally:
            if not self.keeper.done.is_set():  # the end, which releases it, did not come
                self.keeper.done.set()
                self.app.store.release(self.job_id, self.owner)

    def end(self, status: DownloadJobStatus, events: list[Announcement], **fields: Any) -> None:
        """End the attempt in one round trip: the job's status and `fields`, the lease and the
        path reservations released, then `events` published."""
        if self.keeper is not None:
            self.keeper.done.set()  # before the lease goes, so the renewer does not miss it
        recorded = self.app.store.finish(
            self.job_id,
            status,
            owner=self.owner,
            paths=[self.reservations.key(path) for path in self.final_paths()],
            events=events,
            **fields,
        )
        if not recorded:
            log.warning(
                "job %s ended %s, but its record is gone from Redis: nobody hears of its end",
                self.job_id,
                status.value,
            )

    def attempt(self, session: requests.Session) -> Outcome:
        try:
            result = self.fetch_with_retries(session)
        except DownloadJobCancelledException:
            self.finish_cancelled()
            return Outcome.CANCELLED
        except WorkerStopping:
            self.hand_back()
            return Outcome.HANDED_BACK
        except LeaseLost:
            log.warning(
                "job %s: lease lost; leaving the job to the attempt that holds it", self.job_id
            )
            return Outcome.LEASE_LOST
        except JobVanishedError:
            known = self.record.download_path
            log.warning(
                "job %s vanished: Redis lost its data, and this job with it; stopping, and "
                "keeping %s to resume (give Redis persistence and maxmemory-policy noeviction)",
                self.job_id,
                f"its partial file {partial_path(known)}" if known else "no partial file",
            )
            return Outcome.VANISHED
        except Exception as exc:
            said = {"error_type": error_type(exc), "error": scrub(traceback.format_exc())}
            failed = self.event(ev.DOWNLOAD_ERROR, source=self.source, **said)
            self.end(DownloadJobStatus.ERROR, [failed], failure=failure_of(exc), **said)
            return Outcome.ERROR
        if not self.started_published:
            self.on_started(result)
        current, total = result.bytes, result.total_bytes
        events = []
        last_progress = self.throttle.ready(current, total)
        if last_progress:
            events.append(self.event(ev.DOWNLOAD_PROGRESS, **self.progress_fields(current, total)))
        events.append(
            self.event(
                ev.DOWNLOAD_COMPLETE,
                source=self.source,
                download_path=result.download_path,
                total_bytes=total,
            )
        )
        self.end(DownloadJobStatus.COMPLETED, events, bytes=current, total_bytes=total)
        if last_progress:
            self.progressed(current, total)
        return Outcome.COMPLETED

    def fetch_with_retries(self, session: requests.Session) -> TransferResult:
        """Fetch, retrying transient failures; each retry resumes from the partial file."""
        hooks = TransferHooks(
            started=self.on_started, progress=self.on_progress, check=self.on_check
        )
        settings = self.app.settings
        retries = 0
        while True:
            try:
                return fetch(self.request(), session, hooks)
            except Exception as exc:
                if not is_retriable(exc) or retries >= settings.max_retries:
                    raise
                retries += 1
                delay = backoff(retries, settings.retry_backoff, exc)
                log.warning(
                    "job %s: %s; retry %d of %d in %.1f s",
                    self.job_id,
                    error_type(exc),
                    retries,
                    settings.max_retries,
                    delay,
                )
                self.app.store.record_retry(self.job_id, error_type(exc))
                self.pause(delay)

    def pause(self, seconds: float) -> None:
        """Sleep before a retry, still answering a cancel or a worker shutdown."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, self.app.settings.progress_interval or 0.25))
            self.heed(self.app.store.standing(self.job_id))
            if self.app.stopping.is_set():
                raise WorkerStopping

    def finish_cancelled(self) -> None:
        self.discard_partials()
        cancelled = self.event(ev.DOWNLOAD_CANCELLED, source=self.source)
        self.end(
            DownloadJobStatus.ERROR,
            [cancelled],
            cancelled=True,
            error_type=CANCELLED_ERROR_TYPE,
            failure=cancellation(self.job_id),
        )

    def hand_back(self) -> None:
        """Put the job back as waiting and queue it again; its partial file stays to resume."""
        self.app.store.requeue(self.job_id)
        self.app.submit(self.job_id, self.queue_id, self.record.priority)


def run_download(
    app: Runtime,
    job_id: int,
    worker: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> Outcome:
    """Run job `job_id` if it is still to be done; answers what became of it.

    The claim takes the lease, marks the job running and answers its record and token in one
    round trip; the attempt's end releases the lease. `worker` names the worker node; the job
    record keeps it, so one can tell who ran what.
    """
    owner = attempt_owner(worker)
    claim = app.store.claim(job_id, owner, app.settings.lease_seconds)
    if claim.record is None:
        return Outcome.MISSING
    outcome = JobRun(app, claim.record, owner, claim.token, on_progress).after_claim(claim.result)
    parent_id = claim.record.parent_id
    if parent_id is not None and outcome.ends_the_job:
        parents.settle(app, parent_id)
    return outcome


def job_root(record: JobRecord, settings: Settings) -> Path:
    """The directory the job's caller chose, below which the engine follows no link on the way
    to the job's files: a multi-file job's `dest` for its parts, else the job's own directory.
    For an untrusted job (the REST API's) it is the download root when that holds the job:
    the API checked `dest` inside it when the job was queued, and a directory on the way that
    has become a link since is refused."""
    dest = record.dest
    own = record.root or (dest if record.dest_is_dir else dest.parent)
    if record.untrusted:
        download_root = settings.download_root.resolve()  # as the API confined it
        if download_root == own or download_root in own.parents:
            return download_root
    return own


def session_for(app: Runtime, record: JobRecord) -> requests.Session:
    """The session a job downloads with: public addresses only for an untrusted job."""
    if record.untrusted and not app.settings.allow_private_networks:
        return _thread_session(
            "public_only", lambda: public_only_session(app.settings.untrusted_proxy)
        )
    return app.session_override or _thread_session("plain", requests.Session)


def tidy_cancelled(app: Runtime, job_id: int, worker: str) -> Outcome:
    """The `downloader.discard` task: clean up after a job cancelled while its worker was dead."""
    record = app.store.record(job_id)
    if record is not None:
        JobRun(app, record, attempt_owner(worker)).tidy_if_cancelled()
    return Outcome.TIDIED


_local = threading.local()


def _thread_session(kind: str, make: Callable[[], requests.Session]) -> requests.Session:
    """One session per worker thread and kind, so connections are kept alive between jobs."""
    session = getattr(_local, kind, None)
    if session is None:
        session = make()
        setattr(_local, kind, session)
    return session
