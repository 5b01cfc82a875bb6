"""The API key: when the API may serve without one, and the check of every request.

The check is ASGI middleware in front of the whole app, so it runs on the request's headers
before anything reads its body (FastAPI parses a body before it resolves a route's
dependencies) and it guards every route, the OpenAPI schema and the docs included; only
`/health` (for probes) and the page's static files (which ask for the key) are open. A key
is compared in constant time and never written out: not in an answer, an error or a log line.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import Security
from fastapi.params import Depends
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from downloader.api.errors import error_response
from downloader.api.exposure import is_loopback
from downloader.config import Settings

OPEN_PATHS = frozenset({"/health", "/"})
OPEN_PREFIXES = ("/ui/",)
"""`/` and `/ui/...` are the page (`routers.page`): static files that ask for the key."""
KEY_HEADER = "X-API-Key"
KEY_NEEDED = f"a valid API key is needed: `{KEY_HEADER}: <key>` or `Authorization: Bearer <key>`"
_log = logging.getLogger("downloader.api")


class ApiKeyError(ValueError):
    """A key setting the API refuses to start with; the text never contains the key."""


def configured_key(settings: Settings) -> str | None:
    """`DOWNLOADER_API_KEY` without surrounding whitespace (a secret file's newline), or None
    when it is unset. Blank is refused: it used to mean "no authentication", silently."""
    if settings.api_key is None:
        return None
    key = settings.api_key.get_secret_value().strip()
    if not key:
        raise ApiKeyError(
            "DOWNLOADER_API_KEY is set but blank: set it to a secret (e.g. the output of "
            "`openssl rand -hex 32`), or unset it to serve on loopback without a key"
        )
    if not all(" " <= char <= "~" for char in key):
        raise ApiKeyError(
            "DOWNLOADER_API_KEY holds characters a client cannot send in a header: use "
            "printable ASCII only (e.g. the output of `openssl rand -hex 32`)"
        )
    return key


def check_exposure(key: str | None, host: str, no_auth: bool) -> None:
    """Refuse to serve without a key beyond loopback unless `--no-auth` says so; say so
    in the log whenever authentication is off."""
    if key:
        return
    if is_loopback(host):
        _log.warning("authentication is off: DOWNLOADER_API_KEY is unset (loopback %s only)", host)
    elif no_auth:
        _log.warning(
            "authentication is OFF on %s (--no-auth): anyone who reaches this address can "
            "enqueue downloads, cancel and remove jobs",
            host,
        )
    else:
        raise ApiKeyError(
            f"DOWNLOADER_API_KEY is unset and --host {host} is not a loopback address: "
            "set DOWNLOADER_API_KEY, or pass --no-auth to serve without a key"
        )


def documented() -> list[Depends]:
    """The two ways to send the key, for the OpenAPI schema and the docs' Authorize button.
    They never refuse a request: `ApiKeyMiddleware` does that, before the body is read."""
    return [
        Security(
            APIKeyHeader(
                name=KEY_HEADER, auto_error=False, description="the API key (DOWNLOADER_API_KEY)"
            )
        ),
        Security(HTTPBearer(auto_error=False, description="the API key as a bearer token")),
    ]


class ApiKeyMiddleware:
    """401 for any request but `OPEN_PATHS` without the key, answered from the headers."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self._key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] not in OPEN_PATHS
            and not scope["path"].startswith(OPEN_PREFIXES)
            and not self._valid(Headers(scope=scope))
        ):
            refused = error_response(401, KEY_NEEDED, headers={"WWW-Authenticate": "Bearer"})
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _valid(self, headers: Headers) -> bool:
        given = headers.get(KEY_HEADER)
        if given is None:
            scheme, _, credentials = headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return False
            given = credentials
        return hmac.compare_digest(given.encode(), self._key)
