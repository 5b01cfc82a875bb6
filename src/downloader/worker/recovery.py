"""What every worker process does in the background so that no job is stuck or lost.

An `OrphanWatch` thread per worker process, every few seconds:

- renews the worker's heartbeat (`live_workers` answers who is alive without a broadcast);
- finds running jobs whose lease has expired (their worker was killed mid-download), sets
  them back to waiting, once, atomically, and queues them again: they resume from their
  partial file within a lease or two;
- runs the steps its owner adds: the Celery side finds waiting jobs whose message was lost
  (a worker killed between the broker's pop and its bookkeeping of unacknowledged messages)
  and queues them again, see `celery_app.dispatch.redispatch_lost`;
- sweeps the finished jobs older than `DOWNLOADER_RESULT_TTL` away.

Each step costs what it finds, never the length of a queue. The queues it walks are those
holding jobs (a queue leaves the store's list with its last job: every `get` of the embedded
default has a queue of its own), and it asks about all of them in one round trip before it
spends more on the few that have something for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from downloader.worker.runtime import Runtime

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
"""How often a worker says it is alive; it counts as gone after three missed beats."""


def requeue_orphans(app: Runtime) -> list[int]:
    """Queue again every running job whose worker is gone; answers their ids."""
    requeued = app.store.orphans()
    records = app.store.records(requeued)
    for record in records:
        log.warning("job %s lost its worker; queued again to resume", record.id)
    app.submit_many([(record.id, record.queue_id, record.priority) for record in records])
    return requeued


def sweep_expired(app: Runtime) -> int:
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
        self,
        app: Runtime,
        worker_name: str | None = None,
        queues: Iterable[str] = (),
        steps: Iterable[Callable[[], object]] = (),
    ) -> None:
        """`queues`: the Celery queues the worker was started with, told in its heartbeat
        (what it consumes right now changes with pauses, the heartbeat only every beat);
        `steps`: more work for every round, after the orphans are requeued."""
        super().__init__(name="downloader-orphans", daemon=True)
        self.app = app
        self.worker_name = worker_name or default_worker_name()
        self.queues = sorted(queues)
        self.steps: list[Callable[[], object]] = [
            lambda: requeue_orphans(app),
            *steps,
            lambda: sweep_expired(app),
        ]

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
            for step in self.steps:
                try:
                    step()
                except Exception:  # Redis may be restarting: look again next round
                    log.exception("a round of the orphan watch failed; trying again next round")
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
