"""Job records: creating them with their index entries, and reading them at any queue size.

A job is one Redis hash of JSON values (see `jobs.record.JobRecord`); beside the records the
store keeps per queue and status a sorted set of ids, so counts are cardinalities and pages
are ranges by id: every read a client or the API makes costs O(page) or O(1) however long
the queue. The token lives under a key of its own, so reading a job never reads it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cached_property
from typing import Any

import redis
from redis.commands.core import Script

from downloader.jobs.models import DownloadJob, DownloadJobStatus, MultiFileDownloadJob
from downloader.jobs.record import JobRecord, utcnow
from downloader.store.base import BATCH, StoreBase
from downloader.store.keys import CANCELLED, STATUSES, celery_priority
from downloader.store.scripts import load


class JobRecords(StoreBase):
    """Writes new jobs and reads them back."""

    # -- the Redis's own identity -----------------------------------------------------------

    def mark(self) -> str:
        """The namespace's marker on this Redis, written first if it has none.

        A process notes the marker when it starts (and every batch of new jobs writes it if
        it is missing). A Redis that lost its data (restarted without persistence, flushed,
        failed over to an empty replica, evicting keys) has lost the marker too: a later
        `marker()` that answers another value, or none, tells the process that the jobs it
        knows of are gone with it, rather than removed by someone.

        Returns:
            The marker, as this Redis holds it now.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.marker, uuid.uuid4().hex, nx=True)
        pipe.get(self.keys.marker)
        return str(pipe.execute()[1].decode())

    def marker(self) -> str | None:
        """The namespace's marker (see `mark`); None when this Redis holds none."""
        raw = self.redis.get(self.keys.marker)
        return raw.decode() if raw is not None else None

    # -- creating ---------------------------------------------------------------------------

    def new_ids(self, count: int) -> list[int]:
        """`count` new job ids: global to the namespace, never given twice."""
        last = int(self.redis.incrby(self.keys.next_id, count))
        return list(range(last - count, last))

    @cached_property
    def _create(self) -> Script:
        return load(self.redis, "create")

    def create(
        self,
        queue_id: str,
        records: Iterable[JobRecord],
        access_token: str | None = None,
        access_tokens: Mapping[int, str] | None = None,
        then: Callable[[redis.client.Pipeline, list[JobRecord]], None] | None = None,
    ) -> None:
        """Write new jobs with their index entries, a batch at a time.

        One round trip per `BATCH` jobs. Each batch is one script call (atomic, as a
        transaction) that also names the queue in the set of queue names: a removal that
        empties the queue meanwhile (and retires its name, see `lua/retire.lua`) can never
        leave these jobs on an unnamed queue. A single job's record gets the broker level
        of its priority (`level`). The batch's records go to `lua/create.lua` as one JSON
        argument: packing some twenty arguments per record's HSET was a quarter of a batch
        enqueue's client time.

        Args:
            queue_id: the queue of every record; set on each, with its creation time.
            records: the new jobs, each with its own `id` (see `new_ids`).
            access_token: every job's token, or
            access_tokens: one token per job id. A token is kept under a key of its own.
            then: adds its own commands for a batch's records to the pipeline it is given,
                which the batch's script runs after the records (the broker messages that
                queue them, so that they exist with them); their replies are not read.
        """
        now = utcnow()
        batch: list[JobRecord] = []
        rows: list[list[str]] = []
        tokens: list[tuple[int, str]] = []
        sent = False
        for record in records:
            record.queue_id = queue_id
            record.created_at = record.updated_at = now
            if not record.multifile:  # a parent is never sent
                record.level = celery_priority(record.priority)
            rows.append(record.to_row())
            token = access_token or (access_tokens or {}).get(record.id)
            if token:
                tokens.append((record.id, token))
            batch.append(record)
            if len(batch) == BATCH:
                self._send_batch(queue_id, rows, tokens, then, batch)
                sent = True
        if batch or not sent:  # an empty call still names the queue, as it always did
            self._send_batch(queue_id, rows, tokens, then, batch)

    def _send_batch(
        self,
        queue_id: str,
        rows: list[list[str]],
        tokens: list[tuple[int, str]],
        then: Callable[[redis.client.Pipeline, list[JobRecord]], None] | None,
        batch: list[JobRecord],
    ) -> None:
        """Send one batch of `create` as one script call: its records, their index entries,
        the queue's name and the marker, then the tokens and the commands `then` adds for
        the batch's records, run by the script after the records. Empties the lists.

        `then` adds its commands to a pipeline that is never sent (read back from redis-py's
        `command_stack`, the commands a pipeline holds): the script runs them, so a batch is
        one command and one reply however many it holds. A transaction of the same commands
        (MULTI, each command packed and its reply read by redis-py, EXEC) cost a single
        `download()` a fifth more client time, and redis-py asked `SCRIPT EXISTS` before
        each, a round trip of its own.
        """
        keys = self.keys
        extra = self.redis.pipeline(transaction=False)
        for job_id, token in tokens:
            extra.set(keys.secret(job_id), token)
        if then is not None and batch:
            then(extra, batch)
        words: list[Any] = []
        for command, _ in extra.command_stack:
            words.append(len(command))
            words.extend(command)
        self._create(
            keys=[keys.queue_jobs(queue_id), keys.queues, keys.marker],
            args=[
                keys.job(""),
                keys.queue_status(queue_id, ""),
                queue_id,
                uuid.uuid4().hex,
                json.dumps(rows, separators=(",", ":")),
                *words,
            ],
        )
        rows.clear()
        tokens.clear()
        batch.clear()

    def dispatched(self, jobs: Iterable[tuple[int, str, int]], now: float) -> None:
        """Note that these (job id, queue id, priority) were sent to the broker at `now`
        (epoch seconds): the orphan watch finds a message lost on its way from these notes."""
        pipe = self.redis.pipeline(transaction=False)
        for count, (job_id, queue_id, priority) in enumerate(jobs, 1):
            pipe.zadd(self.keys.dispatched(queue_id, celery_priority(priority)), {job_id: now})
            if count % BATCH == 0:
                pipe.execute()
        pipe.execute()

    # -- reading ----------------------------------------------------------------------------

    def record(self, job_id: int) -> JobRecord | None:
        """The job's record; None when there is none (never created, removed or expired)."""
        raw = self.redis.hgetall(self.keys.job(job_id))
        return JobRecord.from_hash(raw) if raw else None

    def status_of(self, job_id: int) -> DownloadJobStatus | None:
        """The job's status alone (one field, not the record); None when it has no record."""
        raw = self.redis.hget(self.keys.job(job_id), "status")
        return DownloadJobStatus(json.loads(raw)) if raw is not None else None

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

    @cached_property
    def _missing(self) -> Script:
        return load(self.redis, "missing")

    def missing(self, job_ids: Iterable[int]) -> set[int]:
        """Which of these jobs have no record: one script call per `BATCH` ids, so that a
        client's look at its followed jobs (`client.listener`) costs one command and a short
        reply, not an EXISTS and its reply per job."""
        ids = list(job_ids)
        gone: set[int] = set()
        for start in range(0, len(ids), BATCH):
            found = self._missing(args=[self.keys.job(""), *ids[start : start + BATCH]])
            gone.update(int(job_id) for job_id in found)
        return gone

    def queue_ids(self, queue_id: str) -> list[int]:
        """Every job id of the queue, in id order."""
        return [int(x) for x in self.redis.zrange(self.keys.queue_jobs(queue_id), 0, -1)]

    def page(
        self,
        queue_id: str,
        status: str | None = None,
        cursor: int | None = None,
        limit: int = 50,
    ) -> tuple[list[JobRecord], int | None]:
        """A page of the queue's records, oldest first: O(page).

        Ids only grow, so a page never shifts when jobs are added or removed.

        Args:
            queue_id: the queue.
            status: one of `STATUSES` or `CANCELLED`; None for every job.
            cursor: the id after which the page starts (None: the first page).
            limit: the most records on the page.

        Returns:
            The records, and the cursor of the next page (None on the last).
        """
        key = self.keys.queue_jobs(queue_id)
        if status is not None:
            key = self.keys.queue_status(queue_id, status)
        low = "-inf" if cursor is None else f"({cursor}"
        ids = [int(x) for x in self.redis.zrangebyscore(key, low, "+inf", start=0, num=limit)]
        more = len(ids) == limit and bool(
            self.redis.zrangebyscore(key, f"({ids[-1]}", "+inf", start=0, num=1)
        )
        return self.records(ids), (ids[-1] if more else None)

    def iter_records(self, queue_id: str, status: str | None = None) -> Iterator[JobRecord]:
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

    # -- records as models ------------------------------------------------------------------

    def to_model(self, record: JobRecord) -> DownloadJob | MultiFileDownloadJob:
        """The public model of a record; a multi-file job's parts are read (one round trip
        per `BATCH` parts)."""
        return record.to_model(self.records(record.part_ids) if record.multifile else ())

    def get(self, job_id: int) -> DownloadJob | MultiFileDownloadJob | None:
        """The public model of job `job_id`; None when it has no record."""
        record = self.record(job_id)
        return self.to_model(record) if record else None
