"""The queue and its items: enqueue, read, cancel, pause, resume, retry, reprioritise, clear
and prune.

Handlers check input and call the service or `queries`; they hold no logic of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from downloader import hub
from downloader.api import enqueueing, queries
from downloader.api.context import Ctx
from downloader.api.errors import hub_status
from downloader.api.schemas import (
    MAX_ID,
    ApiStatus,
    EnqueueRequest,
    EnqueueResponse,
    Item,
    ItemId,
    ItemPage,
    PriorityChange,
    QueueId,
    QueueStatus,
    Removed,
)
from downloader.jobs.record import JobRecord
from downloader.jobs.transitions import InvalidTransitionError

router = APIRouter(prefix="/api/v1/queue/{queue_id}")

MAX_PAGE = 10_000
"""Items of one page of `list`: a job queue's callers ask for 1,000 and more to get every job
at once. A page costs O(page) whatever the queue's length (a range of an index, then the
records in pipelined batches of a thousand); 10,000 items are about 10 MB of JSON."""


@router.post(
    "/enqueue",
    response_model=EnqueueResponse,
    tags=["queue"],
    responses={
        403: {"description": "`repo`: the hub says the repo is gated"},
        404: {"description": "`repo`: no such repo (or a private one), revision or file"},
        502: {"description": "`repo`: the hub could not answer"},
        503: {"description": "too few Redis replicas confirmed the jobs: none was queued"},
    },
)
def enqueue(ctx: Ctx, queue_id: QueueId, body: EnqueueRequest) -> EnqueueResponse:
    """Queue one URL (`source`), a multi-file job (`parts`), many URLs at once (`items`) or
    a Hugging Face repo (`repo`), under `dest`."""
    try:
        items = enqueueing.enqueue(ctx, queue_id, body)
    except hub.HubError as exc:  # first: the hub's refusals are OSErrors, as huggingface_hub's
        raise HTTPException(hub_status(exc), str(exc)) from exc
    except (ValueError, OSError) as exc:
        raise HTTPException(422, str(exc)) from exc
    return EnqueueResponse(items=items)


@router.get("/status", response_model=QueueStatus, tags=["queue"])
def status(ctx: Ctx, queue_id: QueueId) -> QueueStatus:
    """How many items are in each state, and whether workers take this queue's jobs."""
    counts = queries.counts(ctx, queue_id)
    return QueueStatus(
        queue=counts, processor=queries.processor_status(ctx, queue_id, counts.in_progress)
    )


@router.get("/list", response_model=ItemPage, tags=["queue"])
def list_items(
    ctx: Ctx,
    queue_id: QueueId,
    status: Annotated[ApiStatus | None, Query(description="only items in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="items of this page")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="items to skip")] = 0,
    cursor: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="`next_cursor` of the previous page")
    ] = None,
) -> ItemPage:
    """The queue's items, oldest first. Page with `cursor` (stable while items come and go)
    or with `offset`."""
    return queries.page(ctx, queue_id, status, limit, offset, cursor)


@router.get("/current", response_model=Item | None, tags=["queue"])
def current(ctx: Ctx, queue_id: QueueId) -> Item | None:
    """The running item that started first, or null."""
    return queries.current(ctx, queue_id)


@router.get("/i/{item_id}", response_model=Item, tags=["items"])
def get_item(ctx: Ctx, queue_id: QueueId, item_id: ItemId) -> Item:
    return queries.to_item(queries.record_or_404(ctx, queue_id, item_id))


STEERED = {
    401: {"description": "no key, or a wrong one"},
    404: {"description": "no such item in this queue"},
    409: {"description": "the item's state does not allow it (the message says why)"},
}
"""What a route that steers one item may answer beside 200 and 422."""


def _steer(ctx: Ctx, queue_id: str, item_id: int, steer: Callable[[int], JobRecord | None]) -> Item:
    """Steer an item of this queue; its state after the change, 404 or 409."""
    queries.record_or_404(ctx, queue_id, item_id)
    try:
        record = steer(item_id)
    except InvalidTransitionError as exc:
        raise HTTPException(409, str(exc)) from exc
    if record is None:  # removed meanwhile
        raise HTTPException(404, queries.NO_ITEM)
    return queries.to_item(record)


@router.post("/i/{item_id}/cancel", response_model=Item, tags=["items"], responses=STEERED)
def cancel_item(ctx: Ctx, queue_id: QueueId, item_id: ItemId) -> Item:
    """Cancel an item (a multi-file job: all its parts). A waiting or paused item is
    `canceled` at once; a running one stops within about a second, which the answer waits
    for. A finished item stays as it is."""
    record = queries.record_or_404(ctx, queue_id, item_id)
    if not record.status.finished and not ctx.admin.cancel(item_id):
        raise HTTPException(404, queries.NO_ITEM)  # removed meanwhile
    return _steer(ctx, queue_id, item_id, ctx.admin.await_stopped)


@router.post("/i/{item_id}/pause", response_model=Item, tags=["items"], responses=STEERED)
def pause_item(ctx: Ctx, queue_id: QueueId, item_id: ItemId) -> Item:
    """Pause an item: `paused`, its partial file kept, no worker slot taken. A waiting item
    is paused at once; a running one stops within about a second, which the answer waits
    for. A multi-file job pauses its unfinished parts. 409 for a finished item."""
    return _steer(ctx, queue_id, item_id, ctx.admin.pause_job)


@router.post("/i/{item_id}/resume", response_model=Item, tags=["items"], responses=STEERED)
def resume_item(ctx: Ctx, queue_id: QueueId, item_id: ItemId) -> Item:
    """Queue a paused item again; it continues from its partial file with a Range request.
    A pending or running item stays as it is; 409 for a finished one."""
    return _steer(ctx, queue_id, item_id, ctx.admin.resume_job)


@router.post("/i/{item_id}/retry", response_model=Item, tags=["items"], responses=STEERED)
def retry_item(ctx: Ctx, queue_id: QueueId, item_id: ItemId) -> Item:
    """Queue a failed or canceled item again (a multi-file job: its parts that did not
    complete). A failed item resumes its partial file when the file's validators still match;
    a cancel removed it, so a canceled item starts over. 409 for an item that completed or
    has not ended, or for a part (retry its multi-file job)."""
    return _steer(ctx, queue_id, item_id, ctx.admin.retry_job)


@router.patch("/i/{item_id}", response_model=Item, tags=["items"], responses=STEERED)
def change_item(ctx: Ctx, queue_id: QueueId, item_id: ItemId, body: PriorityChange) -> Item:
    """Give an item a new priority (lower runs first; a multi-file job: every part). A
    pending item moves in its queue; a running or paused one keeps its state and the new
    priority counts when it is next queued. 409 for a finished item."""
    return _steer(
        ctx, queue_id, item_id, lambda job_id: ctx.admin.set_job_priority(job_id, body.priority)
    )


@router.delete("/clear", response_model=Removed, tags=["queue"])
def clear(ctx: Ctx, queue_id: QueueId) -> Removed:
    """Cancel and remove every unfinished item; running ones stop within about a second."""
    return Removed(removed=ctx.admin.clear(queue_id, unfinished_only=True))


@router.delete("/prune", response_model=Removed, tags=["queue"])
def prune(ctx: Ctx, queue_id: QueueId) -> Removed:
    """Remove finished items. A finished part of a multi-file job that still runs stays
    until its job ends."""
    return Removed(removed=len(ctx.admin.prune(queue_id, keep_unsettled_parts=True)))
