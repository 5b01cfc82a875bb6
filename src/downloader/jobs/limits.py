"""What the fleet may ask of origins: rates as curl and wget write them, a host's limits, and
the limits in force (the settings' defaults with the overrides kept in Redis on top).

A rate is bytes per second: a plain number of bytes, or a number with `K`, `M`, `G` (powers of
1024, as curl's `--limit-rate`) or `KiB`, `MiB`, `GiB`; 0 means unlimited. A host is a bare
host name (`huggingface.co`, `127.0.0.2`): every scheme and port of it counts against the same
limits, because it is the host's capacity they protect.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

RATE_FORMS = "bytes per second: 500K, 20M, 1G, 100MiB or a number of bytes; 0 is unlimited"
"""What a rate may be, as an error says it."""

_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?(?:/s)?", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")
DEFAULT_HOST_CONNECTIONS = 16
"""Connections to one host the fleet opens at most when the host is not named (aria2's
per-server ceiling)."""


def parse_rate(value: object) -> int:
    """A rate as bytes per second.

    Args:
        value: `500K`, `20M`, `1G` (powers of 1024), `100MiB`, `1.5M`, `4096`, an int, or
            None (unlimited); an optional `/s` is allowed.

    Returns:
        Bytes per second; 0 for unlimited.

    Raises:
        ValueError: the value is not a rate; the message names it and the accepted forms.
    """
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"not a rate: {value!r} ({RATE_FORMS})")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"not a rate: {value!r} ({RATE_FORMS})")
        return int(value)
    text = str(value).strip()
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a rate: {text!r} ({RATE_FORMS})")
    number, unit = match.groups()
    return int(float(number) * 1024 ** _POWERS[(unit or "").lower()])


def format_rate(rate: int | None) -> str:
    """A rate as people read it: `100MiB/s`, `512KiB/s`, `unlimited`."""
    if not rate:
        return "unlimited"
    for power, unit in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        size = 1024**power
        if rate >= size:
            return f"{rate / size:.3g}{unit}/s"
    return f"{rate}B/s"


def check_host(host: str) -> str:
    """A host name as limits are keyed: lower case, no scheme, port or path.

    Raises:
        ValueError: not a bare host name.
    """
    name = host.strip().lower()
    if not _HOST.fullmatch(name) or name == "fleet":
        raise ValueError(f"not a host name: {host!r} (a bare host such as huggingface.co)")
    return name


Rate = Annotated[int, BeforeValidator(parse_rate), Field(ge=0)]
"""A rate field: accepts what `parse_rate` does, holds bytes per second."""


class HostLimit(BaseModel):
    """One host's limits; a field left None is not set here (a default or nothing applies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connections: int | None = Field(default=None, ge=1, description="concurrent connections")
    bandwidth: Rate | None = Field(default=None, description="bytes per second; 0: unlimited")
    requests_per_second: float | None = Field(
        default=None, ge=0, description="requests started per second; 0: unlimited"
    )

    def over(self, below: HostLimit) -> HostLimit:
        """These limits, with `below`'s where these leave a field unset."""
        fields = {**below.model_dump(exclude_none=True), **self.model_dump(exclude_none=True)}
        return HostLimit(**fields)


def host_limits(value: Any) -> dict[str, HostLimit]:
    """Host limits keyed by checked host names (a `DOWNLOADER_HOST_LIMITS` validator)."""
    if not isinstance(value, dict):
        return value  # pydantic says what it should have been
    return {check_host(host): limit for host, limit in value.items()}


class Limits(BaseModel):
    """The limits in force for the whole fleet: what `downloader limits` shows."""

    model_config = ConfigDict(frozen=True)

    bandwidth: Rate = Field(default=0, description="the fleet's total; 0: unlimited")
    host_connections: int = Field(
        default=DEFAULT_HOST_CONNECTIONS, ge=1, description="for hosts not named in `hosts`"
    )
    hosts: Annotated[dict[str, HostLimit], BeforeValidator(host_limits)] = Field(
        default_factory=dict
    )

    def for_host(self, host: str) -> HostLimit:
        """What applies to `host`: its own limits, with the default connection cap."""
        own = self.hosts.get(host, HostLimit())
        return own.over(HostLimit(connections=self.host_connections))

    def overlaid(self, fleet: dict[str, Any], hosts: dict[str, HostLimit]) -> Limits:
        """These limits (the settings') with overrides set at run time on top, field by field.

        Args:
            fleet: `bandwidth` and `host_connections` when overridden.
            hosts: each overridden host's fields.
        """
        merged = dict(self.hosts)
        for host, limit in hosts.items():
            merged[host] = limit.over(merged.get(host, HostLimit()))
        return Limits(**{**self.model_dump(exclude={"hosts"}), **fleet, "hosts": merged})
