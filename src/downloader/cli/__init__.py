"""The `downloader` command: get, worker, list, status, cancel, pause, resume, prune, clear, events.

Every sub-command works against the configured Redis (`DOWNLOADER_REDIS_URL`) or, without
one, the embedded Redis shared by all of this user's processes. Only the standard library is
imported up front: `downloader --help` must answer at once, so Celery, requests and pydantic
are imported by the commands that use them. One module per concern: `parser` (the options
and the entry point), `common` (what every command opens), `get`, `jobs` (looking at and
steering the queue's jobs) and `serve` (the long-running processes).

The top floor: it may import every other package, and none imports it.
"""

from downloader.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
