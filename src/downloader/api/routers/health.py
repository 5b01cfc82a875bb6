"""Health: the one route that needs no key, for load balancers and orchestrators."""

from __future__ import annotations

import threading
import time

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from downloader.api.context import ApiContext, Ctx
from downloader.api.schemas import Health
from downloader.store.admin import StoreAdmin

router = APIRouter(tags=["health"])

LOSS_REPORTED_FOR = 300.0
"""Seconds `/health` answers 503 once it noticed that Redis lost its data: long enough for
every probe and monitor to see it, short enough not to keep the API out of service for
long (new jobs work again at once; the old ones are gone either way)."""

DATA_LOST = (
    "Redis lost its data (a restart without persistence, a flush, a failover to an empty "
    "replica or eviction): every job queued before is gone; give Redis persistence "
    "(appendonly yes, or RDB snapshots) and maxmemory-policy noeviction"
)

_REDIS_DOWN = (redis.RedisError, OSError, TimeoutError, RuntimeError)


class RedisMemory:
    """The store's marker as this API first saw it (see `JobStore.mark`), and since when it
    has found it gone: a Redis that comes back empty answers PING like any other."""

    def __init__(self) -> None:
        self.known: str | None = None
        self.noticed: float | None = None
        self._lock = threading.Lock()

    def remember(self, ctx: ApiContext) -> None:
        """At the API's start, when Redis answers (else at the first `/health`)."""
        try:
            with self._lock:
                if self.known is None:
                    self.known = ctx.probe.mark()
        except _REDIS_DOWN:
            pass

    def lost(self, store: StoreAdmin) -> bool:
        """Whether Redis lost its data since this API first saw it, for `LOSS_REPORTED_FOR`
        seconds after it noticed; then the data Redis holds now is the one watched."""
        with self._lock:
            if self.known is None:
                self.known = store.mark()
                return False
            now = time.monotonic()
            if self.noticed is None and store.marker() != self.known:
                self.noticed = now
            if self.noticed is not None and now - self.noticed >= LOSS_REPORTED_FOR:
                self.known, self.noticed = store.mark(), None
            return self.noticed is not None


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis or every worker down, or data lost"}},
)
def health(ctx: Ctx, request: Request) -> JSONResponse:
    """200 when Redis answers, has not lost its data, and at least one worker's heartbeat is
    current; else 503 (`redis_data_lost` and `detail` say when Redis came back empty). Needs
    no key."""
    memory: RedisMemory = request.app.state.redis_memory
    redis_ok, lost, names = False, False, []
    try:
        probe = ctx.probe  # short timeouts: a Redis that is down answers at once
        redis_ok = probe.ping()
        lost = memory.lost(probe)
        names = probe.live_workers()
    except _REDIS_DOWN:
        redis_ok = False
    body = Health(
        redis=redis_ok,
        redis_data_lost=lost,
        workers=len(names),
        worker_names=names,
        detail=DATA_LOST if lost else None,
    )
    healthy = redis_ok and names and not lost
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
