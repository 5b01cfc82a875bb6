"""Case 6: what a command costs before it does anything (issue 13): `downloader --help` and a
`downloader get` of a 1 KiB file on the embedded default, against the interpreter's own
start-up and curl fetching the same file."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from .case_single_stream import get_fixed_cost
from .context import Context, clean_env
from .measure import guarded, run_one
from .table import times, why_not
from .tools import curl_fetch, downloader_command


def console_script() -> list[str]:
    """`downloader` as a user types it (the venv's console script), else `python -m`."""
    script = Path(sys.executable).parent / "downloader"
    return [str(script)] if script.exists() else downloader_command()


def command_time(ctx: Context, args: list[str], log: str) -> dict[str, Any]:
    """Median wall seconds of a command over the profile's start-up runs (one warm-up first)."""
    env = clean_env()
    ctx.procs.run(args, ctx.log(log), env)
    runs = [ctx.procs.run(args, ctx.log(log), env) for _ in range(ctx.profile.startup_runs)]
    return {"runs_s": [round(r, 3) for r in runs], "median_s": round(statistics.median(runs), 3)}


def curl_tiny(ctx: Context) -> dict[str, Any]:
    tiny, fetch = ctx.files.tiny, curl_fetch(ctx)
    runs = [
        run_one(ctx, fetch, ctx.origin.url(tiny.name), tiny, False).seconds
        for _ in range(ctx.profile.startup_runs)
    ]
    return {"runs_s": [round(r, 3) for r in runs], "median_s": round(statistics.median(runs), 3)}


def run(ctx: Context) -> dict[str, Any]:
    print("case 6: start-up: downloader --help and a 1 KiB get", flush=True)
    results: dict[str, Any] = {
        "python -c pass": guarded(
            lambda: command_time(ctx, [sys.executable, "-c", "pass"], "python")
        ),
        "downloader --help": guarded(
            lambda: command_time(ctx, [*console_script(), "--help"], "help")
        ),
        "get of 1 KiB": guarded(lambda: get_fixed_cost(ctx, ctx.profile.startup_runs)),
    }
    if ctx.tools["curl"]:
        results["curl of 1 KiB"] = guarded(lambda: curl_tiny(ctx))
    ratios = {
        "help_vs_python": _ratio(results["downloader --help"], results["python -c pass"]),
        "get_vs_curl": _ratio(results["get of 1 KiB"], results.get("curl of 1 KiB")),
    }
    for name, r in results.items():
        print(f"  {name:<20} {r.get('median_s', why_not(r))} s", flush=True)
    print(
        f"  --help {ratios['help_vs_python']}x python -c pass; 1 KiB get "
        f"{ratios['get_vs_curl']}x curl",
        flush=True,
    )
    return {"6_startup": {"results": results, "ratios": ratios}}


def _ratio(slow: dict[str, Any] | None, fast: dict[str, Any] | None) -> float | None:
    """How many times longer `slow` takes than `fast`."""
    if not slow or not fast or not slow.get("median_s") or not fast.get("median_s"):
        return None
    return round(slow["median_s"] / fast["median_s"], 2)


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    if not result:
        return []
    ratios = result["ratios"]
    against = {
        "downloader --help": times(ratios.get("help_vs_python"), "python -c pass"),
        "get of 1 KiB": times(ratios.get("get_vs_curl"), "curl's time"),
    }
    return [
        [
            "6",
            name,
            f"{r['median_s']:.3f} s" if r.get("median_s") else "n/a",
            against.get(name, ""),
            why_not(r) if not r.get("median_s") else "",
        ]
        for name, r in result["results"].items()
    ]
