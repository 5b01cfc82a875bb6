"""`FleetLimits`: the limits every worker and client of a service's Redis share, as an operator
or a front end sees them (the CLI's `downloader limits`, the REST API's `/api/v1/limits`).

The settings' limits are defaults; what is set here is kept in Redis and wins over them in
every process of the namespace, field by field, until it is unset (see `store.limits`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from downloader.jobs.limits import HostLimit, Limits, check_host, parse_rate
from downloader.store.limits import HostUsage, LimitStore
from downloader.worker.runtime import Runtime


@dataclass(frozen=True)
class LimitsReport:
    """The limits in force and what the fleet does with each host it uses or names."""

    limits: Limits
    usage: list[HostUsage]


class FleetLimits:
    """Read, set and unset the fleet's limits on one Redis and namespace."""

    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self._runtime = runtime

    @cached_property
    def _store(self) -> LimitStore:
        app = self._runtime()
        return LimitStore(app.redis, app.settings.namespace)

    def in_force(self) -> Limits:
        """The settings' limits with the run-time ones on top."""
        return self._store.in_force(self._runtime().settings.limits)

    def report(self) -> LimitsReport:
        """The limits in force, and the usage of every host named in them or used in the
        last minute."""
        limits = self.in_force()
        hosts = sorted({*limits.hosts, *self._store.recent_hosts()})
        return LimitsReport(limits, self._store.usage(hosts))

    def counters(self) -> dict[str, int]:
        """The fleet's counters per host label (`bytes:<label>`, `waits:<label>`,
        `pauses:<label>`; a label is a host named in the limits, or `other`)."""
        return self._store.counters()

    def set(
        self,
        host: str | None = None,
        connections: int | None = None,
        bandwidth: str | int | None = None,
        requests_per_second: float | None = None,
    ) -> Limits:
        """Set limits for the whole fleet, within 2 s in every process.

        Args:
            host: the host the limits are for; None: the fleet's own (`bandwidth` is then
                the fleet's total and `connections` the cap of every host not named).
            connections: concurrent connections (at least 1).
            bandwidth: a rate (`500K`, `20M`, `100MiB`, bytes per second); 0: unlimited.
            requests_per_second: requests the fleet starts per second to `host`; 0: any.

        Returns:
            The limits in force afterwards.

        Raises:
            ValueError: a value that is not one (the message names it), nothing given, or
                `requests_per_second` without a host.
        """
        if connections is None and bandwidth is None and requests_per_second is None:
            raise ValueError("nothing to set: give connections, bandwidth or requests per second")
        rate = None if bandwidth is None else parse_rate(bandwidth)
        if host is None:
            if requests_per_second is not None:
                raise ValueError("requests per second are a host's: name the host")
            pairs = (("bandwidth", rate), ("host_connections", connections))
            given = {name: value for name, value in pairs if value is not None}
            Limits(**given)  # checked as the settings are: a cap of at least 1
            self._store.set_fleet(**given)
        else:
            limit = HostLimit(
                connections=connections, bandwidth=rate, requests_per_second=requests_per_second
            )
            self._store.set_host(check_host(host), limit)
        return self.in_force()

    def unset(self, host: str | None = None) -> Limits:
        """Drop the limits set at run time for `host` (None: the fleet's own); the settings'
        apply again. Answers the limits in force afterwards."""
        self._store.unset(None if host is None else check_host(host))
        return self.in_force()
