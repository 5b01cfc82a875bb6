"""The listener of a service's live jobs: the one thread that applies their events.

It follows the client's own channel, where the events of every job `LiveJobs` hands out go
(their records name the client), applies each event to its job from the event's payload and
runs its callbacks, one at a time and in the order they were published; after a
reconnection it asks the store how the unfinished jobs stand.
Once a second it looks whether followed jobs still have a record: a job whose record is gone
(Redis lost its data, or someone removed the job) will never be reported on, so it ends here,
as an error that says why.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from downloader.client.following import Following, Job
from downloader.jobs import events as ev
from downloader.jobs.failure import Failure, FailureKind
from downloader.jobs.models import (
    DownloadJob,
    DownloadJobStatus,
    JobVanishedError,
    MultiFileDownloadJob,
)
from downloader.jobs.record import utcnow
from downloader.store.base import BATCH
from downloader.store.bus import RESUBSCRIBED, Subscription, event_payload

if TYPE_CHECKING:
    from downloader.worker.runtime import Runtime

log = logging.getLogger(__name__)

POLL = 0.5
"""Seconds the listener waits for an event before it looks whether it should stop."""

LOOK_EVERY = 1.0
"""Seconds between the listener's looks for followed jobs whose record is gone."""

TERMINAL_CALLBACK = {
    ev.DOWNLOAD_COMPLETE: "on_complete",
    ev.DOWNLOAD_ERROR: "on_error",
    ev.DOWNLOAD_CANCELLED: "on_cancelled",
    ev.MULTIFILE_COMPLETE: "on_complete",
    ev.MULTIFILE_ERROR: "on_error",
    ev.MULTIFILE_CANCELLED: "on_cancelled",
}
_STARTED = (ev.DOWNLOAD_STARTED, ev.MULTIFILE_STARTED)
_PROGRESS = (ev.DOWNLOAD_PROGRESS, ev.MULTIFILE_PROGRESS)
_STEERED = (ev.DOWNLOAD_PAUSED, ev.MULTIFILE_PAUSED, ev.DOWNLOAD_RESUMED, ev.MULTIFILE_RESUMED)
"""A caller paused, resumed or retried the job: its record says how it stands now."""


