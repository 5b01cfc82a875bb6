"""What every request of one API app shares: its settings, one enqueue-only service, one
Redis probe and the event streams.

One service serves every queue (its `admin` takes the queue id in every call), made on first
use and closed at shutdown: a caller that names a million queue ids makes the API hold nothing more
than one that names one. Routes receive the context as a dependency (`Ctx`) instead of
closing over it, so each router can live in a module of its own.
"""

from __future__ import annotations

import threading
from typing import Annotated

import redis.asyncio as aredis
from fastapi import Depends, Request

from downloader.api.streams import EventStreams
from downloader.client.admin import QueueAdmin
from downloader.client.service import DownloadQueueService
from downloader.config import Settings
from downloader.store.admin import StoreAdmin
from downloader.store.connection import RedisTarget

PROBE_TIMEOUT = 1.0
"""Seconds `/health` waits for Redis: a Redis that is down is reported at once."""


class ApiContext:
    """The settings, the service, the probe and the event streams of one app, closed with it."""

    def __init__(self, settings: Settings, keep_alive: float) -> None:
        self.settings = settings
        self.keep_alive = keep_alive  # seconds between keep-alive comments of the event stream
        self.streams = EventStreams(self.event_client, settings.api_max_event_streams)
        self._service: DownloadQueueService | None = None
        self._probe: StoreAdmin | None = None
        self._lock = threading.Lock()

    @property
    def service(self) -> DownloadQueueService:
        """The enqueue-only service of every queue, made on first use."""
        with self._lock:
            if self._service is None:
                self._service = DownloadQueueService(
                    queue_id=self.settings.queue_id, start_worker=False, follow=False
                )
            return self._service

    @property
    def admin(self) -> QueueAdmin:
        """The service's interface to every queue."""
        return self.service.admin

    @property
    def target(self) -> RedisTarget:
        """The configured Redis, or the embedded server the service started."""
        if self.settings.redis_url:
            return RedisTarget(self.settings.redis_url, self.settings)
        return self.admin.target

    def event_client(self) -> aredis.Redis:
        """The shared event subscription's client, riding out a restart or a failover."""
        return self.target.riding_async_client()

    @property
    def probe(self) -> StoreAdmin:
        """The store `/health` asks: a client with short timeouts and no retry, made once."""
        target = self.target
        with self._lock:
            if self._probe is None:
                self._probe = StoreAdmin.probe(target, self.settings.namespace, PROBE_TIMEOUT)
            return self._probe

    def close(self) -> None:
        with self._lock:
            service, self._service = self._service, None
            probe, self._probe = self._probe, None
        if probe is not None:
            probe.close()
        if service is not None:
            service.close()


def _context(request: Request) -> ApiContext:
    return request.app.state.context


Ctx = Annotated[ApiContext, Depends(_context)]
