"""Error answers that say what went wrong without repeating what the caller sent.

FastAPI's own 422 puts each error's `input` in the answer, and for a body-level error the
input is the whole body, `access_token` included; its `ctx` may hold the offending value
too. Ours keeps `type`, `loc` and `msg` only. A hub's refusal (gated, private, missing) is
a 4xx whose text says which and what to do; a hub that cannot answer is a 502. Jobs no Redis
replica confirmed are a 503 (nothing was queued: try again).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from downloader import hub

_KEPT = ("type", "loc", "msg")


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 with each error's type, location and message, never its input."""
    assert isinstance(exc, RequestValidationError)
    errors = [{key: error[key] for key in _KEPT if key in error} for error in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def hub_status(exc: hub.HubError) -> int:
    """The HTTP status for a hub's refusal of a repo the caller named."""
    if isinstance(exc, hub.GatedRepoError):
        return 403
    if isinstance(exc, hub.RepoNotFoundError | hub.RevisionNotFoundError | hub.EntryNotFoundError):
        return 404
    return 502


async def not_replicated(_: Request, exc: Exception) -> JSONResponse:
    """503: too few Redis replicas confirmed the jobs, which were taken back."""
    return JSONResponse({"detail": str(exc)}, status_code=503)
