"""Lifecycle events on Redis pub/sub.

Every event goes to two channels, as a JSON object with `event`, `job_id`, `queue_id` and
`timestamp` beside the event's own fields:

- `<namespace>:events:<queue_id>`, every event of a queue, for dashboards, the REST event
  stream and other services (every queue: a pattern subscription to `<namespace>:events:*`);
- the job's own channel (`Keys.job_channel`): the channel of the client that queued and
  follows it (its record's `follower`), so that a client subscribes once, to its own
  channel, and parses the events of its own jobs and nothing else, however busy the queue;
  or, for a job nobody follows, `<namespace>:job-events:<job_id>`.

Redis delivers a channel's messages in publish order, and both are published in one round
trip, so either channel sees a job's events in order. A worker mostly does not call `publish`:
it `prepare`s the event and hands it to the store's script that makes the change the event
reports (`JobStore.update`, `JobStore.finish`), which publishes it in the same round trip.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from downloader.store.base import BATCH
from downloader.store.keys import Keys
from downloader.store.pushes import plain_socket, read_pushes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Announcement:
    """An event ready to go out: its JSON text and the channels it goes to."""

    channels: tuple[str, ...]
    data: str


class EventPublisher:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.redis = client
        self.keys = Keys(namespace)

    def prepare(
        self, event: str, queue_id: str, job_id: int, follower: str | None = None, **fields: Any
    ) -> Announcement:
        """The event as a store script publishes it, to both of its channels (`follower`:
        the job record's)."""
        data = json.dumps(event_payload(event, queue_id, job_id, fields))
        channels = (self.keys.events(queue_id), self.keys.job_channel(job_id, follower))
        return Announcement(channels, data)

    def publish(
        self, event: str, queue_id: str, job_id: int, follower: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        payload = event_payload(event, queue_id, job_id, fields)
        self._send([(payload, follower)])
        return payload

    def publish_many(
        self,
        event: str,
        queue_id: str,
        job_ids: Iterable[int],
        fields: Mapping[int, dict[str, Any]] | None = None,
        followers: Mapping[int, str | None] | None = None,
    ) -> None:
        """One event for many jobs (with each job's `fields` and its record's `follower`), a
        pipelined batch at a time."""
        fields, followers = fields or {}, followers or {}
        payloads = [
            (event_payload(event, queue_id, job_id, fields.get(job_id, {})), followers.get(job_id))
            for job_id in job_ids
        ]
        for start in range(0, len(payloads), BATCH):
            self._send(payloads[start : start + BATCH])

    def announce(self, events: Iterable[Announcement]) -> None:
        """Publish prepared events now, in one round trip (the end of a job whose writes had
        to reach a replica first: see `worker.ending`)."""
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            for channel in event.channels:
                pipe.publish(channel, event.data)
        try:
            pipe.execute()
        except redis.RedisError:
            log.warning("could not publish a job's end", exc_info=True)

    def _send(self, payloads: list[tuple[dict[str, Any], str | None]]) -> None:
        """Publish (payload, follower) pairs in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for payload, follower in payloads:
            data = json.dumps(payload)
            pipe.publish(self.keys.events(payload["queue_id"]), data)
            pipe.publish(self.keys.job_channel(payload["job_id"], follower), data)
        try:
            pipe.execute()
        except redis.RedisError:
            # An event is a notification; the job store holds the truth and subscribers
            # re-read it. A download must not fail because Redis blinked.
            log.warning("could not publish %s", payloads[0][0]["event"], exc_info=True)


def event_payload(event: str, queue_id: str, job_id: int, fields: dict[str, Any]) -> dict[str, Any]:
    """An event as it goes out: its name, job, queue and time, then its own `fields`."""
    payload: dict[str, Any] = {
        "event": event,
        "job_id": job_id,
        "queue_id": queue_id,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    payload.update({k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in fields.items()})
    return payload


RESUBSCRIBED = "_resubscribed"
"""Not an event: what a client's `Subscription` yields when Redis confirms it again (redis-py
reconnected and subscribed anew). Events published meanwhile were not heard; the store has
what they said."""


class Subscription:
    """The events of one queue (or, with no queue, of all queues) as they are published; or,
    with `client_channel`, of the jobs that client queued and follows.

    The constructor returns once Redis has confirmed the subscription, so an event published
    after it cannot be missed. Iterating yields None every `poll` seconds of quiet, which lets
    a consumer notice that it should stop without a second thread. A client's subscription
    is read off its socket where it can be (`store.pushes`), and yields `RESUBSCRIBED` when
    redis-py has reconnected it.
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        queue_id: str | None = None,
        poll: float = 0.5,
        client_channel: str | None = None,
    ) -> None:
        self.keys = keys = Keys(namespace)
        self.poll = poll
        self.client = client  # a collected client closes its pool, and this connection with it
        self.pubsub = client.pubsub()
        self._own = client_channel is not None
        if client_channel is not None:
            self.pubsub.subscribe(client_channel)
        elif queue_id is None:
            self.pubsub.psubscribe(keys.events("*"))
        else:
            self.pubsub.subscribe(keys.events(queue_id))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.5)
            if message and message["type"] in ("subscribe", "psubscribe"):
                return
        raise TimeoutError("Redis did not confirm the event subscription")

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        while True:
            sock = plain_socket(self.pubsub) if self._own else None
            if sock is not None:
                # A client's own channel is read off its socket (see `pushes`). A dropped
                # connection is left to redis-py: the read below connects and subscribes
                # again (then yields RESUBSCRIBED), or raises once its retries are spent.
                try:
                    for data in read_pushes(self.pubsub, sock, self.poll):
                        yield None if data is None else json.loads(data)
                except redis.ConnectionError:
                    self.pubsub.connection.disconnect()
            message = self.pubsub.get_message(timeout=self.poll)
            if message is None:
                yield None
            elif message["type"] in ("message", "pmessage"):
                yield json.loads(message["data"])
            elif message["type"] == "subscribe" and self._own:
                yield {"event": RESUBSCRIBED}

    def close(self) -> None:
        self.pubsub.close()
