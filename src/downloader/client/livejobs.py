"""The live `DownloadJob` objects a service hands out, kept up to date from the event stream.

Workers report through the store and pub/sub; one listener thread per service applies those
events to the objects its callers hold and runs their callbacks, so callbacks of one service
never run concurrently and always see events in the order they were published. The listener
subscribes once, to the client's own channel, when the service starts; every job the service
queues names the client in its record (`JobRecord.follower`), so its events go to that
channel and not one of them is missed, without a subscription per job. After a
reconnection the store says how the unfinished jobs ended meanwhile. A job whose record is
gone from the store (Redis lost its data, or someone removed the job) will never be reported
on: the listener looks for such jobs once a second and ends them itself, as errors that say
why.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis

from downloader.client.following import Following, Job
from downloader.client.listener import Listener, copy_state
from downloader.jobs.models import MultiFileDownloadJob

if TYPE_CHECKING:
    from downloader.worker.runtime import Runtime

_WAKE = json.dumps({"event": "_wake"})
"""Published on the client's own channel: the listener is to stop now."""


class LiveJobs(Following):
    """The jobs one service queued, as live objects, and the thread that keeps them current."""

    app: Runtime | None = None
    """The runtime the listener reads from, while it runs."""
    listener: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, app: Runtime) -> None:
        """Subscribe on `app`'s Redis (to the unfinished jobs already held, too) and listen."""
        self.app = app
        self.stopping.clear()
        listener = Listener(self, app)
        subscription = listener.subscribe()
        self.listener = threading.Thread(
            target=listener.listen, args=(subscription,), name="downloader-events", daemon=True
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
        """Hand out these jobs as live objects, before they are queued: their events come on
        this client's channel, which the listener follows already."""
        with self.changed:
            for job in jobs:
                self.jobs[job.id] = job

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

    def revive(self, job_id: int) -> None:
        """A job handed out here is queued again (a retry): its events, and its parts', are
        applied again from before the retry can start them, and `wait_for` waits for their
        new end."""
        with self.changed:
            for each in self._with_parts(job_id):
                self.finalised.discard(each.id)
                self.inferred.discard(each.id)

    def _with_parts(self, job_id: int) -> list[Job]:
        """The live job `job_id` and, for a multi-file job, its parts; none if not held here."""
        job = self.jobs.get(job_id)
        if job is None:
            return []
        return [job, *job.download_parts] if isinstance(job, MultiFileDownloadJob) else [job]

    def settle(self, job_id: int) -> None:
        """The retry `revive` prepared was refused: the job (and its parts) is over again
        as it was."""
        jobs = self._with_parts(job_id)
        with self.changed:
            for each in jobs:
                if each.in_terminal_state:
                    self.finalised.add(each.id)
            self.changed.notify_all()

    def forget(self, job_ids: Sequence[int]) -> None:
        """Jobs removed from the store are no longer handed out."""
        with self.changed:
            for job_id in job_ids:
                self.jobs.pop(job_id, None)
                self.finalised.discard(job_id)
                self.inferred.discard(job_id)
