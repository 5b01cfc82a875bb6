"""Queue pauses: a flag per queue in Redis, obeyed by every kind of worker.

A Celery worker is also told by a broadcast to stop consuming the queue (see
`celery_app.control`); a process that runs its own jobs without a broker (`downloader get`,
the embedded `DownloadQueueService()`, see `worker.local`) reads the flag before it starts
each job. The flag outlives both: a worker that starts during a pause leaves the queue alone.
"""

from __future__ import annotations

from downloader.store.base import StoreBase

MAX_PAUSED = 1000
"""Queues paused at once. A pause outlives every job (it holds for workers that start later),
so pausing is the one thing a caller can name any number of queues for that Redis would keep
for ever: past this many, resume some first."""


class TooManyPaused(ValueError):
    """`MAX_PAUSED` queues are paused already."""


class QueuePauses(StoreBase):
    """The pause flags of one namespace's queues."""

    def is_paused(self, queue_id: str) -> bool:
        return bool(self.redis.exists(self.keys.paused(queue_id)))

    def pause(self, queue_id: str) -> None:
        """Set the queue's flag.

        Raises:
            TooManyPaused: `MAX_PAUSED` other queues are paused (concurrent pauses may pass
                it by a few).
        """
        keys = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(keys.paused_queues, queue_id)
        pipe.scard(keys.paused_queues)
        already, paused = pipe.execute()
        if not already and paused >= MAX_PAUSED:
            raise TooManyPaused(
                f"{paused} queues are paused, the most there may be at once: resume one first"
            )
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(keys.paused_queues, queue_id)
        pipe.set(keys.paused(queue_id), 1)
        pipe.execute()

    def resume(self, queue_id: str) -> None:
        """Clear the queue's flag."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.paused(queue_id))
        pipe.srem(self.keys.paused_queues, queue_id)
        pipe.execute()
