"""What the REST API accepts and answers, as pydantic models, apart from the routes.

Callers are untrusted: every request model validates its input completely (URLs, digests,
one of `source` or `parts`), and no answer model has a field that could carry a token.
Statuses use the job-queue words: pending, in_progress, completed, failed, canceled.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from pydantic import AnyHttpUrl, BaseModel, Field, field_validator, model_validator

from downloader.models import DownloadJobStatus
from downloader.store import KIND_MULTIFILE

ApiStatus = Literal["pending", "in_progress", "completed", "failed", "canceled"]
UNFINISHED: tuple[ApiStatus, ...] = ("pending", "in_progress")
FINISHED: tuple[ApiStatus, ...] = ("completed", "failed", "canceled")
QUEUE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

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
