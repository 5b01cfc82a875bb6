"""What the REST API accepts and answers, as pydantic models, apart from the routes.

Callers are untrusted: every request model validates its input completely (URLs, digests,
one of `source` or `parts`), and no answer model has a field that could carry a token.
Statuses use the job-queue words: pending, in_progress, paused, completed, failed, canceled.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Body
from fastapi import Path as PathParam
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
)

from downloader.jobs.limits import Rate
from downloader.jobs.models import DownloadJobStatus
from downloader.jobs.queues import MAX_QUEUE_ID, QUEUE_ID_PATTERN, QUEUE_ID_RULE, is_queue_id
from downloader.jobs.record import JobRecord

ApiStatus = Literal["pending", "in_progress", "paused", "completed", "failed", "canceled"]
UNFINISHED: tuple[ApiStatus, ...] = ("pending", "in_progress", "paused")
FINISHED: tuple[ApiStatus, ...] = ("completed", "failed", "canceled")
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
RELATIVE_PATTERN = r"^([^/~\x00][^\x00]*)?$"
"""Relative and NUL-free, as `paths.confined` wants it (which also keeps `..` and symlinks
inside the root, what no pattern can tell): in the OpenAPI document, and checked by
`_relative` with a message that says so."""
_RELATIVE = re.compile(RELATIVE_PATTERN)
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


def _queue_id(text: str) -> str:
    """A path's queue id, or a refusal that says what one may be without quoting it."""
    if not is_queue_id(text):
        raise ValueError(f"a queue id is {QUEUE_ID_RULE}")
    return text


QueueId = Annotated[
    str,
    AfterValidator(_queue_id),  # its message says what a queue id may be
    PathParam(
        description=QUEUE_ID_RULE,
        json_schema_extra={"pattern": QUEUE_ID_PATTERN, "minLength": 1, "maxLength": MAX_QUEUE_ID},
    ),
]
ItemId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="an item's `item_id`")]
Priority = Annotated[int, Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="lower runs first")]


def _in_utc(when: datetime | None) -> datetime | None:
    """The store's times are UTC without a zone; an answer says so (RFC 3339 wants it)."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


UtcTime = Annotated[datetime | None, AfterValidator(_in_utc)]


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
    created_at: UtcTime = None
    updated_at: UtcTime = None
    started_at: UtcTime = None
    completed_at: UtcTime = Field(default=None, description="when it ended, however it ended")
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
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN, description="64 hexadecimal digits")]


def _relative(text: str) -> str:
    """A path relative to the download root (`dest`) or to `dest` (a part's), or a refusal
    that says what it must be without quoting it."""
    if not _RELATIVE.match(text):
        raise ValueError(
            "must be relative (to the download root; a part's to `dest`): not absolute, "
            "no `~`, no NUL"
        )
    return text


Relative = Annotated[
    str, AfterValidator(_relative), WithJsonSchema({"type": "string", "pattern": RELATIVE_PATTERN})
]
PartPath = Annotated[
    str,
    Field(min_length=1),
    AfterValidator(_relative),
    WithJsonSchema({"type": "string", "pattern": RELATIVE_PATTERN, "minLength": 1}),
]
Dest = Annotated[
    Relative,
    Field(
        description="a directory, relative to the server's download root (not absolute, "
        "not `~`, no NUL byte, and not leaving the root through `..` or a symlink)",
    ),
]
JobRate = Annotated[
    Rate | None,
    Field(
        description="the job's own bytes per second (or `500K`, `20M`, `100MiB`: powers of "
        "1024), within the fleet's limits",
    ),
]
PartRate = Annotated[
    Rate | None,
    Field(
        description="each file's own bytes per second (or `500K`, `20M`, `100MiB`: powers "
        "of 1024), within the fleet's limits",
    ),
]
AccessToken = Annotated[
    str | None, Field(description="sent as `Authorization: Bearer`; never in any answer")
]


class _Strict(BaseModel):
    """A request model: a field it does not know is refused, never silently dropped (a
    misspelt `sha256` would otherwise queue an unchecked file)."""

    model_config = ConfigDict(extra="forbid")


class PriorityChange(_Strict):
    """`PATCH .../i/{item_id}`: the item's new priority."""

    priority: Priority


class Part(_Strict):
    url: AnyHttpUrl
    path: PartPath = Field(
        description="relative to `dest`, staying inside it (no `..`), not one of the "
        "downloader's own partial-file names",
    )
    size: int | None = Field(default=None, ge=0, le=MAX_SIZE, description="bytes, if known")
    sha256: Sha256 | None = None
    mirrors: MirrorUrls = []


class BatchItem(_Strict):
    """One URL of a batch: the fields of the single form, each item with its own `dest`."""

    source: AnyHttpUrl = Field(description="http(s) URL of one file")
    dest: Dest
    priority: Priority = 10
    access_token: AccessToken = None
    sha256: Sha256 | None = Field(default=None, description="of the file")
    mirrors: MirrorUrls = []
    bandwidth: JobRate = None


class SourceForm(BatchItem):
    """One file: `source` under `dest`."""


class PartsForm(_Strict):
    """A multi-file job: its `parts`, each under `dest`; the answer lists the job, then its
    parts."""

    parts: list[Part] = Field(min_length=1, description="the files of a multi-file job")
    dest: Dest
    priority: Priority = 10
    access_token: AccessToken = None
    bandwidth: PartRate = None


class ItemsForm(_Strict):
    """Many single files at once; all or none are queued."""

    items: list[BatchItem] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"up to {MAX_BATCH} single files, queued in one go; each has its own "
        "`dest`, `priority`, `access_token`, `sha256`, `mirrors` and `bandwidth`, so no other "
        "field goes with `items`",
    )


