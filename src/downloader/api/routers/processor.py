"""Pausing and resuming the workers' intake of one queue."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from downloader.api import queries
from downloader.api.context import ApiContext, Ctx
from downloader.api.schemas import ProcessorStatus, QueueId
from downloader.store.pauses import MAX_PAUSED, TooManyPaused

router = APIRouter(prefix="/api/v1/queue/{queue_id}/processor", tags=["processor"])


def _status(ctx: ApiContext, queue_id: str) -> ProcessorStatus:
    in_progress = queries.counts(ctx, queue_id).in_progress
    return queries.processor_status(ctx, queue_id, in_progress)


@router.post(
    "/pause",
    response_model=ProcessorStatus,
    responses={409: {"description": f"{MAX_PAUSED} queues are paused already"}},
)
def pause(ctx: Ctx, queue_id: QueueId) -> ProcessorStatus:
    """Workers stop taking this queue's jobs (running downloads go on); workers that start
    later leave it alone too, until it is resumed."""
    try:
        ctx.admin.pause(queue_id)
    except TooManyPaused as exc:
        raise HTTPException(409, str(exc)) from exc
    return _status(ctx, queue_id)


@router.post("/resume", response_model=ProcessorStatus)
def resume(ctx: Ctx, queue_id: QueueId) -> ProcessorStatus:
    """The workers started with this queue take its jobs again."""
    ctx.admin.resume(queue_id)
    return _status(ctx, queue_id)
