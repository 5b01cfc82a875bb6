"""Case 12: the capped origin's big file with default settings, where the number of segments
grows from 8 while each step adds throughput, up to the host's cap of 16 (issue 22): against
aria2c with 16 connections (when installed), a worker with a fixed 16 segments and curl."""

from __future__ import annotations

from typing import Any

from .case_single_stream import transfer_rows
from .config import CAP_PER_CONNECTION
from .context import Context
from .measure import ratio, run_matrix
from .tools import Fetcher, tool_variants
from .workers import workers


def run(ctx: Context) -> dict[str, Any]:
    print(
        f"case 12: one big file, origin capped at {CAP_PER_CONNECTION}/s per connection, "
        "default settings",
        flush=True,
    )
    source = ctx.files.big
    with workers(ctx, "c12auto") as auto, workers(ctx, "c12s16", segments=16) as seg16:
        variants: dict[str, Fetcher] = {"worker default": auto.fetch, "worker seg=16": seg16.fetch}
        variants.update(tool_variants(ctx, 16))
        results = run_matrix(
            ctx, variants, ctx.origin.url(source.name, capped=True), source, "capped"
        )
    for summary in results.values():
        summary["ratio_to_curl"] = ratio(summary, results.get("curl"))
    default = results["worker default"]
    return {
        "12_capped_default": {
            "file_bytes": source.size,
            "cap_per_connection": CAP_PER_CONNECTION,
            "results": results,
            "ratios": {
                "default_vs_aria2c_x16": ratio(default, results.get("aria2c x16")),
                "default_vs_seg16": ratio(default, results["worker seg=16"]),
            },
        }
    }


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    table = transfer_rows("12", {**result, "ratios": {}} if result else None)
    labels = {"default_vs_aria2c_x16": "x aria2c x16", "default_vs_seg16": "x worker seg=16"}
    for key, label in labels.items() if result else ():
        value = result["ratios"].get(key) if result else None
        table.append(["12", "worker default", "", f"{value:.2f}{label}" if value else "n/a", ""])
    return table
