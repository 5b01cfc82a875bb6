"""Reading a subscription's messages straight off its socket, with hiredis.

redis-py's `PubSub.get_message` costs a client about 60 µs of CPU per message: before each
read it polls the socket twice (once to see it readable, once with a `MSG_PEEK` to tell a
closed peer from data) and times, retries and records the read: half of the listener
thread's time (py-spy) for a client following small files, two messages each.
Here the socket is polled once per wake-up and every message that arrived is parsed by one
`hiredis.Reader`, as redis-py's own C parser does.

Only a plain TCP or Unix socket is read this way (`plain_socket`; RESP2 or RESP3, where a
message is the same array): a TLS socket may hold decrypted bytes that a poll does not see,
so it stays with redis-py. A dropped connection is not reconnected here: it raises
`redis.ConnectionError`, and the caller hands the connection back to redis-py, which
connects and subscribes again.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import hiredis
import redis
from redis.client import PubSub

READ_SIZE = 65536
"""Bytes asked of the socket per read: a burst of events is parsed from one read."""


def plain_socket(pubsub: PubSub) -> socket.socket | None:
    """The subscription's socket when it can be read here (plain, RESP2/3, nothing left in
    redis-py's parser), else None: then keep reading through redis-py."""
    connection = pubsub.connection
    if connection is None or str(getattr(connection, "protocol", 2)) not in ("2", "3"):
        return None
    sock = getattr(connection, "_sock", None)
    if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
        return None
    try:
        if connection.can_read(timeout=0):  # redis-py holds (or the socket has) unread replies
            return None
    except redis.ConnectionError:
        return None  # closed: redis-py's next read connects and subscribes again
    return sock


def read_pushes(pubsub: PubSub, sock: socket.socket, poll: float) -> Iterator[Any | None]:
    """Each message's data (bytes) as it arrives on `sock`, and None after each quiet `poll`
    seconds. The connection's health check goes out as redis-py sends it, a PING once its
    interval passes with nothing read (a connection dead without a word then fails on the
    write); its answer is dropped here, as are subscription confirmations.

    Raises:
        redis.ConnectionError: the connection closed or failed; subscribe again.
    """
    connection = pubsub.connection
    interval = getattr(connection, "health_check_interval", 0) or 0
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    reader = hiredis.Reader()
    wait_ms = int(poll * 1000)
    check_at = time.monotonic() + interval
    while True:
        try:
            if interval and time.monotonic() > check_at:
                connection.send_command("PING", PubSub.HEALTH_CHECK_MESSAGE, check_health=False)
                check_at = time.monotonic() + interval
            if not poller.poll(wait_ms):
                yield None
                continue
            data = sock.recv(READ_SIZE)
        except OSError as exc:
            raise redis.ConnectionError(f"the event subscription failed: {exc}") from exc
        if not data:
            raise redis.ConnectionError("Redis closed the event subscription")
        check_at = time.monotonic() + interval
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if isinstance(reply, Exception):
                raise redis.ConnectionError(f"the event subscription failed: {reply}")
            if not isinstance(reply, list) or not reply:
                continue  # RESP3's answer to a health check's PING
            # RESP2's answer to it (`pong`) and subscription confirmations are not events.
            if reply[0] == b"message":
                yield reply[2]
            elif reply[0] == b"pmessage":
                yield reply[3]
