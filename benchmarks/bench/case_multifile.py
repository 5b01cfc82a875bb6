"""Case 8: multi-file jobs of many 1 KiB parts over two `downloader worker -c 8` (issue 12):
parts per second must not fall as the job grows, nor trail the same files as single jobs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from downloader import DownloadJobStatus, RemoteModelFile

from .case_small_files import queue_small
from .config import BenchError, KiB
from .context import Context
from .files import SourceFile, verify_all
from .measure import guarded, ratio
from .table import num, times, why_not
from .workers import Worker, workers


def multifile(ctx: Context, worker: Worker, sources: list[SourceFile]) -> dict[str, Any]:
    """One multi-file job of every source, from `multifile_download()` to its end."""
    dest = ctx.fresh_dest()
    parts = [
        RemoteModelFile(url=ctx.origin.url(s.name), path=Path(Path(s.name).name), size=s.size)
        for s in sources
    ]
    started = time.perf_counter()
    job = worker.client.multifile_download(parts, dest)
    enqueued = time.perf_counter() - started
    try:
        worker.client.wait_for_job(job, timeout=60 + len(parts) / 20)
    except TimeoutError:
        worker.client.cancel_job(job)
        raise
    seconds = time.perf_counter() - started
    if job.status != DownloadJobStatus.COMPLETED:
        raise BenchError(f"multi-file job {job.id} ended {job.status}: {job.error_type}")
    verify_all(sources, dest)
    shutil.rmtree(dest)
    worker.client.prune_jobs()
    n = len(sources)
    print(f"  multi-file, {n:,} parts: {n / seconds:7.1f} parts/s", flush=True)
    return {
        "parts": n,
        "seconds": round(seconds, 3),
        "enqueue_s": round(enqueued, 3),
        "parts_s": round(n / seconds, 1),
        "sha256_ok": True,
    }


def singles(ctx: Context, worker: Worker, sources: list[SourceFile]) -> dict[str, Any]:
    run = queue_small(ctx, worker, verify=True, sources=sources)
    n = len(sources)
    print(f"  the same {n:,} files as single jobs: {n / run['seconds']:7.1f} jobs/s", flush=True)
    return {
        "parts": n,
        "seconds": round(run["seconds"], 3),
        "parts_s": round(n / run["seconds"], 1),
    }


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.profile.multifile_parts
    print(f"case 8: multi-file jobs of {', '.join(f'{n:,}' for n in sizes)} parts", flush=True)
    results: dict[str, Any] = {}
    sources = ctx.files.tiny_set(max(sizes), KiB)
    with workers(ctx, "c8", count=2) as worker:
        for n in sizes:
            results[f"multi {n} parts"] = guarded(lambda n=n: multifile(ctx, worker, sources[:n]))
            if "error" in results[f"multi {n} parts"]:
                break  # a bigger job would only take longer to fail
        results[f"single {max(sizes)} jobs"] = guarded(lambda: singles(ctx, worker, sources))
    small, large = (
        results.get(f"multi {min(sizes)} parts"),
        results.get(f"multi {max(sizes)} parts"),
    )
    ratios = {
        "largest_vs_smallest": ratio(large, small, "parts_s"),
        "largest_vs_singles": ratio(large, results[f"single {max(sizes)} jobs"], "parts_s"),
    }
    print(
        f"  {max(sizes):,} parts: {ratios['largest_vs_smallest']}x the {min(sizes):,}-part "
        f"job's rate, {ratios['largest_vs_singles']}x single jobs",
        flush=True,
    )
    return {"8_multifile": {"part_bytes": KiB, "results": results, "ratios": ratios}}


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    if not result:
        return []
    names = list(result["results"])
    singles_name = next(n for n in names if n.startswith("single"))
    table = []
    for name, r in result["results"].items():
        share = ratio(r, result["results"][singles_name], "parts_s")
        note = why_not(r) if "parts_s" not in r else ""
        if "enqueue_s" in r:
            note = f"enqueue {r['enqueue_s']} s; SHA-256 ok"
        table.append(["8", name, num(r.get("parts_s"), "parts/s"), times(share, "single"), note])
    value = result["ratios"].get("largest_vs_smallest")
    table.append(["8", "largest / smallest job", "", times(value, "smallest"), ""])
    return table
