"""One job's side of the fleet's limits: the engine's `Pacing` (see `engine.pacing`), over
the process's `worker.pacing.ProcessPacing`.

Each connection of the job asks for a slot of its host, waiting (and telling the job why) while
the host is full, paused or out of requests; each read spends bandwidth from the fleet's, the
host's and the job's buckets, in slices of about an eighth of a second of the smallest rate,
taken by the job's connections one at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Protocol
from urllib.parse import urlsplit

import redis

from downloader.jobs.limits import Limits
from downloader.store.pacing import FleetPacing, Held, SlotAnswer, SlotOutcome, bucket_scopes

log = logging.getLogger(__name__)

POLL = 0.5
"""Seconds between tries of a connection that waits for a slot."""
PATIENCE = 4 * POLL
"""Seconds a waiter keeps its place in a host's line without trying again."""
SLICE_MIN, SLICE_MAX = 16 << 10, 8 << 20
"""The smallest and largest slice of bandwidth taken at once (bytes)."""

OnWait = Callable[[str | None], None]
"""Told why a job waits (None: it no longer does)."""


class PacedProcess(Protocol):
    """What a job's pacing asks of its process (`worker.pacing.ProcessPacing`): the
    fleet's store, the limits in force, and the slots and counts it keeps for all its jobs."""

    fleet: FleetPacing
    lease: float

    def limits(self) -> Limits: ...
    def label(self, host: str) -> str: ...
    def holder(self) -> str: ...
    def count(self, name: str) -> None: ...
    def hold(self, slot: Held) -> None: ...
    def release(self, slot: Held) -> None: ...
    def forget(self, slot: Held) -> bool: ...
    def give_back(self, slot: Held) -> None: ...
    def read(self, host: str, count: int) -> None: ...


def host_of(url: str) -> str:
    """The host a URL's connections count against: its name, lower case, without the port."""
    return (urlsplit(url).hostname or "").lower()


class JobPacing:
    """One job's side of the fleet's limits: the engine's `Pacing` (see `engine.pacing`)."""

    def __init__(
        self, process: PacedProcess, job_id: int, priority: int, bandwidth: int, on_wait: OnWait
    ) -> None:
        self.process, self.job_id, self.bandwidth = process, job_id, bandwidth
        self.rank = min(max(priority, 0), 99) * 1e13
        """Priority first (0..99; beyond ranks as the bound), then arrival in ms (below 1e13)."""
        self.on_wait = on_wait
        self._lock = threading.Lock()
        """Held while the job's connections take bandwidth, one at a time."""
        self._told = threading.Lock()
        """Held while why the job waits is noted and told."""
        self._waiting: dict[int, str] = {}
        self._said: str | None = None
        self._buckets: dict[str, tuple[Limits, dict[str, int]]] = {}
        """Per host: the limits the buckets were worked out from, and the buckets."""
        self._allowance = 0
        """Bytes taken from the buckets and not read yet (below 0: read and not yet taken)."""
        self._finishing = False
        """The transfer's last byte is in: slots released now go back with the job's end."""
        self._ending: list[Held] = []
        """Slots released once the last byte was in, for the job's end to give back."""
        self._ready: tuple[Held, bool] | None = None
        """A slot its claim took for its first connection, and whether it probes the host."""
        self._tried: Held | None = None
        """A slot its claim tried for and did not get: its first connection asks as that
        holder (which may hold the host's probe already)."""

    def adopt(self, slot: Held, answer: SlotAnswer, url: str) -> None:
        """Keep the slot the job's claim took (see `SlotAsk`) for its first connection to
        `url`: no round trip of its own. One of a host the script read otherwise than
        `host_of` goes back."""
        if answer.outcome is not SlotOutcome.TAKEN:
            self._tried = slot  # nobody in line yet: the first connection asks as usual
            return
        if slot.host != host_of(url):
            self.process.give_back(slot)
            return
        self.process.hold(slot)
        self._ready = slot, answer.probe

    def finishing(self) -> None:
        """The transfer's last byte is in: a slot released from now on is given back by the
        job's end, in the round trip that ends it (see `ending`), not by a call of its own.
        A small file's only connection closes between its rename and its end, which is
        moments; a connection opened after this (a retry) gives them all back first."""
        self._finishing = True

    def release(self, slot: Held) -> None:
        """A connection closed: its slot goes back now, or with the job's end (see
        `finishing`). No lock: a finalizer may call this from any thread."""
        if not self._finishing:
            self.process.release(slot)
        elif self.process.forget(slot):
            self._ending.append(slot)

    def ending(self) -> list[Held]:
        """The slots the job's end gives back; `ended` once it did."""
        return list(self._ending)

    def ended(self, slots: list[Held]) -> None:
        """The job's end gave `slots` back. (In place, one atomic step per slot: a finalizer
        may add one meanwhile.)"""
        for slot in slots:
            with suppress(ValueError):
                self._ending.remove(slot)

    def give_back(self) -> None:
        """Give back now what was left for the end (the attempt goes on, or ends otherwise),
        and a slot its claim took that no connection used."""
        self._finishing = False
        while self._ending:
            self.process.give_back(self._ending.pop())
        ready, self._ready = self._ready, None
        if ready is not None:  # never used: the attempt ended before its first connection
            self.process.release(ready[0])

    def connect(self, url: str, stop: Callable[[], None]) -> ConnectionSlot:
        """Take a slot of `url`'s host for one connection, trying every `POLL` seconds while
        the host is full, paused or out of requests (and saying why); the cap and rate are
        read again at each try, so a change applies to waiting connections too.

        Raises:
            BaseException: whatever `stop` raises (the transfer must end).
        """
        if self._finishing:  # more to fetch after all (a retry)
            self.give_back()
        process = self.process
        host = host_of(url)
        ready, self._ready = self._ready, None
        if ready is not None:
            if ready[0].host == host:
                return ConnectionSlot(self, ready[0], stop, probe=ready[1])
            process.release(ready[0])
        tried, self._tried = self._tried, None
        slot = tried if tried is not None and tried.host == host else Held(host, process.holder())
        rank = self.rank + time.time() * 1000
        counted = False
        try:
            while True:
                limit = process.limits().for_host(host)
                cap = process.cap(host)
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
        with self._told:  # told in order: the last word stands
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
        """The bandwidth buckets a byte from `host` is taken from, with their rates (worked
        out again only when the limits in force were read again: this runs for every read)."""
        limits = self.process.limits()
        known = self._buckets.get(host)
        if known is not None and known[0] is limits:
            return known[1]
        rates = (limits.bandwidth, limits.for_host(host).bandwidth or 0, self.bandwidth)
        scopes = bucket_scopes(host, self.job_id)
        found = {scope: rate for scope, rate in zip(scopes, rates, strict=True) if rate}
        self._buckets[host] = (limits, found)
        return found

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
        """Give the slot back (a second call does nothing)."""
        self.job.release(self.slot)

    def spend(self, count: int) -> None:
        """`count` bytes were read on this connection (see `JobPacing.spend`)."""
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
