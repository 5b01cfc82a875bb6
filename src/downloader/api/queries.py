"""How the API reads the queues and shapes their records into answers.

The one place that knows how a route reads the queues, through the service's admin interface
(`client.admin.QueueAdmin`), so that every read costs O(page) or O(1) whatever the queue's
length: counts come from the store's per-status indexes, pages are ranges of an index after a
cursor, the current item comes from the running index, and worker presence from the
heartbeats workers keep in Redis (no Celery broadcast). The API's status words (InvokeAI's
job-queue words) map onto the store's statuses; `failed` is the store's `error` without its
`cancelled` members.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from fastapi import HTTPException

from downloader.api.context import ApiContext
from downloader.api.schemas import ApiStatus, Item, ItemPage, ProcessorStatus, QueueCounts
from downloader.client.admin import FAILED
from downloader.jobs.models import DownloadJobStatus
from downloader.jobs.record import JobRecord
from downloader.store.keys import CANCELLED

INDEX: dict[ApiStatus, str] = {
    "pending": DownloadJobStatus.WAITING.value,
    "in_progress": DownloadJobStatus.RUNNING.value,
    "paused": DownloadJobStatus.PAUSED.value,
    "completed": DownloadJobStatus.COMPLETED.value,
    "failed": FAILED,
    "canceled": CANCELLED,
}
"""The status the store pages by behind each API status."""


def to_item(record: JobRecord) -> Item:
    return Item.from_record(record)


def items(ctx: ApiContext, ids: Iterable[int]) -> list[Item]:
    """The items of these ids that still exist, in order: one round trip per thousand."""
    return [to_item(record) for record in ctx.admin.records(ids)]


def record_or_404(ctx: ApiContext, queue_id: str, item_id: int) -> JobRecord:
    record = ctx.admin.record(item_id)
    if record is None or record.queue_id != queue_id:
        raise HTTPException(404, f"no item {item_id} in queue {queue_id!r}")
    return record


def counts(ctx: ApiContext, queue_id: str) -> QueueCounts:
    """How many items of the queue are in each state: O(1), the indexes' sizes."""
    return to_counts(queue_id, ctx.admin.counts(queue_id))


def to_counts(queue_id: str, found: dict[str, int]) -> QueueCounts:
    """The API's counts from the sizes of the store's indexes (`QueueAdmin.counts`)."""
    sized = {word: found[index] for word, index in INDEX.items() if index != FAILED}
    sized["failed"] = found[DownloadJobStatus.ERROR.value] - found[CANCELLED]
    return QueueCounts(queue_id=queue_id, total=found["total"], **sized)


def processor_status(ctx: ApiContext, queue_id: str, in_progress: int) -> ProcessorStatus:
    """Whether live workers take the queue's jobs, from their heartbeats: O(workers)."""
    paused = ctx.admin.is_paused(queue_id)
    workers = [] if paused else ctx.admin.live_workers(queue_id)
    return ProcessorStatus(
        is_started=bool(workers),
        is_processing=not paused and in_progress > 0,
        is_paused=paused,
        workers=workers,
    )


def page(
    ctx: ApiContext,
    queue_id: str,
    status: ApiStatus | None,
    limit: int,
    offset: int,
    cursor: int | None,
) -> ItemPage:
    """Items oldest first, after `cursor` (an item id) and `offset`: O(offset + page)."""
    index = None if status is None else INDEX[status]
    ids = ctx.admin.page_ids(queue_id, index, after=cursor, offset=offset, count=limit + 1)
    chosen = ids[:limit]
    total = counts(ctx, queue_id)
    return ItemPage(
        items=items(ctx, chosen),
        total=total.total if status is None else getattr(total, status),
        next_cursor=chosen[-1] if len(ids) > limit else None,
    )


def current(ctx: ApiContext, queue_id: str) -> Item | None:
    """The running item that started first: O(running), from the running index."""
    running = ctx.admin.running(queue_id)
    if not running:
        return None
    return to_item(min(running, key=_started_first))


def _started_first(record: JobRecord) -> tuple[datetime, int]:
    """Started first, then lowest id; a record not yet marked started sorts last."""
    return (record.job_started or datetime.max, record.id)
