"""What every process of the project holds on one Redis, Celery or not: the job store, the
event publisher, the lease renewer, the settings, and where its jobs go.

A process that queues jobs for workers needs Celery to send their messages: its
`DownloaderApp` is a `DownloaderCore` and a Celery app. A process that runs only its own jobs
(`downloader get` on the embedded default, see `localworker`) sends no message, and a core
alone spares it the import of Celery, about a fifth of a small get.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import redis
import requests
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from downloader.config import Settings
from downloader.events import DOWNLOAD_CANCELLED, EventPublisher
from downloader.leases import LeaseRenewer
from downloader.store import CancelResult, JobStore, Keys

if TYPE_CHECKING:
    from downloader.localworker import LocalWorker


def redis_py_url(url: str) -> str:
    """kombu says `redis+socket://` for a socket where redis-py says `unix://`."""
    prefix = "redis+socket://"
    return "unix://" + url.removeprefix(prefix) if url.startswith(prefix) else url


class DownloaderCore:
    """One Redis seen as this project sees it; jobs submitted go to this process's worker."""

    def __init__(self, redis_url: str, settings: Settings) -> None:
        self.redis_url = redis_py_url(redis_url)
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.session_override: requests.Session | None = None
        """The session in-process workers download with (the seed's `requests_session`)."""
        self.stopping = threading.Event()
        """Set when this process's worker shuts down: running jobs hand themselves back."""
        self.local_worker: LocalWorker | None = None
        """This process's worker of its own jobs: their ids go to it, not to the broker."""
        self.redis_marker: str | None = None
        """The store's marker as this process first saw it (see `JobStore.mark`)."""

    @cached_property
    def redis(self) -> redis.Redis:
        """The client of the job store and events; it rides out a Redis restart by retrying
        each command for about half a minute before giving up."""
        return redis.Redis.from_url(
            self.redis_url,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=20),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )

    def remember_redis(self) -> None:
        """Note the Redis's marker at the start of a service or worker (writing it first if
        this is the first process on it), so that `redis_lost` can tell later."""
        if self.redis_marker is None:
            self.redis_marker = self.store.mark()

    def redis_lost(self) -> bool:
        """Whether Redis lost its data since this process started: its marker is gone or is
        another. Asked when a job's record is missing, to tell a job removed (cancelled and
        forgotten by someone) from a job lost with all the others. Once lost, a process keeps
        saying so: every job it knew of may be gone."""
        if self.redis_marker is None:
            self.remember_redis()
            return False
        return self.store.marker() != self.redis_marker

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self.redis, self.settings.namespace)

    @cached_property
    def publisher(self) -> EventPublisher:
        return EventPublisher(self.redis, self.settings.namespace)

    @cached_property
    def leases(self) -> LeaseRenewer:
        """The one thread of this process that renews the leases of all its running jobs."""
        return LeaseRenewer(self.store, self.settings.lease_seconds)

    def celery_queue(self, queue_id: str) -> str:
        return self.keys.celery_queue(queue_id)

    def live_workers(self) -> list[str]:
        """The workers whose heartbeat in Redis is current (see `recovery.OrphanWatch`)."""
        return self.store.live_workers()

    def broker_list(self, queue_id: str, level: int) -> str:
        """The Redis list kombu keeps a queue's messages of one priority level in."""
        name = f"{self.settings.namespace}:celery:{self.celery_queue(queue_id)}"
        return f"{name}:{level}" if level else name

    def submit(self, job_id: int, queue_id: str, priority: int) -> None:
        """Queue job `job_id` for any worker consuming its queue, at its mapped priority."""
        self.submit_many([(job_id, queue_id, priority)])

    def submit_many(self, jobs: Sequence[tuple[int, str, int]]) -> None:
        """Queue (job id, queue id, priority) triples: those of this process's `local_worker`
        go to it; the others are sent to the broker."""
        local = self.local_worker
        if local is not None:
            local.submit((job_id, p) for job_id, q, p in jobs if q == local.queue_id)
            jobs = [job for job in jobs if job[1] != local.queue_id]
        if jobs:
            self.send(jobs)

    def send(self, jobs: Sequence[tuple[int, str, int]]) -> None:
        """Send jobs to other processes' workers: a core alone has no broker (the Celery
        app, a core with one, does)."""
        raise RuntimeError(
            f"jobs {[job_id for job_id, _, _ in jobs]} are for a queue this process does not "
            "run, and it has no broker to send them with"
        )

    def cancel(self, job_id: int, queue_id: str) -> CancelResult:
        """Cancel one job; one that never started is over at once and says so on the bus."""
        return self.cancel_many([job_id], queue_id)[0]

    def cancel_many(self, job_ids: Iterable[int], queue_id: str) -> list[CancelResult]:
        """Cancel jobs in pipelined batches; those that never started end at once."""
        ids = list(job_ids)
        results = self.store.cancel_many(ids)
        ended = [
            job_id
            for job_id, result in zip(ids, results, strict=True)
            if result is CancelResult.CANCELLED
        ]
        records = {record["id"]: record for record in self.store.records(ended)}
        self.publisher.publish_many(
            DOWNLOAD_CANCELLED,
            queue_id,
            ended,
            {job_id: {"source": records.get(job_id, {}).get("source")} for job_id in ended},
        )
        for job_id in ended:
            if records.get(job_id, {}).get("job_started"):
                # It ran once and its worker is gone: a worker (which, unlike this client,
                # surely sees the download volume) removes what it left behind. A job that
                # never ran is tidied by the claim of its own message.
                if self.local_worker is not None and queue_id == self.local_worker.queue_id:
                    self.local_worker.discard(job_id)
                else:
                    self.send_discard(job_id, queue_id)
        return results

    def send_discard(self, job_id: int, queue_id: str) -> None:
        """Ask a worker of the queue to remove what a cancelled job left: see `send`."""
        raise RuntimeError(f"job {job_id} needs a worker of queue {queue_id!r} to tidy up")

    def disconnect(self) -> None:
        """Close every connection, so an embedded Redis sees its last client go."""
        self.redis.connection_pool.disconnect()
