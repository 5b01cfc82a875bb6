"""Lifecycle events on Redis pub/sub.

Every event of a queue goes to one channel, `<namespace>:events:<queue_id>`, as a JSON object
with `event`, `job_id`, `queue_id` and `timestamp` beside the event's own fields. One channel
per queue keeps ordering simple (Redis delivers a channel's messages in publish order) and
lets a subscriber in any language follow a whole queue, or every queue with a pattern
subscription to `<namespace>:events:*`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from downloader.store import Keys

log = logging.getLogger(__name__)

DOWNLOAD_STARTED = "download_started"
DOWNLOAD_PROGRESS = "download_progress"
DOWNLOAD_COMPLETE = "download_complete"
DOWNLOAD_ERROR = "download_error"
DOWNLOAD_CANCELLED = "download_cancelled"

MULTIFILE_STARTED = "multifile_download_started"
MULTIFILE_PROGRESS = "multifile_download_progress"
MULTIFILE_COMPLETE = "multifile_download_complete"
MULTIFILE_ERROR = "multifile_download_error"
MULTIFILE_CANCELLED = "multifile_download_cancelled"


class EventPublisher:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.redis = client
        self.keys = Keys(namespace)

    def publish(self, event: str, queue_id: str, job_id: int, **fields: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "event": event,
            "job_id": job_id,
            "queue_id": queue_id,
            "timestamp": datetime.now(UTC).isoformat(),
        }
        payload.update({k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in fields.items()})
        try:
            self.redis.publish(self.keys.events(queue_id), json.dumps(payload))
        except redis.RedisError:
            # An event is a notification; the job store holds the truth and subscribers
            # re-read it. A download must not fail because Redis blinked.
            log.warning("could not publish %s of job %s", event, job_id, exc_info=True)
        return payload


class Subscription:
    """The events of one queue (or, with no queue, of all queues) as they are published.

    The constructor returns once Redis has confirmed the subscription, so an event published
    after it cannot be missed. Iterating yields None every `poll` seconds of quiet, which lets
    a consumer notice that it should stop without a second thread.
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        queue_id: str | None = None,
        poll: float = 0.5,
    ) -> None:
        keys = Keys(namespace)
        self.poll = poll
        self.client = client  # a collected client closes its pool, and this connection with it
        self.pubsub = client.pubsub()
        if queue_id is None:
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
            message = self.pubsub.get_message(timeout=self.poll)
            if message is None or message["type"] not in ("message", "pmessage"):
                yield None
                continue
            yield json.loads(message["data"])

    def close(self) -> None:
        self.pubsub.close()


class Throttle:
    """Lets a progress report through at most every `percent` of the total and `interval` s.

    Both limits apply, so a fast download sends about a hundred reports and a slow one one
    every `interval`; the last report (current == total) always goes through.
    """

    def __init__(self, interval: float, percent: float = 1.0) -> None:
        self.interval = interval
        self.fraction = percent / 100
        self._last_time = 0.0
        self._last_bytes = -1

    def ready(self, current: int, total: int) -> bool:
        now = time.monotonic()
        if total and current >= total:
            if self._last_bytes == current:
                return False
        elif now - self._last_time < self.interval or (
            total and current - self._last_bytes < total * self.fraction
        ):
            return False
        self._last_time, self._last_bytes = now, current
        return True
