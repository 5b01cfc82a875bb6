"""What every worker process does in the background so that no job is stuck or lost.

An `OrphanWatch` thread per worker process, every few seconds:

- renews the worker's heartbeat (`live_workers` answers who is alive without a broadcast);
- finds running jobs whose lease has expired (their worker was killed mid-download), sets
  them back to waiting, once, atomically, and queues them again: they resume from their
  partial file within a lease or two;
- finds waiting jobs whose message was lost (a worker killed between the broker's pop and
  its bookkeeping of unacknowledged messages) and queues them again, see `redispatch_lost`;
- sweeps the finished jobs older than `DOWNLOADER_RESULT_TTL` away.

Each step costs what it finds, never the length of a queue. The queues it walks are those
holding jobs (a queue leaves the store's list with its last job: every `get` of the embedded
default has a queue of its own), and it asks about all of them in one round trip before it
spends more on the few that have something for it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from downloader.models import DownloadJobStatus
from downloader.store import BATCH, PRIORITY_LEVELS

if TYPE_CHECKING:
    from downloader.celery_app import DownloaderApp
    from downloader.core import DownloaderCore

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
"""How often a worker says it is alive; it counts as gone after three missed beats."""


def requeue_orphans(app: DownloaderApp) -> list[int]:
    """Queue again every running job whose worker is gone; answers their ids."""
    requeued = app.store.orphans()
    records = app.store.records(requeued)
    for record in records:
        log.warning("job %s lost its worker; queued again to resume", record["id"])
    app.submit_many([(r["id"], r["queue_id"], int(r.get("priority", 10))) for r in records])
    return requeued


def redispatch_lost(app: DownloaderApp) -> list[int]:
    """Queue again the waiting jobs whose message left the broker and was never claimed.

    Every dispatch is noted in a sorted set per queue and priority level, by time, and the
    task id carries the same time. A level's list in the broker is FIFO, so a job sent
    before the oldest message still in it has been popped; if it is still waiting a
    visibility timeout after it was sent, its message was lost (or a live worker holds it
    unacknowledged, and the claim drops the duplicate). Answers the ids sent again.
    """
    store, keys = app.store, app.store.keys
    deadline = time.time() - app.settings.visibility_timeout
    due: list[tuple[int, str, int]] = []
    levels = range(PRIORITY_LEVELS)
    for queue_id in _with_dispatches(app):
        oldest = app.oldest_dispatch(queue_id, levels)
        pipe = store.redis.pipeline(transaction=False)
        for level, head in zip(levels, oldest, strict=True):
            bound = deadline if head is None else min(deadline, head)
            pipe.zrangebyscore(keys.dispatched(queue_id, level), "-inf", f"({bound}", 0, BATCH)
        for level, ids in zip(levels, pipe.execute(), strict=True):
            due.extend((int(job_id), queue_id, level) for job_id in ids)
    if not due:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for job_id, _, _ in due:
        pipe.hmget(keys.job(job_id), "status", "cancel_requested", "priority")
    resend, stale = [], store.redis.pipeline(transaction=False)
    for (job_id, queue_id, level), (status, cancel, priority) in zip(
        due, pipe.execute(), strict=True
    ):
        waiting = status is not None and json.loads(status) == DownloadJobStatus.WAITING.value
        if waiting and cancel != b"true":
            resend.append((job_id, queue_id, int(json.loads(priority or b"10"))))
            continue
        stale.zrem(keys.dispatched(queue_id, level), job_id)
    stale.execute()
    if resend:
        log.warning("%d waiting jobs were never claimed; queued again", len(resend))
        app.submit_many(resend)
    return [job_id for job_id, _, _ in resend]


def _with_dispatches(app: DownloaderApp) -> list[str]:
    """The queues with a job sent and not yet claimed: the only ones whose messages can be
    lost. One round trip for every queue."""
    store, keys = app.store, app.store.keys
    names = store.queue_names()
    pipe = store.redis.pipeline(transaction=False)
    for queue_id in names:
        pipe.exists(*(keys.dispatched(queue_id, level) for level in range(PRIORITY_LEVELS)))
    return [queue_id for queue_id, found in zip(names, pipe.execute(), strict=True) if found]


def sweep_expired(app: DownloaderCore) -> int:
    """Retention: remove every queue's jobs that ended more than the TTL ago, and the names
    of the queues left without jobs (`JobStore.remove` retires them).

    One round trip finds the queues with something to do: a job past the TTL, or no job at
    all (a name an older version kept after its queue's last job went)."""
    store, keys, ttl = app.store, app.store.keys, app.settings.result_ttl
    if ttl <= 0:
        return 0
    names = store.queue_names()
    cutoff = time.time() - ttl
    pipe = store.redis.pipeline(transaction=False)
    for queue_id in names:
        pipe.zcount(keys.queue_ended(queue_id), "-inf", f"({cutoff}")
        pipe.exists(keys.queue_jobs(queue_id))
    found = pipe.execute()
    due = [
        queue_id
        for queue_id, expired, has_jobs in zip(names, found[::2], found[1::2], strict=True)
        if expired or not has_jobs
    ]
    return sum(store.sweep_expired(queue_id, ttl) for queue_id in due)


def default_worker_name() -> str:
    return f"inprocess-{os.getpid()}@{socket.gethostname()}"


class OrphanWatch(threading.Thread):
    def __init__(
        self, app: DownloaderApp, worker_name: str | None = None, queues: Iterable[str] = ()
    ) -> None:
        """`queues`: the Celery queues the worker was started with, told in its heartbeat
        (what it consumes right now changes with pauses, the heartbeat only every beat)."""
        super().__init__(name="downloader-orphans", daemon=True)
        self.app = app
        self.worker_name = worker_name or default_worker_name()
        self.queues = sorted(queues)

    @property
    def interval(self) -> float:
        return min(HEARTBEAT_SECONDS, self.app.settings.lease_seconds / 3)

    def start(self) -> None:
        """Beat once before the thread starts, so the worker counts as alive (in `/status`,
        `/health`) as soon as it is ready."""
        self.beat(self.interval)
        super().start()

    def run(self) -> None:
        interval = self.interval
        while not self.app.stopping.wait(interval):
            self.beat(interval)
            for step in (requeue_orphans, redispatch_lost, sweep_expired):
                try:
                    step(self.app)
                except Exception:  # Redis may be restarting: look again next round
                    log.exception("%s failed; trying again next round", step.__name__)
        self.app.store.forget_worker(self.worker_name)

    def beat(self, interval: float) -> None:
        try:
            self.app.store.heartbeat(
                self.worker_name,
                3 * interval,
                self.app.leases.held(),
                self.queues,
            )
        except Exception:
            log.exception("could not renew the heartbeat")
