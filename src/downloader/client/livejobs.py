"""The live `DownloadJob` objects a service hands out, kept up to date from the event stream.

Workers report through the store and pub/sub; one listener thread per service applies those
events to the objects its callers hold and runs their callbacks, so callbacks of one service
never run concurrently and always see events in the order they were published. A job is
followed (its channel subscribed) before its message is sent, so not one of its events is
missed; after a reconnection, or when a final event may have gone out before a subscription
was confirmed, the store says how the job ended. A job whose record is gone from the store
(Redis lost its data, or someone removed the job) will never be reported on: the listener
looks for such jobs once a second and ends them itself, as errors that say why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import redis

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
from downloader.store.bus import SUBSCRIBED, Subscription, event_payload

if TYPE_CHECKING:
    from downloader.worker.runtime import Runtime

log = logging.getLogger(__name__)

Job = DownloadJob | MultiFileDownloadJob

_POLL = 0.5
"""Seconds the listener waits for an event before it looks whether it should stop."""

_FOLLOW_TIMEOUT = 10.0
"""Seconds `track` waits for the listener to follow new jobs before it lets them be queued."""

_LOOK_EVERY = 1.0
"""Seconds between the listener's looks for followed jobs whose record is gone."""

_WAKE = json.dumps({"event": "_wake"})
"""Published on the client's own channel: there are new jobs to follow."""

_TERMINAL_CALLBACK = {
    ev.DOWNLOAD_COMPLETE: "on_complete",
    ev.DOWNLOAD_ERROR: "on_error",
    ev.DOWNLOAD_CANCELLED: "on_cancelled",
    ev.MULTIFILE_COMPLETE: "on_complete",
    ev.MULTIFILE_ERROR: "on_error",
    ev.MULTIFILE_CANCELLED: "on_cancelled",
}
_STARTED = (ev.DOWNLOAD_STARTED, ev.MULTIFILE_STARTED)
_PROGRESS = (ev.DOWNLOAD_PROGRESS, ev.MULTIFILE_PROGRESS)


class EventBus(Protocol):
    def emit(self, event_name: str, payload: dict[str, Any]) -> None: ...


