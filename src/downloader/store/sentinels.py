"""Connections to the primary a Sentinel names that ask the sentinels again on every
reconnection, whichever way redis-py reconnects.

redis-py's `SentinelManagedConnection` asks the sentinels in `connect()`, but a connection
dropped in the middle of a command is reconnected from `send_packed_command`, which calls
`connect_check_health()` directly: that reconnects to the address the connection last had
and retries it for the client's whole retry budget. After a failover that address is the
dead primary's, so a command caught by the failover failed after `DOWNLOADER_REDIS_RIDE_OUT`
with "connection refused" while every fresh connection had long found the new primary
(seen in `tests/test_failover.py`: a download ended as an error, or stalled for a minute).
Here a reconnection of that kind goes through `connect()`, which asks the sentinels on each
try; the connection that `connect_to` opens is made once per try, as redis-py meant it.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.sentinel import SentinelManagedConnection as AsyncManaged
from redis.asyncio.sentinel import SentinelManagedSSLConnection as AsyncManagedSSL
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection


class _Follows:
    """Reconnects through the sentinels (see the module's docstring)."""

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> Any:
        if getattr(self, "_sock", None):
            return None
        if retry_socket_connect:  # not from `connect_to`: a reconnection to ask for
            return self.connect()  # type: ignore[attr-defined]
        return super().connect_check_health(  # type: ignore[misc]
            check_health=check_health, retry_socket_connect=False
        )


class FollowingConnection(_Follows, SentinelManagedConnection):
    pass


class FollowingSSLConnection(_Follows, SentinelManagedSSLConnection):
    pass


class _AsyncFollows:
    """The asyncio twin of `_Follows`."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:  # type: ignore[attr-defined]
            return
        if retry_socket_connect:
            await self.connect()  # type: ignore[attr-defined]
            return
        await super().connect_check_health(  # type: ignore[misc]
            check_health=check_health, retry_socket_connect=False
        )


class AsyncFollowingConnection(_AsyncFollows, AsyncManaged):
    pass


class AsyncFollowingSSLConnection(_AsyncFollows, AsyncManagedSSL):
    pass
