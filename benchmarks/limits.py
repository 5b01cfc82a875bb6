"""The fleet's limits (issue 19), measured in one short run: two `downloader worker -c 8`, 8
segments a file, the test origin (`tests/origin.py`) on 127.0.0.1 and 127.0.0.2 counting the
GETs it answers at once and the bytes it sends. Not a test: prints figures (the numbers in
benchmarks/README.md).

    python benchmarks/limits.py [--size-mib 256] [--pairs 8] [--cases bandwidth cap ...]

1. fleet bandwidth 100 MiB/s: the bytes of 4 downloads over the time from their first GET
   to their end; then 40 MiB/s set while 4 more run, and how long the rate (by the jobs'
   progress) takes to follow;
2. host cap 4: the most GETs 127.0.0.1 answered at once, and the other host's peak;
3. a 429 storm (`Retry-After: 3` for 5 s): the requests refused, and every job's end;
4. limits far above the wire against no limits of their own (4 downloads a run, `--pairs`
   pairs of runs in ABBA order): the median of the pairs' throughput ratios with its spread,
   and the workers' CPU per MiB (which the machine's load moves much less than wall time).

Every case prints the load average beside its figures: the machine is shared.
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
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench.context import delete_namespace_keys  # noqa: E402
from downloader import DownloadJob, DownloadJobStatus, DownloadQueueService  # noqa: E402
from tests.origin import LoggedRequest, Origin  # noqa: E402

MiB = 1 << 20
CASES = ["bandwidth", "cap", "storm", "overhead"]
REDIS_URL = os.environ.get("DOWNLOADER_REDIS_URL", "redis://127.0.0.1:6379/0")


def load() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` says them."""
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


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
    # 1. The whole of 4 downloads at 100 MiB/s, from the first GET to the last job's end: a
    # window of 10 s at 4 x 256 MiB, which the 0.25 s steps of progress events cannot blur.
    mark = len(origin.requests)
    jobs = [service.download(origin.url(f"/files/big{i}.bin"), dest / "bw") for i in range(4)]
    finish(service, jobs)
    ended = time.monotonic()
    gets = [r for r in origin.requests[mark:] if r.method == "GET"]
    began, sent = min(r.began for r in gets), max(r.ended or ended for r in gets)
    total = sum(job.total_bytes for job in jobs) / MiB
    wire, whole = total / (sent - began), total / (ended - began)
    print(
        f"fleet 100 MiB/s: 4 downloads of {origin_size(origin)} MiB, first GET to last byte "
        f"sent {sent - began:.1f} s: {wire:.1f} MiB/s ({wire / 100:.2f}x); to the last job's "
        f"end {ended - began:.1f} s: {whole:.1f} MiB/s; load {load()}"
    )
    # 2. The same again, with 40 MiB/s set 2 s into it.
    jobs = [service.download(origin.url(f"/files/big{i}.bin"), dest / "bw2") for i in range(4)]
    wait_until(lambda: any(job.bytes for job in jobs), 60)  # under way
    first = rate_over(jobs, 2)
    service.limits.set(bandwidth="40MiB")
    changed = time.monotonic()
    followed = None
    while time.monotonic() - changed < 2:
        if rate_over(jobs, 0.5) <= 44 and followed is None:
            followed = round(time.monotonic() - changed, 2)
    second = rate_over(jobs, 2)
    over = sum(job.status == DownloadJobStatus.COMPLETED for job in jobs)
    finish(service, jobs, cancel=True)
    print(f"  by progress, the 2 s before 40 MiB/s was set: {first:.1f} MiB/s")
    print(f"fleet 40 MiB/s set while running: {second:.1f} MiB/s over the 2 s after the first 2")
    print(f"  ({second / 40:.2f}x); 0.5 s windows within 10% of it from {followed} s after")
    print(f"  ({over} of the 4 downloads had completed by then); load {load()}")
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
        f"its job done in {other_took:.1f} s of the run's {took:.1f} s; load {load()}"
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
    print(
        f"429 storm: {done}/8 completed; {len(refused)} requests refused, at s {waves}; "
        f"load {load()}"
    )


