"""Case 4: how fast jobs go in (`download()` and one REST POST at a time, no worker) and how
soon an idle worker starts one (enqueue to `download_started`, median and p99)."""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from typing import Any

from downloader.store.bus import Subscription

from .api_server import api_server
from .config import BenchError
from .context import Context, queue_client
from .measure import guarded, percentiles
from .table import num
from .workers import workers


def enqueue_rate(ctx: Context, tag: str = "c4e") -> dict[str, Any]:
    """download() calls per second to a namespace no worker consumes."""
    assert ctx.redis_url is not None
    url, rates = ctx.origin.url(ctx.files.tiny.name), []
    with queue_client(ctx.redis_url, ctx.namespace(tag)) as client:
        dest = ctx.fresh_dest()
        for i in range(20):
            client.download(url, dest / f"warm{i}.bin")
        for repeat in range(ctx.profile.repeats):
            started = time.perf_counter()
            for i in range(ctx.profile.enqueue_count):
                client.download(url, dest / f"r{repeat}-{i}.bin")
            rates.append(ctx.profile.enqueue_count / (time.perf_counter() - started))
            print(f"  enqueue: {rates[-1]:7.1f} download() calls/s", flush=True)
    return {
        "calls": ctx.profile.enqueue_count,
        "runs_per_s": [round(r, 1) for r in rates],
        "per_s": round(statistics.median(rates), 1),
    }


def wait_event(
    subscription: Subscription, job_id: int, events: set[str], timeout: float
) -> tuple[dict[str, Any], float]:
    """The first event of `job_id` among `events`, and the wall time it arrived."""
    deadline = time.monotonic() + timeout
    for payload in subscription:
        if payload is not None and payload.get("job_id") == job_id and payload["event"] in events:
            return payload, time.time()
        if time.monotonic() > deadline:
            break
    raise BenchError(f"no {sorted(events)} for job {job_id} within {timeout} s")


def started_latency(ctx: Context) -> dict[str, Any]:
    """Enqueue to `download_started`, one job at a time on an idle worker."""
    url, received, published = ctx.origin.url(ctx.files.tiny.name), [], []
    ends = {"download_complete", "download_error", "download_cancelled"}
    with workers(ctx, "c4l") as worker:
        client, dest = worker.client, ctx.fresh_dest()
        subscription = Subscription(client.app.redis, worker.namespace, client.queue_id, poll=0.1)
        try:
            for i in range(ctx.profile.latency_jobs):
                time.sleep(0.05)  # the worker acknowledges the previous job and goes idle
                enqueued = time.time()
                job = client.download(url, dest / f"t{i:04}.bin")
                payload, arrived = wait_event(subscription, job.id, {"download_started"}, 30)
                received.append((arrived - enqueued) * 1000)
                stamp = datetime.fromisoformat(payload["timestamp"]).timestamp()
                published.append((stamp - enqueued) * 1000)
                wait_event(subscription, job.id, ends, 30)
        finally:
            subscription.close()
    return {
        "jobs": len(received),
        "received": percentiles(received),
        "published": percentiles(published),
    }


def rest_enqueue_rate(ctx: Context) -> dict[str, Any]:
    """POST /api/v1/queue/default/enqueue calls per second (`downloader api`), no worker.

    One client on a keep-alive connection, one POST after the other.
    """
    body = {"source": ctx.origin.url(ctx.files.tiny.name), "dest": "rest"}
    count, rates = ctx.profile.enqueue_count, []
    with api_server(ctx, ctx.namespace("c4r")) as server:
        url = server.queue_url("enqueue")
        for _ in range(10):
            server.session.post(url, json=body, timeout=10).raise_for_status()
        for _ in range(ctx.profile.repeats):
            started = time.perf_counter()
            for _ in range(count):
                server.session.post(url, json=body, timeout=10).raise_for_status()
            rates.append(count / (time.perf_counter() - started))
            print(f"  REST enqueue: {rates[-1]:7.1f} POSTs/s", flush=True)
    return {
        "route": "POST /api/v1/queue/{queue_id}/enqueue",
        "calls": count,
        "runs_per_s": [round(r, 1) for r in rates],
        "per_s": round(statistics.median(rates), 1),
    }


def run(ctx: Context) -> dict[str, Any]:
    print("case 4: enqueue rate and enqueue-to-start latency", flush=True)
    result = {
        "enqueue": guarded(lambda: enqueue_rate(ctx)),
        "started_latency": guarded(lambda: started_latency(ctx)),
        "rest_enqueue": guarded(lambda: rest_enqueue_rate(ctx), "REST enqueue rate", ctx.skipped),
    }
    latency = result["started_latency"].get("received", {})
    print(
        f"  enqueue to download_started: median {latency.get('median_ms')} ms, "
        f"p99 {latency.get('p99_ms')} ms",
        flush=True,
    )
    return {"4_enqueue": result}


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    if not result:
        return []
    latency = result.get("started_latency", {}).get("received", {})
    rest = result.get("rest_enqueue", {})
    return [
        ["4", "download() enqueue", num(result.get("enqueue", {}).get("per_s"), "calls/s"), "", ""],
        [
            "4",
            "REST POST enqueue",
            num(rest.get("per_s"), "calls/s"),
            "",
            rest.get("skipped", rest.get("error", ""))[:80],
        ],
        [
            "4",
            "enqueue to download_started",
            num(latency.get("median_ms"), "ms"),
            "",
            f"p99 {latency.get('p99_ms')} ms over {result['started_latency'].get('jobs')} jobs",
        ],
    ]
