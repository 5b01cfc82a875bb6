"""Case 2: one big file from the origin capped per connection, where segments pay: a worker
with 16 segments against one segment, aria2c with 16 connections and curl."""

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
        f"case 2: one big file, origin capped at {CAP_PER_CONNECTION}/s per connection", flush=True
    )
    source = ctx.files.big
    with workers(ctx, "c2s16", segments=16) as seg16, workers(ctx, "c2s1", segments=1) as seg1:
        variants: dict[str, Fetcher] = {"worker seg=16": seg16.fetch, "worker seg=1": seg1.fetch}
        variants.update(tool_variants(ctx, 16))
        results = run_matrix(
            ctx, variants, ctx.origin.url(source.name, capped=True), source, "capped"
        )
    for summary in results.values():
        summary["ratio_to_curl"] = ratio(summary, results.get("curl"))
    return {
        "2_capped": {
            "file_bytes": source.size,
            "cap_per_connection": CAP_PER_CONNECTION,
            "results": results,
            "ratios": {
                "seg16_vs_aria2c_x16": ratio(results["worker seg=16"], results.get("aria2c x16")),
                "seg16_vs_seg1": ratio(results["worker seg=16"], results["worker seg=1"]),
                "seg16_vs_curl": ratio(results["worker seg=16"], results.get("curl")),
            },
        }
    }


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    return transfer_rows("2", result)
