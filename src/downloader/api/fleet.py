"""What the page's fleet panels read: the queues that hold jobs, and the live workers with the
jobs they run.

Both answers cost what they show, whatever the size of the queues: a page of queue names is
one `SSCAN` of the set of queue names plus one pipeline of index sizes for that page; the
workers are the heartbeat index, one `MGET` of their heartbeats and one pipeline over the set
of claimed jobs (`<ns>:running`): O(workers + running). A running job names the worker that
claimed it in its record (`worker`: the Celery node name, then `#` and the attempt), which is
the name the worker's heartbeat carries.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from downloader.api import queries
from downloader.api.context import ApiContext
from downloader.api.schemas import QueueCounts

MAX_QUEUES_PAGE = 1000
"""Queue names one page of `/api/v1/queues` asks Redis for."""


class QueueSummary(QueueCounts):
    is_paused: bool = Field(
        description="workers do not take this queue's jobs (`paused` counts its paused jobs)"
    )


class QueueList(BaseModel):
    default_queue: str = Field(description="the queue the API's settings name")
    queues: list[QueueSummary] = Field(description="this page's queues, by name")
    next_cursor: int | None = Field(description="pass as `cursor` for the next page; null: last")


class RunningJob(BaseModel):
    item_id: int
    queue_id: str
    source: str | None = None
    download_path: str | None = None
    bytes: int = 0
    total_bytes: int = 0


class Worker(BaseModel):
    name: str
    queues: list[str] = Field(description="the queues it was started with")
    jobs: int = Field(description="downloads it said it runs at its last heartbeat")
    seen: datetime = Field(description="its last heartbeat")
    running: list[RunningJob] = Field(description="the jobs whose record names it")


class WorkerList(BaseModel):
    workers: list[Worker]


def queue_page(ctx: ApiContext, cursor: int, limit: int) -> QueueList:
    """One `SSCAN` step of the queue names (Redis answers about `limit` of them, fewer or a
    few more, and all of them at once while the set is small), with their counts and pause
    flags in one pipeline. A name can come twice across pages if the set is resized while a
    caller pages; every queue that holds jobs throughout is listed at least once."""
    next_cursor, page = ctx.admin.queue_page(cursor, limit)
    queues = [
        QueueSummary(**queries.to_counts(name, counts).model_dump(), is_paused=paused)
        for name, counts, paused in page
    ]
    return QueueList(
        default_queue=ctx.settings.queue_id, queues=queues, next_cursor=next_cursor or None
    )


def workers(ctx: ApiContext) -> WorkerList:
    """The live workers, each with the claimed jobs whose record names it."""
    running: dict[str, list[RunningJob]] = {}
    for record in ctx.admin.claimed():
        if record.worker is None:
            continue  # not claimed, or removed meanwhile
        running.setdefault(record.worker.partition("#")[0], []).append(
            RunningJob(
                item_id=record.id,
                queue_id=record.queue_id,
                source=record.source,
                download_path=None if record.download_path is None else str(record.download_path),
                bytes=record.bytes,
                total_bytes=record.total_bytes,
            )
        )
    found = [
        Worker(
            name=name,
            queues=list(info.get("queues", ())),
            jobs=int(info.get("jobs", 0)),
            seen=datetime.fromtimestamp(float(info.get("seen", 0)), UTC),
            running=running.get(name, []),
        )
        for name, info in ctx.admin.worker_beats()
    ]
    return WorkerList(workers=found)
