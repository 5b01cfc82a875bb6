"""The REST API and the event stream, for programs that enqueue and watch from elsewhere.

The API only enqueues and reads: workers do the downloads. Its callers are untrusted: `dest`
is confined to `DOWNLOADER_DOWNLOAD_ROOT`, their jobs may not reach private addresses (unless
`DOWNLOADER_ALLOW_PRIVATE_NETWORKS`), an API key can be required, and no answer carries a
token. Statuses use the job-queue words: pending, in_progress, completed, failed, canceled.

Reads go straight to the job store through one enqueue-only service; writes to a queue go
through an enqueue-only `DownloadQueueService` of that queue, made on first use and closed
at shutdown. The event stream is asynchronous (one Redis pub/sub connection per client, no
server thread), so any number of `curl -N` followers cost no worker threads.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import anyio
import redis
import redis.asyncio as aredis
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AnyHttpUrl, BaseModel, Field, field_validator, model_validator
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.types import Receive, Scope, Send

from downloader import processor
from downloader.config import Settings
from downloader.models import DownloadJobStatus, RemoteModelFile
from downloader.service import DownloadQueueService, UnknownJobIDException
from downloader.store import KIND_MULTIFILE, Keys

ApiStatus = Literal["pending", "in_progress", "completed", "failed", "canceled"]
UNFINISHED: tuple[ApiStatus, ...] = ("pending", "in_progress")
FINISHED: tuple[ApiStatus, ...] = ("completed", "failed", "canceled")
KEEP_ALIVE_SECONDS = 15.0
QUEUE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="the API key (`DOWNLOADER_API_KEY`)"
)
_bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token")

QueueId = Annotated[
    str, PathParam(pattern=QUEUE_ID_PATTERN, description="letters, digits, `_`, `.`, `-`")
]


def api_status(record: dict[str, Any]) -> ApiStatus:
    """The API's word for a job record's state."""
    status = DownloadJobStatus(record["status"])
    if status == DownloadJobStatus.WAITING:
        return "pending"
    if status == DownloadJobStatus.RUNNING:
        return "in_progress"
    if status == DownloadJobStatus.COMPLETED:
        return "completed"
    return "canceled" if record.get("cancelled") else "failed"


# -- models ------------------------------------------------------------------------------------


class Item(BaseModel):
    """One job of the queue: a single download, a multi-file job or one of its parts."""

    item_id: int
    status: ApiStatus
    priority: int = Field(description="lower runs first")
    batch_id: int | None = Field(
        description="for a part, the multi-file job it belongs to; for a multi-file job, its "
        "own id; null for a single download"
    )
    queue_id: str
    kind: Literal["download", "multifile"]
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = Field(
        default=None, description="when it ended, however it ended"
    )
    error_type: str | None = None
    error_message: str | None = Field(default=None, description="one line")
    error_traceback: str | None = None
    source: str | None = Field(default=None, description="the URL; null for a multi-file job")
    dest: str = Field(description="the absolute destination on the workers' volume")
    download_path: str | None = None
    bytes: int = 0
    total_bytes: int = 0
    attempts: int = 0
    part_ids: list[int] | None = Field(default=None, description="a multi-file job's parts")

    @classmethod
    def from_record(cls, record: dict[str, Any], parts: list[dict[str, Any]] | None) -> Item:
        multifile = record.get("kind") == KIND_MULTIFILE
        error = record.get("error")
        done, total = record.get("bytes") or 0, record.get("total_bytes") or 0
        if parts is not None:
            done = sum(part.get("bytes") or 0 for part in parts)
            total = sum(part.get("total_bytes") or 0 for part in parts)
        return cls(
            item_id=record["id"],
            status=api_status(record),
            priority=record.get("priority", 10),
            batch_id=record["id"] if multifile else record.get("parent_id"),
            queue_id=record["queue_id"],
            kind="multifile" if multifile else "download",
            created_at=record.get("created_at"),
            updated_at=record.get("updated_at"),
            started_at=record.get("job_started"),
            completed_at=record.get("job_ended"),
            error_type=record.get("error_type"),
            error_message=_last_line(error) or record.get("error_type"),
            error_traceback=error,
            source=record.get("source"),
            dest=str(record.get("dest", "")),
            download_path=record.get("download_path"),
            bytes=done,
            total_bytes=total,
            attempts=record.get("attempts") or 0,
            part_ids=record.get("part_ids") if multifile else None,
        )


def _last_line(text: str | None) -> str | None:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


class ItemPage(BaseModel):
    items: list[Item]
    total: int = Field(description="items matching the filter, on every page")
    next_cursor: int | None = Field(description="pass as `cursor` for the next page; null: last")


class QueueCounts(BaseModel):
    queue_id: str
    pending: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    canceled: int = 0
    total: int = 0


class ProcessorStatus(BaseModel):
    is_started: bool = Field(description="at least one worker consumes this queue")
    is_processing: bool = Field(description="not paused, and a download is running")
    is_paused: bool
    workers: list[str] = Field(description="the workers consuming this queue")


class QueueStatus(BaseModel):
    queue: QueueCounts
    processor: ProcessorStatus


class Part(BaseModel):
    url: AnyHttpUrl
    path: str = Field(description="relative to `dest`")
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, description="64 hex digits")

    @field_validator("sha256")
    @classmethod
    def _sha256_digits(cls, value: str | None) -> str | None:
        return _check_sha256(value)


class EnqueueRequest(BaseModel):
    """Either `source` (one file) or `parts` (a multi-file job), never both."""

    source: AnyHttpUrl | None = Field(default=None, description="http(s) URL of one file")
    parts: list[Part] | None = Field(default=None, description="the files of a multi-file job")
    dest: str = Field(description="a directory, relative to the server's download root")
    priority: int = Field(default=10, description="lower runs first")
    access_token: str | None = Field(
        default=None, description="sent as `Authorization: Bearer`; never in any answer"
    )
    sha256: str | None = Field(default=None, description="of the one file of `source`")

    @field_validator("sha256")
    @classmethod
    def _sha256_digits(cls, value: str | None) -> str | None:
        return _check_sha256(value)

    @model_validator(mode="after")
    def _one_of_source_or_parts(self) -> EnqueueRequest:
        if (self.source is None) == (not self.parts):
            raise ValueError("give either `source` or a non-empty `parts`, not both")
        if self.parts and self.sha256 is not None:
            raise ValueError("with `parts`, give each part its own `sha256`")
        return self


def _check_sha256(value: str | None) -> str | None:
    if value is not None and not _SHA256.match(value):
        raise ValueError("sha256 must be 64 hexadecimal digits")
    return value


class EnqueueResponse(BaseModel):
    items: list[Item] = Field(description="the new item; for `parts`, the job then its parts")


class Removed(BaseModel):
    removed: int


class Health(BaseModel):
    redis: bool
    workers: int = Field(description="Celery workers that answered a ping")
    worker_names: list[str] = []


# -- helpers -----------------------------------------------------------------------------------


def confined(root: Path, dest: str, what: str = "dest") -> Path:
    """`root/dest` resolved (symlinks followed), or a 422 when it is not inside `root`."""
    try:
        if PurePosixPath(dest).is_absolute() or Path(dest).is_absolute() or dest.startswith("~"):
            raise HTTPException(
                422, f"{what} must be relative to the download root, got {dest!r}"
            )
        root = root.resolve()
        target = (root / dest).resolve()
    except (ValueError, OSError) as exc:  # a NUL byte, a symlink loop, a name too long
        raise HTTPException(422, f"{what} {dest!r} is not a usable path: {exc}") from exc
    if target != root and root not in target.parents:
        raise HTTPException(422, f"{what} {dest!r} leaves the download root")
    return target


class _EventStream(StreamingResponse):
    """A streaming response that always closes its generator, however the client leaves."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


