"""The Redis job store: the only copy of a job's state, shared by clients and workers.

A job is one Redis hash whose fields hold JSON values, so a worker can update `bytes` without
rewriting the record and a Lua script can make the few decisions that must be atomic
(claiming a job, cancelling it, releasing a lease). The access token lives under a key of its
own so that reading a job never reads the token.

Every read a client or the API makes must cost O(page) or O(1) however long the queue, so
beside the records the store keeps indexes that the same scripts change together with a
job's status (see `lua/library.lua`): per queue and status a sorted set of ids (counts are their
cardinalities, pages are ranges by id), the finish times that retention sweeps, the dispatch
times that the orphan watch uses to find lost messages, and counters (per multi-file parent:
its parts' outcomes and summed bytes; per namespace: the figures `metrics` exports).

A small job must cost a worker few round trips, so the scripts a worker calls do all that one
moment of a job needs at once: the claim takes the lease, marks the job running and answers
its record and token; an update or the end of a job publishes its events (`Announcement`s,
prepared by `events.EventPublisher.prepare`) in the same script, after its writes, so a
subscriber that hears an event and reads the record sees what the event says; the end also
releases the lease and the job's path reservations.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from downloader.jobs.failure import CANCELLED_ERROR_TYPE, cancellation
from downloader.jobs.models import DownloadJob, DownloadJobStatus, MultiFileDownloadJob
from downloader.jobs.record import FIELD_NAMES, JobRecord, encode_value, utcnow
from downloader.store.keys import PRIORITY_LEVELS, Keys, celery_priority
from downloader.store.scripts import load

STATUSES = tuple(status.value for status in DownloadJobStatus)
CANCELLED = "cancelled"
"""Not a status (a cancelled job is an `error` with `cancelled` set) but counted apart too."""

BATCH = 1000
"""Commands per pipeline round trip when writing or reading many jobs."""


@dataclass(frozen=True)
class Announcement:
    """An event ready to go out: its JSON text and the channels it goes to."""

    channels: tuple[str, ...]
    data: str


@dataclass(frozen=True)
class Claim:
    """What a claim decided, with the job's record and token as they were then (None: none)."""

    result: ClaimResult
    record: JobRecord | None
    token: str | None


class ClaimResult(StrEnum):
    CLAIMED = "claimed"
    LEASED = "leased"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    MISSING = "missing"


class Standing(StrEnum):
    """What a running attempt hears when it looks at its job."""

    GO_ON = "go on"
    CANCELLED = "cancelled"
    GONE = "gone"  # the record is no longer in Redis: removed, or lost with Redis's data


class Renewal(StrEnum):
    """What became of a lease its worker renewed."""

    HELD = "held"
    TAKEN = "taken"  # another attempt holds it, or it ran out: that attempt owns the job now
    GONE = "gone"  # the job's record is no longer in Redis


class CancelResult(StrEnum):
    CANCELLED = "cancelled"  # it was not running: now it is over
    REQUESTED = "requested"  # its worker will stop it
    FINISHED = "finished"  # too late, it had ended
    MISSING = "missing"


_RENEWALS = {1: Renewal.HELD, 0: Renewal.TAKEN, 2: Renewal.GONE}
_STANDINGS = {0: Standing.GO_ON, 1: Standing.CANCELLED, 2: Standing.GONE}


def _flush_indexes(pipe: redis.client.Pipeline, indexes: dict[str, dict[str, int]]) -> None:
    for key, members in indexes.items():
        pipe.zadd(key, members)
    indexes.clear()


