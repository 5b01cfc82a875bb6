"""The body cap (`DOWNLOADER_MAX_BODY_BYTES`): a request whose body is over it is a 413 in
the API's one error shape, and no more than the cap is ever read.

FastAPI's own `max_body_size` answers a `Content-Length` over the cap with a plain-text
`Content Too Large`, replacing whatever the app answered (a 401 JSON included); this
middleware keeps its two guarantees and the shape: a `Content-Length` over the cap is
answered before a byte of the body is read (and before the key check, which would only
make the caller send it all again with the key), and a chunked body is stopped as soon as it
passes the cap.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from downloader.api.errors import error_response


def too_large(cap: int) -> str:
    """The refusal's text."""
    return f"the body is over {cap} bytes (DOWNLOADER_MAX_BODY_BYTES): split it"


class BodyCap:
    """413 for a body over `cap` bytes, from its `Content-Length` or as it arrives."""

    def __init__(self, app: ASGIApp, cap: int) -> None:
        self.app = app
        self.cap = cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.cap:
            await error_response(413, too_large(self.cap))(scope, receive, send)
            return
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.cap:  # the route's handler answers it (`errors.http_error`)
                    raise HTTPException(413, too_large(self.cap))
            return message

        await self.app(scope, capped, send)
