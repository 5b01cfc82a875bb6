"""How the API reads the job store and shapes its records into answers.

The one place that knows how a route reads the store: routes stay thin, and a faster way to
read (an index, a counter) changes this module only.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from downloader import processor
from downloader.api.context import ApiContext
from downloader.api.schemas import (
    FINISHED,
    UNFINISHED,
    ApiStatus,
    Item,
    ItemPage,
    ProcessorStatus,
    QueueCounts,
    api_status,
)
from downloader.store import KIND_MULTIFILE


def records(ctx: ApiContext, queue_id: str) -> list[dict[str, Any]]:
    return ctx.store.queue_records(queue_id)


def to_item(ctx: ApiContext, record: dict[str, Any]) -> Item:
    """An item; a multi-file job's bytes are its parts' sums."""
    parts = None
    if record.get("kind") == KIND_MULTIFILE:
        parts = ctx.store.records(record.get("part_ids") or [])
    return Item.from_record(record, parts)


def items(ctx: ApiContext, ids: list[int]) -> list[Item]:
    return [to_item(ctx, record) for record in ctx.store.records(ids)]


def record_or_404(ctx: ApiContext, queue_id: str, item_id: int) -> dict[str, Any]:
    record = ctx.store.record(item_id)
    if record is None or record.get("queue_id") != queue_id:
        raise HTTPException(404, f"no item {item_id} in queue {queue_id!r}")
    return record


def counts(ctx: ApiContext, queue_id: str) -> QueueCounts:
    """How many items of the queue are in each state."""
    found = QueueCounts(queue_id=queue_id)
    for record in records(ctx, queue_id):
        word = api_status(record)
        setattr(found, word, getattr(found, word) + 1)
        found.total += 1
    return found


def processor_status(ctx: ApiContext, queue_id: str, in_progress: int) -> ProcessorStatus:
    celery = ctx.reader().app
    workers = processor.consuming_workers(celery, queue_id, timeout=0.5)
    paused = processor.is_paused(celery, queue_id)
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
    """Items oldest first, after `cursor` (an item id) and `offset`."""
    matching = [r for r in records(ctx, queue_id) if status is None or api_status(r) == status]
    after = [r for r in matching if cursor is None or r["id"] > cursor]
    chosen = after[offset : offset + limit]
    more = len(after) > offset + limit
    return ItemPage(
        items=[to_item(ctx, r) for r in chosen],
        total=len(matching),
        next_cursor=chosen[-1]["id"] if chosen and more else None,
    )


def current(ctx: ApiContext, queue_id: str) -> Item | None:
    """The running item that started first."""
    running = [r for r in records(ctx, queue_id) if api_status(r) == "in_progress"]
    if not running:
        return None
    return to_item(ctx, min(running, key=lambda r: (r.get("job_started") or "~", r["id"])))


def unfinished_ids(ctx: ApiContext, queue_id: str) -> list[int]:
    return [r["id"] for r in records(ctx, queue_id) if api_status(r) in UNFINISHED]


def prunable_ids(ctx: ApiContext, queue_id: str) -> list[int]:
    """Finished items, but not the finished parts of a multi-file job that still runs."""
    every = records(ctx, queue_id)
    unfinished_parents = {
        r["id"] for r in every if r.get("kind") == KIND_MULTIFILE and api_status(r) in UNFINISHED
    }
    return [
        r["id"]
        for r in every
        if api_status(r) in FINISHED and r.get("parent_id") not in unfinished_parents
    ]
