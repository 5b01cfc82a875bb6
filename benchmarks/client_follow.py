"""What following a job costs the client (issue 22): CPU per job of a `DownloadQueueService`
that queues small jobs one `download()` at a time and waits for each with `wait_for_job`,
against two real `downloader worker -c 8` and the local nginx, on a private `redis-server`.
Not a test: prints figures (the numbers in benchmarks/README.md).

    python benchmarks/client_follow.py [--jobs 500] [--repeats 2] [--py-spy FILE]
    python benchmarks/client_follow.py --no-workers [--jobs 3000] [--repeats 3]
    python benchmarks/client_follow.py --listener-only [--jobs 2000] [--repeats 3]

Per repeat it prints, per job: the client process's CPU (`getrusage`, every thread: the
caller's and the listener's), the caller's thread alone (`download()` and `wait_for_job`;
the rest is the listener applying events), and the same jobs queued by a `follow=False`
service (what an enqueue-only caller pays: the `download()` calls alone). The listener
thread's own CPU comes from /proc (Linux). `--py-spy FILE`
records this process (`py-spy record --gil --format raw`) during the followed runs and prints
where its GIL-holding samples went. `--no-workers` times `download()` alone, the jobs left
waiting, for a following and a `follow=False` service in turn. `--listener-only` measures
the listener thread alone, away from the workers' noise: jobs queued with no worker, whose
start and end a child process publishes as a small file's are (`download_started` and
`download_complete` in one round trip, on the client's and the queue's channels, 2 ms
apart), waited for with `wait_for_job`. Run it with
`PYTHONPATH=<other checkout>/src` to measure another commit's client the same way (the
workers run that code too).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench import floor
from benchmarks.bench.context import Context, queue_client
from benchmarks.bench.processes import Processes
from benchmarks.bench.workers import workers
from benchmarks.jobpath import make_context
from downloader import DownloadJobStatus, DownloadQueueService
from downloader.jobs import events as ev
from downloader.store.bus import EventPublisher

# Where a GIL-holding sample of the client goes: the first group any frame matches.
PROFILE_GROUPS = (
    ("listener: applying an event", ("handle (downloader/client/listener.py",)),
    ("listener: waiting for events", ("(downloader/store/bus.py", "(redis/client.py")),
    ("download()", ("download (downloader/client/service.py",)),
    ("wait_for_job", ("wait_for_job (",)),
    ("benchmark", ("(benchmarks/",)),
)


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def listener_cpu(client: DownloadQueueService) -> float:
    """CPU seconds of `client`'s listener thread so far (Linux: /proc/self/task)."""
    thread = client._live.listener
    if thread is None or thread.native_id is None:
        return 0.0
    fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rpartition(")")[2]
    utime, stime = fields.split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def followed(ctx: Context, client: DownloadQueueService) -> dict[str, float]:
    """Every small file as a job, queued one `download()` at a time, then each waited for."""
    dest = ctx.fresh_dest()
    urls = [ctx.origin.url(s.name) for s in ctx.files.small]
    cpu0, thread0, wall0 = process_cpu(), time.thread_time(), time.perf_counter()
    listener0 = listener_cpu(client)
    jobs = [client.download(url, dest) for url in urls]
    enqueue_thread = time.thread_time() - thread0
    for job in jobs:
        client.wait_for_job(job, timeout=600)
    cpu, thread = process_cpu() - cpu0, time.thread_time() - thread0
    listener = listener_cpu(client) - listener0
    seconds = time.perf_counter() - wall0
    failed = [job for job in jobs if job.status is not DownloadJobStatus.COMPLETED]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs failed, e.g. {failed[0].error_type}")
    shutil.rmtree(dest)
    client.prune_jobs()
    n = len(jobs)
    return {
        "files/s": n / seconds,
        "client CPU ms": cpu / n * 1000,
        "caller thread ms": thread / n * 1000,
        "of it download() ms": enqueue_thread / n * 1000,
        "listener thread ms": listener / n * 1000,
    }


def enqueue_only(ctx: Context, client: DownloadQueueService) -> dict[str, float]:
    """The same jobs from a `follow=False` service: the CPU of the `download()` calls."""
    dest = ctx.fresh_dest()
    urls = [ctx.origin.url(s.name) for s in ctx.files.small]
    cpu0, thread0 = process_cpu(), time.thread_time()
    jobs = [client.download(url, dest) for url in urls]
    cpu, thread = process_cpu() - cpu0, time.thread_time() - thread0
    ids = [job.id for job in jobs]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # the workers finish them before the next run
        records = client.app.store.records(ids)
        if all(record.status.finished for record in records):
            break
        time.sleep(0.2)
    shutil.rmtree(dest)
    client.prune_jobs()
    n = len(jobs)
    return {
        "enqueue-only download() ms": cpu / n * 1000,
        "of it caller thread ms": thread / n * 1000,
    }


def summarise(path: Path) -> str:
    """py-spy's raw samples (`stack;stack;... count`) counted by `PROFILE_GROUPS`."""
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        group = next(
            (name for name, marks in PROFILE_GROUPS if any(mark in stack for mark in marks)),
            "other",
        )
        counts[group] += int(count)
    total = sum(counts.values()) or 1
    return (
        "\n".join(f"  {count / total:6.1%}  {name}" for name, count in counts.most_common())
        + f"\n  ({total} GIL-held samples)"
    )


