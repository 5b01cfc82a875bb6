"""The queue's events as Server-Sent Events.

The stream is asynchronous and every stream of the process shares one Redis pub/sub
connection (`streams.EventStreams`), so any number of `curl -N` followers, up to
`DOWNLOADER_API_MAX_EVENT_STREAMS`, cost no thread and no Redis connection each.

The frames are FastAPI's encoding (`fastapi.sse.format_sse_event`) in its response class
(`EventSourceResponse`), but the stream is not FastAPI's generator path (`yield` under
`response_class=EventSourceResponse`): measured with `benchmarks/sse.py`, that path cost the
API 35-50% more CPU per event delivered (two more tasks and memory streams per client), it
adds its own `: ping` after 15 s without an item (so a keep-alive of 15 s or more cannot be
kept, and at 15 s a late event loop sends `: ping` in place of `: keep-alive`), and cutting
off a client that stops reading needs its response wrapped from a custom route class.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.sse import EventSourceResponse, format_sse_event
from starlette.types import Receive, Scope, Send

from downloader.api.context import Ctx
from downloader.api.errors import ApiError, error_response
from downloader.api.schemas import QueueId
from downloader.api.streams import EventStreams, Follower, StreamsFull, SubscribeError, frame
from downloader.store.keys import Keys

router = APIRouter(prefix="/api/v1/queue/{queue_id}", tags=["events"])

DROP_GRACE = 30.0
"""Seconds a dropped client has to read what was sent and why it was dropped, before its
connection is closed under it (one that does not read at all would hold its slot)."""


SUBSCRIBED = format_sse_event(comment="subscribed")
KEEP_ALIVE = format_sse_event(comment="keep-alive")


class _EventStream(EventSourceResponse):
    """A client's stream: its frames, keep-alives after a quiet spell, a last `error` event
    when it ends for another reason than the client leaving; its slot is freed however it
    ends, and a dropped client that does not read is cut off after `DROP_GRACE`."""

    def __init__(
        self, streams: EventStreams, follower: Follower, keep_alive: float, request: Request
    ) -> None:
        self._streams, self._follower = streams, follower
        super().__init__(
            self._frames(keep_alive, request),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with anyio.CancelScope() as guard:
                cutoff = asyncio.create_task(self._cut_off_when_stuck(guard))
                try:
                    await super().__call__(scope, receive, send)
                finally:
                    cutoff.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
                await self._streams.leave(self._follower)

    async def _cut_off_when_stuck(self, guard: anyio.CancelScope) -> None:
        await self._follower.dropped.wait()
        await asyncio.sleep(DROP_GRACE)
        guard.cancel()

    async def _frames(self, keep_alive: float, request: Request) -> AsyncIterator[bytes]:
        follower = self._follower
        yield SUBSCRIBED
        quiet_since = time.monotonic()
        while follower.ended is None and not await request.is_disconnected():
            try:
                text = await asyncio.wait_for(follower.frames.get(), min(1.0, keep_alive))
            except TimeoutError:
                if time.monotonic() - quiet_since >= keep_alive:
                    quiet_since = time.monotonic()
                    yield KEEP_ALIVE
                continue
            quiet_since = time.monotonic()
            yield text
        if follower.ended is not None:
            yield frame({"event": "error", "error": follower.ended})


@router.get(
    "/events",
    response_class=StreamingResponse,  # EventSourceResponse here means FastAPI's generator path
    responses={
        200: {"content": {"text/event-stream": {}}},
        503: {
            "model": ApiError,
            "description": "as many event streams as `DOWNLOADER_API_MAX_EVENT_STREAMS` are "
            "open, or Redis did not confirm the subscription; try again later",
        },
    },
)
async def events(ctx: Ctx, queue_id: QueueId, request: Request) -> Response:
    """The queue's events as Server-Sent Events (`curl -N .../events`): `event: <name>`
    and `data: <JSON payload>` per event, `: subscribed` once listening, and a
    `: keep-alive` comment after a quiet spell. A client that falls far behind is sent an
    `error` event saying so, and its stream ends."""
    channel = Keys(ctx.settings.namespace).events(queue_id)
    try:
        follower = await ctx.streams.follow(channel)
    except (StreamsFull, SubscribeError) as exc:
        return error_response(503, str(exc), headers={"Retry-After": "5"})
    return _EventStream(ctx.streams, follower, ctx.keep_alive, request)
