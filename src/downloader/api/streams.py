"""The event streams of one API process: one Redis pub/sub connection for all their clients.

A client costs a reference on its queue's channel and a queue of at most `BACKLOG` events:
the first client of a channel subscribes it, the last one to leave unsubscribes it, and one
task reads the connection and hands each message, formatted once, to every client of its
channel. A client whose backlog is full reads slower than its queue's events come: it is
dropped (told so in its stream, which ends), so a reader that stalls never makes the process
hold more. At most `limit` clients at once (`DOWNLOADER_API_MAX_EVENT_STREAMS`); the next
one is refused with `StreamsFull`. The connection rides out a Redis restart or failover
for `DOWNLOADER_REDIS_RIDE_OUT` seconds (redis-py reconnects, to the new primary, and
subscribes its channels again); if it breaks for good, every client is told and its stream
ends; SSE clients reconnect by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
import redis.asyncio as aredis
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import format_sse_event

log = logging.getLogger(__name__)

BACKLOG = 256
"""Events one client may be behind before it is dropped."""

SUBSCRIBE_TIMEOUT = 10.0
"""Seconds a new client waits for Redis to confirm its channel's subscription."""

POLL = 1.0
"""Seconds the reader waits for a message before it looks again."""


class StreamsFull(Exception):
    """As many event streams as the limit allows are open."""


class SubscribeError(Exception):
    """Redis did not confirm the subscription; the text says why."""


def frame(payload: dict[str, object]) -> bytes:
    """One Server-Sent Event, `event: <name>` and `data: <JSON>`, in FastAPI's encoding."""
    name = str(payload.get("event", "message")).replace("\n", " ").replace("\r", " ")
    return format_sse_event(event=name, data_str=json.dumps(payload))


@dataclass(eq=False)
class Follower:
    """One client of one channel: the frames waiting for it, and, once nothing more comes
    for it, why (`ended`, with `dropped` set)."""

    channel: str
    frames: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(BACKLOG))
    ended: str | None = None
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def end(self, why: str) -> None:
        if self.ended is None:
            self.ended = why
            self.dropped.set()


@dataclass(eq=False)
class _Channel:
    followers: set[Follower] = field(default_factory=set)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when Redis confirmed the SUBSCRIBE: only then can no later event be missed."""


class EventStreams:
    """The shared subscription and its clients; every method runs on the app's event loop."""

    def __init__(self, connect: Callable[[], aredis.Redis], limit: int) -> None:
        self._connect = connect  # blocking (it may start the embedded Redis): called in a thread
        self.limit = limit
        self._followers: set[Follower] = set()
        """Every client now, each counted against the limit until it leaves."""
        self._channels: dict[str, _Channel] = {}
        self._pubsub: aredis.client.PubSub | None = None
        self._client: aredis.Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Lock | None = None

    async def follow(self, channel: str) -> Follower:
        """A new client of `channel`, once its subscription is confirmed. Raises
        `StreamsFull` past the limit, `SubscribeError` when Redis does not confirm."""
        self._on_this_loop()
        if len(self._followers) >= self.limit:
            raise StreamsFull(
                f"{self.limit} event streams are open, the most this API serves at once "
                "(DOWNLOADER_API_MAX_EVENT_STREAMS); try again later"
            )
        follower = Follower(channel)
        self._followers.add(follower)
        try:
            pubsub = await self._started()
            state = self._channels.get(channel)
            if state is None:
                state = self._channels[channel] = _Channel()
                state.followers.add(follower)
                await pubsub.subscribe(channel)
            else:
                state.followers.add(follower)
            await asyncio.wait_for(state.subscribed.wait(), SUBSCRIBE_TIMEOUT)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            await self.leave(follower)
            raise SubscribeError(f"cannot subscribe to events: {exc or 'no confirmation'}") from exc
        except BaseException:
            await self.leave(follower)
            raise
        return follower

    async def leave(self, follower: Follower) -> None:
        """The client is gone: its slot is free, and its channel is left once nobody follows
        it and its subscription was confirmed (the reader leaves it on confirmation if not)."""
        if follower not in self._followers:
            return
        self._followers.discard(follower)
        follower.end("left")
        state = self._channels.get(follower.channel)
        if state is None:
            return
        state.followers.discard(follower)
        if not state.followers and state.subscribed.is_set():
            await self._unsubscribe(follower.channel)

    async def aclose(self) -> None:
        """Stop reading and close the connection (the app shuts down)."""
        self._on_this_loop()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await self._reset("the API is shutting down")

    # -- the reader --------------------------------------------------------------------------

    def _on_this_loop(self) -> None:
        """Forget what another event loop held (each run of a test client has its own): its
        tasks and connections died with it."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._followers.clear()
            self._channels.clear()
            self._pubsub = self._client = self._reader = None
            self._loop, self._starting = loop, asyncio.Lock()

    async def _started(self) -> aredis.client.PubSub:
        """The shared pub/sub, connected and read, on this event loop."""
        assert self._starting is not None  # `_on_this_loop` made it
        async with self._starting:
            if self._pubsub is None:
                client = await run_in_threadpool(self._connect)
                pubsub = client.pubsub()
                try:
                    await pubsub.connect()
                except BaseException:
                    await pubsub.aclose()
                    await client.aclose()
                    raise
                self._client, self._pubsub = client, pubsub
                self._reader = asyncio.create_task(self._read(pubsub))
            return self._pubsub

    async def _read(self, pubsub: aredis.client.PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=POLL)
                if message is not None:
                    await self._dispatch(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection broke and redis-py's retries gave up
            log.warning("the event subscription broke: %s", exc)
            self._reader = None
            await self._reset(f"lost the event subscription: {exc}")

    async def _dispatch(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        channel = _text(message.get("channel"))
        state = self._channels.get(channel)
        if kind == "subscribe":
            if state is None:  # re-subscribed after a reconnection, but nobody follows it
                await self._unsubscribe(channel)
                return
            state.subscribed.set()
            if not state.followers:  # its clients left before Redis confirmed
                await self._unsubscribe(channel)
            return
        if kind != "message" or state is None:
            return
        try:
            payload = json.loads(message["data"])  # type: ignore[arg-type]
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            log.warning("an event on %s is not a JSON object; not passed on", channel)
            return
        text = frame(payload)
        for follower in list(state.followers):
            try:
                follower.frames.put_nowait(text)
            except asyncio.QueueFull:
                state.followers.discard(follower)
                follower.end(
                    f"dropped: this client read too slowly and fell {BACKLOG} events behind; "
                    "reconnect, and read as fast as events come"
                )

    async def _unsubscribe(self, channel: str) -> None:
        self._channels.pop(channel, None)
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):  # the reader finds out
                await self._pubsub.unsubscribe(channel)

    async def _reset(self, why: str) -> None:
        """Tell every client why its stream ends, and close the connection."""
        for state in self._channels.values():
            for follower in state.followers:
                follower.end(why)
        self._channels.clear()
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await client.aclose()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
