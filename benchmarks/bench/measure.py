"""Timing and summing up: one download checked for size and SHA-256, variants interleaved
over repeats, medians, ratios, percentiles and CPU seconds, shared by every case."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis
import requests

from .config import BenchError, MiB, NotAvailable
from .context import Context
from .files import SourceFile, sha256_file
from .tools import Fetcher, Sample

# What a measurement may fail with without stopping the run.
MEASUREMENT_ERRORS = (BenchError, redis.RedisError, requests.RequestException, OSError)


def run_one(ctx: Context, fetch: Fetcher, url: str, source: SourceFile, verify: bool) -> Sample:
    """One download into a fresh directory; checks its size, and its SHA-256 when asked."""
    dest = ctx.fresh_dest()
    try:
        os.sync()  # earlier runs' dirty pages must not be written back during this one
        sample = fetch(url, dest)
        path = dest / Path(source.name).name
        size = path.stat().st_size if path.exists() else -1
        if size != source.size:
            raise BenchError(f"{path} has {size} bytes, expected {source.size}")
        if verify:
            sample.sha256_ok = sha256_file(path) == source.sha256
            if not sample.sha256_ok:
                print(f"  SHA-256 MISMATCH: {path}", file=sys.stderr)
        return sample
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def run_matrix(
    ctx: Context, variants: dict[str, Fetcher], url: str, source: SourceFile, size_label: str
) -> dict[str, dict[str, Any]]:
    """Every variant `repeats` times, interleaved so that drift hits all of them alike.

    Each round starts one variant later, so no variant always follows the same one (on a VM
    the run after another tool's big write can be slower: the page cache must be refilled).
    """
    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    errors: dict[str, str] = {}
    names = list(variants)
    for repeat in range(ctx.profile.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            fetch = variants[name]
            if name in errors:
                continue
            try:
                sample = run_one(ctx, fetch, url, source, verify=repeat == 0)
            except BenchError as exc:
                errors[name] = str(exc)
                print(f"  {name}: FAILED {exc}", file=sys.stderr)
                continue
            samples[name].append(sample)
            print(
                f"  {size_label} {name:<22} run {repeat + 1}: {sample.seconds:7.2f} s"
                f"  {source.size / MiB / sample.seconds:8.1f} MiB/s",
                flush=True,
            )
    return {name: summarize(samples[name], source.size, errors.get(name)) for name in variants}


def summarize(samples: list[Sample], size: int, error: str | None) -> dict[str, Any]:
    if not samples:
        return {"error": error or "no run"}
    median = statistics.median(s.seconds for s in samples)
    engines = [s.engine_seconds for s in samples if s.engine_seconds]
    peaks = [s.peak_rss for s in samples if s.peak_rss]
    checked = [s.sha256_ok for s in samples if s.sha256_ok is not None]
    summary: dict[str, Any] = {
        "runs_s": [round(s.seconds, 4) for s in samples],
        "median_s": round(median, 4),
        "mib_s": round(size / MiB / median, 1),
        "sha256_ok": all(checked) if checked else None,
    }
    if engines:
        summary["engine_mib_s"] = round(size / MiB / statistics.median(engines), 1)
    if peaks:
        summary["peak_rss_mib"] = round(max(peaks) / MiB, 1)
    if error:
        summary["error"] = error
    return summary


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "mib_s") -> float | None:
    if not a or not b or key not in a or key not in b or not b[key]:
        return None
    return round(a[key] / b[key], 3)


def percentiles(values: list[float]) -> dict[str, float]:
    p99 = values[0]
    if len(values) > 1:
        p99 = statistics.quantiles(values, n=100, method="inclusive")[98]
    return {
        "median_ms": round(statistics.median(values), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(values), 2),
    }


def guarded(
    measure: Callable[[], dict[str, Any]], what: str = "", skipped: list[str] | None = None
) -> dict[str, Any]:
    """A failed measurement becomes an error entry; the rest of the run goes on.

    A measurement whose interface this build lacks (`NotAvailable`) becomes a `skipped`
    entry, printed at once and listed in `skipped` (the run's skip notes) when given.
    """
    try:
        return measure()
    except NotAvailable as exc:
        note = f"{what}: not available: {exc}" if what else f"not available: {exc}"
        print(f"  {note}", flush=True)
        if skipped is not None:
            skipped.append(note)
        return {"skipped": f"not available: {exc}"}
    except MEASUREMENT_ERRORS as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds of these processes and their live children.

    This process's children are the workers and nginx, counted in groups of their own.
    """
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid)
            children = parent.children(recursive=True) if pid != os.getpid() else []
            for process in (parent, *children):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def redis_server_pid(url: str) -> int | None:
    """The pid of the Redis server when it runs on this machine."""
    pid = int(redis.Redis.from_url(url).info("server").get("process_id", 0))
    with contextlib.suppress(psutil.Error):
        if "redis" in psutil.Process(pid).name():
            return pid
    return None
