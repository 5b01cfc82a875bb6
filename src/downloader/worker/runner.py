"""Running one download job on a worker: claim, lease, transfer, record, publish.

This is the glue between the job store, the events and the transfer engine; the Celery task
is a one-line call into it, which keeps it runnable (and readable) without Celery. An attempt
is split along its seams (see `attempt`): `hooks` while bytes come in, `retries` after a
transient failure, `ending` for the one store call that ends it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import requests

from downloader.engine.envsession import EnvironmentOnceSession
from downloader.engine.mirrors import Mirrors
from downloader.engine.netguard import public_only_session
from downloader.engine.redact import holding
from downloader.engine.transfer import TransferRequest
from downloader.hub.headers import explain_refusal, linked_sha256
from downloader.jobs.models import DownloadJobCancelledException, JobVanishedError
from downloader.jobs.record import JobRecord
from downloader.store.lifecycle import Claim, ClaimResult
from downloader.store.pacing import Held, SlotAnswer
from downloader.store.reservations import Reservations
from downloader.worker import parents
from downloader.worker.attempt import Attempt, JobPaused, LeaseLost, WorkerStopping, job_root
from downloader.worker.ending import JobEnd
from downloader.worker.hooks import JobHooks
from downloader.worker.jobpacing import host_of
from downloader.worker.outcome import Outcome
from downloader.worker.retries import fetch_with_retries

if TYPE_CHECKING:
    from downloader.worker.runtime import Runtime


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
        self.attempt = Attempt(app, record, owner)
        self.record = record
        self.job_id = record.id
        self.source = record.source or ""
        self.token = token
        """The job's own access token, as its claim read it."""
        self.reservations = Reservations(app.store)
        self.hooks = JobHooks(self.attempt, on_progress)
        self.ending = JobEnd(self.attempt, self.hooks, self.reservations)
        self.mirrors = Mirrors(self.source, record.mirrors)
        """The job's URLs and how each fared: every retry of this attempt starts elsewhere."""
        self.pacing = self.attempt.pacing = app.pacing.for_job(
            self.job_id, record.priority, record.bandwidth, self.hooks.waiting
        )
        """Its connections' slots and bandwidth, from the fleet's limits."""

    def request(self) -> TransferRequest:
        settings = self.app.settings
        segments, segments_max = settings.segment_counts(self.app.pacing.cap(host_of(self.source)))
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
            segments=segments,
            segments_max=segments_max,
            segment_threshold=settings.segment_threshold,
            lowest_speed=settings.lowest_speed,
            speed_window=settings.lowest_speed_window,
            made_directory=self.attempt.made_dirs.append,
            reserve=lambda path: self.reservations.try_acquire(self.job_id, path),
            release=lambda path: self.reservations.release([(self.job_id, path)]),
            mirrors=self.mirrors,
            pacing=self.pacing,
            # What the hub says beyond HTTP; other origins never send these headers.
            explain_refusal=explain_refusal,
            announced_digest=linked_sha256,
        )

    def access_token(self) -> str | None:
        """The job's own token (read by the claim), else the one configured for the source's
        origin. An untrusted (REST) job gets it too, on that exact origin: the operator
        configured it for the fleet, and the caller chooses neither scheme nor port."""
        return self.token or self.app.settings.host_token(self.source)

    def after_claim(
        self, result: ClaimResult, slot: tuple[Held, SlotAnswer] | None = None
    ) -> Outcome:
        """Act on what the claim decided: run a claimed job (with the connection slot its
        claim took, if any), end one cancelled before it started, tidy after one that ended
        while its worker was gone."""
        if result is ClaimResult.CANCELLED:
            return self.ending.cancelled()
        if result is ClaimResult.FINISHED:
            self.ending.tidy_if_cancelled()
        if result is not ClaimResult.CLAIMED:
            return Outcome(result.value)
        # The claim has just looked at the cancel flag: the next look is due an interval on.
        self.hooks.last_report = time.monotonic()
        if self.record.parent_id is not None:
            parents.part_started(self.app, self.record.parent_id)
        keeper = self.attempt.keeper = self.app.leases.keep(self.job_id, self.attempt.owner)
        try:
            if slot is not None:
                self.pacing.adopt(*slot, self.source)
            with holding(self.access_token()):  # so that its errors are scrubbed of it
                return self.run(session_for(self.app, self.record))
        finally:
            self.pacing.give_back()  # what an end that did not come would have
            if not keeper.done:  # the end, which releases it, did not come
                keeper.done = True
                self.app.store.release(self.job_id, self.attempt.owner)

    def run(self, session: requests.Session) -> Outcome:
        """Fetch (with retries) and end the attempt as the transfer went."""
        ending = self.ending
        try:
            result = fetch_with_retries(self.hooks, self.request, session)
        except DownloadJobCancelledException:
            return ending.cancelled()
        except JobPaused:
            return ending.paused()
        except WorkerStopping:
            return ending.hand_back()
        except LeaseLost:
            return ending.lease_lost()
        except JobVanishedError:
            return ending.vanished()
        except Exception as exc:
            return ending.failed(exc)
        return ending.completed(result)


