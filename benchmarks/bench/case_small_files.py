"""Case 3: many files of 64 KiB, jobs per second with one and two `downloader worker -c 8`
against aria2c -j16, and where the CPU goes (per job: workers, client, nginx, Redis)."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from downloader import DownloadJobStatus

from .config import BenchError
from .context import Context
from .files import SourceFile, verify_all
from .measure import cpu_seconds, guarded, ratio, redis_server_pid
from .table import num, times
from .tools import aria2_args
from .workers import Worker, workers


def cpu_groups(ctx: Context, worker: Worker) -> dict[str, list[int]]:
    groups = {
        "workers": [p.pid for p in worker.processes],
        "benchmark client": [os.getpid()],
        "nginx": [ctx.origin.pid],
    }
    pid = redis_server_pid(ctx.redis_url) if ctx.redis_url else None
    if pid:
        groups["redis-server"] = [pid]
    return groups


def queue_small(
    ctx: Context, worker: Worker, verify: bool, sources: list[SourceFile] | None = None
) -> dict[str, Any]:
    """Every source (the small files by default) as a job of its own, to the last completion."""
    sources = ctx.files.small if sources is None else sources
    dest = ctx.fresh_dest()
    urls = [ctx.origin.url(s.name) for s in sources]
    os.sync()
    groups = cpu_groups(ctx, worker)
    cpu_before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    wall0, started = datetime.now(UTC), time.perf_counter()
    jobs = [worker.client.download(url, dest) for url in urls]
    enqueued = time.perf_counter() - started
    for job in jobs:
        worker.client.wait_for_job(job, timeout=600)
    seconds = time.perf_counter() - started
    cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in groups.items()}
    failed = [job for job in jobs if job.status != DownloadJobStatus.COMPLETED]
    if failed:
        raise BenchError(f"{len(failed)} jobs failed, e.g. {failed[0].error_type}")
    # The store keeps naive UTC times.
    last_end = max(job.job_ended for job in jobs if job.job_ended).replace(tzinfo=UTC)
    if verify:
        verify_all(sources, dest)
    shutil.rmtree(dest)
    worker.client.prune_jobs()
    return {
        "seconds": seconds,
        "enqueue_seconds": enqueued,
        "store_seconds": (last_end - wall0).total_seconds(),
        "cpu": cpu,
    }


def small_with_workers(ctx: Context, count: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with workers(ctx, f"c3w{count}", count=count) as worker:
        for repeat in range(ctx.profile.repeats):
            run = queue_small(ctx, worker, verify=repeat == 0)
            runs.append(run)
            print(
                f"  {count} worker(s): {len(ctx.files.small) / run['seconds']:7.1f} jobs/s",
                flush=True,
            )
    n = len(ctx.files.small)
    return {
        "runs_s": [round(r["seconds"], 3) for r in runs],
        "jobs_s": round(n / statistics.median(r["seconds"] for r in runs), 1),
        "jobs_s_by_store": round(n / statistics.median(r["store_seconds"] for r in runs), 1),
        "enqueue_only_jobs_s": round(n / statistics.median(r["enqueue_seconds"] for r in runs), 1),
        "cpu_ms_per_job": cpu_per_job(runs, n),
        "cores_busy_fraction": round(
            sum(sum(r["cpu"].values()) for r in runs)
            / (sum(r["seconds"] for r in runs) * (os.cpu_count() or 1)),
            2,
        ),
        "sha256_ok": True,
    }


def cpu_per_job(runs: list[dict[str, Any]], jobs: int) -> dict[str, float]:
    """CPU milliseconds per job, by process group."""
    return {
        name: round(sum(r["cpu"][name] for r in runs) / (jobs * len(runs)) * 1000, 2)
        for name in runs[0]["cpu"]
    }


ListCommand = tuple[str, list[str], dict[str, str] | None]
"""A command that downloads every small file listed in LIST into DEST: its log's name, its
arguments (LIST and DEST are replaced by real paths) and its environment."""


def list_timings(
    ctx: Context, label: str, log: str, command: list[str], env: dict[str, str] | None
) -> dict[str, Any]:
    """Run `command` `repeats` times; jobs/s of the median."""
    return interleaved_lists(ctx, {label: (log, command, env)})[label]


def interleaved_lists(ctx: Context, commands: dict[str, ListCommand]) -> dict[str, Any]:
    """Run each command `repeats` times, taking turns (run 1 of each, then run 2 of each...),
    so that a slow minute of a shared machine hits all of them; jobs/s of each one's median.
    A command that fails is an error entry; the others go on."""
    listing = ctx.work / "small-list.txt"
    listing.write_text("".join(ctx.origin.url(s.name) + "\n" for s in ctx.files.small))
    runs: dict[str, list[float]] = {label: [] for label in commands}
    errors: dict[str, dict[str, Any]] = {}
    for repeat in range(ctx.profile.repeats):
        for label, (log, command, env) in commands.items():
            if label in errors:
                continue
            dest = ctx.fresh_dest()
            os.sync()
            args = [{"LIST": str(listing), "DEST": str(dest)}.get(a, a) for a in command]
            try:
                runs[label].append(ctx.procs.run(args, ctx.log(log), env))
                if repeat == 0:
                    verify_all(ctx.files.small, dest)
            except BenchError as exc:
                errors[label] = {"error": str(exc)}
                print(f"  {label}: {exc}", flush=True)
                continue
            finally:
                shutil.rmtree(dest, ignore_errors=True)
            print(f"  {label}: {len(ctx.files.small) / runs[label][-1]:7.1f} jobs/s", flush=True)
    return {
        label: errors.get(label)
        or {
            "runs_s": [round(t, 3) for t in times],
            "jobs_s": round(len(ctx.files.small) / statistics.median(times), 1),
            "sha256_ok": True,
        }
        for label, times in runs.items()
    }


def small_with_aria2(ctx: Context) -> dict[str, Any]:
    command = [*aria2_args(ctx, Path("DEST")), "-j", "16", "-i", "LIST"]
    return list_timings(ctx, "aria2c -j16", "aria2c-small", command, None)


def run(ctx: Context) -> dict[str, Any]:
    print(
        f"case 3: {len(ctx.files.small)} files of {ctx.profile.small_size // 1024} KiB", flush=True
    )
    results: dict[str, Any] = {}
    for count in (1, 2):
        name = f"{count} worker{'s' if count > 1 else ''} c={ctx.profile.concurrency}"
        results[name] = guarded(lambda c=count: small_with_workers(ctx, c))
    if ctx.tools["aria2c"]:
        results["aria2c -j16"] = guarded(lambda: small_with_aria2(ctx))
    return {
        "3_small_files": {
            "files": len(ctx.files.small),
            "file_bytes": ctx.profile.small_size,
            "results": results,
        }
    }


def small_rows(case: str, result: dict[str, Any] | None) -> list[list[str]]:
    """Rows of a small-files case (3 and 11): jobs/s, ratio to aria2c, CPU or why not."""
    if not result:
        return []
    aria = result["results"].get("aria2c -j16", {})
    table = []
    for name, r in result["results"].items():
        notes = str(r.get("error") or r.get("skipped") or "")[:80]
        if r.get("cpu_ms_per_job"):
            cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_job"].items())
            notes = f"CPU ms per job: {cpu}; cores {r['cores_busy_fraction']:.0%} busy"
        share = ratio(r, aria, "jobs_s")
        table.append([case, name, num(r.get("jobs_s"), "jobs/s"), times(share, "aria2c"), notes])
    return table


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    return small_rows("3", result)
