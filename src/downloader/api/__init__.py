"""The REST API and the event stream, for programs that enqueue and watch from elsewhere.

The API only enqueues and reads: workers do the downloads. Its callers are untrusted: `dest`
is confined to `DOWNLOADER_DOWNLOAD_ROOT`, their jobs may not reach private addresses (unless
`DOWNLOADER_ALLOW_PRIVATE_NETWORKS`), the API key is checked and bodies are capped before a
body is read, and no answer carries a token. Laid out as FastAPI projects are: the factory
(`app`), the key check (`auth`), request and answer models (`schemas`), error answers that
repeat no input (`errors`), the state routes share (`context`), how they read the store
(`queries`) and turn each enqueue form into jobs (`enqueueing`), and one router per resource
(`routers`).

It may import `client` and every layer below it; nothing but `cli` imports it.
"""

from downloader.api.app import build_api, create_api

__all__ = ["build_api", "create_api"]
