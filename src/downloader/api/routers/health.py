"""Health: the one route that needs no key, for load balancers and orchestrators."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from downloader.api.context import Ctx
from downloader.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis or every worker is down"}},
)
def health(ctx: Ctx) -> JSONResponse:
    """200 when Redis answers and at least one worker's heartbeat is current, else 503.
    Needs no key. The context's probe has short timeouts, so a Redis that is down answers
    at once."""
    redis_ok, names = False, []
    try:
        probe = ctx.probe
        redis_ok = bool(probe.redis.ping())
        names = probe.live_workers()
    except (redis.RedisError, OSError, TimeoutError, RuntimeError):
        redis_ok = False
    body = Health(redis=redis_ok, workers=len(names), worker_names=names)
    return JSONResponse(body.model_dump(), status_code=200 if redis_ok and names else 503)
