"""The REST API and the event stream, for programs that enqueue and watch from elsewhere.

The API only enqueues and reads: workers do the downloads. Its callers are untrusted: `dest`
is confined to `DOWNLOADER_DOWNLOAD_ROOT`, their jobs may not reach private addresses (unless
`DOWNLOADER_ALLOW_PRIVATE_NETWORKS`), the API key is checked and bodies are capped before a
body is read, and no answer carries a token. Laid out as FastAPI projects are: the factory
(`app`), the key check (`auth`), request and answer models (`schemas`), error answers that
repeat no input (`errors`), the state routes share (`context`), how they read the store
(`queries`) and turn each enqueue form into jobs (`enqueueing`), what the fleet panels read
(`fleet`), one router per resource (`routers`), and the operator's page (`ui/`, static files
served by `routers.page`).

It may import `client` and every layer below it; nothing but `cli` imports it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_api", "create_api"]


def __getattr__(name: str) -> Any:
    """`create_api` and `build_api`, imported on first use: the command line imports small
    modules of this package (`exposure`) without paying for FastAPI."""
    if name not in __all__:
        raise AttributeError(f"module 'downloader.api' has no attribute {name!r}")
    from downloader.api import app

    return getattr(app, name)
