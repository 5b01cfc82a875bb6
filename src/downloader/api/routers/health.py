"""Health: the one route that needs no key, for load balancers and orchestrators."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.backoff import NoBackoff
from redis.retry import Retry

from downloader.api.context import Ctx
from downloader.api.schemas import Health
from downloader.store.jobs import JobStore

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis or every worker is down"}},
)
def health(ctx: Ctx) -> JSONResponse:
    """200 when Redis answers and at least one worker's heartbeat is current, else 503.
    Needs no key. One short-timeout connection, so a Redis that is down answers at once."""
    redis_ok, names = False, []
    try:
        probe = redis.Redis.from_url(
            ctx.redis_url(),
            socket_connect_timeout=1,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            redis_ok = bool(probe.ping())
            names = JobStore(probe, ctx.settings.namespace).live_workers()
        finally:
            probe.close()
    except (redis.RedisError, OSError, TimeoutError, RuntimeError):
        redis_ok = False
    body = Health(redis=redis_ok, workers=len(names), worker_names=names)
    return JSONResponse(body.model_dump(), status_code=200 if redis_ok and names else 503)
