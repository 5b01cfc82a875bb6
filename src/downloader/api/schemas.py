"""What the REST API accepts and answers, as pydantic models, apart from the routes.

Callers are untrusted: every request model validates its input completely (URLs, digests,
one of `source` or `parts`), and no answer model has a field that could carry a token.
Statuses use the job-queue words: pending, in_progress, paused, completed, failed, canceled.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path as PathParam
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from downloader.jobs.limits import Rate
from downloader.jobs.models import DownloadJobStatus
from downloader.jobs.queues import MAX_QUEUE_ID, QUEUE_ID_PATTERN, QUEUE_ID_RULE, check_queue_id
from downloader.jobs.record import JobRecord

ApiStatus = Literal["pending", "in_progress", "paused", "completed", "failed", "canceled"]
UNFINISHED: tuple[ApiStatus, ...] = ("pending", "in_progress", "paused")
FINISHED: tuple[ApiStatus, ...] = ("completed", "failed", "canceled")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_BATCH = 10_000
"""Items of one batch request; the body cap (`DOWNLOADER_MAX_BODY_BYTES`) may bind first."""
MAX_MIRRORS = 16
"""Mirrors of one file: each failing one costs an attempt, so a long list buys nothing."""

MAX_ID = 2**63 - 1
"""Item ids, cursors and offsets: Redis keeps them as signed 64-bit integers."""
MAX_PRIORITY = 2**31 - 1
"""Any priority from 90 on runs last and any below 10 first (README: Priorities); the
bound keeps every number a caller sends within what the store and Lua handle exactly."""
MAX_SIZE = 2**53
"""Bytes of one file (8 PiB): exact as a JSON number in every client and in Lua."""

QueueId = Annotated[
    str,
    AfterValidator(check_queue_id),  # its message says what a queue id may be
    PathParam(
        description=QUEUE_ID_RULE,
        json_schema_extra={"pattern": QUEUE_ID_PATTERN, "minLength": 1, "maxLength": MAX_QUEUE_ID},
    ),
]
ItemId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="an item's `item_id`")]
Priority = Annotated[int, Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="lower runs first")]


def api_status(record: JobRecord) -> ApiStatus:
    """The API's word for a job record's state."""
    status = record.status
    if status == DownloadJobStatus.WAITING:
        return "pending"
    if status == DownloadJobStatus.RUNNING:
        return "in_progress"
    if status == DownloadJobStatus.PAUSED:
        return "paused"
    if status == DownloadJobStatus.COMPLETED:
        return "completed"
    return "canceled" if record.cancelled else "failed"


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
    revision: str | None = Field(
        default=None, description="a hub repo's job: the commit every part comes from"
    )

    @classmethod
    def from_record(cls, record: JobRecord) -> Item:
        """The item of a record (the one place that builds one); a multi-file job's byte
        counts are its parts' sums already (the store adds every change of a part to its
        parent)."""
        multifile = record.multifile
        error = record.error
        path = record.download_path
        return cls(
            item_id=record.id,
            status=api_status(record),
            priority=record.priority,
            batch_id=record.id if multifile else record.parent_id,
            queue_id=record.queue_id,
            kind="multifile" if multifile else "download",
            created_at=record.created_at,
            updated_at=record.updated_at,
            started_at=record.job_started,
            completed_at=record.job_ended,
            error_type=record.error_type,
            error_message=_last_line(error) or record.error_type,
            error_traceback=error,
            source=record.source,
            dest=str(record.dest),
            download_path=None if path is None else str(path),
            bytes=record.bytes,
            total_bytes=record.total_bytes,
            attempts=record.attempts,
            part_ids=record.part_ids if multifile else None,
            revision=record.revision if multifile else None,
        )


def _last_line(text: str | None) -> str | None:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


class ItemPage(BaseModel):
    items: list[Item]
    total: int = Field(description="items matching the filter, on every page")
    next_cursor: int | None = Field(description="pass as `cursor` for the next page; null: last")


class PriorityChange(BaseModel):
    """`PATCH .../i/{item_id}`: the item's new priority."""

    model_config = ConfigDict(extra="forbid")

    priority: Priority


class QueueCounts(BaseModel):
    queue_id: str
    pending: int = 0
    in_progress: int = 0
    paused: int = 0
    completed: int = 0
    failed: int = 0
    canceled: int = 0
    total: int = 0


class ProcessorStatus(BaseModel):
    is_started: bool = Field(description="not paused, and a live worker was started with it")
    is_processing: bool = Field(description="not paused, and a download is running")
    is_paused: bool
    workers: list[str] = Field(
        description="live workers (by heartbeat) started with this queue; none while paused"
    )


class QueueStatus(BaseModel):
    queue: QueueCounts
    processor: ProcessorStatus


MirrorUrls = Annotated[
    list[AnyHttpUrl],
    Field(
        max_length=MAX_MIRRORS,
        description="other http(s) URLs of the same file, used only where their size, ETag "
        "or hash matches; they pass the same address checks as the source and never get "
        "the token",
    ),
]


