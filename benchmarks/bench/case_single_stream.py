"""Cases 1 and 5: one big file from the uncapped origin, by every downloader, and the
workers' peak RSS while they fetch it and a smaller one (it must not grow with the file)."""

from __future__ import annotations

import contextlib
import statistics
from typing import Any

from .config import SAMPLE_INTERVAL, MiB
from .context import Context
from .measure import guarded, ratio, run_matrix, run_one
from .table import num
from .tools import Fetcher, cli_get, requests_fetch, tool_variants
from .workers import Worker, workers


def run(ctx: Context) -> dict[str, Any]:
    print("case 1: one big file, uncapped origin", flush=True)
    source = ctx.files.big
    variants: dict[str, Fetcher] = {
        "get seg=1": cli_get(ctx, 1),
        "get seg=8 (default)": cli_get(ctx, None),
    }
    rss: dict[str, Any] = {"skipped": "no Redis"}
    with contextlib.ExitStack() as stack:
        pair: tuple[Worker, Worker] | None = None
        if ctx.redis_url:
            pair = (
                stack.enter_context(workers(ctx, "c1s1", segments=1)),
                stack.enter_context(workers(ctx, "c1s8")),
            )
            variants["worker seg=1"] = pair[0].fetch
            variants["worker seg=8 (default)"] = pair[1].fetch
        variants["requests 1 MiB"] = requests_fetch
        variants.update(tool_variants(ctx, 16))
        results = run_matrix(ctx, variants, ctx.origin.url(source.name), source, "big")
        if pair is not None:
            rss = case_rss(ctx, *pair, results)
    curl = results.get("curl")
    for summary in results.values():
        summary["ratio_to_curl"] = ratio(summary, curl)
    result = {"file_bytes": source.size, "origin": "uncapped", "results": results}
    result["get_fixed_cost_s"] = guarded(lambda: get_fixed_cost(ctx))
    return {"1_single_stream": result, "5_worker_rss": rss}


def get_fixed_cost(ctx: Context, repeats: int = 3) -> dict[str, Any]:
    """Seconds `downloader get` takes for a 1 KiB file: what it costs besides the transfer."""
    tiny, fetch = ctx.files.tiny, cli_get(ctx, None)
    url = ctx.origin.url(tiny.name)
    runs = [run_one(ctx, fetch, url, tiny, False).seconds for _ in range(repeats)]
    print(f"  get of a {tiny.size} B file: {statistics.median(runs):.2f} s", flush=True)
    return {
        "file_bytes": tiny.size,
        "runs_s": [round(r, 3) for r in runs],
        "median_s": round(statistics.median(runs), 3),
    }


def case_rss(
    ctx: Context, seg1: Worker, seg8: Worker, big_results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Case 5: the workers' peak RSS for the big file (from case 1) and for a smaller one."""
    print("case 5: worker RSS, smaller file", flush=True)
    small = ctx.files.rss_small
    small_results = run_matrix(
        ctx,
        {"worker seg=1": seg1.fetch, "worker seg=8 (default)": seg8.fetch},
        ctx.origin.url(small.name),
        small,
        "rss",
    )
    rows: dict[str, Any] = {}
    for name, worker in (("worker seg=1", seg1), ("worker seg=8 (default)", seg8)):
        rows[name] = {
            "idle_mib": round(worker.idle_rss / MiB, 1),
            f"peak_mib_{small.size // MiB}MiB": small_results[name].get("peak_rss_mib"),
            f"peak_mib_{ctx.files.big.size // MiB}MiB": big_results[name].get("peak_rss_mib"),
        }
    return {
        "sampling_s": SAMPLE_INTERVAL,
        "includes_children": True,
        "file_sizes_mib": [small.size // MiB, ctx.files.big.size // MiB],
        "workers": rows,
    }


def transfer_rows(case: str, result: dict[str, Any] | None) -> list[list[str]]:
    """Table rows of a one-file case (1, 2 and 7): MiB/s, ratio to curl, notes."""
    if not result:
        return []
    rows = []
    fixed = result.get("get_fixed_cost_s", {})
    if fixed.get("median_s"):
        rows.append(
            [
                case,
                f"get of a {fixed['file_bytes']} B file",
                f"{fixed['median_s']} s",
                "",
                "the fixed cost of a get: start-up and shut-down",
            ]
        )
    for name, r in result["results"].items():
        notes = [r["error"][:60]] if r.get("error") else []
        if r.get("engine_mib_s"):
            notes.append(f"transfer alone {r['engine_mib_s']:,.0f} MiB/s")
        if r.get("sha256_ok") is not None:
            notes.append("SHA-256 ok" if r["sha256_ok"] else "SHA-256 MISMATCH")
        ratio_text = f"{r['ratio_to_curl']:.2f}x curl" if r.get("ratio_to_curl") else ""
        rows.append([case, name, num(r.get("mib_s"), "MiB/s"), ratio_text, "; ".join(notes)])
    labels = {"seg16_vs_aria2c_x16": "x aria2c x16", "seg16_vs_seg1": "x worker seg=1"}
    for key, label in labels.items() if "ratios" in result else ():
        value = result["ratios"].get(key)
        rows.append([case, "worker seg=16", "", f"{value:.2f}{label}" if value else "n/a", ""])
    return rows


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    return transfer_rows("1", result)


def rss_rows(result: dict[str, Any] | None) -> list[list[str]]:
    if not result or "workers" not in result:
        return []
    table = []
    for name, r in result["workers"].items():
        for key, value in r.items():
            if key.startswith("peak"):
                size = key.removeprefix("peak_mib_")
                table.append(
                    [
                        "5",
                        f"{name} peak RSS, {size} file",
                        num(value, "MiB"),
                        "",
                        f"idle {r['idle_mib']} MiB",
                    ]
                )
    return table
