"""The REST API and the event stream, for services that enqueue and watch from elsewhere.

The API only enqueues and reads: workers do the downloads. Its callers are untrusted: `dest`
is confined to `DOWNLOADER_DOWNLOAD_ROOT`, their jobs may not reach private addresses (unless
`DOWNLOADER_ALLOW_PRIVATE_NETWORKS`), an API key can be required, and no answer carries a
token. Statuses use the job-queue words: pending, in_progress, completed, failed, canceled.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import redis
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AnyHttpUrl, BaseModel, Field, model_validator

from downloader import processor
from downloader.config import Settings
from downloader.events import Subscription
from downloader.models import DownloadJobStatus, RemoteModelFile
from downloader.service import DownloadQueueService, UnknownJobIDException
from downloader.store import KIND_MULTIFILE

ApiStatus = Literal["pending", "in_progress", "completed", "failed", "canceled"]
KEEP_ALIVE_SECONDS = 15.0


def api_status(record: dict[str, Any]) -> ApiStatus:
    status = DownloadJobStatus(record["status"])
    if status == DownloadJobStatus.WAITING:
        return "pending"
    if status == DownloadJobStatus.RUNNING:
        return "in_progress"
    if status == DownloadJobStatus.COMPLETED:
        return "completed"
    return "canceled" if record.get("cancelled") else "failed"


class Item(BaseModel):
    item_id: int
    status: ApiStatus
    priority: int
    batch_id: int | None = Field(
        description="the multi-file job a part belongs to; a multi-file job's own id for it"
    )
    queue_id: str
    kind: Literal["download", "multifile"]
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    source: str | None = None
    dest: str
    download_path: str | None = None
    bytes: int = 0
    total_bytes: int = 0
    attempts: int = 0
    part_ids: list[int] | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any], parts: list[dict[str, Any]] | None) -> Item:
        multifile = record.get("kind") == KIND_MULTIFILE
        error = record.get("error")
        done, total = record.get("bytes", 0), record.get("total_bytes", 0)
        if parts is not None:
            done = sum(part.get("bytes", 0) for part in parts)
            total = sum(part.get("total_bytes", 0) for part in parts)
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
            error_message=error.strip().splitlines()[-1] if error else record.get("error_type"),
            error_traceback=error,
            source=record.get("source"),
            dest=record["dest"],
            download_path=record.get("download_path"),
            bytes=done,
            total_bytes=total,
            attempts=record.get("attempts", 0),
            part_ids=record.get("part_ids") if multifile else None,
        )


class ItemPage(BaseModel):
    items: list[Item]
    total: int = Field(description="items matching the filter")
    next_cursor: int | None = Field(description="pass as `cursor` for the next page")


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
    workers: list[str]


class QueueStatus(BaseModel):
    queue: QueueCounts
    processor: ProcessorStatus


class Part(BaseModel):
    url: AnyHttpUrl
    path: str
    size: int | None = None
    sha256: str | None = None


class EnqueueRequest(BaseModel):
    source: AnyHttpUrl | None = None
    parts: list[Part] | None = None
    dest: str = Field(description="a directory, relative to the server's download root")
    priority: int = 10
    access_token: str | None = Field(default=None, description="never stored in answers")
    sha256: str | None = None

    @model_validator(mode="after")
    def _one_of_source_or_parts(self) -> EnqueueRequest:
        if (self.source is None) == (not self.parts):
            raise ValueError("give either `source` or a non-empty `parts`, not both")
        return self


class EnqueueResponse(BaseModel):
    items: list[Item]


class Removed(BaseModel):
    removed: int


class Health(BaseModel):
    redis: bool
    workers: int


def confined_dest(root: Path, dest: str) -> Path:
    """`dest` inside the download root, or a 422 that says why not."""
    if PurePosixPath(dest).is_absolute() or Path(dest).is_absolute():
        raise HTTPException(422, f"dest must be relative to the download root, got {dest!r}")
    root = root.resolve()
    target = (root / dest).resolve()
    if target != root and root not in target.parents:
        raise HTTPException(422, f"dest {dest!r} leaves the download root")
    return target


def create_api() -> FastAPI:
    """The FastAPI app, configured from the `DOWNLOADER_*` settings."""
    settings = Settings()
    services: dict[str, DownloadQueueService] = {}

    def queue(queue_id: str) -> DownloadQueueService:
        if queue_id not in services:
            services[queue_id] = DownloadQueueService(queue_id=queue_id, start_worker=False)
        return services[queue_id]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for service in services.values():
            service.close()

    def require_key(
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        if settings.api_key is None:
            return
        given = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), settings.api_key.get_secret_value().encode()):
            raise HTTPException(401, "a valid API key is needed (X-API-Key or Bearer)")

    app = FastAPI(
        title="downloader",
        description="A distributed download queue on Celery and Redis.",
        lifespan=lifespan,
    )
    v1 = "/api/v1/queue/{queue_id}"
    secured = [Depends(require_key)]

    def records(queue_id: str) -> list[dict[str, Any]]:
        return queue(queue_id).app.store.queue_records(queue_id)

    def item(service: DownloadQueueService, record: dict[str, Any]) -> Item:
        parts = None
        if record.get("kind") == KIND_MULTIFILE:
            parts = service.app.store.records(record.get("part_ids", []))
        return Item.from_record(record, parts)

    def record_or_404(queue_id: str, item_id: int) -> dict[str, Any]:
        record = queue(queue_id).app.store.record(item_id)
        if record is None or record.get("queue_id") != queue_id:
            raise HTTPException(404, f"no item {item_id} in queue {queue_id!r}")
        return record

    @app.get("/health", response_model=Health)
    def health() -> JSONResponse:
        service = queue(settings.queue_id)
        try:
            redis_ok = bool(service.app.redis.ping())
        except redis.RedisError:
            redis_ok = False
        workers = len(service.app.control.ping(timeout=1.0)) if redis_ok else 0
        body = Health(redis=redis_ok, workers=workers)
        return JSONResponse(body.model_dump(), status_code=200 if redis_ok and workers else 503)

    @app.post(f"{v1}/enqueue", response_model=EnqueueResponse, dependencies=secured)
    def enqueue(queue_id: str, body: EnqueueRequest) -> EnqueueResponse:
        service = queue(queue_id)
        dest = confined_dest(settings.download_root, body.dest)
        if body.source is not None:
            dest.mkdir(parents=True, exist_ok=True)  # an API `dest` is always a directory
            job = service.download(
                str(body.source),
                dest,
                priority=body.priority,
                access_token=body.access_token,
                sha256=body.sha256,
                untrusted=True,
            )
            ids = [job.id]
        else:
            try:
                parts = [RemoteModelFile(**part.model_dump()) for part in body.parts or []]
                multi = service.multifile_download(
                    parts,
                    dest,
                    access_token=body.access_token,
                    priority=body.priority,
                    untrusted=True,
                )
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from exc
            ids = [multi.id, *(part.id for part in multi.download_parts)]
        return EnqueueResponse(items=[item(service, r) for r in service.app.store.records(ids)])

    @app.get(f"{v1}/status", response_model=QueueStatus, dependencies=secured)
    def status(queue_id: str) -> QueueStatus:
        counts = QueueCounts(queue_id=queue_id)
        for record in records(queue_id):
            word = api_status(record)
            setattr(counts, word, getattr(counts, word) + 1)
            counts.total += 1
        app_ = queue(queue_id).app
        workers = processor.consuming_workers(app_, queue_id, timeout=0.5)
        paused = processor.is_paused(app_, queue_id)
        return QueueStatus(
            queue=counts,
            processor=ProcessorStatus(
                is_started=bool(workers),
                is_processing=not paused and counts.in_progress > 0,
                is_paused=paused,
                workers=workers,
            ),
        )

    @app.get(f"{v1}/list", response_model=ItemPage, dependencies=secured)
    def list_items(
        queue_id: str,
        status: ApiStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
        cursor: Annotated[int | None, Query(description="item_id the page starts after")] = None,
    ) -> ItemPage:
        service = queue(queue_id)
        matching = [r for r in records(queue_id) if status is None or api_status(r) == status]
        after = [r for r in matching if cursor is None or r["id"] > cursor]
        page = after[offset : offset + limit]
        more = len(after) > offset + limit
        return ItemPage(
            items=[item(service, r) for r in page],
            total=len(matching),
            next_cursor=page[-1]["id"] if page and more else None,
        )

    @app.get(f"{v1}/current", response_model=Item | None, dependencies=secured)
    def current(queue_id: str) -> Item | None:
        running = [r for r in records(queue_id) if api_status(r) == "in_progress"]
        if not running:
            return None
        first = min(running, key=lambda r: (r.get("job_started") or "", r["id"]))
        return item(queue(queue_id), first)

    @app.get(f"{v1}/i/{{item_id}}", response_model=Item, dependencies=secured)
    def get_item(queue_id: str, item_id: int) -> Item:
        return item(queue(queue_id), record_or_404(queue_id, item_id))

    @app.post(f"{v1}/i/{{item_id}}/cancel", response_model=Item, dependencies=secured)
    def cancel_item(queue_id: str, item_id: int) -> Item:
        service = queue(queue_id)
        record_or_404(queue_id, item_id)
        try:
            service.cancel_job(service.id_to_job(item_id))
        except UnknownJobIDException as exc:
            raise HTTPException(404, str(exc)) from exc
        return item(service, record_or_404(queue_id, item_id))

    @app.delete(f"{v1}/clear", response_model=Removed, dependencies=secured)
    def clear(queue_id: str) -> Removed:
        """Cancel and forget every unfinished item; running ones stop within a second."""
        service = queue(queue_id)
        unfinished = [r for r in records(queue_id) if api_status(r) in ("pending", "in_progress")]
        service.cancel_all_jobs()
        service.app.store.remove(queue_id, [r["id"] for r in unfinished])
        return Removed(removed=len(unfinished))

    @app.delete(f"{v1}/prune", response_model=Removed, dependencies=secured)
    def prune(queue_id: str) -> Removed:
        finished = [
            r["id"]
            for r in records(queue_id)
            if api_status(r) in ("completed", "failed", "canceled")
        ]
        queue(queue_id).app.store.remove(queue_id, finished)
        return Removed(removed=len(finished))

    @app.post(f"{v1}/processor/pause", response_model=ProcessorStatus, dependencies=secured)
    def pause(queue_id: str) -> ProcessorStatus:
        processor.pause(queue(queue_id).app, queue_id)
        return status(queue_id).processor

    @app.post(f"{v1}/processor/resume", response_model=ProcessorStatus, dependencies=secured)
    def resume(queue_id: str) -> ProcessorStatus:
        processor.resume(queue(queue_id).app, queue_id)
        return status(queue_id).processor

    @app.get(f"{v1}/events", dependencies=secured, response_class=StreamingResponse)
    def events(queue_id: str, request: Request) -> StreamingResponse:
        """The queue's events as Server-Sent Events: `curl -N .../events`."""
        service = queue(queue_id)
        subscription = Subscription(service.app.redis, settings.namespace, queue_id)

        def stream() -> Iterator[str]:
            quiet = 0.0
            try:
                yield ": subscribed\n\n"
                for payload in subscription:
                    if payload is None:
                        quiet += subscription.poll
                        if quiet >= KEEP_ALIVE_SECONDS:
                            quiet = 0.0
                            yield ": keep-alive\n\n"
                        continue
                    quiet = 0.0
                    yield f"event: {payload['event']}\ndata: {json.dumps(payload)}\n\n"
            finally:
                subscription.close()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app
