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

THE_REDIS = "<the benchmark's redis-server>"
"""Stands for the private Redis's URL in a setting (known once it runs)."""
BACKEND = {"result_backend": THE_REDIS, "task_ignore_result": False, "result_expires": 24 * 3600}
SETTINGS: dict[str, dict[str, Any]] = {
    "stock": {},
    "results in Redis": {"conf": BACKEND},
    "results + track_started": {"conf": {**BACKEND, "task_track_started": True}},
    "batching consumer": {"conf": {"worker_consumer": "downloader.celery_app.consumer:Consumer"}},
    "our transport": {"conf": {"broker_transport": "downloader.celery_app.transport:Transport"}},
    "no received/succeeded lines": {"quiet_task_lines": True},
}
"""Celery settings of the project's app (`celery_app/app.py`) and the log level, one each."""


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--settings", action="store_true")
    args = parser.parse_args()
    if args.settings:
        return compare(args, "dl-celery-settings-", SETTINGS)
    return compare(
        args, "dl-celery-options-", {name: {"options": o} for name, o in VARIANTS.items()}
    )


def compare(args: argparse.Namespace, prefix: str, variants: dict[str, dict[str, Any]]) -> int:
    """The bare task with each variant's arguments to `celery_floor`, in turns; medians of
    worker CPU per task."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    (work / "logs").mkdir()
    procs = Processes([work])
    figures: dict[str, list[float]] = {name: [] for name in variants}
    try:
        url, _ = start_redis(procs, work)
        for _ in range(args.repeats):
            for name, variant in variants.items():
                if "conf" in variant:
                    conf = {k: url if v == THE_REDIS else v for k, v in variant["conf"].items()}
                    variant = {**variant, "conf": conf}
                run = celery_floor(procs, work, url, args.tasks, **variant)
                figures[name].append(run["cpu_ms"])
                print(f"  {name}: {run['cpu_ms']:.2f} ms per task", flush=True)
        width = max(map(len, variants))
        for name, values in figures.items():
            print(f"{name:{width}} worker CPU per task, median: {statistics.median(values):.2f} ms")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