class Part(BaseModel):
    url: AnyHttpUrl
    path: str = Field(description="relative to `dest`")
    size: int | None = Field(default=None, ge=0, le=MAX_SIZE, description="bytes, if known")
    sha256: str | None = Field(default=None, description="64 hex digits")
    mirrors: MirrorUrls = []

    @field_validator("sha256")
    @classmethod
    def _sha256_digits(cls, value: str | None) -> str | None:
        return _check_sha256(value)


class BatchItem(BaseModel):
    """One URL of a batch: the fields of the single form, each item with its own `dest`."""

    source: AnyHttpUrl = Field(description="http(s) URL of one file")
    dest: str = Field(description="a directory, relative to the server's download root")
    priority: Priority = 10
    access_token: str | None = Field(
        default=None, description="sent as `Authorization: Bearer`; never in any answer"
    )
    sha256: str | None = Field(default=None, description="of the file")
    mirrors: MirrorUrls = []
    bandwidth: Rate | None = Field(
        default=None, description="the job's own bytes per second (or `500K`, `20M`)"
    )

    @field_validator("sha256")
    @classmethod
    def _sha256_digits(cls, value: str | None) -> str | None:
        return _check_sha256(value)


_FORMS = ("source", "parts", "items", "repo")
_HUB_FIELDS = ("revision", "repo_type", "allow_patterns", "ignore_patterns")


class EnqueueRequest(BaseModel):
    """Exactly one of `source` (one file), `parts` (a multi-file job), `items` (many files at
    once) or `repo` (a Hugging Face repo, as one multi-file job)."""

    source: AnyHttpUrl | None = Field(default=None, description="http(s) URL of one file")
    parts: list[Part] | None = Field(default=None, description="the files of a multi-file job")
    items: list[BatchItem] | None = Field(
        default=None,
        max_length=MAX_BATCH,
        description=f"up to {MAX_BATCH} single files, queued in one go; each has its own "
        "`dest`, `priority`, `access_token`, `sha256`, `mirrors` and `bandwidth`, so no other "
        "field goes "
        "with `items`",
    )
    repo: str | None = Field(
        default=None,
        max_length=300,
        description="a Hugging Face repo, `owner/name`; resolved on the hub of the server's "
        "settings and pinned to the commit `revision` names now",
    )
    dest: str | None = Field(
        default=None, description="a directory, relative to the server's download root"
    )
    priority: Priority = 10
    access_token: str | None = Field(
        default=None,
        description="sent as `Authorization: Bearer` (with `repo`: the hub token; the "
        "server's own, if it has one, when omitted); never in any answer",
    )
    sha256: str | None = Field(default=None, description="of the one file of `source`")
    mirrors: MirrorUrls = []  # with `source`; parts and items have their own
    bandwidth: Rate | None = Field(
        default=None,
        description="with `source`: the job's own bytes per second (or `500K`, `20M`, "
        "`100MiB`), within the fleet's limits",
    )
    revision: str = Field(default="main", description="with `repo`: a branch, tag or commit")
    repo_type: Literal["model", "dataset", "space"] = Field(default="model")
    allow_patterns: list[str] | None = Field(
        default=None, description="with `repo`: only files matching one of these globs"
    )
    ignore_patterns: list[str] | None = Field(
        default=None, description="with `repo`: no file matching one of these globs"
    )

    @field_validator("sha256")
    @classmethod
    def _sha256_digits(cls, value: str | None) -> str | None:
        return _check_sha256(value)

    @model_validator(mode="after")
    def _one_form(self) -> EnqueueRequest:
        given = [name for name in _FORMS if getattr(self, name) not in (None, [])]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of `source`, a non-empty `parts`, a non-empty `items` or `repo`"
            )
        form, fields = given[0], self.model_fields_set
        if form == "items" and fields - {"items"}:
            raise ValueError("with `items`, every field goes into the items")
        if form != "items" and self.dest is None:
            raise ValueError(f"`dest` is required with `{form}`")
        if form != "source" and self.sha256 is not None:
            raise ValueError("`sha256` goes with `source`; give each part or item its own")
        if form != "source" and self.bandwidth is not None:
            raise ValueError("`bandwidth` goes with `source`; give each item its own")
        if form != "source" and self.mirrors:
            raise ValueError("`mirrors` goes with `source`; give each part or item its own")
        if form != "repo" and fields & set(_HUB_FIELDS):
            raise ValueError(f"{', '.join(f'`{name}`' for name in _HUB_FIELDS)} go with `repo`")
        return self


def _check_sha256(value: str | None) -> str | None:
    if value is not None and not _SHA256.match(value):
        raise ValueError("sha256 must be 64 hexadecimal digits")
    return value


class EnqueueResponse(BaseModel):
    items: list[Item] = Field(
        description="the new items in order; for `parts` and `repo`, the job then its parts"
    )


class Removed(BaseModel):
    removed: int


class Health(BaseModel):
    redis: bool
    redis_data_lost: bool = Field(
        default=False,
        description="Redis came back without the data this API saw in it (its marker is "
        "gone): every job queued before is gone; 503 for five minutes after it was noticed",
    )
    workers: int = Field(description="workers whose heartbeat in Redis is current")
    worker_names: list[str] = []
    detail: str | None = Field(default=None, description="what is wrong, and what to check")
