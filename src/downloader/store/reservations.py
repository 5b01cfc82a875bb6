"""Who owns a final path: one unfinished job at a time, across every client and worker.

Two jobs writing one final name would each rename their own bytes over the other's, and one
file would be silently lost. So a final path is reserved in Redis for the job that will write
it: at enqueue for an explicit path (a second unfinished job for it is refused there, naming
the holder), and at the first answer for a name the server chooses (a taken name makes the
worker pick `name (1).ext`). A reservation ends when its job does; one whose holder has
finished or vanished (a crash, an expiry, a `clear`) is stale and simply taken over, so a lost
release never blocks a path for good.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import redis

from downloader.store.jobs import JobStore
from downloader.store.scripts import load

_PENDING_MS = 60_000
"""How long a reservation made at enqueue waits for its job's record before it is stale."""

_BATCH = 1000
"""Paths per script call: a 10,000-part job is reserved in ten round trips, not one huge call."""


class DestinationTakenError(ValueError):
    """Another unfinished job will write the same final path."""

    def __init__(self, path: Path, holder: int) -> None:
        super().__init__(
            f"job {holder} is already downloading to {path}; wait for it, cancel it, or pass "
            "an existing directory (or end dest with a path separator) so that each file gets "
            "a name of its own"
        )
        self.path, self.holder = path, holder


def path_key(path: Path) -> str:
    """The same file named two ways (relative, `a//b`) is one key."""
    return os.path.abspath(path)


class Reservations:
    """The path reservations of one store (`Keys.path`), taken and released by its scripts
    (`lua/reserve_paths.lua`, `lua/release_paths.lua`) a batch at a time."""

    def __init__(self, store: JobStore) -> None:
        self.redis: redis.Redis = store.redis
        self.keys = store.keys
        self.job_prefix = store.keys.job("")
        self._acquire = load(self.redis, "reserve_paths")
        self._release = load(self.redis, "release_paths")

    def key(self, path: Path) -> str:
        """The key of a path's reservation (the job's end releases it by this key)."""
        return self.keys.path(path_key(path))

    def acquire(self, owners: Iterable[tuple[int, Path]], pending: bool = False) -> None:
        """Reserve each path for its job, or none.

        A path held by another unfinished job is refused; one whose holder finished or
        vanished is stale and taken over.

        Args:
            owners: (job id, final path) pairs.
            pending: for jobs whose records are not written yet: their reservations expire
                unless `confirm` follows (an enqueue that died leaves nothing for good).

        Raises:
            DestinationTakenError: a path is another unfinished job's (it names the holder);
                then no path of `owners` is reserved.
        """
        wanted = list(owners)
        ttl = _PENDING_MS if pending else 0
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            answer = self._acquire(
                keys=[self.key(path) for _, path in batch],
                args=[self.job_prefix, ttl, *(job_id for job_id, _ in batch)],
            )
            if answer:
                self.release(wanted[:start])
                index, holder = answer
                raise DestinationTakenError(batch[index - 1][1], int(holder))

    def confirm(self, owners: Iterable[tuple[int, Path]]) -> None:
        """The jobs' records exist now: their reservations last until the jobs end."""
        pipe = self.redis.pipeline(transaction=False)
        for _, path in owners:
            pipe.persist(self.key(path))
        pipe.execute()

    def try_acquire(self, job_id: int, path: Path) -> bool:
        """Reserve one path a server chose for job `job_id`; False when another job holds it
        (the engine then tries `name (1).ext`)."""
        try:
            self.acquire([(job_id, path)])
        except DestinationTakenError:
            return False
        return True

    def holder(self, path: Path) -> int | None:
        """The job holding `path` (live or stale); None when nobody does."""
        raw = self.redis.get(self.key(path))
        return int(raw) if raw is not None else None

    def release(self, owners: Iterable[tuple[int, Path]]) -> None:
        """End reservations; a path another job holds by now is left to it."""
        pairs = list(owners)
        for start in range(0, len(pairs), _BATCH):
            batch = pairs[start : start + _BATCH]
            self._release(
                keys=[self.key(path) for _, path in batch],
                args=[job_id for job_id, _ in batch],
            )
