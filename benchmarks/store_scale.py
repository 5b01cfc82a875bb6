"""Store reads at queue size: counts, a page and the running jobs with N jobs enqueued (no
worker), and Redis memory per job. Not a test: prints figures.

    python benchmarks/store_scale.py 1000 1000000   # DOWNLOADER_REDIS_URL, default local
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import redis

from downloader.jobs.record import JobRecord
from downloader.store.jobs import JobStore


def timed(call, repeat: int = 20) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - start) / repeat * 1000


def reads(store: JobStore) -> str:
    _, cursor = store.page("q", limit=50)
    return (
        f"counts {timed(lambda: store.counts('q')):.2f} ms;"
        f" page(50) {timed(lambda: store.page('q', limit=50)):.2f} ms;"
        f" page(50, cursor) {timed(lambda: store.page('q', cursor=cursor, limit=50)):.2f} ms;"
        f" running(50) {timed(lambda: store.running('q')):.2f} ms"
    )


def main(sizes: list[int]) -> None:
    client = redis.Redis.from_url(
        os.environ.get("DOWNLOADER_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    for size in sizes:
        store = JobStore(client, f"bench-{uuid.uuid4().hex[:8]}")
        try:
            measure(client, store, size)
        finally:  # a million jobs must not stay in a shared Redis when a run is cut short
            for key in client.scan_iter(match=f"{store.keys.namespace}:*", count=10000):
                client.unlink(key)


def measure(client: redis.Redis, store: JobStore, size: int) -> None:
    """Fill the store with `size` waiting jobs, then time the reads and the memory."""
    before = client.info("memory")["used_memory"]
    start = time.perf_counter()
    ids = store.new_ids(size)
    store.create(
        "q",
        (JobRecord(id=i, source=f"http://h/{i}", dest=Path("/d")) for i in ids),
    )
    enqueue = time.perf_counter() - start
    memory = client.info("memory")["used_memory"] - before
    for job_id in ids[:: max(1, size // 50)][:50]:
        store.claim(job_id, "w#1", 30)
    print(
        f"{size:>9} jobs: create {size / enqueue:,.0f} jobs/s; {reads(store)};"
        f" memory {memory / size:.0f} B/job"
    )


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1000, 1_000_000])
