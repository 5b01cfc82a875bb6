"""What the project's kombu options cost the bare Celery task (issue 22): the floor of
`jobpath.py --floor` (a no-op task through two `celery worker -P threads -c 8 -E`) with
stock options, then with each of the project's own (ten priority lists, the key prefix) and
both, on a private `redis-server`, the variants taking turns. Not a test: prints figures.
`--settings` runs the bare task with the project's Celery settings instead, one at a time
(results in Redis, `task_track_started`, the batching consumer, the transport, log level).

    python benchmarks/celery_options.py [--tasks 1000] [--repeats 2] [--settings]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench.floor import celery_floor, start_redis
from benchmarks.bench.processes import Processes

PRIORITIES = {
    "priority_steps": list(range(10)),
    "sep": ":",
    "queue_order_strategy": "priority",
}
PREFIX = {"global_keyprefix": "floorns:celery:"}
VARIANTS: dict[str, dict[str, Any]] = {
    "stock": {},
    "ten priority lists": PRIORITIES,
    "key prefix": PREFIX,
    "both (as the project)": {**PRIORITIES, **PREFIX},
}

BACKEND = {"task_ignore_result": False, "result_expires": 24 * 3600}
SETTINGS: dict[str, tuple[dict[str, Any], bool]] = {
    "stock": ({}, False),
    "results in Redis": (BACKEND, False),
    "results + track_started": ({**BACKEND, "task_track_started": True}, False),
    "batching consumer": ({"worker_consumer": "downloader.celery_app.consumer:Consumer"}, False),
    "our transport": ({"broker_transport": "downloader.celery_app.transport:Transport"}, False),
    "no received/succeeded lines": ({}, True),
}
"""Celery settings of the project's app (`celery_app/app.py`) and the log level, one each."""


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--settings", action="store_true")
    args = parser.parse_args()
    if args.settings:
        return compare_settings(args)
    work = Path(tempfile.mkdtemp(prefix="dl-celery-options-"))
    (work / "logs").mkdir()
    procs = Processes([work])
    figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        url, _ = start_redis(procs, work)
        for _ in range(args.repeats):
            for name, options in VARIANTS.items():
                run = celery_floor(procs, work, url, args.tasks, options=options)
                figures[name].append(run["cpu_ms"])
                print(f"  {name}: {run['cpu_ms']:.2f} ms per task", flush=True)
        for name, values in figures.items():
            print(f"{name:24} worker CPU per task, median: {statistics.median(values):.2f} ms")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def compare_settings(args: argparse.Namespace) -> int:
    """The bare task with each of `SETTINGS`, in turns; medians of worker CPU per task."""
    work = Path(tempfile.mkdtemp(prefix="dl-celery-settings-"))
    (work / "logs").mkdir()
    procs = Processes([work])
    figures: dict[str, list[float]] = {name: [] for name in SETTINGS}
    try:
        url, _ = start_redis(procs, work)
        backend = {"result_backend": url}
        for _ in range(args.repeats):
            for name, (conf, quiet) in SETTINGS.items():
                conf = {**backend, **conf} if "task_ignore_result" in conf else conf
                run = celery_floor(procs, work, url, args.tasks, conf=conf, quiet_task_lines=quiet)
                figures[name].append(run["cpu_ms"])
                print(f"  {name}: {run['cpu_ms']:.2f} ms per task", flush=True)
        for name, values in figures.items():
            print(f"{name:26} worker CPU per task, median: {statistics.median(values):.2f} ms")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
