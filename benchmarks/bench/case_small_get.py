"""Case 11: 1,000 files of 64 KiB (issue 12) with two workers and with the embedded default
(`downloader get -i LIST`), each against aria2c -j16 in the same run."""

from __future__ import annotations

from typing import Any

from .case_small_files import list_timings, small_rows, small_with_aria2, small_with_workers
from .config import NotAvailable
from .context import Context
from .measure import guarded, ratio
from .tools import downloader_command, embedded_env, get_has

PARALLEL = 16  # as many downloads at once as aria2c -j16 and two workers of -c 8


def get_list(ctx: Context) -> dict[str, Any]:
    """`downloader get -i LIST -d DEST` on the embedded default."""
    if not get_has("-i"):
        raise NotAvailable("`downloader get -i FILE` is missing")
    command = downloader_command("get", "-i", "LIST", "-d", "DEST")
    if get_has("--parallel"):
        command += ["--parallel", str(PARALLEL)]
    return list_timings(ctx, "get -i", "get-list", command, embedded_env(ctx))


def run(ctx: Context) -> dict[str, Any]:
    print(f"case 11: {len(ctx.files.small)} files of 64 KiB: workers, get -i, aria2c", flush=True)
    results: dict[str, Any] = {}
    if ctx.redis_url:
        name = f"2 workers c={ctx.profile.concurrency}"
        results[name] = guarded(lambda: small_with_workers(ctx, 2))
    else:
        results["2 workers"] = {"skipped": "no Redis answers"}
    results["get -i"] = guarded(lambda: get_list(ctx), "get -i", ctx.skipped)
    if ctx.tools["aria2c"]:
        results["aria2c -j16"] = guarded(lambda: small_with_aria2(ctx))
    aria = results.get("aria2c -j16")
    ratios = {name: ratio(r, aria, "jobs_s") for name, r in results.items()}
    print(f"  x aria2c -j16: {ratios}", flush=True)
    return {"11_small_get": {"files": len(ctx.files.small), "results": results, "ratios": ratios}}


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    return small_rows("11", result)
