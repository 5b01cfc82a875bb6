"""The fleet's shared accounting of what it asks of origins, on the hot path: connection slots
of a host as leases, bandwidth as token buckets taken in slices, and a host's pause.

Every worker and client of one Redis and namespace draws on the same keys (see `Keys.host_slots`
and below), so a cap holds for the fleet, not per process. Time is the server's (`TIME` in the
scripts), so machines with drifting clocks agree on when a lease runs out. A slot is a member
of a sorted set scored by its lease's end: a holder that dies (SIGKILL, a lost machine) stops
renewing and its slots count no more once the lease runs out. The caller (`worker.pacing`)
renews all the slots of its process in one pipeline and reports the bytes it read in the same
round trip, so a busy process makes a few calls a second, not one per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

import redis

from downloader.store.base import StoreBase
from downloader.store.scripts import load

RECENT_PERIOD = 2
"""Seconds per bucket of a host's recent bytes (`Keys.host_recent`)."""
RECENT_PERIODS = 3
"""Complete periods a host's recent rate is measured over."""
SEEN_FOR = 60
"""Seconds a host stays in `Keys.limit_hosts` after its last connection."""


def bucket_scopes(host: str, job_id: int) -> tuple[str, str, str]:
    """The bandwidth buckets a byte of job `job_id` from `host` may be taken from: the
    fleet's, the host's and the job's own (`Keys.bandwidth_bucket` scopes)."""
    return "fleet", f"host:{host}", f"job:{job_id}"


class SlotOutcome(IntEnum):
    FULL = 0
    TAKEN = 1
    PAUSED = 2
    RATED = 3
    """The host's requests per second are spent for now."""


@dataclass(frozen=True)
class SlotAnswer:
    """What a try for a host's slot came to: the outcome, the slots in use, how long to wait
    (seconds) before the next try when the host is paused or its request rate is spent."""

    outcome: SlotOutcome
    in_use: int
    wait: float
    probe: bool = False
    """The slot taken is the one connection that probes the host after its pause."""

    @classmethod
    def of(cls, answer: list[int]) -> SlotAnswer:
        """A script's {outcome, in use, ms, probe} (the library's `take_slot`)."""
        outcome, in_use, wait_ms, probe = answer
        return cls(SlotOutcome(int(outcome)), int(in_use), int(wait_ms) / 1000, bool(int(probe)))


@dataclass(frozen=True)
class SlotAsk:
    """A connection slot to take with a job's claim, for the job's first connection (see
    `lua/claim.lua`): its holder, its lease and a waiter's patience (seconds), and the caps in
    force as JSON, {host: [cap, requests per second]} with `*` for hosts not named."""

    holder: str
    lease: float
    patience: float
    caps: str

    def args(self) -> list[str | int]:
        return [self.holder, int(self.lease * 1000), int(self.patience * 1000), self.caps]


@dataclass(frozen=True)
class Held:
    """A slot a process holds: its host and its holder (unique per connection)."""

    host: str
    holder: str


class FleetPacing(StoreBase):
    """Slots, bandwidth tokens and pauses of one namespace."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        super().__init__(client, namespace)
        self._take = load(self.redis, "slot_take", library=True)
        self._tokens = load(self.redis, "tokens")
        self._pause = load(self.redis, "pause_host")

    def take_slot(
        self,
        slot: Held,
        lease: float,
        cap: int,
        requests_per_second: float,
        rank: float,
        patience: float,
    ) -> SlotAnswer:
        """Try once to take a connection slot of `slot.host` (see `lua/slot_take.lua`).

        Args:
            slot: the host and the holder to take it as.
            lease: seconds the slot is held without a renewal.
            cap: the host's most concurrent connections.
            requests_per_second: the host's request rate; 0: any.
            rank: lower goes first among the waiters (priority, then arrival).
            patience: seconds a waiter keeps its place without trying again.
        """
        answer = self._take(
            args=self._args(
                slot.host,
                slot.holder,
                int(lease * 1000),
                cap,
                requests_per_second,
                repr(rank),
                int(patience * 1000),
            )
        )
        return SlotAnswer.of(answer)

    def renew_and_report(
        self,
        held: Iterable[Held],
        lease: float,
        read: Mapping[str, int],
        labels: Mapping[str, str],
        counts: Mapping[str, int],
    ) -> None:
        """One round trip: renew `held` slots and add what the process did since the last call.

        Args:
            held: the process's slots; a slot that ran out is not brought back.
            lease: seconds each renewed slot is held from now.
            read: bytes read per host.
            labels: each host's metrics label (a configured host, or `other`).
            counts: other counters (`waits:<label>`, `pauses:<label>`) to add.
        """
        keys, now = self.keys, time.time()
        pipe = self.redis.pipeline(transaction=False)
        until = int((now + lease) * 1000)
        for slot in held:
            pipe.zadd(keys.host_slots(slot.host), {slot.holder: until}, xx=True)
        period = int(now // RECENT_PERIOD)
        for host, count in read.items():
            pipe.hincrby(keys.limit_stats, f"bytes:{labels[host]}", count)
            pipe.hincrby(keys.host_recent(host), str(period), count)
            pipe.expire(keys.host_recent(host), RECENT_PERIOD * (RECENT_PERIODS + 3))
        for name, count in counts.items():
            pipe.hincrby(keys.limit_stats, name, count)
        pipe.execute()

    def seen(self, host: str) -> None:
        """Note that the fleet connects to `host` (what `downloader limits` reports on)."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.limit_hosts, {host: now})
        pipe.zremrangebyscore(self.keys.limit_hosts, "-inf", now - SEEN_FOR)
        pipe.execute()

    def release_slot(self, slot: Held) -> None:
        """Give a slot back at once (a connection that closed)."""
        self.redis.zrem(self.keys.host_slots(slot.host), slot.holder)

    def end_probe(self, host: str) -> None:
        """The probe after `host`'s pause got an answer: every connection may go again."""
        self.redis.delete(self.keys.host_probe(host), self.keys.host_prober(host))

    def take_bandwidth(self, buckets: Mapping[str, int], slice_bytes: int) -> float:
        """Take `slice_bytes` from every bucket (scope -> rate in bytes/s), or nothing.

        Returns:
            0 when the slice was taken, else the seconds to wait before it can be.
        """
        scopes = list(buckets)
        granted, wait_ms = self._tokens(
            keys=[self.keys.bandwidth_bucket(scope) for scope in scopes],
            args=[slice_bytes, *(buckets[scope] for scope in scopes)],
        )
        return 0.0 if int(granted) else max(int(wait_ms), 1) / 1000

    def pause_host(
        self, host: str, asked: float | None, first: float, cap: float
    ) -> tuple[bool, float]:
        """Pause `host` for the fleet (see `lua/pause_host.lua`).

        Args:
            host: the host that answered 429 or 503.
            asked: its `Retry-After` in seconds; None: none, back off exponentially.
            first: the first backoff, in seconds, doubling with each recent strike.
            cap: the longest pause.

        Returns:
            Whether this started a new (or longer) pause, and the seconds it lasts from now.
        """
        keys = self.keys
        started, ms = self._pause(
            keys=[
                keys.host_pause(host),
                keys.host_strikes(host),
                keys.host_probe(host),
                keys.host_prober(host),
            ],
            args=[-1 if asked is None else int(asked * 1000), int(first * 1000), int(cap * 1000)],
        )
        return bool(int(started)), int(ms) / 1000