class LiveJobs:
    """The jobs one service queued, as live objects, and the thread that keeps them current."""

    def __init__(
        self,
        namespace: str,
        queue_id: str,
        client_channel: str,
        event_bus: EventBus | Callable[[str, dict[str, Any]], None] | None,
    ) -> None:
        self.namespace = namespace
        self.queue_id = queue_id
        self.client_channel = client_channel
        """This client's own channel: it wakes the listener to follow new jobs at once."""
        self.event_bus = event_bus
        self.jobs: dict[int, Job] = {}
        self.finalised: set[int] = set()
        self.inferred: set[int] = set()
        """Finalised from the store because their final event may have been missed."""
        self.to_follow: list[int] = []
        """Jobs queued here whose channels the listener has still to subscribe to."""
        self.awaited: set[int] = set()
        """Jobs `track` waits to see followed before it lets them be queued."""
        self.unfollow: list[int] = []
        """Finished jobs whose channels the listener leaves (it alone touches this list)."""
        self.watched: deque[int] = deque()
        """Jobs whose records were written, in the order the listener looks whether their
        records still exist (`look_for_vanished`); finished ones drop out as it goes."""
        self.next_look = 0.0
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.app: Runtime | None = None
        self.listener: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, app: Runtime) -> None:
        """Subscribe on `app`'s Redis (to the unfinished jobs already held, too) and listen."""
        self.app = app
        self.stopping.clear()
        subscription = self.subscribe()
        self.listener = threading.Thread(
            target=self.listen, args=(subscription,), name="downloader-events", daemon=True
        )
        self.listener.start()

    def begin_stop(self) -> None:
        """Tell the listener to wind down, now rather than at the end of its poll."""
        self.stopping.set()
        if self.app is not None:
            with contextlib.suppress(redis.RedisError):  # if Redis is gone, it ends at its poll
                self.app.redis.publish(self.client_channel, _WAKE)

    def stop(self) -> None:
        self.begin_stop()
        if self.listener is not None:
            self.listener.join(5)
            self.listener = None
        self.app = None

    # -- the callers' side --------------------------------------------------------------------

    def track(self, jobs: Sequence[Job]) -> None:
        """Hand out these jobs as live objects, once the listener follows their channels.

        The listener is woken through this client's own channel, subscribes and reports the
        confirmation; only then may the jobs be queued, so not one of their events is missed.
        """
        assert self.app is not None
        ids = {job.id for job in jobs}
        deadline = time.monotonic() + _FOLLOW_TIMEOUT
        with self.changed:
            for job in jobs:
                self.jobs[job.id] = job
            self.to_follow.extend(ids)
            if threading.current_thread() is self.listener:
                return  # a callback queues more: followed after it, and checked then
            self.awaited |= ids
            self.app.redis.publish(self.client_channel, _WAKE)
            while self.awaited & ids and (left := deadline - time.monotonic()) > 0:
                self.changed.wait(left)
            if self.awaited & ids:  # the listener is reconnecting: it checks them when it can
                log.warning("the event listener did not confirm %d new jobs", len(ids))
                self.awaited -= ids

    def created(self, jobs: Sequence[Job]) -> None:
        """These jobs' records are in the store: from now on, a record gone is a job gone."""
        with self.changed:
            self.watched.extend(job.id for job in jobs)

    def live(self, fresh: Job) -> Job:
        """The live object handed out for this job, brought up to date, else `fresh` itself."""
        job = self.jobs.get(fresh.id)
        if job is None:
            return fresh
        copy_state(fresh, job)
        return job

    def wait_for(self, job: Job, timeout: float | None = None) -> Job:
        """Block until `job` ends; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.changed:
            while not self.is_over(job):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"job {job.id} did not finish within {timeout} s")
                self.changed.wait(1.0 if remaining is None else min(remaining, 1.0))
        return job

    def join(self) -> None:
        """Block until every job handed out has ended."""
        with self.changed:
            while not all(self.is_over(job) for job in self.jobs.values()):
                self.changed.wait(1.0)

    def is_over(self, job: Job) -> bool:
        if job.id in self.jobs:
            return job.id in self.finalised
        return job.in_terminal_state

    def forget(self, job_ids: Sequence[int]) -> None:
        """Jobs removed from the store are no longer handed out."""
        with self.changed:
            for job_id in job_ids:
                self.jobs.pop(job_id, None)
                self.finalised.discard(job_id)
                self.inferred.discard(job_id)

    # -- the listener -------------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        """A subscription to this client's own jobs: the unfinished ones it queued so far,
        and those it queues later (see `follow_new`)."""
        assert self.app is not None
        subscription = Subscription(
            self.app.redis, self.namespace, poll=_POLL, client_channel=self.client_channel
        )
        with self.changed:
            self.to_follow = [j for j in self.jobs if j not in self.finalised]
        return subscription

    def listen(self, subscription: Subscription) -> None:
        """The one thread that applies events to live jobs and runs callbacks."""
        while not self.stopping.is_set():
            try:
                self.follow_new(subscription)
                for payload in subscription:
                    if self.stopping.is_set():
                        break
                    if payload is not None:
                        self.handle(payload)
                    self.follow_new(subscription)
                    self.look_for_vanished()
            except redis.RedisError:
                log.warning("lost the event stream; reconnecting", exc_info=True)
                resubscribed = self.resubscribe()
                if resubscribed is None:
                    return
                subscription = resubscribed
        subscription.close()

    def follow_new(self, subscription: Subscription) -> None:
        with self.changed:
            new, self.to_follow = self.to_follow, []
        if new:
            subscription.follow(new)
        if self.unfollow:
            subscription.unfollow(self.unfollow)
            self.unfollow = []

    def resubscribe(self) -> Subscription | None:
        """Subscribe again; every unfinished job is followed anew, and checked in the store
        when Redis confirms it (events published meanwhile were not heard)."""
        delay = 0.2
        while not self.stopping.wait(delay):
            try:
                return self.subscribe()
            except (redis.RedisError, TimeoutError, RuntimeError):
                delay = min(delay * 2, 5.0)
        return None

    def check(self, job_id: int) -> None:
        """Once per job and subscription: finish it here if the store says it has ended,
        since its final event may have gone out before Redis confirmed the subscription."""
        assert self.app is not None
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
        self.inferred.add(job_id)
        self.handle({"event": event, "job_id": job_id}, forward=False)

    def handle(self, payload: dict[str, Any], forward: bool = True) -> None:
        """Apply one event; `forward=False` for the ones `check` infers, which the event
        bus never saw published and should not receive half-filled."""
        job = self.jobs.get(payload.get("job_id", -1))
        event = payload["event"]
        if job is None:
            return
        if event == SUBSCRIBED:
            with self.changed:
                awaited = job.id in self.awaited
                self.awaited.discard(job.id)
                self.changed.notify_all()
            if not awaited and job.id not in self.finalised:
                self.check(job.id)  # followed again after a reconnection
            return
        if job.id in self.finalised:
            if job.id in self.inferred and event in _TERMINAL_CALLBACK:
                self.inferred.discard(job.id)  # it came after all: the bus gets it whole
                self.forward(event, payload)
            return
        if forward:
            self.forward(event, payload)
        if event in _STARTED:
            self.refresh(job)
            job.status = DownloadJobStatus.RUNNING
            self.callback(job, "on_start")
        elif event in _PROGRESS:
            job.status = DownloadJobStatus.RUNNING
            job.bytes = payload["current_bytes"]
            job.total_bytes = payload["total_bytes"]
            self.callback(job, "on_progress")
        elif event in _TERMINAL_CALLBACK:
            self.refresh(job)
            self.finalise(job, event)

    def finalise(self, job: Job, event: str) -> None:
        """The job is over (`event` says how): waiters wake, its callback runs, and its
        channel is left."""
        with self.changed:
            self.finalised.add(job.id)
            self.changed.notify_all()
        self.callback(job, _TERMINAL_CALLBACK[event])
        self.unfollow.append(job.id)

    def look_for_vanished(self) -> None:
        """Once a second: do the records of the next `BATCH` followed jobs still exist?

        One pipelined round trip of EXISTS, whatever the number of jobs followed (they are
        looked at in turn). A job whose record is gone ends here as an error: no worker will
        ever report on it again. When the store's marker says that Redis lost its data (see
        `Runtime.redis_lost`), every other followed job is looked at at once.
        """
        now = time.monotonic()
        if now < self.next_look or self.app is None:
            return
        self.next_look = now + _LOOK_EVERY
        with self.changed:
            batch = [self.watched.popleft() for _ in range(min(BATCH, len(self.watched)))]
            batch = [i for i in batch if i in self.jobs and i not in self.finalised]
            self.watched.extend(batch)
        if not batch:
            return
        store = self.app.store
        try:
            gone = store.missing(batch)
            if not gone:
                return
            lost = self.app.redis_lost()
            if lost:
                with self.changed:
                    others = [i for i in self.watched if i not in self.finalised]
                gone |= store.missing(others)
        except redis.RedisError:
            log.warning("could not look for jobs gone from Redis", exc_info=True)
            return
        for job_id in sorted(gone):
            job = self.jobs.get(job_id)
            if job is not None and job_id not in self.finalised:
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
        self.forward(event, event_payload(event, self.queue_id, job.id, fields))
        self.finalise(job, event)

    def refresh(self, job: Job) -> None:
        assert self.app is not None
        fresh = self.app.store.get(job.id)
        if fresh is not None:
            copy_state(fresh, job)

    def forward(self, event: str, payload: dict[str, Any]) -> None:
        bus = self.event_bus
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


def copy_state(source: Job, target: Job) -> None:
    """Update a live job in place from a fresher copy, keeping its callbacks and token."""
    for name in type(source).model_fields:
        if name not in ("access_token", "download_parts"):
            setattr(target, name, getattr(source, name))
    target.cancelled = source.cancelled
    target.failure = source.failure
