"""The cost of one small job on the worker path: files/s, CPU per job, round trips per job and
a profile, for 1,000 x 64 KiB over two `downloader worker -c 8`, with aria2c -j16 in the same
run as the reference. Not a test: prints figures (the numbers in benchmarks/README.md).

    python benchmarks/jobpath.py [--jobs 1000] [--repeats 3] [--strace] [--py-spy FILE]

`--strace` counts the workers' `sendto` calls (`strace -f -c`): every Redis round trip sends
once and so does each HTTP request, so sendto per job minus one is Redis round trips per job;
what idle workers send (polls, heartbeats), counted for 10 s first, is taken off.
`--py-spy FILE` records worker 0 with `py-spy record --gil --format raw` and prints where the
GIL-holding samples went. Both slow the workers: their runs' files/s are not the figures.
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

from benchmarks.bench.case_small_files import queue_small, small_with_aria2
from benchmarks.bench.config import QUICK, KiB
from benchmarks.bench.context import Context, delete_namespace_keys
from benchmarks.bench.files import TestFiles, write_random
from benchmarks.bench.origin import start_origin
from benchmarks.bench.processes import Processes
from benchmarks.bench.tools import find_tools
from benchmarks.bench.workers import workers

# Where a GIL-holding sample is counted: the first frame (from the leaf up) that matches.
PROFILE_GROUPS = (
    ("downloader job store (store.py)", ("(downloader/store.py",)),
    ("downloader events (events.py)", ("(downloader/events.py",)),
    ("downloader transfer", ("(downloader/transfer.py", "(downloader/filestate.py")),
    ("downloader other", ("(downloader/",)),
    ("redis-py", ("(redis/",)),
    ("kombu", ("(kombu/",)),
    ("celery", ("(celery/", "(billiard/")),
    ("requests, urllib3, http.client", ("(requests/", "(urllib3/", "(http/client.py")),
    ("logging", ("(logging/",)),
    ("json", ("(json/",)),
    ("threading, socket, ssl", ("(threading.py", "(socket.py", "(selectors.py")),
)


def make_context(procs: Processes, work: Path, jobs: int) -> Context:
    (work / "logs").mkdir()
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
        command = ["py-spy", "record", "--gil", "--format", "raw", "-r", "200"]
        command += ["-o", str(args.py_spy), "-p", str(pids[0])]
    else:
        return None
    probe = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(ATTACH_SECONDS)  # attaching takes a moment; the jobs must not start before it
    return probe


def stop_probe(probe: subprocess.Popen | None, args: argparse.Namespace, work: Path) -> str:
    if probe is None:
        return ""
    probe.send_signal(signal.SIGINT)
    probe.wait(60)
    if args.strace:
        return (work / "st").read_text()
    return summarise_profile(Path(args.py_spy))


def sendto_calls(strace_summary: str) -> int:
    """The `sendto` count of an `strace -c` summary."""
    for line in strace_summary.splitlines():
        fields = line.split()
        if fields and fields[-1] == "sendto":
            return int(fields[3])
    return 0


def idle_sendto_rate(pids: list[int], work: Path) -> float:
    """sendto calls per second of the idle workers."""
    args = argparse.Namespace(strace=True, py_spy=None)
    probe = start_probe(args, pids, work)
    time.sleep(10)
    return sendto_calls(stop_probe(probe, args, work)) / 10


def summarise_profile(path: Path) -> str:
    """Share of the GIL-holding samples per group, and the heaviest downloader frames."""
    groups: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = stack.split(";")
        for frame in reversed(frames):
            group = next(
                (name for name, marks in PROFILE_GROUPS if any(m in frame for m in marks)), None
            )
            if group:
                groups[group] += samples
                break
        else:
            groups["other"] += samples
        seen = {f.split(":")[0] + ")" for f in frames if "(downloader/" in f}
        for name in seen:
            ours[name] += samples
    lines = [f"{total} samples holding the GIL"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in groups.most_common()]
    lines.append("inclusive, downloader functions:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in ours.most_common(14)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--strace", action="store_true")
    parser.add_argument("--py-spy", type=Path, default=None)
    parser.add_argument("--no-aria2", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dl-jobpath-"))
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
