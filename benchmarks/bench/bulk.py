"""Filling a queue fast: `download_many` when this build has it (issue 12's batch enqueue),
else `download()` one by one while that stays affordable. Shared by the cases that need a
full queue (9) or measure the batch itself (10)."""

from __future__ import annotations

import time
from pathlib import Path

from downloader import DownloadQueueService

from .config import NotAvailable

# Above this many jobs, one `download()` at a time (about 700 a second) takes too long.
ONE_BY_ONE_LIMIT = 20_000
BATCH = 10_000


def has_download_many(client: DownloadQueueService) -> bool:
    return callable(getattr(client, "download_many", None))


def enqueue_many(client: DownloadQueueService, url: str, dest: Path, count: int) -> float:
    """Queue `count` jobs of `url` to distinct files under `dest` with `download_many`, in
    batches of 10,000; its seconds. NotAvailable when the service has no `download_many`
    or it does not take items of `source` and `dest`."""
    if not has_download_many(client):
        raise NotAvailable("DownloadQueueService.download_many is missing")
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        items = [
            {"source": url, "dest": dest / f"j{i:07}.bin"}
            for i in range(first, min(first + BATCH, count))
        ]
        try:
            client.download_many(items)  # type: ignore[attr-defined]
        except (TypeError, ValueError) as exc:
            raise NotAvailable(f"download_many refused items of source and dest: {exc}") from exc
    return time.perf_counter() - started


def fill_queue(client: DownloadQueueService, url: str, dest: Path, count: int) -> str:
    """Queue `count` jobs however this build can; how it did it. NotAvailable when only
    one-by-one enqueueing exists and `count` is too many for it."""
    if has_download_many(client):
        enqueue_many(client, url, dest, count)
        return "download_many"
    if count > ONE_BY_ONE_LIMIT:
        raise NotAvailable(
            f"DownloadQueueService.download_many is missing; {count:,} jobs one download() "
            "at a time would take too long"
        )
    for i in range(count):
        client.download(url, dest / f"j{i:07}.bin")
    return "download() one by one"
