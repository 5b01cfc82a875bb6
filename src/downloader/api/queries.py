"""How the API reads the job store and shapes its records into answers.

The one place that knows how a route reads the store, so that every read costs O(page) or
O(1) whatever the queue's length: counts come from the store's per-status indexes, pages
are ranges of an index after a cursor, the current item comes from the running index, and
worker presence from the heartbeats workers keep in Redis (no Celery broadcast). The API's
status words (the job-queue seed's) map onto the store's statuses; `failed` is the store's
`error` without its `cancelled` members.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from fastapi import HTTPException

from downloader.api.context import ApiContext
from downloader.api.schemas import (
    UNFINISHED,
    ApiStatus,
    Item,
    ItemPage,
    ProcessorStatus,
    QueueCounts,
)
from downloader.celery_app import control
from downloader.jobs.models import DownloadJobStatus
from downloader.jobs.record import JobRecord
from downloader.store.base import BATCH
from downloader.store.jobs import JobStore
from downloader.store.keys import CANCELLED

INDEX: dict[ApiStatus, str] = {
    "pending": DownloadJobStatus.WAITING.value,
    "in_progress": DownloadJobStatus.RUNNING.value,
    "completed": DownloadJobStatus.COMPLETED.value,
    "failed": DownloadJobStatus.ERROR.value,  # with the cancelled ones: see `_failed_ids`
    "canceled": CANCELLED,
}
"""The store's index behind each API status."""


def to_item(record: JobRecord) -> Item:
    return Item.from_record(record)


def items(ctx: ApiContext, ids: Iterable[int]) -> list[Item]:
    """The items of these ids that still exist, in order: one round trip per `BATCH`."""
    return [to_item(record) for record in ctx.store.records(ids)]


def record_or_404(ctx: ApiContext, queue_id: str, item_id: int) -> JobRecord:
    record = ctx.store.record(item_id)
    if record is None or record.queue_id != queue_id:
        raise HTTPException(404, f"no item {item_id} in queue {queue_id!r}")
    return record


def counts(ctx: ApiContext, queue_id: str) -> QueueCounts:
    """How many items of the queue are in each state: O(1), the indexes' sizes."""
    return to_counts(queue_id, ctx.store.counts(queue_id))


def to_counts(queue_id: str, found: dict[str, int]) -> QueueCounts:
    """The API's counts from the sizes of the store's indexes (`JobStore.counts`)."""
    sized = {word: found[index] for word, index in INDEX.items()}
    sized["failed"] -= found[CANCELLED]
    return QueueCounts(queue_id=queue_id, total=found["total"], **sized)


def processor_status(ctx: ApiContext, queue_id: str, in_progress: int) -> ProcessorStatus:
    """Whether live workers take the queue's jobs, from their heartbeats: O(workers)."""
    app = ctx.service.app
    paused = control.is_paused(app, queue_id)
    workers = [] if paused else ctx.store.live_workers(app.keys.celery_queue(queue_id))
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
    store = ctx.store
    low = "-inf" if cursor is None else f"({cursor}"
    if status == "failed":
        ids = _failed_ids(store, queue_id, low, offset, limit + 1)
    else:
        key = store.keys.queue_jobs(queue_id)
        if status is not None:
            key = store.keys.queue_status(queue_id, INDEX[status])
        ids = [int(x) for x in store.redis.zrangebyscore(key, low, "+inf", offset, limit + 1)]
    chosen = ids[:limit]
    total = counts(ctx, queue_id)
    return ItemPage(
        items=items(ctx, chosen),
        total=total.total if status is None else getattr(total, status),
        next_cursor=chosen[-1] if len(ids) > limit else None,
    )


def _failed_ids(store: JobStore, queue_id: str, low: str, offset: int, count: int) -> list[int]:
    """Up to `count` ids of the `error` index above `low` that are not cancelled, skipping
    `offset` of them. The store keeps cancelled jobs in `error` too (and apart), so this costs
    the page plus the cancelled ids it steps over, a batch per round trip."""
    errors = store.keys.queue_status(queue_id, DownloadJobStatus.ERROR.value)
    cancelled = store.keys.queue_status(queue_id, CANCELLED)
    found: list[int] = []
    while len(found) < offset + count:
        chunk = store.redis.zrangebyscore(errors, low, "+inf", 0, BATCH)
        if not chunk:
            break
        scores = store.redis.zmscore(cancelled, chunk)
        found.extend(int(x) for x, score in zip(chunk, scores, strict=True) if score is None)
        low = f"({int(chunk[-1])}"
    return found[offset : offset + count]


def current(ctx: ApiContext, queue_id: str) -> Item | None:
    """The running item that started first: O(running), from the running index."""
    running = ctx.store.running(queue_id)
    if not running:
        return None
    return to_item(min(running, key=_started_first))


def _started_first(record: JobRecord) -> tuple[datetime, int]:
    """Started first, then lowest id; a record not yet marked started sorts last."""
    return (record.job_started or datetime.max, record.id)


def unfinished_ids(ctx: ApiContext, queue_id: str) -> list[int]:
    """Every pending and running id, from their indexes, a batch per round trip."""
    store, found = ctx.store, []
    for status in UNFINISHED:
        key, low = store.keys.queue_status(queue_id, INDEX[status]), "-inf"
        while chunk := store.redis.zrangebyscore(key, low, "+inf", 0, BATCH):
            found.extend(int(x) for x in chunk)
            low = f"({int(chunk[-1])}"
    return found


def prunable_ids(ctx: ApiContext, queue_id: str) -> list[int]:
    """Finished items, but not the finished parts of a multi-file job that still runs: reads
    what it removes, and the status of those parts' parents."""
    store = ctx.store
    finished = [
        record
        for status in ("completed", "failed")
        for record in store.iter_records(queue_id, INDEX[status])
    ]
    parents = sorted({r.parent_id for r in finished if r.parent_id is not None})
    pipe = store.redis.pipeline(transaction=False)
    for parent_id in parents:
        pipe.hget(store.keys.job(parent_id), "status")
    ended = {DownloadJobStatus.COMPLETED.value, DownloadJobStatus.ERROR.value}
    running_parents = {
        parent_id
        for parent_id, raw in zip(parents, pipe.execute(), strict=True)
        if raw is not None and json.loads(raw) not in ended
    }
    return [r.id for r in finished if r.parent_id not in running_parents]
