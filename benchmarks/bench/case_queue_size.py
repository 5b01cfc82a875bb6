"""Case 9: what reads cost as the queue grows (issue 12): REST `/status`, `/list?limit=50`,
`/current` and one client's `wait_for_job` of its one job, with a small and a huge queue of
waiting jobs, and the Redis memory each job takes."""

from __future__ import annotations

import shutil
import statistics
import time
from datetime import UTC
from typing import Any

import redis

from downloader import DownloadJobStatus

from .api_server import ApiServer, api_server
from .bulk import fill_in_child
from .config import BenchError
from .context import Context, delete_namespace_keys, queue_client
from .measure import guarded
from .table import times, why_not
from .workers import workers

ROUTES = {"status": "status", "list": "list?limit=50", "current": "current"}
CALLS = 5


def route_ms(server: ApiServer, route: str) -> float:
    """Median milliseconds of `CALLS` GETs of a route, after one that is not counted."""
    url = server.queue_url(route)
    server.session.get(url, timeout=600).raise_for_status()
    runs = []
    for _ in range(CALLS):
        started = time.perf_counter()
        server.session.get(url, timeout=600).raise_for_status()
        runs.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(runs), 2)


def used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def waiter_lag(ctx: Context, tag: str) -> dict[str, Any]:
    """A second client queues one job ahead of the others (priority 0); a worker starts; the
    milliseconds from the job's end (as the store recorded it) to `wait_for_job` returning."""
    assert ctx.redis_url is not None
    dest = ctx.fresh_dest()
    with queue_client(ctx.redis_url, ctx.namespace(tag)) as client:
        job = client.download(ctx.origin.url(ctx.files.tiny.name), dest / "probe.bin", priority=0)
        started = time.perf_counter()
        with workers(ctx, tag, warm=False):
            client.wait_for_job(job, timeout=120)
            returned = time.time()
        seconds = time.perf_counter() - started
    shutil.rmtree(dest, ignore_errors=True)
    if job.status != DownloadJobStatus.COMPLETED or job.job_ended is None:
        raise BenchError(f"probe job {job.id} ended {job.status}: {job.error_type}")
    ended = job.job_ended.replace(tzinfo=UTC).timestamp()  # the store keeps naive UTC
    return {"lag_ms": round((returned - ended) * 1000, 1), "with_worker_start_s": round(seconds, 2)}


def one_size(ctx: Context, count: int) -> dict[str, Any]:
    assert ctx.redis_url is not None
    tag = f"c9n{count}"
    dest = ctx.fresh_dest()
    try:
        before = used_memory(ctx.redis_url)
        started = time.perf_counter()
        how = fill_in_child(ctx, ctx.namespace(tag), dest, count)
        filled = time.perf_counter() - started
        per_job = (used_memory(ctx.redis_url) - before) / count
        print(f"  {count:,} jobs queued ({how}) in {filled:.1f} s", flush=True)
        result: dict[str, Any] = {
            "jobs": count,
            "enqueued_with": how,
            "enqueue_s": round(filled, 2),
            "redis_bytes_per_job": round(per_job),
        }
        with api_server(ctx, ctx.namespace(tag)) as server:
            for name, route in ROUTES.items():
                result[f"{name}_ms"] = route_ms(server, route)
        result["wait_for_job"] = waiter_lag(ctx, tag)
        result["wait_lag_ms"] = result["wait_for_job"]["lag_ms"]
        print(
            f"  {count:,} jobs: "
            + ", ".join(f"{k} {result[k]} ms" for k in (*_keys(), "wait_lag_ms"))
            + f"; {per_job:,.0f} B of Redis per job",
            flush=True,
        )
        return result
    finally:
        shutil.rmtree(dest, ignore_errors=True)
        delete_namespace_keys(ctx.redis_url, ctx.namespace(tag))


def _keys() -> list[str]:
    return [f"{name}_ms" for name in ROUTES]


def run(ctx: Context) -> dict[str, Any]:
    small, large = ctx.profile.queue_sizes
    print(f"case 9: reads with {small:,} and {large:,} jobs waiting", flush=True)
    results = {
        f"{n} jobs": guarded(lambda n=n: one_size(ctx, n), f"case 9, {n:,} jobs", ctx.skipped)
        for n in (small, large)
    }
    a, b = results[f"{small} jobs"], results[f"{large} jobs"]
    ratios = {
        key: round(b[key] / a[key], 2) if a.get(key) and b.get(key) else None
        for key in (*_keys(), "wait_lag_ms")
    }
    print(f"  {large:,} / {small:,} jobs: {ratios}", flush=True)
    return {"9_queue_size": {"sizes": [small, large], "results": results, "ratios": ratios}}


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    if not result:
        return []
    small, large = result["sizes"]
    table = []
    for key in (*_keys(), "wait_lag_ms"):
        what = "wait_for_job, end to return" if key == "wait_lag_ms" else key[:-3]
        for n in (small, large):
            r = result["results"][f"{n} jobs"]
            value = r.get(key)
            cell = f"{value:,.1f} ms" if isinstance(value, int | float) else "n/a"
            ratio_cell = times(result["ratios"].get(key), f"{small:,}") if n == large else ""
            table.append(["9", f"{what}, {n:,} jobs", cell, ratio_cell, why_not(r)])
    for n in (small, large):
        r = result["results"][f"{n} jobs"]
        value = r.get("redis_bytes_per_job")
        cell = f"{value:,} B" if isinstance(value, int) else "n/a"
        table.append(["9", f"Redis memory per job, {n:,} jobs", cell, "", why_not(r)])
    return table
