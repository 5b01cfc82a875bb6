"""The workers' Celery consumer, which publishes task events in batches.

Task events stay on (Flower shows every download), but Celery's consumer flushes its event
buffer on the next turn of its loop after each event: a fanout publish for every
`task-received`, `task-started` and `task-succeeded`, about a fifth of a worker's CPU for a
small file. `Consumer` flushes at most every `EVENT_FLUSH_INTERVAL`, so one publish carries the
events of many tasks (Flower reads Celery's `task.multi` batches). A module of its own so that
clients, which never consume, never import Celery's worker.
"""

from __future__ import annotations

import time

from celery.worker.consumer import Consumer as CeleryConsumer

EVENT_FLUSH_INTERVAL = 0.1
"""Seconds a worker's task events may wait to go out together (Flower lags by at most this)."""


class Consumer(CeleryConsumer):
    """Celery's consumer, flushing buffered task events at most every `EVENT_FLUSH_INTERVAL`.

    `_flush_events` runs in the event loop's thread (Celery schedules it with `call_soon`
    when a task event is buffered, from any thread), so the timer it sets is the loop's own.
    """

    _last_flush = 0.0
    _flush_due = False

    def start(self) -> None:
        """Celery's consumer loop; an error it cannot recover from (a command the broker's ACL
        refuses, a broker lost past every retry) is kept on the app for `downloader worker` to
        report, since Celery logs it and stops the worker."""
        try:
            super().start()
        except Exception as exc:
            self.app.fatal_error = exc
            raise

    def _flush_events(self) -> None:
        wait = self._last_flush + EVENT_FLUSH_INTERVAL - time.monotonic()
        if wait <= 0 or self.hub is None:
            self._flush_now()
        elif not self._flush_due:
            self._flush_due = True
            self.hub.call_later(wait, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_due = False
        self._last_flush = time.monotonic()
        super()._flush_events()

    def shutdown(self) -> None:
        self._flush_now()  # the last events must not wait for a timer that will not fire
        super().shutdown()
