"""Forgetting jobs: removal (`prune`, `clear`), the result TTL's sweep, and the shared gates
that keep such work (and a parent's progress) to once per interval across every process.

A removal takes a job's record, token, lease and every index entry, and retires the queue's
name with its last job (`lua/retire.lua`), so the set of queue names the orphan watch walks
does not grow with every `get` ever run on a queue of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import cached_property

from redis.commands.core import Script

from downloader.jobs.models import DownloadJobStatus
from downloader.store.base import BATCH, StoreBase
from downloader.store.keys import CANCELLED, PRIORITY_LEVELS, STATUSES
from downloader.store.scripts import load


class Retention(StoreBase):
    """Removes jobs, and says when shared periodic work is due."""

    @cached_property
    def _retire(self) -> Script:
        return load(self.redis, "retire")

    def remove(self, queue_id: str, job_ids: Iterable[int]) -> None:
        """Forget jobs: their records, secrets, leases and every index entry, in batches; the
        queue's name too when no job is left in it (in the last batch's round trip)."""
        keys = self.keys
        index_keys = [
            keys.queue_jobs(queue_id),
            keys.queue_ended(queue_id),
            *(keys.queue_status(queue_id, name) for name in (*STATUSES, CANCELLED)),
        ]
        pipe = self.redis.pipeline(transaction=False)
        for count, job_id in enumerate(job_ids, 1):
            pipe.delete(keys.job(job_id), keys.secret(job_id), keys.lease(job_id))
            for key in index_keys:
                pipe.zrem(key, str(job_id))
            pipe.srem(keys.running, job_id)
            if count % BATCH == 0:
                pipe.execute()
        retiring = [
            keys.queue_jobs(queue_id),
            keys.queues,
            keys.stats,
            *(keys.dispatched(queue_id, level) for level in range(PRIORITY_LEVELS)),
        ]
        self._retire(keys=retiring, args=[queue_id], client=pipe)
        pipe.execute()

    def prune(self, queue_id: str) -> list[int]:
        """Forget the queue's finished jobs (parts included), read from the status indexes;
        answers their ids."""
        pipe = self.redis.pipeline(transaction=False)
        for status in (DownloadJobStatus.COMPLETED, DownloadJobStatus.ERROR):
            pipe.zrange(self.keys.queue_status(queue_id, status.value), 0, -1)
        finished = [int(job_id) for ids in pipe.execute() for job_id in ids]
        self.remove(queue_id, finished)
        return finished

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

    def gate(self, job_id: int, seconds: float) -> bool:
        """True at most once every `seconds` per job, across every worker (a shared throttle)."""
        return self._pass(self.keys.progress_gate(job_id), seconds)

    def sweep_due(self, seconds: float) -> bool:
        """True at most once every `seconds` across every process: a retention sweep is due."""
        return self._pass(self.keys.sweep_gate, seconds)

    def _pass(self, key: str, seconds: float) -> bool:
        return bool(self.redis.set(key, 1, px=max(1, int(seconds * 1000)), nx=True))
