"""The fleet at a glance, for the page and for operators: the queues that hold jobs, and the
live workers with the jobs they run (`downloader.api.fleet`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from downloader.api import fleet
from downloader.api.context import Ctx
from downloader.api.schemas import MAX_ID

router = APIRouter(prefix="/api/v1", tags=["fleet"])


@router.get("/queues", response_model=fleet.QueueList)
def queues(
    ctx: Ctx,
    limit: Annotated[
        int, Query(ge=1, le=fleet.MAX_QUEUES_PAGE, description="about this many queues")
    ] = 100,
    cursor: Annotated[
        int, Query(ge=0, le=MAX_ID, description="`next_cursor` of the previous page; 0: first")
    ] = 0,
) -> fleet.QueueList:
    """The queues that hold jobs, with their counts and whether they are paused, a page at a
    time (Redis's `SSCAN`: about `limit` a page, each page sorted by name)."""
    return fleet.queue_page(ctx, cursor, limit)


@router.get("/workers", response_model=fleet.WorkerList)
def workers(ctx: Ctx) -> fleet.WorkerList:
    """The live workers (by their heartbeats), the queues each was started with and the jobs
    each runs: O(workers + running jobs)."""
    return fleet.workers(ctx)