def run_download(
    app: Runtime,
    job_id: int,
    worker: str,
    on_progress: Callable[[int, int], None] | None = None,
    sent_level: int | None = None,
) -> Outcome:
    """Run job `job_id` if it is still to be done.

    The claim takes the lease, marks the job running and answers its record and token in one
    round trip; the attempt's end releases the lease. A part that ended settles its parent.

    Args:
        app: the process's runtime.
        job_id: the job a message named.
        worker: the worker node; the job record keeps it, so one can tell who ran what.
        on_progress: told of every published progress (the Celery task tells Flower).
        sent_level: the broker priority level the message came at, so that a message left
            behind by a change of priority is dropped (None: not from the broker).

    Returns:
        What became of it.
    """
    owner = attempt_owner(worker)
    claim = durable_claim(app, job_id, owner, sent_level)
    if claim.record is None:
        return Outcome.MISSING
    run = JobRun(app, claim.record, owner, claim.token, on_progress)
    outcome = run.after_claim(claim.result, claim.slot)
    parent_id = claim.record.parent_id
    if parent_id is not None and outcome.ends_the_job:
        parents.settle(app, parent_id)
    return outcome


CLAIM_RETAKES = 3
"""Times a claim the replicas did not confirm is taken again before the attempt goes on."""


def durable_claim(app: Runtime, job_id: int, owner: str, sent_level: int | None) -> Claim:
    """Claim the job; with replicas, go on only once one has the claim. A claim a failover
    lost would let a second worker claim the job on the new primary and fetch it too: so an
    unconfirmed claim is taken again where the primary is now (by the same owner it is the
    same claim; if another attempt holds the job there, this one steps aside). Without
    replicas the claim also tries for the job's first connection slot (with them, a slot lost
    with a claim would be nobody's until its lease ran out: the first connection asks)."""
    lease = app.settings.lease_seconds
    replicated = app.durability.needed()
    claim = app.store.claim(
        job_id, owner, lease, sent_level, None if replicated else app.pacing.ask()
    )
    if claim.result is not ClaimResult.CLAIMED or not replicated:
        return claim
    for _ in range(CLAIM_RETAKES):
        if app.durability.settle(f"claim of job {job_id}"):
            break
        claim = app.store.claim(job_id, owner, lease, sent_level)
        if claim.result is not ClaimResult.CLAIMED:
            break
    return claim


def tidy_cancelled(app: Runtime, job_id: int, worker: str) -> Outcome:
    """The `downloader.discard` task: clean up after a job cancelled while its worker was dead."""
    record = app.store.record(job_id)
    if record is not None:
        JobRun(app, record, attempt_owner(worker)).ending.tidy_if_cancelled()
    return Outcome.TIDIED


def session_for(app: Runtime, record: JobRecord) -> requests.Session:
    """The session a job downloads with: public addresses only for an untrusted job."""
    if record.untrusted and not app.settings.allow_private_networks:
        return _thread_session(
            "public_only", lambda: public_only_session(app.settings.untrusted_proxy)
        )
    return app.session_override or _thread_session("plain", EnvironmentOnceSession)


_local = threading.local()


def _thread_session(kind: str, make: Callable[[], requests.Session]) -> requests.Session:
    """One session per worker thread and kind, so connections are kept alive between jobs."""
    session = getattr(_local, kind, None)
    if session is None:
        session = make()
        setattr(_local, kind, session)
    return session
