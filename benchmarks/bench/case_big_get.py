"""Case 7: a user's `downloader get` of the big file (1 GiB) on the embedded default against
curl, in the same run (issue 13 asks for at least 0.9x curl), and against curl followed by an
`fsync` of its file: the get syncs its file before naming it, and where the disk is slower
than the wire that sync is the whole difference."""

from __future__ import annotations

from typing import Any

from .case_single_stream import transfer_rows
from .context import Context
from .measure import ratio, run_matrix
from .tools import Fetcher, cli_get, curl_fetch, curl_synced_fetch


def run(ctx: Context) -> dict[str, Any]:
    source = ctx.files.big
    print(f"case 7: downloader get of {source.size >> 20} MiB against curl", flush=True)
    variants: dict[str, Fetcher] = {"get (default)": cli_get(ctx, None)}
    if ctx.tools["curl"]:
        variants["curl"] = curl_fetch(ctx)
        variants["curl + fsync"] = curl_synced_fetch(ctx)
    results = run_matrix(ctx, variants, ctx.origin.url(source.name), source, "big")
    for summary in results.values():
        summary["ratio_to_curl"] = ratio(summary, results.get("curl"))
    get = results["get (default)"]
    synced = ratio(get, results.get("curl + fsync"))
    print(f"  get / curl: {get.get('ratio_to_curl')}x; get / (curl + fsync): {synced}x", flush=True)
    return {"7_big_get": {"file_bytes": source.size, "results": results}}


def rows(result: dict[str, Any] | None) -> list[list[str]]:
    return transfer_rows("7", result)