def worker_cpu(workers: list[subprocess.Popen]) -> float:
    """CPU seconds (user and system) the worker processes used so far (Linux `/proc`)."""
    total = 0.0
    for worker in workers:
        fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def overhead_case(
    service: DownloadQueueService,
    origin: Origin,
    dest: Path,
    workers: list[subprocess.Popen],
    pairs: int,
) -> None:
    def run(label: str) -> tuple[float, float]:
        """One run of 4 downloads: MiB/s, and the workers' CPU ms per MiB."""
        shutil.rmtree(dest / label, ignore_errors=True)
        (dest / label).mkdir()
        cpu, began = worker_cpu(workers), time.monotonic()
        jobs = [service.download(origin.url(f"/files/big{i}.bin"), dest / label) for i in range(4)]
        finish(service, jobs)
        took, mib = time.monotonic() - began, sum(job.total_bytes for job in jobs) / MiB
        return mib / took, (worker_cpu(workers) - cpu) * 1000 / mib

    def far_above() -> None:
        # Bandwidth only: a host's connection cap also sets how far a download's segments
        # grow (to 16, the default cap), so a cap of 1000 would measure more segments.
        service.limits.set(bandwidth="100GiB")
        service.limits.set(host="127.0.0.1", bandwidth="50GiB")
        time.sleep(2)  # what a change is given to reach every worker

    def none() -> None:
        service.limits.unset("127.0.0.1")
        service.limits.unset()
        time.sleep(2)

    plain: list[tuple[float, float]] = []
    limited: list[tuple[float, float]] = []
    for pair in range(pairs):  # ABBA: the machine's load drifts between runs
        for setting, runs in ((none, plain), (far_above, limited))[:: 1 if pair % 2 else -1]:
            setting()
            runs.append(run("run"))
    none()
    ratios = [b[0] / a[0] for a, b in zip(plain, limited, strict=True)]
    costs = [b[1] / a[1] for a, b in zip(plain, limited, strict=True)]
    print(
        f"limits far above the wire ({pairs} pairs of 4 x {origin_size(origin)} MiB, ABBA): "
        f"throughput median {median(r for r, _ in limited):.0f} MiB/s vs "
        f"{median(r for r, _ in plain):.0f} with none, pairs' ratio median "
        f"{median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})"
    )
    print(
        f"  workers' CPU {median(c for _, c in limited):.2f} vs "
        f"{median(c for _, c in plain):.2f} ms per MiB, pairs' ratio median "
        f"{median(costs):.2f}x (min {min(costs):.2f}, max {max(costs):.2f}); load {load()}"
    )
    print(f"  runs limited {[round(r) for r, _ in limited]}, none {[round(r) for r, _ in plain]}")


def origin_size(origin: Origin) -> int:
    return len(origin.files["big0.bin"]) // MiB


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """Stop the benchmark's worker processes: SIGTERM to all, then a wait for each; a warm
    shutdown stuck on a busy machine is killed after 30 s."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=8, help="alternated runs of case 4")
    parser.add_argument(
        "--cases", nargs="+", choices=CASES, default=CASES, help="the cases to run (all)"
    )
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
            for name in ("bw", "bw2", "cap", "storm"):
                (work / name).mkdir()
            if "bandwidth" in args.cases:
                bandwidth_case(service, one, work)
                shutil.rmtree(work / "bw")
                shutil.rmtree(work / "bw2")
            if "cap" in args.cases:
                cap_case(service, one, two, work)
                shutil.rmtree(work / "cap")
            if "storm" in args.cases:
                storm_case(service, one, work)
            if "overhead" in args.cases:
                overhead_case(service, one, work, workers, args.pairs)
    finally:
        stop_workers(workers)
        one.stop()
        two.stop()
        shutil.rmtree(work, ignore_errors=True)
        delete_namespace_keys(REDIS_URL, f"{namespace}:")


if __name__ == "__main__":
    main()