# -- the app -----------------------------------------------------------------------------------


def create_api() -> FastAPI:
    """The FastAPI app, configured from the `DOWNLOADER_*` settings."""
    return build_api()


def build_api(*, keep_alive: float = KEEP_ALIVE_SECONDS) -> FastAPI:
    """`create_api()` with another keep-alive interval for the event stream (seconds)."""
    settings = Settings()
    services: dict[str, DownloadQueueService] = {}
    services_lock = threading.Lock()
    api_key = settings.api_key.get_secret_value() if settings.api_key else ""

    def service(queue_id: str) -> DownloadQueueService:
        """The enqueue-only service of `queue_id`, made on first use."""
        with services_lock:
            if queue_id not in services:
                services[queue_id] = DownloadQueueService(queue_id=queue_id, start_worker=False)
            return services[queue_id]

    def reader() -> DownloadQueueService:
        """The service whose store and Celery app every read uses, whatever the queue."""
        return service(settings.queue_id)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        with services_lock:
            opened = list(services.values())
            services.clear()
        for each in opened:
            await run_in_threadpool(each.close)

    def require_key(
        x_api_key: Annotated[str | None, Security(_key_header)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    ) -> None:
        if not api_key:
            return
        given = x_api_key if x_api_key is not None else bearer.credentials if bearer else None
        if given is None or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(
                401,
                "a valid API key is needed: `X-API-Key: <key>` or `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )

    app = FastAPI(
        title="downloader",
        description=(
            "A distributed download queue on Celery and Redis. Statuses: `pending`, "
            "`in_progress`, `completed`, `failed`, `canceled`. With `DOWNLOADER_API_KEY` set, "
            "every route but `/health` needs `X-API-Key: <key>` or `Authorization: Bearer <key>`."
        ),
        lifespan=lifespan,
    )
    v1 = "/api/v1/queue/{queue_id}"
    secured = [Depends(require_key)]

    def records(queue_id: str) -> list[dict[str, Any]]:
        return reader().app.store.queue_records(queue_id)

    def to_item(record: dict[str, Any]) -> Item:
        parts = None
        if record.get("kind") == KIND_MULTIFILE:
            parts = reader().app.store.records(record.get("part_ids") or [])
        return Item.from_record(record, parts)

    def record_or_404(queue_id: str, item_id: int) -> dict[str, Any]:
        record = reader().app.store.record(item_id)
        if record is None or record.get("queue_id") != queue_id:
            raise HTTPException(404, f"no item {item_id} in queue {queue_id!r}")
        return record

    def processor_status(queue_id: str, in_progress: int) -> ProcessorStatus:
        celery = reader().app
        workers = processor.consuming_workers(celery, queue_id, timeout=0.5)
        paused = processor.is_paused(celery, queue_id)
        return ProcessorStatus(
            is_started=bool(workers),
            is_processing=not paused and in_progress > 0,
            is_paused=paused,
            workers=workers,
        )

    def redis_url() -> str:
        return settings.redis_url or reader().app.redis_url  # the embedded server otherwise

    # -- routes ----------------------------------------------------------------------------------

    @app.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "Redis or every worker is down"}},
        tags=["health"],
    )
    def health() -> JSONResponse:
        """200 when Redis and at least one Celery worker answer, else 503. Needs no key."""
        redis_ok, names = False, []
        try:
            probe = redis.Redis.from_url(
                redis_url(),
                socket_connect_timeout=1,
                socket_timeout=1,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                redis_ok = bool(probe.ping())
            finally:
                probe.close()
        except (redis.RedisError, OSError, TimeoutError, RuntimeError):
            redis_ok = False
        if redis_ok:
            names = processor.answering_workers(reader().app, timeout=1.0)
        body = Health(redis=redis_ok, workers=len(names), worker_names=names)
        return JSONResponse(body.model_dump(), status_code=200 if redis_ok and names else 503)

    @app.post(
        f"{v1}/enqueue", response_model=EnqueueResponse, dependencies=secured, tags=["queue"]
    )
    def enqueue(queue_id: QueueId, body: EnqueueRequest) -> EnqueueResponse:
        """Queue one URL (`source`) or a multi-file job (`parts`) under `dest`."""
        root = settings.download_root
        dest = confined(root, body.dest)
        queue = service(queue_id)
        try:
            if body.source is not None:
                dest.mkdir(parents=True, exist_ok=True)  # an API `dest` is always a directory
                job = queue.download(
                    str(body.source),
                    dest,
                    priority=body.priority,
                    access_token=body.access_token,
                    sha256=body.sha256,
                    untrusted=True,
                )
                ids = [job.id]
            else:
                parts = [RemoteModelFile(**part.model_dump()) for part in body.parts or []]
                for part in parts:  # no part may leave the root through a symlink either
                    confined(root, str(Path(body.dest) / part.path), what="part path")
                multi = queue.multifile_download(
                    parts,
                    dest,
                    access_token=body.access_token,
                    priority=body.priority,
                    untrusted=True,
                )
                ids = [multi.id, *(part.id for part in multi.download_parts)]
        except (ValueError, OSError) as exc:
            raise HTTPException(422, str(exc)) from exc
        return EnqueueResponse(items=[to_item(r) for r in reader().app.store.records(ids)])

    @app.get(f"{v1}/status", response_model=QueueStatus, dependencies=secured, tags=["queue"])
    def status(queue_id: QueueId) -> QueueStatus:
        """How many items are in each state, and whether workers take this queue's jobs."""
        counts = QueueCounts(queue_id=queue_id)
        for record in records(queue_id):
            word = api_status(record)
            setattr(counts, word, getattr(counts, word) + 1)
            counts.total += 1
        return QueueStatus(queue=counts, processor=processor_status(queue_id, counts.in_progress))

    @app.get(f"{v1}/list", response_model=ItemPage, dependencies=secured, tags=["queue"])
    def list_items(
        queue_id: QueueId,
        status: Annotated[ApiStatus | None, Query(description="only items in this state")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0, description="items to skip")] = 0,
        cursor: Annotated[
            int | None, Query(description="`next_cursor` of the previous page")
        ] = None,
    ) -> ItemPage:
        """The queue's items, oldest first. Page with `cursor` (stable while items come and
        go) or with `offset`."""
        matching = [r for r in records(queue_id) if status is None or api_status(r) == status]
        after = [r for r in matching if cursor is None or r["id"] > cursor]
        page = after[offset : offset + limit]
        more = len(after) > offset + limit
        return ItemPage(
            items=[to_item(r) for r in page],
            total=len(matching),
            next_cursor=page[-1]["id"] if page and more else None,
        )

    @app.get(f"{v1}/current", response_model=Item | None, dependencies=secured, tags=["queue"])
    def current(queue_id: QueueId) -> Item | None:
        """The running item that started first, or null."""
        running = [r for r in records(queue_id) if api_status(r) == "in_progress"]
        if not running:
            return None
        return to_item(min(running, key=lambda r: (r.get("job_started") or "~", r["id"])))

    @app.get(f"{v1}/i/{{item_id}}", response_model=Item, dependencies=secured, tags=["items"])
    def get_item(queue_id: QueueId, item_id: int) -> Item:
        return to_item(record_or_404(queue_id, item_id))

    @app.post(
        f"{v1}/i/{{item_id}}/cancel", response_model=Item, dependencies=secured, tags=["items"]
    )
    def cancel_item(queue_id: QueueId, item_id: int) -> Item:
        """Cancel an item (a multi-file job: all its parts). A waiting item is `canceled` at
        once; a running one stops within about a second. A finished item stays as it is."""
        record = record_or_404(queue_id, item_id)
        if api_status(record) in UNFINISHED:
            queue = service(queue_id)
            try:
                queue.cancel_job(queue.id_to_job(item_id))
            except UnknownJobIDException as exc:
                raise HTTPException(404, str(exc)) from exc
        return to_item(record_or_404(queue_id, item_id))

    @app.delete(f"{v1}/clear", response_model=Removed, dependencies=secured, tags=["queue"])
    def clear(queue_id: QueueId) -> Removed:
        """Cancel and remove every unfinished item; running ones stop within about a second."""
        queue = service(queue_id)
        unfinished = [r for r in records(queue_id) if api_status(r) in UNFINISHED]
        for record in unfinished:
            with contextlib.suppress(UnknownJobIDException):  # removed meanwhile
                queue.cancel_job(queue.id_to_job(record["id"]))
        queue.app.store.remove(queue_id, [r["id"] for r in unfinished])
        return Removed(removed=len(unfinished))

    @app.delete(f"{v1}/prune", response_model=Removed, dependencies=secured, tags=["queue"])
    def prune(queue_id: QueueId) -> Removed:
        """Remove finished items. A finished part of a multi-file job that still runs stays
        until its job ends."""
        every = records(queue_id)
        unfinished_parents = {
            r["id"]
            for r in every
            if r.get("kind") == KIND_MULTIFILE and api_status(r) in UNFINISHED
        }
        finished = [
            r["id"]
            for r in every
            if api_status(r) in FINISHED and r.get("parent_id") not in unfinished_parents
        ]
        reader().app.store.remove(queue_id, finished)
        return Removed(removed=len(finished))

    @app.post(
        f"{v1}/processor/pause",
        response_model=ProcessorStatus,
        dependencies=secured,
        tags=["processor"],
    )
    def pause(queue_id: QueueId) -> ProcessorStatus:
        """Workers stop taking this queue's jobs (running downloads go on); workers that start
        later leave it alone too, until it is resumed."""
        processor.pause(reader().app, queue_id)
        return status(queue_id).processor

    @app.post(
        f"{v1}/processor/resume",
        response_model=ProcessorStatus,
        dependencies=secured,
        tags=["processor"],
    )
    def resume(queue_id: QueueId) -> ProcessorStatus:
        """The workers started with this queue take its jobs again."""
        processor.resume(reader().app, queue_id)
        return status(queue_id).processor

    @app.get(
        f"{v1}/events",
        dependencies=secured,
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
        tags=["events"],
    )
    async def events(queue_id: QueueId, request: Request) -> StreamingResponse:
        """The queue's events as Server-Sent Events (`curl -N .../events`): `event: <name>`
        and `data: <JSON payload>` per event, `: subscribed` once listening, and a
        `: keep-alive` comment after a quiet spell."""
        url = await run_in_threadpool(redis_url)
        channel = Keys(settings.namespace).events(queue_id)

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

    return app


async def _confirmed(pubsub: aredis.client.PubSub, timeout: float = 10.0) -> None:
    """Wait for Redis to confirm the subscription, so no later event can be missed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await pubsub.get_message(timeout=0.5)
        if message and message["type"] == "subscribe":
            return
    raise TimeoutError("Redis did not confirm the event subscription")