class RepoForm(_Strict):
    """A Hugging Face repo as one multi-file job."""

    repo: str = Field(
        min_length=1,
        max_length=300,
        description="a Hugging Face repo, `owner/name`; resolved on the hub of the server's "
        "settings and pinned to the commit `revision` names now",
    )
    dest: Dest
    priority: Priority = 10
    access_token: str | None = Field(
        default=None,
        description="the hub token (the server's own, if it has one, when omitted); never "
        "in any answer",
    )
    revision: str = Field(default="main", description="a branch, tag or commit")
    repo_type: Literal["model", "dataset", "space"] = "model"
    allow_patterns: list[str] | None = Field(
        default=None, description="only files matching one of these globs"
    )
    ignore_patterns: list[str] | None = Field(
        default=None, description="no file matching one of these globs"
    )
    bandwidth: PartRate = None


_FORMS = ("source", "parts", "items", "repo")
ONE_FORM = "give exactly one of `source`, `parts`, `items` or `repo`"


def _form(body: object) -> str | None:
    """The form of an enqueue body: the one of `_FORMS` it names, or None (none or several,
    which the union refuses with `ONE_FORM`)."""
    if isinstance(body, BaseModel):
        body = body.model_fields_set
    named = [name for name in _FORMS if isinstance(body, dict | set) and name in body]
    return named[0] if len(named) == 1 else None


EnqueueRequest = Annotated[
    Annotated[SourceForm, Tag("source")]
    | Annotated[PartsForm, Tag("parts")]
    | Annotated[ItemsForm, Tag("items")]
    | Annotated[RepoForm, Tag("repo")],
    Discriminator(_form, custom_error_type="one_form", custom_error_message=ONE_FORM),
    Body(
        description="exactly one of `source` (one file), `parts` (a multi-file job), "
        "`items` (many files at once) or `repo` (a Hugging Face repo); a field the form does "
        "not have is refused"
    ),
]
"""The enqueue body: one of four forms, told apart by the one form field it has (`oneOf` in
the OpenAPI document, each form closed to other fields)."""


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
