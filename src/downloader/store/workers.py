"""Worker heartbeats: who is alive and which Celery queues it consumes, with no broadcast.

Each worker process renews a key of its own with a time to live and its expiry in a sorted
set of names, so `live_workers` costs O(workers) and a worker that died without a word drops
out once its heartbeat runs out (`recovery.OrphanWatch` beats).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from downloader.store.base import StoreBase


class WorkerBeats(StoreBase):
    """Heartbeats of the workers of this namespace."""

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
        """Names of the workers whose heartbeat has not run out: O(workers).

        The ones that ran out are dropped from the index on the way.

        Args:
            queue: only the workers started with this Celery queue (None: every one).
        """
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
