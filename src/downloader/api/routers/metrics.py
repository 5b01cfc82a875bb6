"""Prometheus metrics of the whole namespace, from the store's counters (`metrics.render`):
a few round trips whatever the number of jobs. Behind the API key like every route but
`/health`: the queue names and figures are the deployment's business."""

from __future__ import annotations

from fastapi import APIRouter, Response

from downloader.api import metrics
from downloader.api.context import Ctx

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}, "description": "Prometheus text"}},
)
def prometheus(ctx: Ctx) -> Response:
    """Jobs by queue and status, jobs ended by outcome, bytes downloaded, retries, job
    durations and live workers, and per host (those the limits name, and `other`) bytes,
    connections, slot waits and pauses, in Prometheus' text format."""
    body = metrics.render(ctx.admin, ctx.service.limits, ctx.settings.metrics_known_queues)
    return Response(body, media_type=metrics.CONTENT_TYPE)
