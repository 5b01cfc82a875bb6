"""`download_many` with no worker running (issue 22): jobs per second, and the CPU per job of
the client and of Redis, on a private `redis-server`, in calls of 10,000 items. Not a test:
prints figures (the numbers in benchmarks/README.md).

    python benchmarks/batch_enqueue.py [--jobs 100000] [--repeats 3] [--profile]

Run it with `PYTHONPATH=<other checkout>/src` to measure another commit's code the same way.
`--profile` prints cProfile's heaviest functions of the last repeat.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench.floor import start_redis
from benchmarks.bench.processes import Processes

CALL = 10_000


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dl-enqueue-"))
    procs = Processes([work])
    try:
        url, redis_pid = start_redis(procs, work)
        os.environ["DOWNLOADER_REDIS_URL"] = url
        from downloader import DownloadQueueService

        dest = f"{work}/dest/"
        items = [{"source": f"http://127.0.0.1:9/f{i}.bin", "dest": dest} for i in range(args.jobs)]
        server = psutil.Process(redis_pid)
        for repeat in range(args.repeats):
            os.environ["DOWNLOADER_NAMESPACE"] = f"enq{repeat}"  # a fresh queue each time
            service = DownloadQueueService(start_worker=False, redis_url=url)
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
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
