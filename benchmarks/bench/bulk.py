"""Filling a queue fast: `download_many` when this build has it (issue 12's batch enqueue),
else `download()` one by one while that stays affordable. Shared by the cases that need a
full queue (9) or measure the batch itself (10).

Run as `python -m benchmarks.bench.bulk URL DEST COUNT` it is the child that fills a queue.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from downloader import DownloadQueueService

from .config import BENCH_DIR, NotAvailable
from .context import Context, clean_env

ROOT = BENCH_DIR.parent

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


def fill_in_child(ctx: Context, namespace: str, dest: Path, count: int) -> str:
    """`fill_queue` in a child process: the million job objects stay out of the benchmark's
    memory, and its client is closed before any other client of `namespace` opens here."""
    assert ctx.redis_url is not None
    url = ctx.origin.url(ctx.files.tiny.name)
    env = clean_env(redis_url=ctx.redis_url, namespace=namespace)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = [sys.executable, "-m", "benchmarks.bench.bulk", url, str(dest), str(count)]
    log = ctx.log(f"fill-{namespace}")
    ctx.procs.run(args, log, env, timeout=3600)
    answer = json.loads(log.read_text().strip().splitlines()[-1])
    if "not_available" in answer:
        raise NotAvailable(answer["not_available"])
    return str(answer["how"])


def _child(url: str, dest: str, count: str) -> None:
    """The child's side: fill the namespace of DOWNLOADER_NAMESPACE, say how as JSON."""
    with DownloadQueueService(start_worker=False) as client:
        try:
            print(json.dumps({"how": fill_queue(client, url, Path(dest), int(count))}))
        except NotAvailable as exc:
            print(json.dumps({"not_available": str(exc)}))


if __name__ == "__main__":
    _child(*sys.argv[1:])
