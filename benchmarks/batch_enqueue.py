"""Batch enqueue with no worker running (issue 22): jobs per second, and the CPU per job of
the enqueuing process and of Redis, on a private `redis-server`. Not a test: prints figures
(the numbers in benchmarks/README.md).

    python benchmarks/batch_enqueue.py [--jobs 100000] [--repeats 3] [--profile] [--no-follow]
    python benchmarks/batch_enqueue.py --rest [--jobs 30000] [--repeats 3] [--same-dest]

The default times `download_many` in calls of 10,000 items (`--no-follow`: on a service
that hands out no live jobs, so no listener subscribes to them). `--rest` times POSTs of 1,000
items to a `downloader api` process (each item its own `dest` under the download root, as
case 10 sends them; `--same-dest`: one dest for all), with the API process's CPU per job;
the bodies are encoded before the clock starts. Run it with `PYTHONPATH=<other
checkout>/src` to measure another commit's code the same way. `--profile` prints
cProfile's heaviest functions of the last repeat (`download_many` only).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench.floor import start_redis
from benchmarks.bench.processes import Processes, free_port, wait_until

CALL = 10_000
POST = 1_000


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rest", action="store_true", help="POSTs of 1,000 items to the API")
    parser.add_argument("--same-dest", action="store_true", help="--rest: one dest for all")
    parser.add_argument(
        "--no-follow", action="store_true", help="a service that does not follow its jobs"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dl-enqueue-"))
    procs = Processes([work])
    try:
        url, redis_pid = start_redis(procs, work)
        if args.rest:
            rest(args, procs, work, url, psutil.Process(redis_pid))
        else:
            python(args, work, url, psutil.Process(redis_pid))
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def python(args: argparse.Namespace, work: Path, url: str, server: psutil.Process) -> None:
    """`download_many` in this process, in calls of `CALL` items."""
    os.environ["DOWNLOADER_REDIS_URL"] = url
    from downloader import DownloadQueueService

    dest = f"{work}/dest/"
    items = [{"source": f"http://127.0.0.1:9/f{i}.bin", "dest": dest} for i in range(args.jobs)]
    for repeat in range(args.repeats):
        os.environ["DOWNLOADER_NAMESPACE"] = f"enq{repeat}"  # a fresh queue each time
        follow = {"follow": False} if args.no_follow else {}
        service = DownloadQueueService(start_worker=False, redis_url=url, **follow)
        service.download_many(items[:100])  # first connections, queue declarations
        profile = cProfile.Profile() if args.profile and repeat == args.repeats - 1 else None
        redis0 = sum(server.cpu_times()[:2])
        cpu0, started = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        for start in range(0, args.jobs, CALL):
            service.download_many(items[start : start + CALL])
        if profile:
            profile.disable()
        seconds = time.perf_counter() - started
        client = (time.process_time() - cpu0) / args.jobs * 1e6
        redis = (sum(server.cpu_times()[:2]) - redis0) / args.jobs * 1e6
        print(
            f"download_many: {args.jobs / seconds:8.0f} jobs/s; CPU per job: client"
            f" {client:.0f} us, redis-server {redis:.0f} us",
            flush=True,
        )
        if profile:
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)
        service.close()


def rest(
    args: argparse.Namespace, procs: Processes, work: Path, url: str, server: psutil.Process
) -> None:
    """POSTs of `POST` items to a `downloader api` process, one after the other."""
    port, key = free_port(), secrets.token_urlsafe(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADER_")}
    root = work / "root"
    root.mkdir()
    session = requests.Session()
    session.headers.update({"X-API-Key": key, "Content-Type": "application/json"})
    base = f"http://127.0.0.1:{port}"
    for repeat in range(args.repeats):
        env.update(
            DOWNLOADER_REDIS_URL=url,
            DOWNLOADER_NAMESPACE=f"rest{repeat}",
            DOWNLOADER_DOWNLOAD_ROOT=str(root),
            DOWNLOADER_API_KEY=key,
        )
        command = [sys.executable, "-m", "downloader", "api", "--port", str(port)]
        api = procs.start(command, work / f"api{repeat}.log", env)
        wait_until(lambda: _answers(session, f"{base}/openapi.json"), 60, "the REST API")
        enqueue = f"{base}/api/v1/queue/default/enqueue"
        bodies = [
            json.dumps(
                {
                    "items": [
                        {
                            "source": f"http://127.0.0.1:9/f{start + i}.bin",
                            "dest": "rest" if args.same_dest else f"rest/b{start + i}",
                        }
                        for i in range(POST)
                    ]
                }
            ).encode()
            for start in range(0, args.jobs + POST, POST)
        ]
        session.post(enqueue, data=bodies[-1], timeout=120).raise_for_status()  # warm
        process = psutil.Process(api.pid)
        api0, redis0 = sum(process.cpu_times()[:2]), sum(server.cpu_times()[:2])
        started = time.perf_counter()
        for body in bodies[:-1]:
            answer = session.post(enqueue, data=body, timeout=120)
            answer.raise_for_status()
        seconds = time.perf_counter() - started
        jobs = POST * (len(bodies) - 1)
        cpu = (sum(process.cpu_times()[:2]) - api0) / jobs * 1e6
        redis = (sum(server.cpu_times()[:2]) - redis0) / jobs * 1e6
        assert len(answer.json()["items"]) == POST
        print(
            f"REST POST of {POST:,} items: {jobs / seconds:8.0f} jobs/s; CPU per job: API"
            f" {cpu:.0f} us, redis-server {redis:.0f} us",
            flush=True,
        )
        procs.stop(api)
    session.close()


def _answers(session: requests.Session, url: str) -> bool:
    try:
        return session.get(url, timeout=5).ok
    except requests.RequestException:
        return False


if __name__ == "__main__":
    sys.exit(main())
