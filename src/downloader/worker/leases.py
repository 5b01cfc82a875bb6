"""One lease renewer per worker process, for all of its running jobs.

A running job holds a lease (see `JobStore.claim`) so that a redelivered message never runs it
twice at once. A thread per job renewing its own lease cost a thread start and a round trip
per job per renewal; here one thread renews every lease of the process in one pipelined round
trip every third of the lease, and tells a job when its lease was lost (another attempt owns
the job now) or its record is gone from Redis, through the `Lease` it was handed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from downloader.store.lifecycle import Renewal

if TYPE_CHECKING:
    from downloader.store.jobs import JobStore

log = logging.getLogger(__name__)


class Lease:
    """A job's side of the renewal: `done` is set when the attempt ends; `lost` by the
    renewer when the lease could not be renewed, `gone` too when the reason is that the job's
    record is no longer in Redis (no other attempt holds it: it was removed, or lost). Plain
    flags, one assignment each (nobody waits on them): two `threading.Event`s per job were a
    lock and a condition each."""

    def __init__(self, job_id: int, owner: str) -> None:
        self.job_id, self.owner = job_id, owner
        self.done = False
        self.lost = False
        self.gone = False


class LeaseRenewer:
    """Renews the leases handed out by `keep`; its thread starts with the first one."""

    def __init__(self, store: JobStore, lease_seconds: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self._leases: dict[int, Lease] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def keep(self, job_id: int, owner: str) -> Lease:
        lease = Lease(job_id, owner)
        with self._lock:
            self._leases[id(lease)] = lease
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="downloader-leases", daemon=True
                )
                self._thread.start()
        return lease

    def held(self) -> int:
        """How many leases this process renews now."""
        with self._lock:
            return sum(not lease.done for lease in self._leases.values())

    def _run(self) -> None:
        while True:  # as long as the process: leases come and go
            time.sleep(self.lease_seconds / 3)
            try:
                self.renew()
            except Exception:  # Redis may be restarting; the next round tries again
                log.exception("could not renew the leases")

    def renew(self) -> None:
        """One round: drop the leases whose attempt ended, renew the others."""
        with self._lock:
            for key in [key for key, lease in self._leases.items() if lease.done]:
                del self._leases[key]
            leases = list(self._leases.values())
        if not leases:
            return
        held = self.store.renew_many(
            [(lease.job_id, lease.owner) for lease in leases], self.lease_seconds
        )
        for lease, renewal in zip(leases, held, strict=True):
            if renewal is Renewal.HELD or lease.done:
                continue
            lease.gone = renewal is Renewal.GONE
            lease.lost = True
            if not lease.gone:  # a job that is gone is told of by its attempt, which knows why
                log.warning("job %s: lease lost; another worker may have taken it", lease.job_id)
            with self._lock:
                self._leases.pop(id(lease), None)
