"""The fleet's limits as one process lives them: the engine's `Pacing` seam, kept in Redis.

A process (a worker, or a `get` running its own jobs) has one `ProcessPacing`: the limits in
force (the settings' defaults with the run-time overrides on top, read again every half
second),
the connection slots its transfers hold, and what they read. One thread renews every slot of
the process and reports the bytes read per host in one pipeline a second (`FleetPacing`), so
a dead process's slots run out with their lease. Each job gets a `jobpacing.JobPacing`,
which the engine asks for a slot before every connection and spends bandwidth through after
every read.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from collections import Counter

import redis

from downloader.config import Settings
from downloader.jobs.limits import Limits
from downloader.store.limits import LimitStore
from downloader.store.pacing import FleetPacing, Held, SlotAsk
from downloader.worker.jobpacing import PATIENCE, JobPacing, OnWait, host_of

log = logging.getLogger(__name__)

LIMITS_AGE = 0.5
"""Seconds the limits in force are kept before they are read again (a change reaches every
process within this, and a job within a slice more)."""
REPORT_EVERY = 1.0
"""Seconds between renewals of the slots and reports of bytes and counters."""
PAUSE_FIRST, PAUSE_CAP = 1.0, 60.0
"""The first fleet-wide backoff of a host that refused without `Retry-After`, and the longest
pause (a `Retry-After` beyond it is cut to it)."""


class ProcessPacing:
    """The limits, slots and counters of one process on one Redis."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.fleet = FleetPacing(client, settings.namespace)
        self.store = LimitStore(client, settings.namespace)
        self.defaults = settings.limits
        self.lease = settings.slot_lease_seconds
        self._limits: Limits | None = None
        self._read_at = 0.0
        self._held: dict[str, Held] = {}
        self._read: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._names = itertools.count()
        self._prefix = uuid.uuid4().hex[:12]
        self._thread: threading.Thread | None = None
        self._caps: tuple[Limits, str] | None = None
        """The limits the claim's caps were worked out from, and the caps (JSON)."""

    def limits(self) -> Limits:
        """The limits in force, at most `LIMITS_AGE` seconds old (the settings' when Redis
        cannot be read: a transfer does not stop for that)."""
        now = time.monotonic()
        if self._limits is None or now - self._read_at >= LIMITS_AGE:
            try:
                self._limits = self.store.in_force(self.defaults)
            except redis.RedisError:
                log.warning("could not read the limits in force; keeping the last ones")
                self._limits = self._limits or self.defaults
            self._read_at = now
        return self._limits

    def cap(self, host: str) -> int:
        """The most connections the fleet opens to `host` now (its own cap, else the one for
        hosts not named)."""
        limits = self.limits()
        return limits.for_host(host).connections or limits.host_connections

    def label(self, host: str) -> str:
        """`host`'s metrics label: itself when it has limits of its own, else `other`."""
        return host if host in self.limits().hosts else "other"

    def ask(self) -> SlotAsk:
        """A slot to take with a job's claim (see `JobLifecycle.claim`): a new holder, and
        the caps in force as the claim script reads them (worked out again only when the
        limits are read again)."""
        limits = self.limits()
        if self._caps is None or self._caps[0] is not limits:
            hosts = {"*": "", **{host: host for host in limits.hosts}}
            caps = {
                key: [self.cap(host), limits.for_host(host).requests_per_second or 0]
                for key, host in hosts.items()
            }
            self._caps = limits, json.dumps(caps)
        return SlotAsk(self.holder(), self.lease, PATIENCE, self._caps[1])

    def for_job(
        self, job_id: int, priority: int, bandwidth: int | None, on_wait: OnWait
    ) -> JobPacing:
        """The limits of one job's attempt: its priority ranks its connections, `bandwidth`
        is its own rate (None: none), `on_wait` is told why it waits."""
        return JobPacing(self, job_id, priority, bandwidth or 0, on_wait)

    def holder(self) -> str:
        """A new holder name, unique to this process and connection."""
        return f"{self._prefix}:{next(self._names)}"

    def count(self, name: str) -> None:
        """Add one to counter `name`; reported with the next round."""
        with self._lock:
            self._counts[name] += 1

    def hold(self, slot: Held) -> None:
        """Renew `slot` from now on (the thread starts with the first); note its host as
        used, at most every 10 s per host."""
        with self._lock:
            self._held[slot.holder] = slot
            last = self._seen.get(slot.host, 0.0)
            fresh = time.monotonic() - last < 10
            if not fresh:
                self._seen[slot.host] = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="downloader-pacing", daemon=True
                )
                self._thread.start()
        if not fresh:
            self.fleet.seen(slot.host)

    def release(self, slot: Held) -> None:
        """Give `slot` back at once (a second call does nothing)."""
        if self.forget(slot):
            self.give_back(slot)

    def forget(self, slot: Held) -> bool:
        """Stop renewing `slot`; False when it was not held (released already).

        It takes no lock: a response never closed gives its slot back from a finalizer,
        which a garbage collection may run in any thread at any allocation, also in one that
        holds `_lock` (the pacing thread inside `report`), which would then wait for itself
        for ever, and every download for it. `dict.pop` is atomic, and `report` copies
        `_held` in one step, so neither sees half a change."""
        return self._held.pop(slot.holder, None) is not None

    def give_back(self, slot: Held) -> None:
        """Give a slot no longer renewed back to the fleet now."""
        try:
            self.fleet.release_slot(slot)
        except redis.RedisError:  # the lease runs out instead
            log.warning("could not give back a connection slot of %s", slot.host)

    def read(self, host: str, count: int) -> None:
        """`count` bytes came from `host`; reported with the next round."""
        with self._lock:
            self._read[host] += count

    def pause(self, url: str, asked: float | None) -> tuple[str, bool, float]:
        """`url`'s host answered 429 or 503: pause it for the fleet.

        Returns:
            The host, whether this started a new pause, and the seconds it lasts.
        """
        host = host_of(url)
        started, seconds = self.fleet.pause_host(host, asked, PAUSE_FIRST, PAUSE_CAP)
        if started:
            self.count(f"pauses:{self.label(host)}")
        return host, started, seconds

    def _run(self) -> None:
        while True:  # as long as the process: slots come and go
            time.sleep(REPORT_EVERY)
            try:
                self.report()
            except Exception:  # Redis may be restarting; the next round tries again
                log.exception("could not renew the connection slots")

    def flush(self) -> None:
        """A last report before the process lets go of Redis (nothing raised: it is ending)."""
        try:
            self.report()
        except redis.RedisError:
            log.warning("could not report the last bytes read per host")

    def report(self) -> None:
        """One round: renew the slots held, report bytes and counters."""
        held = list(self._held.copy().values())  # one C call: a finalizer cannot cut into it
        with self._lock:
            read, self._read = self._read, Counter()
            counts, self._counts = self._counts, Counter()
        labels = {host: self.label(host) for host in read}
        self.fleet.renew_and_report(held, self.lease, read, labels, counts)
