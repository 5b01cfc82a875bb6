"""The error answers of every operation, declared in the OpenAPI document as the app gives
them.

A route declares only what is its own (the 409 of pause, the hub's 403/404/502 of enqueue,
a 503); what follows from the app's guards is added here to every operation it concerns,
read from the document itself, so a new route is declared right without a word: 401 where
the document asks for the key (`auth.ApiKeyMiddleware`), 413 on every operation (a body over
the cap: `bodycap.BodyCap` checks every request), 422 where a parameter or a body is
validated, 404 where an item is named (`{item_id}`: `queries.record_or_404`), 400 where a
body is read and is not UTF-8 (FastAPI's), and 503 on every operation (Redis refused or did
not answer: `errors.redis_error`). Every error answer has the one schema, `errors.ApiError`,
in place of FastAPI's `HTTPValidationError` (which is then dropped).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from downloader.api.errors import ApiError
from downloader.api.queries import NO_ITEM

UNAUTHORIZED = "no valid API key: `X-API-Key: <key>` or `Authorization: Bearer <key>`"
REDIS_REFUSED = "Redis refused the command or did not answer (`errors.redis_error`)"
UNREADABLE = "the body cannot be read as JSON text (it is not UTF-8)"
TOO_LARGE = "a body over `DOWNLOADER_MAX_BODY_BYTES` (see the description above)"
INVALID = "a parameter or the body is refused; `errors` says which and why"
_SCHEMAS = "#/components/schemas/"
_FASTAPI_ERRORS = ("HTTPValidationError", "ValidationError")


def declare_errors(app: FastAPI) -> None:
    """Make `app.openapi()` answer the document with every error answer declared (made once,
    at the first call, like FastAPI's own)."""
    made = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(made())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> None:
    """Declare the guards' answers of every operation of `document`, in place."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    found = ApiError.model_json_schema(ref_template=_SCHEMAS + "{model}")
    schemas.update(found.pop("$defs", {}))
    schemas["ApiError"] = found
    error = {"application/json": {"schema": {"$ref": _SCHEMAS + "ApiError"}}}
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            for status, description in _guards(path, operation).items():
                answers.setdefault(status, {"description": description})
            if "422" in answers:  # FastAPI's, with its `HTTPValidationError`
                answers["422"] = {"description": INVALID}
            for status, answer in answers.items():
                if status[0] in "45" and not answer.get("content"):
                    answer["content"] = error
    for name in _FASTAPI_ERRORS:
        schemas.pop(name, None)


def _guards(path: str, operation: dict[str, Any]) -> dict[str, str]:
    """The statuses the app's guards may answer on one operation, with what each means."""
    found: dict[str, str] = {}
    if operation.get("security"):
        found["401"] = UNAUTHORIZED
    if "{item_id}" in path:
        found["404"] = NO_ITEM
    if "requestBody" in operation:
        found["400"] = UNREADABLE
    found["413"] = TOO_LARGE  # the cap is checked on every request, a body or not
    found["503"] = REDIS_REFUSED  # every route reads or writes Redis
    if operation.get("parameters") or "requestBody" in operation:
        found["422"] = INVALID
    return found
