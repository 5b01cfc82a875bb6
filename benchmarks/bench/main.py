"""Benchmarks of `downloader` against curl, aria2c and plain requests, on a local nginx origin.

    python -m benchmarks [--quick] [--cases 1,2,3] [--dest-dir DIR] [--redis-url URL]
    python benchmarks/run.py ...   (the same)

Starts nginx on two loopback ports (one uncapped, one capped at 25 MiB/s per connection),
makes the test files in a temporary directory, runs every case several times and reports
medians. Writes benchmarks/results.json and benchmarks/results.png and refreshes the figures
table in benchmarks/README.md. Every process it starts (nginx, workers, tools) is stopped
and every temporary directory removed when it ends, also on Ctrl-C or an error.
See benchmarks/README.md for what each case measures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from .cases import CASES
from .config import FULL, INSTALL_HINT, QUICK
from .context import Context, delete_namespace_keys, redis_answers
from .files import make_files
from .measure import MEASUREMENT_ERRORS
from .origin import start_origin
from .processes import Processes, raise_interrupt
from .report import report_markdown, update_readme, write_results
from .tools import find_tools, warn_missing

ALL_CASES = "1,2,3,4,6,7,8,9,10,11,12"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller files and one repeat: a smoke run of a few minutes",
    )
    parser.add_argument(
        "--cases",
        type=selected_cases,
        default=ALL_CASES,
        help="comma-separated cases to run (5, worker RSS, runs with 1; default: all)",
    )
    parser.add_argument(
        "--dest-dir",
        type=Path,
        default=None,
        help="where downloads go (default: a temporary directory)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="the Redis the workers use (default: %(default)s)",
    )
    return parser.parse_args(argv)


def selected_cases(text: str) -> list[str]:
    """`--cases 1,3` as a list; case 5 (worker RSS) is measured during case 1."""
    wanted = {"1" if c.strip() == "5" else c.strip() for c in text.split(",") if c.strip()}
    unknown = wanted - set(CASES)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"no case {', '.join(sorted(unknown))}; cases: 1-11 (5 runs with 1)"
        )
    return sorted(wanted, key=int)


def run_cases(ctx: Context, selected: list[str]) -> dict[str, Any]:
    cases: dict[str, Any] = {}
    for key in selected:
        if CASES[key].needs_redis and not ctx.redis_url:
            ctx.skipped.append(f"case {key}: no Redis answers")
            continue
        try:
            cases.update(CASES[key].run(ctx))
        except MEASUREMENT_ERRORS as exc:
            traceback.print_exc()
            cases[f"{key}_error"] = f"{type(exc).__name__}: {exc}"
    return cases


def benchmark(args: argparse.Namespace, procs: Processes, work: Path, dest: Path) -> int:
    started = time.monotonic()
    tools = find_tools()
    missing = warn_missing(tools)
    if "nginx" in missing:
        print("nothing can be measured without the nginx origin", file=sys.stderr)
        return 2
    redis_url = args.redis_url if redis_answers(args.redis_url) else None
    profile = QUICK if args.quick else FULL
    (work / "logs").mkdir()
    files = make_files(work / "origin", profile)
    origin = start_origin(procs, str(tools["nginx"]), work, work / "origin")
    run_id = f"dlbench-{uuid.uuid4().hex[:8]}"
    ctx = Context(profile, procs, work, dest, origin, files, tools, redis_url, run_id)
    ctx.skipped += [f"{name}: not installed ({INSTALL_HINT})" for name in missing]
    ctx.load_at_start = [round(x, 2) for x in os.getloadavg()]
    if ctx.load_at_start[0] > 0.5:
        print(
            f"note: load average {ctx.load_at_start[0]} at start: other processes use the CPU "
            "and will lower the figures",
            file=sys.stderr,
        )
    if redis_url is None:
        ctx.skipped.append(f"worker cases: no Redis answers at {args.redis_url}")
    try:
        cases = run_cases(ctx, args.cases)
    finally:
        if redis_url:
            delete_namespace_keys(redis_url, run_id)
    results = write_results(ctx, cases, started)
    table = report_markdown(results)
    update_readme(table)
    print("\n" + table)
    for note in ctx.skipped:
        print(f"skipped: {note}")
    print("results: benchmarks/results.json and benchmarks/results.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGINT too: a shell starts background jobs with it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, raise_interrupt)
    work = Path(tempfile.mkdtemp(prefix="dl-bench-"))
    dest = Path(tempfile.mkdtemp(prefix="dl-bench-dest-", dir=args.dest_dir))
    procs = Processes([work, dest])
    try:
        return benchmark(args, procs, work, dest)
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
