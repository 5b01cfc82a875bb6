"""Celery's Redis transport, made to survive a Redis restart and to cost less per message.

With kombu 5.7, when Redis goes away under a worker, the consumer closes its channel, and
closing tries to put the unacknowledged messages back through a connection that is already
torn down. The AttributeError that follows escapes Celery's connection-error handling and the
worker process exits instead of reconnecting. Here that restore is skipped when it cannot
run: the messages stay in Redis's unacked set, where the broker's visibility timeout brings
them back, and a job they belong to is either finished (the redelivery is dropped) or found by
the orphan watch once its lease runs out. The same holds for acknowledging, after the
reconnection, a task that ran through the outage: its channel is gone, so is the ack.

kombu 5.7 builds a new redis-py client for every command it sends outside its event loop (an
ack, a fanout publish such as each task event, the unacked bookkeeping): with a
`global_keyprefix` that is a `PrefixedStrictRedis` per message, and building one was about a
tenth of a worker's CPU per small job. A channel here keeps one such client on its connection
pool (redis-py clients are thread-safe; every command borrows a pooled connection), and builds
a new one only when kombu has replaced the pool (after a fork or a reconnection).

Both mendings hold for a primary found through Sentinel too (`SentinelTransport`). The
transports are registered with kombu by name (`downloader-redis`, `downloader-sentinel`), so
the app's configuration stays plain data, and `BrokerConnection` keeps the transport when kombu
moves on to the next sentinel of the URL after a connection error: kombu's own `switch` takes
the next URL's scheme for the transport, which would bring back the stock one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu import Connection
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

from downloader.store.connection import SENTINEL_TRANSPORT, TRANSPORT

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_unacked_once(self, stderr: object = None) -> None:
        """Restore the unacknowledged messages, even those delivered after an earlier restore.

        kombu restores a channel's messages once, at its close or from multiprocessing's exit
        hook, then asserts that none was delivered since. A consumer that still runs at that
        moment (an in-process worker at interpreter exit) breaks that: the assertion left the
        new message in Redis's unacked set until the visibility timeout. Here it goes back to
        its queue like the others.
        """
        state = self._delivered
        if getattr(state, "restored", False):
            self._flush()
            state.restored = not state  # something came since: restore again
        super().restore_unacked_once(stderr)

    def restore_unacked(self, client: object = None) -> None:
        try:
            super().restore_unacked(client)
        except AttributeError:
            log.warning(
                "the broker connection is gone; %d unacknowledged message(s) stay in Redis "
                "until the visibility timeout returns them",
                len(self._delivered),
            )
            self._delivered.clear()

    def ack(self, delivery_tag: str) -> None:
        try:
            super().ack(delivery_tag)
        except AttributeError:
            log.warning(
                "message %s came through a closed connection; its ack is lost and "
                "its redelivery will find the job finished",
                delivery_tag,
            )

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except AttributeError:
            log.warning(
                "message %s came through a closed connection; it will be redelivered", delivery_tag
            )


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """The client given, else this channel's one client on its current pool."""
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(kombu_redis.SentinelChannel, Channel):
    """kombu's Sentinel channel (the pool of the primary the sentinels name) with our QoS and
    shared client."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


TRANSPORT_ALIASES[TRANSPORT] = f"{__name__}:Transport"
TRANSPORT_ALIASES[SENTINEL_TRANSPORT] = f"{__name__}:SentinelTransport"


class BrokerConnection(Connection):
    """A kombu connection that keeps the transport it was made with when it moves on to the
    next URL of a list (the next sentinel): each names another way to the same broker.

    Its URL (`as_uri`) names the protocol, `redis://...` or `sentinel://...`, not our
    transports' names: Flower picks its broker reader from that URL's scheme, and under our
    names its `/broker` and `/api/queues/length` answered 404 "'redis' broker is not
    supported". `info()`, which `celery inspect stats` reports, still names the transport.
    """

    def as_uri(self, *args: Any, **kwargs: Any) -> str:
        uri = super().as_uri(*args, **kwargs)
        for ours, protocol in ((TRANSPORT, "redis"), (SENTINEL_TRANSPORT, "sentinel")):
            if uri.startswith(f"{ours}://"):
                return protocol + uri[len(ours) :]
        return uri

    def switch(self, conn_str: str) -> None:
        transport = self.transport_cls
        super().switch(conn_str)
        self.transport_cls = transport
