"""The fleet's limits as one process lives them: the engine's `Pacing` seam, kept in Redis.

A process (a worker, or a `get` running its own jobs) has one `ProcessPacing`: the limits in
force (the settings' defaults with the run-time overrides on top, read again every second),
the connection slots its transfers hold, and what they read. One thread renews every slot of
the process and reports the bytes read per host in one pipeline a second (`FleetPacing`), so
a dead process's slots run out with their lease. Each job gets a `JobPacing`, which the
engine asks for a slot before every connection and spends bandwidth through after every read:
bandwidth is taken from the fleet's, the host's and the job's buckets in slices of about an
eighth of a second of the smallest rate, so a busy job makes a few calls a second, and none
at all when no bandwidth limit applies to it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import redis

from downloader.config import Settings
from downloader.jobs.limits import Limits
from downloader.store.limits import LimitStore
from downloader.store.pacing import FleetPacing, Held, SlotAnswer, SlotOutcome, bucket_scopes

log = logging.getLogger(__name__)

REFRESH = 1.0
"""Seconds between reads of the limits in force, and between renewals and reports."""
POLL = 0.5
"""Seconds between tries of a connection that waits for a slot."""
PATIENCE = 4 * POLL
"""Seconds a waiter keeps its place in a host's line without trying again."""
SLICE_MIN, SLICE_MAX = 16 << 10, 8 << 20
PAUSE_FIRST, PAUSE_CAP = 1.0, 60.0
"""The first fleet-wide backoff of a host that refused without `Retry-After`, and the longest
pause (a `Retry-After` beyond it is cut to it)."""

OnWait = Callable[[str | None], None]
"""Told why a job waits (None: it no longer does)."""


def host_of(url: str) -> str:
    """The host a URL's connections count against: its name, lower case, without the port."""
    return (urlsplit(url).hostname or "").lower()


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

    def limits(self) -> Limits:
        """The limits in force, at most `REFRESH` seconds old (the settings' when Redis
        cannot be read: a transfer does not stop for that)."""
        now = time.monotonic()
        if self._limits is None or now - self._read_at >= REFRESH:
            try:
                self._limits = self.store.in_force(self.defaults)
            except redis.RedisError:
                log.warning("could not read the limits in force; keeping the last ones")
                self._limits = self._limits or self.defaults
            self._read_at = now
        return self._limits

    def label(self, host: str) -> str:
        """`host`'s metrics label: itself when it has limits of its own, else `other`."""
        return host if host in self.limits().hosts else "other"

    def for_job(
        self, job_id: int, priority: int, bandwidth: int | None, on_wait: OnWait
    ) -> JobPacing:
        return JobPacing(self, job_id, priority, bandwidth or 0, on_wait)

    def holder(self) -> str:
        return f"{self._prefix}:{next(self._names)}"

    def count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def hold(self, slot: Held) -> None:
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
        with self._lock:
            if self._held.pop(slot.holder, None) is None:
                return
        try:
            self.fleet.release_slot(slot)
        except redis.RedisError:  # the lease runs out instead
            log.warning("could not give back a connection slot of %s", slot.host)

    def read(self, host: str, count: int) -> None:
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
            time.sleep(REFRESH)
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
        with self._lock:
            held = list(self._held.values())
            read, self._read = self._read, Counter()
            counts, self._counts = self._counts, Counter()
        labels = {host: self.label(host) for host in read}
        self.fleet.renew_and_report(held, self.lease, read, labels, counts)


