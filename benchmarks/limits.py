"""The fleet's limits (issue 19), measured in one short run: two `downloader worker -c 8`, 8
segments a file, the test origin (`tests/origin.py`) on 127.0.0.1 and 127.0.0.2 counting the
GETs it answers at once and the bytes it sends. Not a test: prints figures (the numbers in
benchmarks/README.md).

    python benchmarks/limits.py [--size-mib 256]

1. fleet bandwidth 100 MiB/s: the aggregate the origin sends, then 40 MiB/s set while the
   downloads run, and how long the rate takes to follow;
2. host cap 4: the most GETs 127.0.0.1 answered at once, and the other host's peak;
3. a 429 storm (`Retry-After: 3` for 5 s): the requests refused, and every job's end;
4. limits far above the wire against no limits of their own (two downloads, alternated
   twice): the ratio of the best throughputs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from downloader import DownloadJob, DownloadJobStatus, DownloadQueueService  # noqa: E402
from tests.origin import LoggedRequest, Origin  # noqa: E402

MiB = 1 << 20
REDIS_URL = os.environ.get("DOWNLOADER_REDIS_URL", "redis://127.0.0.1:6379/0")


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def rate_over(jobs: list[DownloadJob], seconds: float) -> float:
    """MiB/s the jobs wrote over the next `seconds`, by their progress (what the workers
    read, not what the origin put into socket buffers)."""
    before, began = sum(job.bytes for job in jobs), time.monotonic()
    time.sleep(seconds)
    return (sum(job.bytes for job in jobs) - before) / (time.monotonic() - began) / MiB


def finish(service: DownloadQueueService, jobs: list[DownloadJob], cancel: bool = False) -> None:
    for job in jobs:
        if cancel:
            service.cancel_job(job)
        service.wait_for_job(job, timeout=300)


def bandwidth_case(service: DownloadQueueService, origin: Origin, dest: Path) -> None:
    service.limits.set(bandwidth="100MiB")
    time.sleep(2)
    jobs = [service.download(origin.url(f"/files/big{i}.bin"), dest / "bw") for i in range(4)]
    wait_until(lambda: any(job.bytes for job in jobs), 60)  # under way
    time.sleep(0.5)
    first = rate_over(jobs, 2.5)
    service.limits.set(bandwidth="40MiB")
    changed = time.monotonic()
    followed = None
    while time.monotonic() - changed < 2:
        if rate_over(jobs, 0.5) <= 44 and followed is None:
            followed = time.monotonic() - changed
    second = rate_over(jobs, 2)
    over = sum(job.status == DownloadJobStatus.COMPLETED for job in jobs)
    finish(service, jobs, cancel=True)
    print(f"fleet 100 MiB/s: measured {first:.1f} MiB/s ({first / 100:.2f}x)")
    print(f"fleet 40 MiB/s set while running: measured {second:.1f} MiB/s ({second / 40:.2f}x), ")
    print(f"  within 10% of it {followed if followed is None else round(followed, 2)} s after")
    print(f"  ({over} of the 4 downloads had completed by then)")
    service.limits.unset()


def cap_case(service: DownloadQueueService, one: Origin, two: Origin, dest: Path) -> None:
    service.limits.set(host="127.0.0.1", connections=4)
    time.sleep(2)  # what a change is given to reach every worker
    one.peak = two.peak = 0
    began = time.monotonic()
    jobs = [service.download(one.url(f"/files/big{i}.bin"), dest / "cap") for i in range(4)]
    other = service.download(two.url("/files/big4.bin"), dest / "cap")
    service.wait_for_job(other, timeout=300)
    other_took = time.monotonic() - began
    finish(service, jobs)
    took = time.monotonic() - began
    print(
        f"host cap 4: 127.0.0.1 peak {one.peak} concurrent GETs; 127.0.0.2 peak {two.peak}, "
        f"its job done in {other_took:.1f} s of the run's {took:.1f} s"
    )
    service.limits.unset("127.0.0.1")


def storm_case(service: DownloadQueueService, origin: Origin, dest: Path) -> None:
    for i in range(8):
        origin.add(f"s{i}.bin", os.urandom(256 << 10))
    refused: list[float] = []
    storm: dict[str, float] = {}

    def gate(request: LoggedRequest, query: dict[str, str]) -> tuple[int, dict] | None:
        if not request.path.startswith("/files/s"):
            return None
        now = time.monotonic()
        if now < storm.setdefault("until", now + 5):
            refused.append(now - storm["until"] + 5)
            return 429, {"Retry-After": "3"}
        return None

    origin.gate = gate
    jobs = [service.download(origin.url(f"/files/s{i}.bin"), dest / "storm") for i in range(8)]
    finish(service, jobs)
    origin.gate = None
    done = sum(job.status == DownloadJobStatus.COMPLETED for job in jobs)
    waves = [round(t, 1) for t in refused]
    print(f"429 storm: {done}/8 completed; {len(refused)} requests refused, at s {waves}")


def overhead_case(service: DownloadQueueService, origin: Origin, dest: Path) -> None:
    def run(label: str) -> float:
        shutil.rmtree(dest / label, ignore_errors=True)
        (dest / label).mkdir()
        began = time.monotonic()
        jobs = [service.download(origin.url(f"/files/big{i}.bin"), dest / label) for i in range(2)]
        finish(service, jobs)
        return sum(job.total_bytes for job in jobs) / (time.monotonic() - began) / MiB

    def far_above() -> None:
        service.limits.set(bandwidth="100GiB", connections=1000)
        service.limits.set(host="127.0.0.1", bandwidth="50GiB", connections=1000)
        time.sleep(2)  # what a change is given to reach every worker

    def none() -> None:
        service.limits.unset("127.0.0.1")
        service.limits.unset()
        time.sleep(2)

    plain, limited = [], []
    for _ in range(2):  # alternated: the machine's load moves between runs
        none()
        plain.append(run("plain"))
        far_above()
        limited.append(run("limited"))
    none()
    ratio = max(limited) / max(plain)
    print(
        f"limits far above the wire: best {max(limited):.0f} MiB/s vs {max(plain):.0f} with "
        f"none ({ratio:.2f}x); runs {[round(r) for r in limited]} vs {[round(r) for r in plain]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    args = parser.parse_args()
    namespace = f"dlbench-limits-{uuid.uuid4().hex[:8]}"
    os.environ.update(DOWNLOADER_NAMESPACE=namespace, DOWNLOADER_REDIS_URL=REDIS_URL)
    work = Path(tempfile.mkdtemp(prefix="dl-limits-"))
    one, two = Origin("127.0.0.1").start(), Origin("127.0.0.2").start()
    data = os.urandom(args.size_mib * MiB)
    for i in range(4):
        one.add(f"big{i}.bin", data)
    two.add("big4.bin", data)
    workers = []
    try:
        for i in range(2):
            log = (work / f"w{i}.log").open("wb")
            command = [sys.executable, "-m", "downloader", "worker", "-c", "8", "-n", f"b{i}@%h"]
            workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        for i in range(2):
            wait_until(lambda i=i: " ready." in (work / f"w{i}.log").read_text(), 60)
        with DownloadQueueService(start_worker=False) as service:
            for name in ("bw", "cap", "storm"):
                (work / name).mkdir()
            bandwidth_case(service, one, work)
            shutil.rmtree(work / "bw")
            cap_case(service, one, two, work)
            shutil.rmtree(work / "cap")
            storm_case(service, one, work)
            overhead_case(service, one, work)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(30)
        one.stop()
        two.stop()
        shutil.rmtree(work, ignore_errors=True)
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=100_000))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