def download_loop(url: str, jobs: int, work: Path, follow: bool) -> str:
    """`jobs` calls of `download()` on a fresh namespace of `url` with no worker: CPU each."""
    with queue_client(url, f"cf-{uuid.uuid4().hex[:8]}", follow=follow) as service:
        for i in range(100):  # connections, the queue declared, the id blocks grown
            service.download(f"http://127.0.0.1:9/warm{i}.bin", work)
        cpu0, thread0 = process_cpu(), time.thread_time()
        for i in range(jobs):
            service.download(f"http://127.0.0.1:9/f{i}.bin", work)
        cpu, thread = process_cpu() - cpu0, time.thread_time() - thread0
    kind = "followed" if follow else "follow=False"
    return (
        f"{kind} download(), no workers: process CPU {cpu / jobs * 1000:.2f} ms,"
        f" caller thread {thread / jobs * 1000:.2f} ms per job"
    )


def publish_small_files(url: str, namespace: str, follower: str, ids: list[int]) -> None:
    """Each job's start and end as a worker publishes a small file's (one round trip), 2 ms
    apart (in a child process: its CPU is not the client's)."""
    import redis

    publisher = EventPublisher(redis.Redis.from_url(url), namespace)
    for job_id in ids:
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        source, path = f"http://127.0.0.1:9/f{job_id}.bin", f"/tmp/f{job_id}.bin"
        started = publisher.prepare(
            ev.DOWNLOAD_STARTED,
            "default",
            job_id,
            follower,
            source=source,
            download_path=path,
            job_started=now,
            current_bytes=65536,
            total_bytes=65536,
            content_type="application/octet-stream",
            etag='"6554a1b2-10000"',
            final_url=source,
            job_sequence=job_id,
            attempts=1,
        )
        ended = publisher.prepare(
            ev.DOWNLOAD_COMPLETE,
            "default",
            job_id,
            follower,
            source=source,
            download_path=path,
            total_bytes=65536,
            current_bytes=65536,
            attempts=1,
            job_ended=now,
        )
        publisher.announce([started, ended])
        time.sleep(0.002)


def listener_loop(url: str, jobs: int, work: Path) -> str:
    """`jobs` followed jobs, no worker; their events from `publish_small_files`: the CPU of
    the listener thread (and of the waiting caller) per job."""
    namespace = f"cf-{uuid.uuid4().hex[:8]}"
    with queue_client(url, namespace) as service:
        made = [service.download(f"http://127.0.0.1:9/f{i}.bin", work) for i in range(jobs)]
        listener0, thread0 = listener_cpu(service), time.thread_time()
        child = multiprocessing.get_context("spawn").Process(
            target=publish_small_files,
            args=(url, namespace, service._live.client_id, [job.id for job in made]),
        )
        child.start()
        for job in made:
            service.wait_for_job(job, timeout=120)
        listener, thread = listener_cpu(service) - listener0, time.thread_time() - thread0
        child.join(30)
        if any(job.status is not DownloadJobStatus.COMPLETED for job in made):
            raise RuntimeError("a job did not end as its events said")
    return (
        f"listener thread {listener / jobs * 1000:.3f} ms,"
        f" caller waiting {thread / jobs * 1000:.3f} ms per job"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--py-spy", type=Path, default=None)
    parser.add_argument("--no-workers", action="store_true")
    parser.add_argument("--listener-only", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dl-clientfollow-"))
    procs = Processes([work])
    (work / "logs").mkdir()
    try:
        url, _ = floor.start_redis(procs, work)
        if args.listener_only:
            for _ in range(args.repeats):
                line = listener_loop(url, args.jobs, work)
                print(f"{line} (load {os.getloadavg()[0]:.1f})", flush=True)
            return 0
        if args.no_workers:
            for _ in range(args.repeats):
                for follow in (True, False):
                    line = download_loop(url, args.jobs, work, follow)
                    print(f"{line} (load {os.getloadavg()[0]:.1f})", flush=True)
            return 0
        import benchmarks.jobpath as jobpath

        jobpath.REDIS_URL = url
        ctx = make_context(procs, work, args.jobs)
        with workers(ctx, "cf", count=2) as worker:
            for sampler in worker.samplers:  # their threads would count as the client's CPU
                sampler.stopped.set()
            with (
                queue_client(url, worker.namespace) as client,
                queue_client(url, worker.namespace, follow=False) as quiet,
            ):
                for _ in range(args.repeats):
                    spy = None
                    if args.py_spy:
                        record = ["py-spy", "record", "--gil", "--format", "raw", "-r", "250"]
                        spy = subprocess.Popen(
                            [*record, "-o", str(args.py_spy), "-p", str(os.getpid())],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                        time.sleep(2)
                    run = followed(ctx, client)
                    if spy is not None:
                        spy.send_signal(2)
                        spy.wait(60)
                    run |= enqueue_only(ctx, quiet)
                    load = os.getloadavg()[0]
                    print(
                        ", ".join(f"{k} {v:.2f}" for k, v in run.items()) + f" (load {load:.1f})",
                        flush=True,
                    )
                    if spy is not None and args.py_spy.exists():
                        print(summarise(args.py_spy), flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
