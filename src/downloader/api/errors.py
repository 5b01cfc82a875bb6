"""Every error answer in one shape, `ApiError`, that says what went wrong without repeating
what the caller sent.

FastAPI answers a 422 with a list under `detail` and any other error with a string there,
and each validation error carries its `input` (for a body-level error the whole body,
`access_token` included) and a `ctx` that may hold the offending value too. Here every error
is `{"detail": "<one line>", "errors": [{"type", "loc", "msg"}, ...]}`: `detail` always a
string, `errors` the fields at fault of a 422 (empty for every other status), with no
`input`, no `ctx`, and a message that quotes the input only where pydantic put it there
(then replaced). A hub's refusal (gated, private, missing) is a 4xx whose text says which and
what to do; a hub that cannot answer is a 502. Jobs no Redis replica confirmed are a 503
(nothing was queued: try again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from downloader import hub

HIDDEN = "<input>"
"""What stands in a message for the caller's value, where pydantic quoted it."""


class FieldError(BaseModel):
    """One field at fault: where, which rule, and what is wrong."""

    type: str = Field(description="pydantic's error type, e.g. `missing`, `extra_forbidden`")
    loc: list[str | int] = Field(description="where: `body`, `path`, `query`, then the fields")
    msg: str


class ApiError(BaseModel):
    """The body of every error answer, whatever its status."""

    detail: str = Field(description="what went wrong and, where it helps, what to do")
    errors: list[FieldError] = Field(
        default=[], description="a 422's fields at fault, one per problem; empty otherwise"
    )


def error_response(
    status: int,
    detail: str,
    errors: Iterable[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The answer of an error: `ApiError` with this status."""
    body = ApiError(detail=detail, errors=list(errors))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def field_errors(found: Iterable[Mapping[str, Any]]) -> list[FieldError]:
    """Pydantic's errors as `FieldError`s: type, location and message only, the input taken
    out of the message where a validator quoted it."""
    kept = []
    for error in found:
        msg = str(error.get("msg", ""))
        value = error.get("input")
        if isinstance(value, str | int | float) and len(str(value)) >= 3 and str(value) in msg:
            msg = msg.replace(str(value), HIDDEN)
        loc = [part if isinstance(part, int) else str(part) for part in error["loc"]]
        kept.append(FieldError(type=str(error["type"]), loc=loc, msg=msg))
    return kept


def invalid(errors: list[FieldError]) -> JSONResponse:
    """422 with `errors` and a `detail` that sums them up in one line."""
    said = [f"{'.'.join(str(part) for part in error.loc)}: {error.msg}" for error in errors]
    return error_response(422, "; ".join(said) or "invalid request", errors)


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 for a request its route's parameters or body refuse."""
    assert isinstance(exc, RequestValidationError)
    return invalid(field_errors(exc.errors()))


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    """Any `HTTPException` (404, 409, 413, a handler's 422...) in the one shape."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


def hub_status(exc: hub.HubError) -> int:
    """The HTTP status for a hub's refusal of a repo the caller named."""
    if isinstance(exc, hub.GatedRepoError):
        return 403
    if isinstance(exc, hub.RepoNotFoundError | hub.RevisionNotFoundError | hub.EntryNotFoundError):
        return 404
    return 502


RETRY_LATER = {"Retry-After": "5"}
REDIS_DOWN = (
    "Redis refused or did not answer ({kind}): nothing was changed; try again later "
    "(`/health` says what is wrong)"
)


async def redis_error(_: Request, exc: Exception) -> JSONResponse:
    """503 when Redis refuses a command (out of memory, no permission) or stays unreachable
    past the store client's retries; the error's text (keys, addresses) is not repeated."""
    return error_response(503, REDIS_DOWN.format(kind=type(exc).__name__), headers=RETRY_LATER)


async def not_replicated(_: Request, exc: Exception) -> JSONResponse:
    """503: too few Redis replicas confirmed the jobs, which were taken back."""
    return error_response(503, str(exc))