class Listener:
    """Applies the events of `live`'s jobs, on the thread that runs `listen`."""

    def __init__(self, live: Following, app: Runtime) -> None:
        self.live = live
        self.app = app
        self.next_look = 0.0

    def subscribe(self) -> Subscription:
        """A subscription to this client's own channel: the events of the jobs it queued so
        far and of those it queues later. The unfinished ones already held are checked in
        the store once it is confirmed (their events meanwhile were not heard)."""
        subscription = Subscription(
            self.app.redis, self.live.namespace, poll=POLL, client_channel=self.live.client_channel
        )
        self.recheck()
        return subscription

    def recheck(self) -> None:
        """Have every unfinished job checked in the store (see `check_held`)."""
        with self.live.changed:
            self.live.to_check = [j for j in self.live.jobs if j not in self.live.finalised]

    def listen(self, subscription: Subscription) -> None:
        """The one thread that applies events to live jobs and runs callbacks."""
        while not self.live.stopping.is_set():
            try:
                self.check_held()
                for payload in subscription:
                    if self.live.stopping.is_set():
                        break
                    if payload is not None and payload["event"] == RESUBSCRIBED:
                        self.recheck()  # redis-py reconnected: events may have been missed
                        self.check_held()
                    elif payload is not None:
                        self.handle(payload)
                    self.look_for_vanished()
            except redis.RedisError:
                if self.live.stopping.is_set():
                    break  # the service closes, and its connections with it: nothing to say
                log.warning("lost the event stream; reconnecting", exc_info=True)
                resubscribed = self.resubscribe()
                if resubscribed is None:
                    return
                subscription = resubscribed
        subscription.close()

    def check_held(self) -> None:
        """Check in the store the jobs `subscribe` found unfinished (see `check`)."""
        with self.live.changed:
            held, self.live.to_check = self.live.to_check, []
        for job_id in held:
            if job_id in self.live.jobs and job_id not in self.live.finalised:
                self.check(job_id)

    def resubscribe(self) -> Subscription | None:
        """Subscribe again; every unfinished job is then checked in the store (events
        published meanwhile were not heard)."""
        delay = 0.2
        while not self.live.stopping.wait(delay):
            try:
                return self.subscribe()
            except (redis.RedisError, TimeoutError, RuntimeError):
                delay = min(delay * 2, 5.0)
        return None

    def check(self, job_id: int) -> None:
        """Once per job and subscription: finish it here if the store says it has ended,
        since its final event may have gone out before Redis confirmed the subscription."""
        record = self.app.store.record(job_id)
        if record is None or not record.status.finished:
            return
        multi = record.multifile
        if record.status is DownloadJobStatus.COMPLETED:
            event = ev.MULTIFILE_COMPLETE if multi else ev.DOWNLOAD_COMPLETE
        elif record.cancelled:
            event = ev.MULTIFILE_CANCELLED if multi else ev.DOWNLOAD_CANCELLED
        else:
            event = ev.MULTIFILE_ERROR if multi else ev.DOWNLOAD_ERROR
        self.live.inferred.add(job_id)
        self.handle({"event": event, "job_id": job_id}, forward=False)

    def handle(self, payload: dict[str, Any], forward: bool = True) -> None:
        """Apply one event; `forward=False` for the ones `check` infers, which the event
        bus never saw published and should not receive half-filled."""
        job = self.live.jobs.get(payload.get("job_id", -1))
        event = payload["event"]
        if job is None:
            return
        if job.id in self.live.finalised:
            if job.id in self.live.inferred and event in TERMINAL_CALLBACK:
                self.live.inferred.discard(job.id)  # it came after all: the bus gets it whole
                self.forward(event, payload)
            return
        if forward:
            self.forward(event, payload)
        if event in _STARTED:
            if "job_started" in payload and isinstance(job, DownloadJob):
                apply_started(job, payload)  # the event says what the record would
            else:
                self.refresh(job)
            job.status = DownloadJobStatus.RUNNING
            self.callback(job, "on_start")
        elif event in _STEERED:
            self.refresh(job)
        elif event == ev.DOWNLOAD_WAITING:
            job.waiting_for = payload.get("reason")
            self.callback(job, "on_progress")
        elif event in _PROGRESS:
            job.status = DownloadJobStatus.RUNNING
            job.bytes = payload["current_bytes"]
            job.total_bytes = payload["total_bytes"]
            self.callback(job, "on_progress")
        elif event in TERMINAL_CALLBACK:
            if "job_ended" in payload and isinstance(job, DownloadJob):
                apply_completed(job, payload)  # the event says what the record would
            else:
                self.refresh(job)
            self.finalise(job, event)

    def finalise(self, job: Job, event: str) -> None:
        """The job is over (`event` says how): waiters wake and its callback runs."""
        with self.live.changed:
            self.live.finalised.add(job.id)
            self.live.changed.notify_all()
        self.callback(job, TERMINAL_CALLBACK[event])

    def look_for_vanished(self) -> None:
        """Once a second: do the records of the next `BATCH` followed jobs still exist?

        One pipelined round trip of EXISTS, whatever the number of jobs followed (they are
        looked at in turn). A job whose record is gone ends here as an error: no worker will
        ever report on it again. When the store's marker says that Redis lost its data (see
        `Runtime.redis_lost`), every other followed job is looked at at once.
        """
        now = time.monotonic()
        if now < self.next_look:
            return
        self.next_look = now + LOOK_EVERY
        with self.live.changed:
            batch = [self.live.watched.popleft() for _ in range(min(BATCH, len(self.live.watched)))]
            batch = [i for i in batch if i in self.live.jobs and i not in self.live.finalised]
            self.live.watched.extend(batch)
        if not batch:
            return
        store = self.app.store
        try:
            gone = store.missing(batch)
            if not gone:
                return
            lost = self.app.redis_lost()
            if lost:
                with self.live.changed:
                    others = [i for i in self.live.watched if i not in self.live.finalised]
                gone |= store.missing(others)
        except redis.RedisError:
            if not self.live.stopping.is_set():  # else the service closing cut it short
                log.warning("could not look for jobs gone from Redis", exc_info=True)
            return
        for job_id in sorted(gone):
            job = self.live.jobs.get(job_id)
            if job is not None and job_id not in self.live.finalised:
                self.vanish(job, lost)

    def vanish(self, job: Job, redis_lost: bool) -> None:
        """End a job whose record is gone as an error that says so (and what to check)."""
        error = JobVanishedError(job.id, redis_lost)
        job.status = DownloadJobStatus.ERROR
        job.error_type, job.error, job.job_ended = error.error_type, str(error), utcnow()
        job.failure = Failure(FailureKind.VANISHED, str(error))
        multi = isinstance(job, MultiFileDownloadJob)
        event = ev.MULTIFILE_ERROR if multi else ev.DOWNLOAD_ERROR
        fields = {"error_type": job.error_type, "error": job.error}
        if not multi:
            fields["source"] = str(job.source)
        self.forward(event, event_payload(event, self.live.queue_id, job.id, fields))
        self.finalise(job, event)

    def refresh(self, job: Job) -> None:
        fresh = self.app.store.get(job.id)
        if fresh is not None:
            copy_state(fresh, job)

    def forward(self, event: str, payload: dict[str, Any]) -> None:
        bus = self.live.event_bus
        if bus is None:
            return
        try:
            if hasattr(bus, "emit"):
                bus.emit(event, payload)
            else:
                bus(event, payload)
        except Exception:
            log.exception("the event bus failed on %s", event)

    @staticmethod
    def callback(job: Job, name: str) -> None:
        handler = job.callback(name)
        if handler is None:
            return
        try:
            handler(job)
        except Exception:
            log.exception("%s callback of job %s raised; the job goes on", name, job.id)


