"""The queue's events as Server-Sent Events.

The stream is asynchronous (one Redis pub/sub connection per client, no server thread), so
any number of `curl -N` followers cost no worker threads.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio
import redis
import redis.asyncio as aredis
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from downloader.api.context import Ctx
from downloader.api.schemas import QueueId
from downloader.store.jobs import Keys

router = APIRouter(prefix="/api/v1/queue/{queue_id}", tags=["events"])


class _EventStream(StreamingResponse):
    """A streaming response that always closes its generator, however the client leaves."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(ctx: Ctx, queue_id: QueueId, request: Request) -> StreamingResponse:
    """The queue's events as Server-Sent Events (`curl -N .../events`): `event: <name>`
    and `data: <JSON payload>` per event, `: subscribed` once listening, and a
    `: keep-alive` comment after a quiet spell."""
    url = await run_in_threadpool(ctx.redis_url)
    channel = Keys(ctx.settings.namespace).events(queue_id)
    keep_alive = ctx.keep_alive

    async def stream() -> AsyncIterator[str]:
        client = aredis.Redis.from_url(url)
        pubsub = client.pubsub()
        try:
            try:
                await pubsub.subscribe(channel)
                await _confirmed(pubsub)
            except (redis.RedisError, OSError, TimeoutError) as exc:
                error = {"event": "error", "error": f"cannot subscribe to events: {exc}"}
                yield f"event: error\ndata: {json.dumps(error)}\n\n"
                return
            yield ": subscribed\n\n"
            quiet_since = time.monotonic()
            while not await request.is_disconnected():
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(1.0, keep_alive)
                )
                if message is None or message.get("type") != "message":
                    if time.monotonic() - quiet_since >= keep_alive:
                        quiet_since = time.monotonic()
                        yield ": keep-alive\n\n"
                    continue
                quiet_since = time.monotonic()
                payload = json.loads(message["data"])
                name = str(payload.get("event", "message")).replace("\n", " ")
                yield f"event: {name}\ndata: {json.dumps(payload)}\n\n"
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()
                await client.aclose()

    return _EventStream(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _confirmed(pubsub: aredis.client.PubSub, timeout: float = 10.0) -> None:
    """Wait for Redis to confirm the subscription, so no later event can be missed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await pubsub.get_message(timeout=0.5)
        if message and message["type"] == "subscribe":
            return
    raise TimeoutError("Redis did not confirm the event subscription")
