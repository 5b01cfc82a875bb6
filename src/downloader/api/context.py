"""What every request of one API app shares: its settings and its enqueue-only services.

Reads go straight to the job store through one enqueue-only service; writes to a queue go
through an enqueue-only `DownloadQueueService` of that queue, made on first use and closed
at shutdown. Routes receive the context as a dependency (`Ctx`) instead of closing over it,
so each router can live in a module of its own.
"""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import Depends, Request

from downloader.client.service import DownloadQueueService
from downloader.config import Settings
from downloader.store.jobs import JobStore


class ApiContext:
    """The settings and the per-queue services of one app, closed with it."""

    def __init__(self, settings: Settings, keep_alive: float) -> None:
        self.settings = settings
        self.keep_alive = keep_alive  # seconds between keep-alive comments of the event stream
        self._services: dict[str, DownloadQueueService] = {}
        self._lock = threading.Lock()

    def service(self, queue_id: str) -> DownloadQueueService:
        """The enqueue-only service of `queue_id`, made on first use."""
        with self._lock:
            if queue_id not in self._services:
                self._services[queue_id] = DownloadQueueService(
                    queue_id=queue_id, start_worker=False, follow=False
                )
            return self._services[queue_id]

    def reader(self) -> DownloadQueueService:
        """The service whose store and Celery app every read uses, whatever the queue."""
        return self.service(self.settings.queue_id)

    @property
    def store(self) -> JobStore:
        return self.reader().app.store

    def redis_url(self) -> str:
        """The configured Redis, or the embedded server the reader started."""
        return self.settings.redis_url or self.reader().app.redis_url

    def close(self) -> None:
        with self._lock:
            opened = list(self._services.values())
            self._services.clear()
        for each in opened:
            each.close()


def _context(request: Request) -> ApiContext:
    return request.app.state.context


Ctx = Annotated[ApiContext, Depends(_context)]
