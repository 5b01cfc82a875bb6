"""Case 10: batch enqueue (issue 12): jobs per second through `download_many` from Python and
through one REST POST of 1,000 items, against one job per call in the same run."""

from __future__ import annotations

import statistics
import time
from typing import Any

from .api_server import ApiServer, api_server
from .bulk import enqueue_many
from .case_enqueue import enqueue_rate
from .config import NotAvailable
from .context import Context, queue_client
from .measure import guarded, ratio
from .table import num, times, why_not

# The shapes a batch POST may take; the first the server accepts is measured.
BODY_SHAPES = ("items", "list")
SINGLE_POSTS = 200


def python_batch(ctx: Context) -> dict[str, Any]:
    assert ctx.redis_url is not None
    count = ctx.profile.batch_jobs
    with queue_client(ctx.redis_url, ctx.namespace("c10p")) as client:
        seconds = enqueue_many(client, ctx.origin.url(ctx.files.tiny.name), ctx.fresh_dest(), count)
    print(f"  download_many: {count / seconds:9.1f} jobs/s ({count:,} jobs)", flush=True)
    return {"jobs": count, "seconds": round(seconds, 3), "jobs_s": round(count / seconds, 1)}


def batch_body(ctx: Context, shape: str, start: int) -> Any:
    items = [
        {"source": ctx.origin.url(ctx.files.tiny.name), "dest": f"rest/b{start + i}"}
        for i in range(ctx.profile.rest_batch_size)
    ]
    return {"items": items} if shape == "items" else items


def accepted_shape(ctx: Context, server: ApiServer, url: str) -> str:
    """The body shape this build's enqueue route takes for a list of items."""
    answers = []
    for shape in BODY_SHAPES:
        response = server.session.post(url, json=batch_body(ctx, shape, 0), timeout=120)
        if response.ok:
            return shape
        answers.append(
            f"a JSON {'object with `items`' if shape == 'items' else 'array'}: "
            f"{response.status_code}"
        )
    raise NotAvailable(f"POST .../enqueue does not take a list of items ({'; '.join(answers)})")


def rest_rates(ctx: Context) -> dict[str, Any]:
    with api_server(ctx, ctx.namespace("c10r")) as server:
        url = server.queue_url("enqueue")
        single = {"source": ctx.origin.url(ctx.files.tiny.name), "dest": "rest/one"}
        started = time.perf_counter()
        for _ in range(SINGLE_POSTS):
            server.session.post(url, json=single, timeout=10).raise_for_status()
        one_by_one = SINGLE_POSTS / (time.perf_counter() - started)
        print(f"  REST, one item per POST: {one_by_one:9.1f} jobs/s", flush=True)
        result: dict[str, Any] = {"single": {"jobs_s": round(one_by_one, 1)}}
        result["batch"] = guarded(lambda: rest_batch(ctx, server, url), "REST batch", ctx.skipped)
    return result


def rest_batch(ctx: Context, server: ApiServer, url: str) -> dict[str, Any]:
    shape, size = accepted_shape(ctx, server, url), ctx.profile.rest_batch_size
    runs = []
    for batch in range(ctx.profile.rest_batches):
        body = batch_body(ctx, shape, (batch + 1) * size)
        started = time.perf_counter()
        server.session.post(url, json=body, timeout=120).raise_for_status()
        runs.append(time.perf_counter() - started)
    jobs_s = size / statistics.median(runs)
    print(f"  REST, {size:,} items per POST: {jobs_s:9.1f} jobs/s", flush=True)
    return {"shape": shape, "items_per_post": size, "posts": len(runs), "jobs_s": round(jobs_s, 1)}


def run(ctx: Context) -> dict[str, Any]:
    print("case 10: batch enqueue from Python and over REST", flush=True)
    one = guarded(lambda: enqueue_rate(ctx, "c10o"))
    rest = guarded(lambda: rest_rates(ctx), "REST enqueue", ctx.skipped)
    results = {
        "download_many": guarded(lambda: python_batch(ctx), "download_many", ctx.skipped),
        "download() one by one": {"jobs_s": one.get("per_s")} if "per_s" in one else one,
        "REST batch POST": rest.get("batch", rest),
        "REST one per POST": rest.get("single", rest),
    }
    ratios = {
        "python_batch_vs_one": ratio(
            results["download_many"], results["download() one by one"], "jobs_s"
        ),
        "rest_batch_vs_one": ratio(
            results["REST batch POST"], results["REST one per POST"], "jobs_s"
        ),
    }
    print(f"  batch / one by one: {ratios}", flush=True)
    return {"10_batch_enqueue": {"results": results, "ratios": ratios}}


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    if not result:
        return []
    against = {
        "download_many": times(result["ratios"].get("python_batch_vs_one"), "one by one"),
        "REST batch POST": times(result["ratios"].get("rest_batch_vs_one"), "one per POST"),
    }
    return [
        ["10", name, num(r.get("jobs_s"), "jobs/s"), against.get(name, ""), why_not(r)]
        for name, r in result["results"].items()
    ]
