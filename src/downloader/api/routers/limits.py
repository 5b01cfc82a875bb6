"""The fleet's shared limits (`client.limits`): what is in force and each host's use, and
changes that every worker and client of the Redis follow within 2 s. Behind the API key."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from downloader.api.context import Ctx
from downloader.client.limits import LimitsReport
from downloader.jobs.limits import Limits, Rate

router = APIRouter(prefix="/api/v1", tags=["limits"])


class HostUse(BaseModel):
    """What the fleet does with one host now."""

    host: str
    connections: int = Field(description="connection slots held")
    waiting: int = Field(description="connections waiting for a slot")
    rate: int = Field(description="bytes per second over the last few seconds")
    paused_for: float = Field(description="seconds the host's pause (a 429 or 503) lasts still")


class LimitsView(BaseModel):
    """The limits in force (the settings' with those set at run time on top) and the use of
    every host they name or the fleet used in the last minute."""

    limits: Limits
    usage: list[HostUse]


class LimitsChange(BaseModel):
    """Limits to set, as `downloader limits set` takes them: of `host`, else the fleet's."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(default=None, max_length=253, description="a bare host name")
    connections: int | None = Field(
        default=None, ge=1, description="of `host`; without it, of every host not named"
    )
    bandwidth: Rate | None = Field(
        default=None,
        description="bytes per second (or `500K`, `20M`, `100MiB`) of `host`; without it, "
        "of the whole fleet; 0: unlimited",
    )
    requests_per_second: float | None = Field(
        default=None, ge=0, description="requests the fleet starts per second to `host`"
    )


def _view(report: LimitsReport) -> LimitsView:
    usage = [HostUse(**dataclasses.asdict(use)) for use in report.usage]
    return LimitsView(limits=report.limits, usage=usage)


@router.get("/limits", response_model=LimitsView)
def limits(ctx: Ctx) -> LimitsView:
    """The limits in force and each host's use: connections held and waiting, recent rate,
    pause."""
    return _view(ctx.service.limits.report())


@router.put("/limits", response_model=LimitsView)
def set_limits(ctx: Ctx, change: LimitsChange) -> LimitsView:
    """Set limits for every worker and client of this Redis; they win over the settings'
    until unset. A value that is not one is a 422 naming it."""
    try:
        ctx.service.limits.set(
            host=change.host,
            connections=change.connections,
            bandwidth=change.bandwidth,
            requests_per_second=change.requests_per_second,
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc).splitlines()[0]) from None
    return _view(ctx.service.limits.report())


@router.delete("/limits", response_model=LimitsView)
def unset_limits(
    ctx: Ctx,
    host: Annotated[
        str | None, Query(max_length=253, description="a host; none: the fleet's")
    ] = None,
) -> LimitsView:
    """Drop the limits set at run time for `host` (else the fleet's own): the settings' apply
    again."""
    try:
        ctx.service.limits.unset(host)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return _view(ctx.service.limits.report())
