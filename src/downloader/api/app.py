"""The app factory: settings, the shared context, the routers, and the guards in front.

Both guards act before a body is read: the key check is middleware that answers from the
headers, and FastAPI's own `max_body_size` refuses a `Content-Length` over the cap before
the first byte is read and stops a chunked body as soon as it passes the cap (a refused
request whose `Content-Length` is over the cap is answered 413 rather than 401).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from downloader.api.auth import ApiKeyMiddleware, configured_key, documented
from downloader.api.context import ApiContext
from downloader.api.docs import add_docs
from downloader.api.errors import not_replicated, validation_error
from downloader.api.routers import (
    events,
    fleet,
    health,
    limits,
    metrics,
    page,
    processor,
    queue,
)
from downloader.config import Settings
from downloader.store.durability import NotReplicatedError

KEEP_ALIVE_SECONDS = 15.0


def create_api() -> FastAPI:
    """The FastAPI app, configured from the `DOWNLOADER_*` settings. Raises `ApiKeyError`
    for a blank `DOWNLOADER_API_KEY`."""
    return build_api()


def build_api(*, keep_alive: float = KEEP_ALIVE_SECONDS) -> FastAPI:
    """`create_api()` with another keep-alive interval for the event stream (seconds)."""
    settings = Settings()
    key = configured_key(settings)
    context = ApiContext(settings, keep_alive)

    memory = health.RedisMemory()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(memory.remember, context)  # to see a loss from the start
        yield
        await context.streams.aclose()
        await run_in_threadpool(context.close)

    app = FastAPI(
        title="downloader",
        description=(
            "A distributed download queue on Celery and Redis. Statuses: `pending`, "
            "`in_progress`, `completed`, `failed`, `canceled`. With `DOWNLOADER_API_KEY` set, "
            "every route but `/health` (this schema and the docs too) needs "
            "`X-API-Key: <key>` or `Authorization: Bearer <key>`. Bodies are limited to "
            f"`DOWNLOADER_MAX_BODY_BYTES` ({settings.max_body_bytes} bytes here)."
        ),
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
        docs_url=None,  # served by `docs.add_docs`, with their assets: no CDN
        redoc_url=None,
    )
    add_docs(app)
    app.state.context = context
    app.state.redis_memory = memory
    secured = documented() if key else []
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(NotReplicatedError, not_replicated)
    for router in (
        queue.router,
        processor.router,
        events.router,
        fleet.router,
        limits.router,
        metrics.router,
    ):
        app.include_router(router, dependencies=secured)
    app.include_router(health.router)
    page.install(app)
    if key:
        app.add_middleware(ApiKeyMiddleware, key=key)
    return app