class JobPacing:
    """One job's side of the fleet's limits: the engine's `Pacing` (see `engine.pacing`)."""

    def __init__(
        self, process: ProcessPacing, job_id: int, priority: int, bandwidth: int, on_wait: OnWait
    ) -> None:
        self.process, self.job_id, self.bandwidth = process, job_id, bandwidth
        self.rank = min(max(priority, 0), 99) * 1e13
        self.on_wait = on_wait
        self._lock = threading.Lock()
        self._waiting: dict[int, str] = {}
        self._said: str | None = None
        self._allowance = 0
        """Bytes taken from the buckets and not read yet (below 0: read and not yet taken)."""

    def connect(self, url: str, stop: Callable[[], None]) -> ConnectionSlot:
        process = self.process
        host = host_of(url)
        slot = Held(host, process.holder())
        rank = self.rank + time.time() * 1000
        counted = False
        try:
            while True:
                limit = process.limits().for_host(host)
                cap = limit.connections or process.limits().host_connections
                answer = process.fleet.take_slot(
                    slot,
                    process.lease,
                    cap,
                    limit.requests_per_second or 0,
                    rank,
                    PATIENCE,
                )
                if answer.outcome is SlotOutcome.TAKEN:
                    break
                if not counted:
                    process.count(f"waits:{process.label(host)}")
                    counted = True
                self.waits(id(slot), _reason(host, answer, cap))
                _sleep(min(answer.wait or POLL, POLL), stop)
        finally:
            self.waits(id(slot), None)
        process.hold(slot)
        return ConnectionSlot(self, slot, stop, probe=answer.probe)

    def waits(self, key: int, reason: str | None) -> None:
        """Note why one connection of the job waits (None: it does not); the job is told
        when its reason changes."""
        with self._lock:
            if reason is None:
                self._waiting.pop(key, None)
            else:
                self._waiting[key] = reason
            now = next(iter(self._waiting.values()), None)
            if now == self._said:
                return
            self._said = now
        try:
            self.on_wait(now)
        except redis.RedisError:
            log.warning("job %s: could not note why it waits", self.job_id)

    def buckets(self, host: str) -> dict[str, int]:
        """The bandwidth buckets a byte from `host` is taken from, with their rates."""
        limits = self.process.limits()
        rates = (limits.bandwidth, limits.for_host(host).bandwidth or 0, self.bandwidth)
        scopes = bucket_scopes(host, self.job_id)
        return {scope: rate for scope, rate in zip(scopes, rates, strict=True) if rate}

    def spend(self, host: str, count: int, stop: Callable[[], None]) -> None:
        """`count` bytes came from `host`: block until every bucket that applies gave them."""
        self.process.read(host, count)
        with self._lock:  # the job's connections share its slices, one taker at a time
            self._allowance -= count
            while self._allowance < 0:
                buckets = self.buckets(host)
                if not buckets:  # no bandwidth limit (any more): nothing owed
                    self._allowance = 0
                    return
                piece = min(max(min(buckets.values()) // 8, SLICE_MIN), SLICE_MAX)
                wait = self.process.fleet.take_bandwidth(buckets, piece)
                if wait:
                    _sleep(min(wait, POLL), stop)
                else:
                    self._allowance += piece


class ConnectionSlot:
    """A held slot of one host: the engine's `Slot`."""

    def __init__(
        self, job: JobPacing, slot: Held, stop: Callable[[], None], probe: bool = False
    ) -> None:
        self.job, self.slot, self.stop = job, slot, stop
        self.probe = probe
        """The connection that probes its host after a pause: its first bytes end the probe
        (a refusal has no body: it pauses the host again instead)."""

    def release(self) -> None:
        self.job.process.release(self.slot)

    def spend(self, count: int) -> None:
        if self.probe:
            self.probe = False
            self.job.process.fleet.end_probe(self.slot.host)
        self.job.spend(self.slot.host, count, self.stop)


def _reason(host: str, answer: SlotAnswer, cap: int) -> str:
    """Why a connection waits, as the job's record and the CLI line say it."""
    if answer.outcome is SlotOutcome.PAUSED:
        return f"waiting: {host} asked the fleet to pause (429/503)"
    if answer.outcome is SlotOutcome.RATED:
        return f"waiting for {host}'s request rate"
    return f"waiting for a connection to {host} ({answer.in_use} of {cap} in use)"


def _sleep(seconds: float, stop: Callable[[], None]) -> None:
    """Sleep, then let `stop` raise if the transfer must end."""
    time.sleep(seconds)
    stop()