def apply_started(job: DownloadJob, payload: dict[str, Any]) -> None:
    """Bring a live job up to its start from the `download_started` payload, which carries
    every field the start changes (see `worker.hooks.JobHooks.started`)."""
    path, started = payload.get("download_path"), payload.get("job_started")
    job.download_path = Path(path) if path else None
    job.job_started = datetime.fromisoformat(started) if started else None
    job.bytes = payload.get("current_bytes", 0)
    job.total_bytes = payload.get("total_bytes", 0)
    job.content_type = payload.get("content_type")
    job.etag = payload.get("etag")
    job.final_url = payload.get("final_url")
    job.job_sequence = payload.get("job_sequence")
    job.attempts = payload.get("attempts", 0)


def apply_completed(job: DownloadJob, payload: dict[str, Any]) -> None:
    """Bring a live job to its completion from the `download_complete` payload, which
    carries every field the end changes (see `worker.ending.JobEnd.completed`)."""
    path = payload.get("download_path")
    job.download_path = Path(path) if path else job.download_path
    job.bytes = payload.get("current_bytes", job.bytes)
    job.total_bytes = payload.get("total_bytes", job.total_bytes)
    job.attempts = payload.get("attempts", job.attempts)
    job.job_ended = datetime.fromisoformat(payload["job_ended"])
    job.status = DownloadJobStatus.COMPLETED


def copy_state(source: Job, target: Job) -> None:
    """Update a live job in place from a fresher copy, keeping its callbacks and token."""
    for name in type(source).model_fields:
        if name not in ("access_token", "download_parts"):
            setattr(target, name, getattr(source, name))
    target.cancelled = source.cancelled
    target.failure = source.failure
