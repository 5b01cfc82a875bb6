"""The operator's reads and removals: pages of ids by status, what `clear` and `prune` take,
the namespace's counters, a probe with short timeouts, and the stopped `get`s' registry.

Kept apart from `jobs.JobStore` (one job's life, as clients and workers live it): only the
client's admin interface (`downloader.client.admin.QueueAdmin`), the metrics and the API's
health probe use these. Every read pages through the per-queue, per-status indexes, so its
cost follows the page, not the queue.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from redis.backoff import NoBackoff
from redis.retry import Retry

from downloader.jobs.models import DownloadJobStatus
from downloader.jobs.record import JobRecord
from downloader.store.base import BATCH
from downloader.store.connection import RedisTarget
from downloader.store.jobs import JobStore
from downloader.store.keys import CANCELLED, STATUSES

FAILED = "failed"
"""A status to page by: `error` without the cancelled jobs (the store keeps those in the
`error` index too, and apart in `cancelled`)."""

_UNFINISHED = (
    DownloadJobStatus.WAITING.value,
    DownloadJobStatus.RUNNING.value,
    DownloadJobStatus.PAUSED.value,
)
_ENDED = (DownloadJobStatus.COMPLETED.value, DownloadJobStatus.ERROR.value)


class StoreAdmin:
    """What an operator asks of the store beyond one job's life."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._redis = store.redis
        self._keys = store.keys

    @classmethod
    def probe(cls, target: RedisTarget, namespace: str, timeout: float) -> StoreAdmin:
        """A store on a client of its own that waits at most `timeout` seconds and never
        retries: a health check must hear at once that Redis is down."""
        client = target.client(
            socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        return cls(JobStore(client, namespace))

    def ping(self) -> bool:
        return bool(self._redis.ping())

    def mark(self) -> str:
        """See `JobStore.mark`: the namespace's marker, written first if it has none."""
        return self.store.mark()

    def marker(self) -> str | None:
        return self.store.marker()

    def close(self) -> None:
        """Close the client's connections (a probe's: the service's client is its own)."""
        self._redis.close()

    # -- the figures --------------------------------------------------------------------------

    def queue_names(self) -> list[str]:
        return self.store.queue_names()

    def counts(self, queue_id: str) -> dict[str, int]:
        return self.store.counts(queue_id)

    def live_workers(self, queue: str | None = None) -> list[str]:
        return self.store.live_workers(queue)

    def stats(self) -> dict[str, str]:
        """The namespace's counters (jobs ended by queue and outcome, bytes, retries, the
        duration histogram's buckets), as the end scripts keep them."""
        raw = self._redis.hgetall(self._keys.stats)
        return {key.decode(): value.decode() for key, value in raw.items()}

    def queue_page(
        self, cursor: int, limit: int
    ) -> tuple[int, list[tuple[str, dict[str, int], bool]]]:
        """One `SSCAN` step of the queue names (about `limit` of them), with each queue's
        counts (as `counts`) and whether it is paused, in one pipeline.

        Returns:
            The next cursor (0: the last page), and (name, counts, paused) by name.
        """
        next_cursor, raw = self._redis.sscan(self._keys.queues, cursor, count=limit)
        names = sorted({name.decode() for name in raw})
        indexes = [*STATUSES, CANCELLED]
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            for index in indexes:
                pipe.zcard(self._keys.queue_status(name, index))
            pipe.zcard(self._keys.queue_jobs(name))
            pipe.exists(self._keys.paused(name))
        found = pipe.execute()
        step = len(indexes) + 2
        page = []
        for at, name in enumerate(names):
            *sizes, total, paused = found[at * step : (at + 1) * step]
            counts = {**dict(zip(indexes, sizes, strict=True)), "total": total}
            page.append((name, counts, bool(paused)))
        return int(next_cursor), page

    def worker_beats(self) -> list[tuple[str, dict[str, Any]]]:
        """The live workers and what their last heartbeat said (`WorkerBeats.heartbeat`): its
        `jobs`, `seen`, and `queues` as queue ids. O(workers); a heartbeat that ran out
        between the two reads is left out."""
        names = self.store.live_workers()
        beats = self._redis.mget([self._keys.worker(name) for name in names]) if names else []
        found = []
        for name, beat in zip(names, beats, strict=True):
            if beat is not None:
                info = json.loads(beat)
                queues = info.get("queues", ())
                info["queues"] = [self._keys.queue_of_celery(q) or q for q in queues]
                found.append((name, info))
        return found

    def claimed(self) -> list[JobRecord]:
        """The records of the jobs claimed now (the set the orphan watch walks), by id: a
        round trip per thousand, O(running)."""
        ids = sorted(int(x) for x in self._redis.smembers(self._keys.running))
        return self.store.records(ids)

    # -- pages of ids -------------------------------------------------------------------------

    def page_ids(
        self,
        queue_id: str,
        status: str | None = None,
        *,
        after: int | None = None,
        offset: int = 0,
        count: int = BATCH,
        newest_first: bool = False,
    ) -> list[int]:
        """Up to `count` ids of the queue (or of one status: one of `jobs.STATUSES`,
        `CANCELLED` or `FAILED`) beyond `after`, skipping `offset` of them, in id order.

        O(offset + count): a range of one index. `FAILED` also costs the cancelled ids it
        steps over, a batch per round trip.
        """
        if status == FAILED:
            return self._failed_ids(queue_id, after, offset, count, newest_first)
        key = self._keys.queue_jobs(queue_id)
        if status is not None:
            key = self._keys.queue_status(queue_id, status)
        return self._range(key, after, offset, count, newest_first)

    def walk_ids(
        self, queue_id: str, status: str | None = None, newest_first: bool = False
    ) -> Iterator[int]:
        """Every id of the queue (or of one status, as `page_ids`), a page at a time."""
        after: int | None = None
        while True:
            ids = self.page_ids(queue_id, status, after=after, newest_first=newest_first)
            yield from ids
            if len(ids) < BATCH:
                return
            after = ids[-1]

    def _range(
        self, key: str, after: int | None, offset: int, count: int, newest_first: bool
    ) -> list[int]:
        bound = None if after is None else f"({after}"
        if newest_first:
            page = self._redis.zrevrangebyscore(key, bound or "+inf", "-inf", offset, count)
        else:
            page = self._redis.zrangebyscore(key, bound or "-inf", "+inf", offset, count)
        return [int(x) for x in page]

    def _failed_ids(
        self, queue_id: str, after: int | None, offset: int, count: int, newest_first: bool
    ) -> list[int]:
        errors = self._keys.queue_status(queue_id, DownloadJobStatus.ERROR.value)
        cancelled = self._keys.queue_status(queue_id, CANCELLED)
        found: list[int] = []
        while len(found) < offset + count:
            chunk = self._range(errors, after, 0, BATCH, newest_first)
            if not chunk:
                break
            scores = self._redis.zmscore(cancelled, chunk)
            found.extend(i for i, score in zip(chunk, scores, strict=True) if score is None)
            after = chunk[-1]
        return found[offset : offset + count]

    # -- what clear and prune take ------------------------------------------------------------

    def unfinished_ids(self, queue_id: str) -> list[int]:
        """Every waiting, running and paused id of the queue, a batch per round trip."""
        return [i for status in _UNFINISHED for i in self.walk_ids(queue_id, status)]

    def settled_ids(self, queue_id: str) -> list[int]:
        """The queue's finished jobs, but not the finished parts of a multi-file job that
        still runs: reads what it names, and the status of those parts' parents."""
        finished = [
            record for status in _ENDED for record in self.store.iter_records(queue_id, status)
        ]
        parents = sorted({r.parent_id for r in finished if r.parent_id is not None})
        pipe = self._redis.pipeline(transaction=False)
        for parent_id in parents:
            pipe.hget(self._keys.job(parent_id), "status")
        running_parents = {
            parent_id
            for parent_id, raw in zip(parents, pipe.execute(), strict=True)
            if raw is not None and json.loads(raw) not in _ENDED
        }
        return [r.id for r in finished if r.parent_id not in running_parents]

    # -- the stopped gets' registry -----------------------------------------------------------

    def remember_stopped(self, entries: Mapping[str, int]) -> None:
        """Note the jobs a stopped `get` left, each under the name a later `get` asks for."""
        if entries:
            self._redis.hset(self._keys.resumable, mapping=dict(entries))

    def take_stopped(self, names: Sequence[str]) -> dict[str, int]:
        """The jobs noted under these names, which are forgotten at once (one transaction:
        two gets of the same files never both take one over)."""
        if not names:
            return {}
        pipe = self._redis.pipeline(transaction=True)
        pipe.hmget(self._keys.resumable, list(names))
        pipe.hdel(self._keys.resumable, *names)
        found, _ = pipe.execute()
        return {name: int(raw) for name, raw in zip(names, found, strict=True) if raw}
