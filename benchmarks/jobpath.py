"""The cost of one small job on the worker path: files/s, CPU per job, round trips per job and
a profile, for 1,000 x 64 KiB over two `downloader worker -c 8`, with aria2c -j16 in the same
run as the reference. Not a test: prints figures (the numbers in benchmarks/README.md).

    python benchmarks/jobpath.py [--jobs 1000] [--repeats 3] [--strace] [--py-spy FILE]
    python benchmarks/jobpath.py --floor [--jobs 1000] [--py-spy FILE]

`--floor` (issue 22) runs on a private `redis-server`: the floors first (a no-op task through
two bare `celery worker -P threads -c 8 -E`, and a one-thread `requests` loop GETting and
writing each file), then the full job path; it prints the CPU per job of each, the difference,
the Redis commands per job of each (`INFO commandstats`), and the job path's commands sorted by
what they are for (Redis MONITOR, in a run of its own since MONITOR slows Redis down).

`--strace` counts the workers' `sendto` calls (`strace -f -c`): every Redis round trip sends
once and so does each HTTP request, so sendto per job minus one is Redis round trips per job;
what idle workers send (polls, heartbeats), counted for 10 s first, is taken off.
`--py-spy FILE` records worker 0 with `py-spy record --gil --format raw` and prints where the
GIL-holding samples went (`--on-cpu`: every sample of a thread on a CPU). Both slow the
workers: their runs' files/s are not the figures.
Run it with `PYTHONPATH=<other checkout>/src` to measure another commit's code the same way.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench import floor
from benchmarks.bench.case_small_files import queue_small, small_with_aria2
from benchmarks.bench.config import QUICK, KiB
from benchmarks.bench.context import Context, delete_namespace_keys
from benchmarks.bench.files import TestFiles, write_random
from benchmarks.bench.origin import start_origin
from benchmarks.bench.processes import Processes
from benchmarks.bench.tools import find_tools
from benchmarks.bench.workers import workers

# Where a GIL-holding sample is counted: the first group (in this order) that any frame of its
# stack matches, so the job path's steps come before the libraries they call, and the HTTP
# GET (a floor) before the step that makes it.
PROFILE_GROUPS = (
    ("logging", ("(logging/",)),
    ("Celery results", ("(celery/backends/",)),
    ("Celery task events", ("(celery/events/", "tell_flower (")),
    ("requests, urllib3, http.client", ("(requests/", "(urllib3/", "(http/client.py")),
    ("claim", ("claim (downloader/store/lifecycle.py",)),
    ("start", ("start_once (", "update (downloader/store/lifecycle.py")),
    ("progress", ("report_progress (", "(downloader/engine/watchdog.py")),
    ("end", ("(downloader/worker/ending.py", "finish (downloader/store/lifecycle.py")),
    ("events", ("(downloader/store/bus.py",)),
    ("leases", ("(downloader/worker/leases.py", "renew_many (")),
    ("reservations", ("(downloader/store/reservations.py",)),
    ("stamps", ("(downloader/engine/versions.py", "(downloader/engine/filestate.py")),
    ("transfer (engine)", ("(downloader/engine/",)),
    ("custom consumer", ("_flush_events (", "_flush_now (")),
    ("kombu: ack (Celery's late ack)", ("QoS.ack (",)),
    ("downloader other", ("(downloader/",)),
    ("redis-py", ("(redis/",)),
    ("kombu", ("(kombu/",)),
    ("celery", ("(celery/", "(billiard/")),
    ("json", ("(json/",)),
    ("threading, socket, ssl", ("(threading.py", "(socket.py", "(selectors.py")),
)


def make_context(procs: Processes, work: Path, jobs: int) -> Context:
    (work / "logs").mkdir(exist_ok=True)
    root = work / "origin"
    (root / "small").mkdir(parents=True)
    tiny = write_random(root, "tiny.bin", KiB)
    small = [write_random(root, f"small/f{i:04}.bin", 64 * KiB) for i in range(jobs)]
    files = TestFiles(root=root, big=tiny, rss_small=tiny, tiny=tiny, small=small)
    tools = find_tools()
    origin = start_origin(procs, str(tools["nginx"]), work, root)
    profile = dataclasses.replace(QUICK, small_count=jobs, repeats=1)
    dest = work / "dest"
    dest.mkdir()
    run_id = f"dlbench-{uuid.uuid4().hex[:8]}"
    return Context(profile, procs, work, dest, origin, files, tools, REDIS_URL, run_id)


ATTACH_SECONDS = 2.0

REDIS_URL = os.environ.get("DOWNLOADER_REDIS_URL", "redis://127.0.0.1:6379/0")


def start_probe(args: argparse.Namespace, pids: list[int], work: Path) -> subprocess.Popen | None:
    if args.strace:
        command = ["strace", "-f", "-c", "-e", "trace=sendto,recvfrom", "-o", str(work / "st")]
        for pid in pids:
            command += ["-p", str(pid)]
    elif args.py_spy:
        spy = Path(sys.executable).parent / "py-spy"  # pip's py-spy, beside the venv's python
        command = [
            str(spy) if spy.exists() else "py-spy",
            "record",
            *(() if args.on_cpu else ("--gil",)),
            "--format",
            "raw",
            "-r",
            "500",
        ]
        command += ["-o", str(args.py_spy), "-p", str(pids[0])]
    else:
        return None
    probe = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(ATTACH_SECONDS)  # attaching takes a moment; the jobs must not start before it
    return probe


def stop_probe(
    probe: subprocess.Popen | None,
    args: argparse.Namespace,
    work: Path,
    cpu_ms: float | None = None,
) -> str:
    if probe is None:
        return ""
    probe.send_signal(signal.SIGINT)
    probe.wait(60)
    if args.strace:
        return (work / "st").read_text()
    return summarise_profile(Path(args.py_spy), cpu_ms)


def sendto_calls(strace_summary: str) -> int:
    """The `sendto` count of an `strace -c` summary."""
    for line in strace_summary.splitlines():
        fields = line.split()
        if fields and fields[-1] == "sendto":
            return int(fields[3])
    return 0


def idle_sendto_rate(pids: list[int], work: Path) -> float:
    """sendto calls per second of the idle workers."""
    args = argparse.Namespace(strace=True, py_spy=None, on_cpu=False)
    probe = start_probe(args, pids, work)
    time.sleep(10)
    return sendto_calls(stop_probe(probe, args, work)) / 10


# The frames every sample of a worker's main thread has (the process and the consumer's
# loop): not counted as "downloader other".
SKELETON = ("(downloader/cli/", "(downloader/__main__.py", "Consumer.start (")


def summarise_profile(path: Path, cpu_ms: float | None = None) -> str:
    """Share of the GIL-holding samples per group, and the heaviest downloader frames."""
    groups: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = [f for f in stack.split(";") if not any(m in f for m in SKELETON)]
        group = next(
            (
                name
                for name, marks in PROFILE_GROUPS
                if any(m in frame for frame in frames for m in marks)
            ),
            "other",
        )
        groups[group] += samples
        seen = {f.split(":")[0] + ")" for f in frames if "(downloader/" in f}
        for name in seen:
            ours[name] += samples
    lines = [f"{total} samples" + (", ms per job by share" if cpu_ms else "")]
    lines += [
        f"  {n / total:6.1%}  " + (f"{n / total * cpu_ms:5.2f} ms  " if cpu_ms else "") + name
        for name, n in groups.most_common()
    ]
    lines.append("inclusive, downloader functions:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in ours.most_common(14)]
    return "\n".join(lines)


def per_job(calls: dict[str, int], jobs: int) -> str:
    """Redis commands per job, the most frequent first."""
    ranked = sorted(calls.items(), key=lambda kv: -kv[1])
    total = sum(calls.values()) / jobs
    return f"{total:.1f}: " + ", ".join(f"{k} {v / jobs:.2f}" for k, v in ranked if v >= jobs / 20)


def floor_run(args: argparse.Namespace, procs: Processes, work: Path) -> None:
    """The floors and the job path on one private Redis, then the job path's commands by use."""
    global REDIS_URL
    REDIS_URL, _ = floor.start_redis(procs, work)
    ctx = make_context(procs, work, args.jobs)
    celery = floor.celery_floor(procs, work, REDIS_URL, args.jobs)
    print(
        f"floor, bare Celery no-op task (2 x -P threads -c 8 -E):"
        f" {args.jobs / celery['seconds']:.1f}"
        f" tasks/s, worker CPU {celery['cpu_ms']:.2f} ms per task; Redis commands per task"
        f" {per_job(celery['calls'], args.jobs)}\n  per task: {celery['usage']}",
        flush=True,
    )
    dest = work / "floor-tasks"
    dest.mkdir()
    pairs = [(ctx.origin.url(s.name), str(dest / f"f{i}")) for i, s in enumerate(ctx.files.small)]
    both = floor.celery_floor(procs, work, REDIS_URL, args.jobs, fetches=pairs)
    shutil.rmtree(dest)
    print(
        f"both floors in one Celery task (GET + write in the task): {both['cpu_ms']:.2f} ms per"
        " task",
        flush=True,
    )
    get = floor.requests_floor(
        lambda i: ctx.origin.url(ctx.files.small[i].name), work / "floor-dest", args.jobs
    )
    shutil.rmtree(work / "floor-dest")
    print(
        f"floor, requests GET + write loop: {args.jobs / get['seconds']:.1f} files/s,"
        f" CPU {get['cpu_ms']:.2f} ms per file",
        flush=True,
    )
    sync = floor.fsync_cost(ctx.dest_root / "fsync", min(args.jobs, 300), 64 * KiB)
    print(
        "durability, 64 KiB written and renamed, ms per file: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sync.items()),
        flush=True,
    )
    shutil.rmtree(ctx.dest_root / "fsync")
    floor_ms = celery["cpu_ms"] + get["cpu_ms"]
    with workers(ctx, "jp", count=2) as worker:
        pids = [p.pid for p in worker.processes]
        # The RSS samplers walk every process of the machine 20 times a second, in this
        # process: they would be counted as the client's CPU. No RSS is reported here.
        for sampler in worker.samplers:
            sampler.stopped.set()
        for repeat in range(args.repeats):
            probe = start_probe(args, pids, work)
            calls0, usage0 = floor.command_calls(REDIS_URL), floor.usage_of(pids)
            run = queue_small(ctx, worker, verify=repeat == 0)
            calls = floor.calls_between(calls0, floor.command_calls(REDIS_URL))
            usage = floor.usage_line(usage0, floor.usage_of(pids), args.jobs)
            workers_ms = run["cpu"]["workers"] / args.jobs * 1000
            report = stop_probe(probe, args, work, workers_ms)
            others = ", ".join(
                f"{k} {v / args.jobs * 1000:.2f}" for k, v in run["cpu"].items() if k != "workers"
            )
            print(
                f"job path, two workers -c 8: {args.jobs / run['seconds']:.1f} files/s; worker CPU"
                f" {workers_ms:.2f} ms per job = floor {floor_ms:.2f} + {workers_ms - floor_ms:.2f}"
                f" above it ({workers_ms / floor_ms:.2f}x the floor); others, ms per job:"
                f" {others}",
                flush=True,
            )
            print(f"  workers per job: {usage}", flush=True)
            print(f"  Redis commands per job {per_job(calls, args.jobs)}", flush=True)
            if report:
                print(report, flush=True)
        with floor.Monitor(REDIS_URL) as monitor:
            queue_small(ctx, worker, verify=False)
            sides = floor.sides({"worker": pids, "client": [os.getpid()]})
        print(
            "job path, Redis commands per job by what they are for (a MONITOR run;"
            " `in` = run inside that script, no round trip of its own):"
        )
        for (side, name), count in sorted(monitor.by(sides).items(), key=lambda kv: -kv[1]):
            if count >= args.jobs / 50:
                print(f"  {count / args.jobs:6.2f}  {side:7} {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--strace", action="store_true")
    parser.add_argument("--py-spy", type=Path, default=None)
    parser.add_argument(
        "--on-cpu",
        action="store_true",
        help="py-spy counts every thread on a CPU, GIL or not (sys time too), not the GIL holder",
    )
    parser.add_argument("--no-aria2", action="store_true")
    parser.add_argument("--floor", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dl-jobpath-"))
    if args.floor:
        procs = Processes([work])
        (work / "logs").mkdir()
        try:
            floor_run(args, procs, work)
        finally:
            procs.stop_all()
            shutil.rmtree(work, ignore_errors=True)
        return 0
    procs = Processes([work])
    ctx = make_context(procs, work, args.jobs)
    try:
        with workers(ctx, "jp", count=2) as worker:
            pids = [p.pid for p in worker.processes]
            idle = idle_sendto_rate(pids, work) if args.strace else 0.0
            for repeat in range(args.repeats):
                probe = start_probe(args, pids, work)
                run = queue_small(ctx, worker, verify=repeat == 0)
                report = stop_probe(probe, args, work)
                cpu = ", ".join(f"{k} {v / args.jobs * 1000:.2f}" for k, v in run["cpu"].items())
                total = sum(run["cpu"].values()) / args.jobs * 1000
                print(
                    f"two workers: {args.jobs / run['seconds']:6.1f} files/s; CPU ms per job:"
                    f" {cpu}; all {total:.2f}",
                    flush=True,
                )
                if report:
                    print(report, flush=True)
                if args.strace:
                    busy = sendto_calls(report) - idle * (run["seconds"] + ATTACH_SECONDS)
                    print(
                        f"idle workers: {idle:.1f} sendto/s; Redis round trips per job:"
                        f" {busy / args.jobs - 1:.1f} (sendto per job less one HTTP request)",
                        flush=True,
                    )
                if not args.no_aria2:
                    aria = small_with_aria2(ctx)
                    print(f"aria2c -j16: {aria['jobs_s']:6.1f} files/s", flush=True)
    finally:
        delete_namespace_keys(REDIS_URL, ctx.run_id)
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
