"""What every process of the project holds on one Redis, Celery or not: the job store, the
event publisher, the lease renewer, the settings, and where its jobs go.

Where jobs go is a list of `Dispatcher`s, asked in turn: a process that runs its own jobs
(`downloader get` on the embedded default, see `worker.local`) has its threads take its own
queue's ids, and a process with Celery (see `downloader.celery_app`) sends the rest as broker
messages. The runtime knows neither: it imports no Celery, which spares a get of its own jobs
the import of Celery and kombu, about a fifth of a small get.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Protocol, runtime_checkable

import redis
import requests

from downloader.config import Settings
from downloader.jobs.events import DOWNLOAD_CANCELLED
from downloader.store.bus import EventPublisher
from downloader.store.connection import RedisTarget
from downloader.store.durability import Durability
from downloader.store.jobs import JobStore
from downloader.store.keys import Keys
from downloader.store.lifecycle import CancelResult
from downloader.worker.leases import LeaseRenewer
from downloader.worker.notices import RetryListeners
from downloader.worker.pacing import ProcessPacing

Dispatch = tuple[int, str, int]
"""(job id, queue id, priority): a job to run."""


class Dispatcher(Protocol):
    """One way for jobs to reach a worker: this process's threads, or the broker."""

    def takes(self, queue_id: str) -> bool:
        """Whether the jobs of `queue_id` go this way."""
        ...

    def submit(self, jobs: Sequence[Dispatch]) -> None:
        """Have these jobs run (each of a queue this dispatcher takes)."""
        ...

    def discard(self, job_id: int, queue_id: str) -> None:
        """Have a worker that sees the download volume remove what a cancelled job left."""
        ...


@runtime_checkable
class PipelineDispatcher(Protocol):
    """A dispatcher whose messages are Redis commands of the job store's own Redis, so a
    batch's records and messages can go in one atomic script call (`JobStore.create`'s
    `then`)."""

    def declare(self, queue_ids: set[str]) -> None:
        """Make ready, once, whatever the queues' messages need besides themselves."""
        ...

    def push(self, pipe: redis.client.Pipeline, jobs: Sequence[Dispatch], now: float) -> None:
        """Add the commands that send `jobs` (and note them sent at `now`) to `pipe`."""
        ...


class Runtime:
    """One Redis seen as this project sees it, and the ways its jobs reach workers."""

    def __init__(self, redis_url: str, settings: Settings) -> None:
        self.target = RedisTarget(redis_url, settings)
        """How to reach this Redis: one server or the primary of a Sentinel set, TLS, ACL."""
        self.redis_url = self.target.url
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.session_override: requests.Session | None = None
        """The session in-process workers download with (InvokeAI's `requests_session`)."""
        self.stopping = threading.Event()
        """Set when this process's worker shuts down: running jobs hand themselves back."""
        self.dispatchers: list[Dispatcher] = []
        """Asked in order: the first that takes a job's queue gets it."""
        self.redis_marker: str | None = None
        """The store's marker as this process first saw it (see `JobStore.mark`)."""
        self.retry_listeners = RetryListeners()
        """Told of each retry this process's downloads make (a `get` shows them)."""

    @cached_property
    def redis(self) -> redis.Redis:
        """The client of the job store and events; it rides out a Redis restart or a failover
        by retrying each command for `DOWNLOADER_REDIS_RIDE_OUT` seconds before giving up."""
        return self.target.riding_client()

    @cached_property
    def durability(self) -> Durability:
        """The wait for replicas after the writes that make a job exist or end."""
        settings = self.settings
        return Durability(
            self.redis, settings.namespace, settings.redis_min_replicas, settings.redis_wait_timeout
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

    @cached_property
    def pacing(self) -> ProcessPacing:
        """The fleet's limits as this process's transfers live them (see `worker.pacing`)."""
        return ProcessPacing(self.redis, self.settings)

    def live_workers(self) -> list[str]:
        """The workers whose heartbeat in Redis is current (see `recovery.OrphanWatch`)."""
        return self.store.live_workers()

    def dispatcher_for(self, queue_id: str) -> Dispatcher:
        for dispatcher in self.dispatchers:
            if dispatcher.takes(queue_id):
                return dispatcher
        raise RuntimeError(
            f"jobs of queue {queue_id!r} need a worker this process cannot reach: it runs "
            "only its own jobs and has no broker to send others with"
        )

    def pipelined(self, queue_id: str) -> PipelineDispatcher | None:
        """The dispatcher of `queue_id` if its messages can share the records' script call,
        and no replica must confirm the records first (see `Enqueuer`)."""
        dispatcher = self.dispatcher_for(queue_id)
        if not isinstance(dispatcher, PipelineDispatcher) or self.durability.needed():
            return None
        return dispatcher

    def submit(self, job_id: int, queue_id: str, priority: int) -> None:
        """Queue job `job_id` for a worker of its queue, at its mapped priority."""
        self.submit_many([(job_id, queue_id, priority)])

    def submit_many(self, jobs: Sequence[Dispatch]) -> None:
        """Queue (job id, queue id, priority) triples, each through the first dispatcher that
        takes its queue, in one call per dispatcher."""
        routed: dict[int, tuple[Dispatcher, list[Dispatch]]] = {}
        for job in jobs:
            dispatcher = self.dispatcher_for(job[1])
            routed.setdefault(id(dispatcher), (dispatcher, []))[1].append(job)
        for dispatcher, batch in routed.values():
            dispatcher.submit(batch)

    def cancel(self, job_id: int, queue_id: str) -> CancelResult:
        """Cancel one job; one that never started is over at once and says so on the bus."""
        return self.cancel_many([job_id], queue_id)[0]

    def cancel_many(self, job_ids: Iterable[int], queue_id: str) -> list[CancelResult]:
        """Cancel jobs in pipelined batches; those that never started end at once."""
        ids = list(job_ids)
        results = self.store.cancel_many(ids)
        if ids:
            self.durability.settle(f"cancel of {len(ids)} job(s)")
        ended = [
            job_id
            for job_id, result in zip(ids, results, strict=True)
            if result is CancelResult.CANCELLED
        ]
        records = {record.id: record for record in self.store.records(ended)}
        sources = {job_id: record.source for job_id, record in records.items()}
        self.publisher.publish_many(
            DOWNLOAD_CANCELLED,
            queue_id,
            ended,
            {job_id: {"source": sources.get(job_id)} for job_id in ended},
            {job_id: record.follower for job_id, record in records.items()},
        )
        for job_id, record in records.items():
            if record.job_started:
                # It ran once and its worker is gone: a worker (which, unlike this client,
                # surely sees the download volume) removes what it left behind. A job that
                # never ran is tidied by the claim of its own message.
                self.dispatcher_for(queue_id).discard(job_id, queue_id)
        return results

    def disconnect(self) -> None:
        """Close every connection, so an embedded Redis sees its last client go; what this
        process's transfers read since the last report is reported first."""
        if "pacing" in self.__dict__:
            self.pacing.flush()
        self.redis.connection_pool.disconnect()
