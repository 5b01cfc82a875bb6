"""Case 11: 1,000 files of 64 KiB (issue 12) with two workers and with the embedded default
(`downloader get -i LIST`, and the seed API's `DownloadQueueService().download()` loop), each
against aria2c -j16 in the same run; the last three take turns."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .case_small_files import ListCommand, interleaved_lists, small_rows, small_with_workers
from .context import Context
from .measure import guarded, ratio
from .tools import aria2_args, downloader_command, embedded_env, get_has

PARALLEL = 16  # as many downloads at once as aria2c -j16 and two workers of -c 8


def get_list(ctx: Context) -> ListCommand | None:
    """`downloader get -i LIST -d DEST` on the embedded default; None if this build's `get`
    has no `-i`."""
    if not get_has("-i"):
        return None
    command = downloader_command("get", "-i", "LIST", "-d", "DEST")
    if get_has("--parallel"):
        command += ["--parallel", str(PARALLEL)]
    return "get-list", command, embedded_env(ctx)


def seed_loop(ctx: Context) -> ListCommand:
    """The seed API on the embedded default: `download()` per URL, then `wait_for_job`."""
    script = Path(__file__).with_name("seed_loop.py")
    command = [sys.executable, str(script), "LIST", "DEST", str(PARALLEL)]
    return "seed-loop", command, embedded_env(ctx)


def run(ctx: Context) -> dict[str, Any]:
    print(
        f"case 11: {len(ctx.files.small)} files of 64 KiB: workers, get -i, the seed API, aria2c",
        flush=True,
    )
    results: dict[str, Any] = {}
    if ctx.redis_url:
        name = f"2 workers c={ctx.profile.concurrency}"
        results[name] = guarded(lambda: small_with_workers(ctx, 2))
    else:
        results["2 workers"] = {"skipped": "no Redis answers"}
    commands: dict[str, ListCommand] = {}
    get = get_list(ctx)
    if get is None:
        note = "get -i: not available: `downloader get -i FILE` is missing"
        print(f"  {note}", flush=True)
        ctx.skipped.append(note)
        results["get -i"] = {"skipped": note}
    else:
        commands["get -i"] = get
    commands["seed API loop"] = seed_loop(ctx)
    if ctx.tools["aria2c"]:
        aria = [*aria2_args(ctx, Path("DEST")), "-j", "16", "-i", "LIST"]
        commands["aria2c -j16"] = ("aria2c-small", aria, None)
    results.update(interleaved_lists(ctx, commands))
    aria2c = results.get("aria2c -j16")
    ratios = {name: ratio(r, aria2c, "jobs_s") for name, r in results.items()}
    print(f"  x aria2c -j16: {ratios}", flush=True)
    return {"11_small_get": {"files": len(ctx.files.small), "results": results, "ratios": ratios}}


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    return small_rows("11", result)