class JobStore:
    """Reads and writes jobs; knows nothing about HTTP or Celery."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.redis = client
        self.keys = Keys(namespace)
        self._claim = load(client, "claim", library=True)
        self._cancel = load(client, "cancel", library=True)
        self._recover = load(client, "recover", library=True)
        self._transition = load(client, "transition", library=True)
        self._update = load(client, "update", library=True)
        self._progress = load(client, "progress", library=True)
        self._retry = load(client, "retry", library=True)
        self._renew = load(client, "renew")
        self._retire = load(client, "retire")
        self._release = load(client, "release")

    def _args(self, job_id: int, *rest: Any) -> list[Any]:
        """The arguments every job script starts with (see `lua/library.lua`)."""
        return [self.keys.namespace, encode_value(utcnow()), repr(time.time()), job_id, *rest]

    # -- the Redis's own identity -----------------------------------------------------------

    def mark(self) -> str:
        """The namespace's marker on this Redis, written first if it has none.

        A process notes the marker when it starts (and every batch of new jobs writes it if
        it is missing). A Redis that lost its data (restarted without persistence, flushed,
        failed over to an empty replica, evicting keys) has lost the marker too: a later
        `marker()` that answers another value, or none, tells the process that the jobs it
        knows of are gone with it, rather than removed by someone.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.marker, uuid.uuid4().hex, nx=True)
        pipe.get(self.keys.marker)
        return str(pipe.execute()[1].decode())

    def marker(self) -> str | None:
        raw = self.redis.get(self.keys.marker)
        return raw.decode() if raw is not None else None

    # -- creating -------------------------------------------------------------------------

    def new_ids(self, count: int) -> list[int]:
        last = int(self.redis.incrby(self.keys.next_id, count))
        return list(range(last - count, last))

    def create(
        self,
        queue_id: str,
        records: Iterable[JobRecord],
        access_token: str | None = None,
        access_tokens: Mapping[int, str] | None = None,
    ) -> None:
        """Write new jobs with their index entries, in pipelined batches.

        One round trip per `BATCH` jobs. Each batch is one transaction that also names the
        queue in the set of queue names: a removal that empties the queue meanwhile (and
        retires its name, see `_RETIRE`) can never leave these jobs on an unnamed queue.

        Args:
            queue_id: the queue of every record; set on each, with its creation time.
            records: the new jobs, each with its own `id` (see `new_ids`).
            access_token: every job's token, or
            access_tokens: one token per job id. A token is kept under a key of its own.
        """
        now = utcnow()
        pipe = self.redis.pipeline(transaction=True)
        # Index entries go out one ZADD per index and batch.
        indexes: dict[str, dict[str, int]] = {}
        for count, record in enumerate(records, 1):
            job_id = record.id
            record.queue_id = queue_id
            record.created_at = record.updated_at = now
            if not record.multifile:  # a parent is never sent
                record.level = celery_priority(record.priority)
            pipe.hset(self.keys.job(job_id), mapping=record.to_hash())
            status = record.status.value
            for key in (self.keys.queue_jobs(queue_id), self.keys.queue_status(queue_id, status)):
                indexes.setdefault(key, {})[str(job_id)] = job_id
            token = access_token or (access_tokens or {}).get(job_id)
            if token:
                pipe.set(self.keys.secret(job_id), token)
            if count % BATCH == 0:
                self._close_batch(pipe, indexes, queue_id)
        self._close_batch(pipe, indexes, queue_id)

    def _close_batch(
        self, pipe: redis.client.Pipeline, indexes: dict[str, dict[str, int]], queue_id: str
    ) -> None:
        """Send one batch of `create`: its index entries, the queue's name and the marker."""
        _flush_indexes(pipe, indexes)
        pipe.sadd(self.keys.queues, queue_id)
        pipe.set(self.keys.marker, uuid.uuid4().hex, nx=True)
        pipe.execute()

    def dispatched(self, jobs: Iterable[tuple[int, str, int]], now: float) -> None:
        """Note that these (job id, queue id, priority) were sent to the broker at `now`."""
        pipe = self.redis.pipeline(transaction=False)
        for count, (job_id, queue_id, priority) in enumerate(jobs, 1):
            pipe.zadd(self.keys.dispatched(queue_id, celery_priority(priority)), {job_id: now})
            if count % BATCH == 0:
                pipe.execute()
        pipe.execute()

    # -- reading --------------------------------------------------------------------------

    def record(self, job_id: int) -> JobRecord | None:
        """The job's record; None when there is none (never created, removed or expired)."""
        raw = self.redis.hgetall(self.keys.job(job_id))
        return JobRecord.from_hash(raw) if raw else None

    def records(self, job_ids: Iterable[int]) -> list[JobRecord]:
        """The records of these jobs that still exist, in order, in pipelined batches."""
        found: list[JobRecord] = []
        ids = list(job_ids)
        for start in range(0, len(ids), BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids[start : start + BATCH]:
                pipe.hgetall(self.keys.job(job_id))
            found.extend(JobRecord.from_hash(raw) for raw in pipe.execute() if raw)
        return found

    def missing(self, job_ids: Iterable[int]) -> set[int]:
        """Which of these jobs have no record, in pipelined batches of EXISTS."""
        ids = list(job_ids)
        gone: set[int] = set()
        for start in range(0, len(ids), BATCH):
            pipe = self.redis.pipeline(transaction=False)
            batch = ids[start : start + BATCH]
            for job_id in batch:
                pipe.exists(self.keys.job(job_id))
            gone.update(i for i, found in zip(batch, pipe.execute(), strict=True) if not found)
        return gone

    def queue_ids(self, queue_id: str) -> list[int]:
        return [int(x) for x in self.redis.zrange(self.keys.queue_jobs(queue_id), 0, -1)]

    def prune(self, queue_id: str) -> list[int]:
        """Forget the queue's finished jobs (parts included), read from the status indexes;
        answers their ids."""
        pipe = self.redis.pipeline(transaction=False)
        for status in (DownloadJobStatus.COMPLETED, DownloadJobStatus.ERROR):
            pipe.zrange(self.keys.queue_status(queue_id, status.value), 0, -1)
        finished = [int(job_id) for ids in pipe.execute() for job_id in ids]
        self.remove(queue_id, finished)
        return finished

    def page(
        self,
        queue_id: str,
        status: str | None = None,
        cursor: int | None = None,
        limit: int = 50,
    ) -> tuple[list[JobRecord], int | None]:
        """Up to `limit` jobs with ids above `cursor`, oldest first, and the cursor of the
        next page (None on the last). Ids only grow, so a page never shifts when jobs are
        added or removed; `status` is one of `STATUSES` or `CANCELLED`."""
        key = self.keys.queue_jobs(queue_id)
        if status is not None:
            key = self.keys.queue_status(queue_id, status)
        low = "-inf" if cursor is None else f"({cursor}"
        ids = [int(x) for x in self.redis.zrangebyscore(key, low, "+inf", start=0, num=limit)]
        more = len(ids) == limit and bool(
            self.redis.zrangebyscore(key, f"({ids[-1]}", "+inf", start=0, num=1)
        )
        return self.records(ids), (ids[-1] if more else None)

    def iter_records(self, queue_id: str, status: str | None = None) -> Iterable[JobRecord]:
        """Every record of the queue (or of one status), a page at a time."""
        cursor: int | None = None
        while True:
            records, cursor = self.page(queue_id, status, cursor, BATCH)
            yield from records
            if cursor is None:
                return

    def counts(self, queue_id: str) -> dict[str, int]:
        """How many jobs the queue holds in each status (and `cancelled`, a part of `error`),
        and `total`: O(1), from the indexes."""
        names = [*STATUSES, CANCELLED]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.zcard(self.keys.queue_status(queue_id, name))
        pipe.zcard(self.keys.queue_jobs(queue_id))
        *sizes, total = pipe.execute()
        return {**dict(zip(names, sizes, strict=True)), "total": total}

    def running(self, queue_id: str) -> list[JobRecord]:
        """The queue's running jobs, in id order: O(running)."""
        key = self.keys.queue_status(queue_id, DownloadJobStatus.RUNNING.value)
        return self.records(int(x) for x in self.redis.zrange(key, 0, -1))

    def queue_names(self) -> list[str]:
        """Every queue of this namespace that holds a job (a queue whose last job is removed
        leaves the list, and comes back with its next job)."""
        return sorted(name.decode() for name in self.redis.smembers(self.keys.queues))

    # -- turning records into models -------------------------------------------------------

    def to_model(self, record: JobRecord) -> DownloadJob | MultiFileDownloadJob:
        """The public model of a record; a multi-file job's parts are read (one round trip
        per `BATCH` parts)."""
        return record.to_model(self.records(record.part_ids) if record.multifile else ())

    def get(self, job_id: int) -> DownloadJob | MultiFileDownloadJob | None:
        record = self.record(job_id)
        return self.to_model(record) if record else None

    # -- the worker's side ------------------------------------------------------------------

    def claim(self, job_id: int, owner: str, lease_seconds: float) -> Claim:
        """Lease the job to `owner`, mark it running and answer its record and token, in one
        round trip; the lease is taken only for `ClaimResult.CLAIMED`."""
        result, flat, token = self._claim(args=self._args(job_id, owner, int(lease_seconds * 1000)))
        record = (
            JobRecord.from_hash(dict(zip(flat[::2], flat[1::2], strict=True))) if flat else None
        )
        return Claim(ClaimResult(result.decode()), record, token.decode() if token else None)

    def renew_many(self, leases: Iterable[tuple[int, str]], lease_seconds: float) -> list[Renewal]:
        """Renew several (job id, owner) leases in one round trip; answers what became of each."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id, owner in leases:
            self._renew(
                keys=[self.keys.lease(job_id), self.keys.job(job_id)],
                args=[owner, int(lease_seconds * 1000)],
                client=pipe,
            )
        return [_RENEWALS[int(answer)] for answer in pipe.execute()]

    def release(self, job_id: int, owner: str) -> None:
        self._release(keys=[self.keys.lease(job_id)], args=[owner])

    def update(self, job_id: int, events: Iterable[Announcement] = (), **fields: Any) -> None:
        """Set fields of an existing job, then publish `events` (all to the same channels);
        a job removed meanwhile (pruned, cleared) stays gone and nothing is published."""
        channels, texts = _announced(events)
        self._update(keys=channels, args=self._args(job_id, len(texts), *texts, *_flat(fields)))

    def standing(self, job_id: int) -> Standing:
        """Whether a running attempt goes on, is cancelled, or lost its job's record."""
        cancel, status = self.redis.hmget(self.keys.job(job_id), "cancel_requested", "status")
        if status is None:
            return Standing.GONE
        return Standing.CANCELLED if cancel == b"true" else Standing.GO_ON

    def record_retry(self, job_id: int, reason: str) -> None:
        """Count one more attempt; like `update`, a job removed meanwhile stays gone."""
        self._retry(args=self._args(job_id, encode_value(reason)))

    def report_progress(self, job_id: int, current: int, total: int) -> Standing:
        """Store the byte counts and answer whether the job goes on, in one round trip."""
        return _STANDINGS[int(self._progress(args=self._args(job_id, current, total)))]

    def finish(
        self,
        job_id: int,
        status: DownloadJobStatus,
        owner: str = "",
        paths: Iterable[str] = (),
        events: Iterable[Announcement] = (),
        **fields: Any,
    ) -> bool:
        """End a job in one round trip: set its status and `fields`, release the lease of
        `owner` and the path reservation keys `paths` it holds, then publish `events`; False
        (and nothing done) when the job's record is gone."""
        return self._move(job_id, status, "any", owner, paths, events, job_ended=utcnow(), **fields)

    def requeue(self, job_id: int) -> None:
        """Back to waiting, for a worker that hands its job back on shutdown."""
        self._move(job_id, DownloadJobStatus.WAITING, "any")

    def finish_once(self, job_id: int, status: DownloadJobStatus, **fields: Any) -> bool:
        """Finish a job unless it has finished already; True for the one caller that did."""
        return self._move(job_id, status, "once", job_ended=utcnow(), **fields)

    def start_once(self, job_id: int) -> bool:
        """Mark a waiting job running; True for the one caller that did."""
        return self._move(job_id, DownloadJobStatus.RUNNING, "waiting", job_started=utcnow())

    def _move(
        self,
        job_id: int,
        status: DownloadJobStatus,
        mode: str,
        owner: str = "",
        paths: Iterable[str] = (),
        events: Iterable[Announcement] = (),
        **fields: Any,
    ) -> bool:
        fields["updated_at"] = utcnow()
        keys = list(paths)
        channels, texts = _announced(events)
        args = self._args(
            job_id, status.value, mode, owner, len(keys), *keys, len(texts), *texts, *_flat(fields)
        )
        return bool(self._transition(keys=channels, args=args))

    def orphans(self) -> list[int]:
        """Running jobs whose lease is gone: their worker died. Each is set back to waiting
        once, atomically, so two workers looking at the same time do not both requeue it."""
        found = []
        for raw in self.redis.smembers(self.keys.running):
            job_id = int(raw)
            if self._recover(args=self._args(job_id)):
                found.append(job_id)
        return found

    def gate(self, job_id: int, seconds: float) -> bool:
        """True at most once every `seconds` per job, across every worker (a shared throttle)."""
        return self._pass(self.keys.progress_gate(job_id), seconds)

    def sweep_due(self, seconds: float) -> bool:
        """True at most once every `seconds` across every process: a retention sweep is due."""
        return self._pass(self.keys.sweep_gate, seconds)

    def _pass(self, key: str, seconds: float) -> bool:
        return bool(self.redis.set(key, 1, px=max(1, int(seconds * 1000)), nx=True))

    # -- the client's side ------------------------------------------------------------------

    def cancel(self, job_id: int) -> CancelResult:
        return self.cancel_many([job_id])[0]

    def cancel_many(self, job_ids: Iterable[int]) -> list[CancelResult]:
        """Cancel several jobs in pipelined batches; answers what became of each."""
        ids = list(job_ids)
        results: list[CancelResult] = []
        for start in range(0, len(ids), BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids[start : start + BATCH]:
                args = self._args(
                    job_id, encode_value(CANCELLED_ERROR_TYPE), encode_value(cancellation(job_id))
                )
                self._cancel(args=args, client=pipe)
            results.extend(CancelResult(raw.decode()) for raw in pipe.execute())
        return results

    def remove(self, queue_id: str, job_ids: Iterable[int]) -> None:
        """Forget jobs: their records, secrets, leases and every index entry, in batches; the
        queue's name too when no job is left in it (in the last batch's round trip)."""
        index_keys = [
            self.keys.queue_jobs(queue_id),
            self.keys.queue_ended(queue_id),
            *(self.keys.queue_status(queue_id, name) for name in (*STATUSES, CANCELLED)),
        ]
        pipe = self.redis.pipeline(transaction=False)
        for count, job_id in enumerate(job_ids, 1):
            pipe.delete(self.keys.job(job_id), self.keys.secret(job_id), self.keys.lease(job_id))
            for key in index_keys:
                pipe.zrem(key, str(job_id))
            pipe.srem(self.keys.running, job_id)
            if count % BATCH == 0:
                pipe.execute()
        retiring = [
            self.keys.queue_jobs(queue_id),
            self.keys.queues,
            self.keys.stats,
            *(self.keys.dispatched(queue_id, level) for level in range(PRIORITY_LEVELS)),
        ]
        self._retire(keys=retiring, args=[queue_id], client=pipe)
        pipe.execute()

    # -- workers ------------------------------------------------------------------------------

    def heartbeat(self, name: str, ttl: float, jobs: int, queues: Iterable[str] = ()) -> None:
        """Say worker `name` is alive for `ttl` seconds, running `jobs` downloads and consuming
        the Celery `queues` it was started with."""
        now = time.time()
        info = json.dumps({"name": name, "jobs": jobs, "seen": now, "queues": sorted(queues)})
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.worker(name), info, px=max(1, int(ttl * 1000)))
        pipe.zadd(self.keys.workers, {name: now + ttl})
        pipe.execute()

    def forget_worker(self, name: str) -> None:
        """A worker that stops says so instead of letting its heartbeat run out."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.keys.worker(name))
        pipe.zrem(self.keys.workers, name)
        pipe.execute()

    def live_workers(self, queue: str | None = None) -> list[str]:
        """Names of the workers whose heartbeat has not run out (only those started with the
        Celery `queue`, when given): O(workers), no broadcast. The ones that ran out are
        dropped from the index on the way."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(self.keys.workers, "-inf", now)
        pipe.zrange(self.keys.workers, 0, -1)
        names = sorted(name.decode() for name in pipe.execute()[1])
        if queue is None or not names:
            return names
        beats = self.redis.mget([self.keys.worker(name) for name in names])
        return [
            name
            for name, beat in zip(names, beats, strict=True)
            if beat is not None and queue in json.loads(beat).get("queues", ())
        ]

    # -- retention ----------------------------------------------------------------------------

    def expire(self, queue_id: str, ended_before: float, limit: int = BATCH) -> list[int]:
        """Remove up to `limit` jobs of the queue that ended before `ended_before` (epoch
        seconds); answers their ids. O(expired): the ended index is sorted by time."""
        key = self.keys.queue_ended(queue_id)
        ids = [int(x) for x in self.redis.zrangebyscore(key, "-inf", f"({ended_before}", 0, limit)]
        self.remove(queue_id, ids)
        return ids

    def sweep_expired(self, queue_id: str, ttl: float) -> int:
        """Retention: remove the queue's jobs that ended more than `ttl` seconds ago (0 keeps
        them); answers how many went."""
        if ttl <= 0:
            return 0
        removed = 0
        while batch := self.expire(queue_id, time.time() - ttl):
            removed += len(batch)
        return removed


def _announced(events: Iterable[Announcement]) -> tuple[list[str], list[str]]:
    """The channels and texts of events for one script call: they share their channels."""
    events = list(events)
    channels = {events[0].channels} if events else set()
    if any(event.channels not in channels for event in events):
        raise ValueError("events published in one call go to the same channels")
    return (list(events[0].channels) if events else []), [event.data for event in events]


def _flat(fields: Mapping[str, Any]) -> list[str]:
    """Field, JSON value pairs for a script to set; a name the record lacks is a bug."""
    unknown = fields.keys() - FIELD_NAMES
    if unknown:
        raise ValueError(f"a job record has no field {', '.join(sorted(unknown))}")
    return [item for key, value in fields.items() for item in (key, encode_value(value))]
