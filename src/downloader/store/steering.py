"""A caller's steering of one job in the store: pause, resume, retry and a new priority.

Each is one script (`lua/pause.lua`, `resume.lua`, `requeue.lua`, `reprioritize.lua`) that
decides from the job's status and changes it, its indexes and its flags at once, then
publishes its event after the writes; what the script decided comes back as a
`SteerResult`, from which the client knows whether to queue the job again. A running job is
not stopped here: its pause is a flag its worker sees within a progress interval (see
`worker.hooks`), as a cancel is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from functools import cached_property
from typing import Any

import redis
from redis.commands.core import Script

from downloader.jobs.record import encode_value
from downloader.store.base import BATCH, StoreBase
from downloader.store.bus import Announcement
from downloader.store.keys import celery_priority
from downloader.store.scripts import load


class SteerResult(StrEnum):
    """What a steering script decided (its own words)."""

    PAUSED = "paused"
    """Paused now (it was waiting, or its worker is gone); the event went out."""
    REQUESTED = "requested"
    """It runs: its worker stops it and marks it paused."""
    ALREADY = "already"
    """It was paused already."""
    RESUMED = "resumed"
    """A paused job waits (or a started parent runs) again: queue it."""
    WITHDRAWN = "withdrawn"
    """It still ran, its pause not yet acted on: the pause is withdrawn and it goes on."""
    ACTIVE = "active"
    """It waits or runs: nothing to resume or retry."""
    RETRIED = "retried"
    """A failed or cancelled job waits again: queue it."""
    MOVED = "moved"
    """A waiting job changed priority level: queue it again at the new one."""
    RECORDED = "recorded"
    """The new priority is recorded; nothing to send (it runs, is paused, or keeps its level)."""
    CANCELLING = "cancelling"
    """A cancel of it is under way."""
    COMPLETED = "completed"
    FINISHED = "finished"
    MISSING = "missing"


class JobSteering(StoreBase):
    """Pause, resume, retry and reprioritise one job, a script call each."""

    @cached_property
    def _steering_scripts(self) -> dict[str, Script]:
        names = ("pause", "resume", "requeue", "reprioritize")
        return {name: load(self.redis, name, library=True) for name in names}

    def pause(self, job_id: int, events: Iterable[Announcement] = ()) -> SteerResult:
        """Pause a job now if it waits (or its worker is gone), else ask its worker to;
        `events` go out when it is paused now."""
        return self._steer("pause", job_id, events)

    def resume(self, job_id: int, events: Iterable[Announcement] = ()) -> SteerResult:
        """Set a paused job waiting again, or withdraw a pause its worker has not acted on;
        `events` go out when it was paused."""
        return self._steer("resume", job_id, events)

    def requeue_failed(self, job_id: int, events: Iterable[Announcement] = ()) -> SteerResult:
        """Set a failed or cancelled job waiting again, its failure forgotten; `events` go
        out when it does."""
        return self._steer("requeue", job_id, events)

    def reprioritize(self, job_id: int, priority: int, multifile: bool) -> SteerResult:
        """Record a job's new priority, and the broker level it maps to (not a parent's)."""
        level = "" if multifile else str(celery_priority(priority))
        args = self._args(job_id, encode_value(priority), level)
        return SteerResult(self._steering_scripts["reprioritize"](args=args).decode())

    def reprioritize_many(self, job_ids: Sequence[int], priority: int) -> list[SteerResult]:
        """`reprioritize` several single jobs (a multi-file job's parts) in pipelined batches."""
        level = str(celery_priority(priority))
        script = self._steering_scripts["reprioritize"]
        results: list[SteerResult] = []
        for start in range(0, len(job_ids), BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in job_ids[start : start + BATCH]:
                script(args=self._args(job_id, encode_value(priority), level), client=pipe)
            results.extend(SteerResult(raw.decode()) for raw in pipe.execute())
        return results

    def steer_many(
        self, action: str, jobs: Sequence[tuple[int, Announcement | None]]
    ) -> list[SteerResult]:
        """`pause`, `resume` or `requeue` several jobs (a multi-file job's parts), each with
        its event, in pipelined batches: one round trip per `BATCH` jobs."""
        results: list[SteerResult] = []
        for start in range(0, len(jobs), BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for job_id, event in jobs[start : start + BATCH]:
                self._call(action, job_id, () if event is None else (event,), pipe)
            results.extend(SteerResult(raw.decode()) for raw in pipe.execute())
        return results

    def _steer(self, name: str, job_id: int, events: Iterable[Announcement]) -> SteerResult:
        return SteerResult(self._call(name, job_id, events).decode())

    def _call(
        self,
        name: str,
        job_id: int,
        events: Iterable[Announcement],
        client: redis.client.Pipeline | None = None,
    ) -> Any:
        """Run script `name` on the job, its events after the writes (to their channels)."""
        events = list(events)
        channels = list(events[0].channels) if events else []
        args = self._args(job_id, len(events), *(event.data for event in events))
        return self._steering_scripts[name](keys=channels, args=args, client=client)
