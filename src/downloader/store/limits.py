"""The limits set at run time and what the fleet is using: what `downloader limits` and
`/api/v1/limits` read and write.

The settings (`DOWNLOADER_BANDWIDTH`, `DOWNLOADER_HOST_LIMITS`, `DOWNLOADER_HOST_CONNECTIONS`)
are each process's defaults; a limit set here (`Keys.limits`) wins over them, field by field,
in every process of the namespace until it is unset. Workers read this hash every half second
at most (`worker.pacing`), so a change reaches the fleet within that.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from downloader.jobs.limits import HostLimit, Limits
from downloader.store.base import StoreBase
from downloader.store.pacing import RECENT_PERIOD, RECENT_PERIODS, SEEN_FOR

FLEET = "fleet"
"""The field of `Keys.limits` that holds the fleet's own overrides; hosts are under their
names (a host called `fleet` is refused: see `jobs.limits.check_host`)."""
FLEET_FIELDS = ("bandwidth", "host_connections")


@dataclass(frozen=True)
class HostUsage:
    """What the fleet does with one host now."""

    host: str
    connections: int
    """Slots held (connections open or being opened)."""
    waiting: int
    """Connections waiting for a slot."""
    rate: int
    """Bytes per second over the last few seconds."""
    paused_for: float
    """Seconds the host's pause (a 429 or 503) lasts still; 0: not paused."""


class LimitStore(StoreBase):
    """The run-time limits of one namespace and the fleet's use of its hosts."""

    def overrides(self) -> tuple[dict[str, Any], dict[str, HostLimit]]:
        """The limits set at run time: the fleet's fields, and each host's."""
        fleet: dict[str, Any] = {}
        hosts: dict[str, HostLimit] = {}
        for name, value in self.redis.hgetall(self.keys.limits).items():
            field, data = name.decode(), json.loads(value)
            if field == FLEET:
                fleet = {key: data[key] for key in FLEET_FIELDS if key in data}
            else:
                hosts[field] = HostLimit(**data)
        return fleet, hosts

    def in_force(self, defaults: Limits) -> Limits:
        """`defaults` (the settings') with the run-time overrides on top."""
        fleet, hosts = self.overrides()
        return defaults.overlaid(fleet, hosts)

    def set_fleet(self, **fields: int) -> None:
        """Override fleet fields (`bandwidth`, `host_connections`) for every process."""
        current = self.redis.hget(self.keys.limits, FLEET)
        merged = {**(json.loads(current) if current else {}), **fields}
        self.redis.hset(self.keys.limits, FLEET, json.dumps(merged))

    def set_host(self, host: str, limit: HostLimit) -> None:
        """Override the fields `limit` sets for `host` (a checked host name)."""
        current = self.redis.hget(self.keys.limits, host)
        below = HostLimit(**json.loads(current)) if current else HostLimit()
        merged = limit.over(below)
        self.redis.hset(self.keys.limits, host, merged.model_dump_json(exclude_none=True))

    def unset(self, host: str | None = None) -> bool:
        """Drop the run-time overrides of `host` (None: the fleet's own); the settings'
        defaults apply again. Answers whether there were any."""
        return bool(self.redis.hdel(self.keys.limits, FLEET if host is None else host))

    def recent_hosts(self) -> list[str]:
        """The hosts the fleet connected to in the last minute."""
        since = time.time() - SEEN_FOR
        found = self.redis.zrangebyscore(self.keys.limit_hosts, since, "+inf")
        return sorted(host.decode() for host in found)

    def usage(self, hosts: Iterable[str]) -> list[HostUsage]:
        """What the fleet does with each of `hosts` now, in one round trip."""
        names = list(hosts)
        keys, now = self.keys, time.time()
        pipe = self.redis.pipeline(transaction=False)
        for host in names:
            pipe.zcount(keys.host_slots(host), int(now * 1000), "+inf")
            pipe.zcard(keys.host_waiters(host))
            pipe.hgetall(keys.host_recent(host))
            pipe.pttl(keys.host_pause(host))
        answers = pipe.execute()
        current = int(now // RECENT_PERIOD)
        counted = {str(current - back) for back in range(1, RECENT_PERIODS + 1)}
        usage = []
        for index, host in enumerate(names):
            held, waiting, recent, pause = answers[index * 4 : index * 4 + 4]
            read = sum(int(v) for k, v in recent.items() if k.decode() in counted)
            usage.append(
                HostUsage(
                    host=host,
                    connections=int(held),
                    waiting=int(waiting),
                    rate=read // (RECENT_PERIOD * RECENT_PERIODS),
                    paused_for=max(0, int(pause)) / 1000,
                )
            )
        return usage

    def counters(self) -> dict[str, int]:
        """The per-host counters `metrics` exports (`bytes:<label>`, `waits:<label>`,
        `pauses:<label>`)."""
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.keys.limit_stats).items()}
