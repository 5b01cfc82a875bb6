"""Where the time of a download from the test origin goes: the CPU the origin (this process)
and one `downloader worker -c 8` spend per MiB, and the wall rate, for a few plain downloads
of one file (the default segments, no limits). Not a test: prints figures (benchmarks/README.md,
issue 19). CPU per MiB moves much less with the machine's load than the wall rate does.

    python benchmarks/wire.py [--size-mib 256] [--runs 3]

It prints first what one connection's accounting costs (a slot taken and given back).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench.context import delete_namespace_keys  # noqa: E402
from benchmarks.limits import REDIS_URL, load, stop_workers, wait_until, worker_cpu  # noqa: E402
from downloader import DownloadQueueService  # noqa: E402
from tests.origin import Origin  # noqa: E402

MiB = 1 << 20


def own_cpu() -> float:
    """CPU seconds this process (the origin, and the client following the jobs) used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def slot_cost(count: int) -> None:
    """Wall and CPU time of one connection's accounting: take a slot of a host, give it back
    (`FleetPacing`, the calls every connection of a worker makes)."""
    import redis

    from downloader.store.pacing import FleetPacing, Held

    client = redis.Redis.from_url(REDIS_URL)
    fleet = FleetPacing(client, os.environ["DOWNLOADER_NAMESPACE"])
    cpu, began = own_cpu(), time.perf_counter()
    for n in range(count):
        slot = Held("127.0.0.1", f"bench:{n}")
        fleet.take_slot(slot, lease=10, cap=16, requests_per_second=0, rank=1e13, patience=2)
        fleet.release_slot(slot)
    took, used = time.perf_counter() - began, own_cpu() - cpu
    print(
        f"a connection's slot, taken and given back: {took / count * 1e6:.0f} µs, "
        f"{used / count * 1e6:.0f} µs of this process's CPU ({count} times); load {load()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    namespace = f"dlbench-wire-{uuid.uuid4().hex[:8]}"
    os.environ.update(DOWNLOADER_NAMESPACE=namespace, DOWNLOADER_REDIS_URL=REDIS_URL)
    slot_cost(2000)
    work = Path(tempfile.mkdtemp(prefix="dl-wire-"))
    origin = Origin().start()
    origin.add("big.bin", os.urandom(args.size_mib * MiB))
    log = (work / "w.log").open("wb")
    command = [sys.executable, "-m", "downloader", "worker", "-c", "8", "-n", "wire@%h"]
    worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: " ready." in (work / "w.log").read_text(), 60)
        with DownloadQueueService(start_worker=False) as service:
            for run in range(args.runs):
                mine, theirs, began = own_cpu(), worker_cpu([worker]), time.monotonic()
                job = service.download(origin.url("/files/big.bin"), work / str(run))
                service.wait_for_job(job, timeout=600)
                took = time.monotonic() - began
                print(
                    f"{job.status.value}: {args.size_mib / took:.0f} MiB/s; CPU per MiB: worker "
                    f"{(worker_cpu([worker]) - theirs) * 1000 / args.size_mib:.2f} ms, origin "
                    f"and client {(own_cpu() - mine) * 1000 / args.size_mib:.2f} ms; "
                    f"load {load()}"
                )
                shutil.rmtree(work / str(run))
    finally:
        stop_workers([worker])
        origin.stop()
        shutil.rmtree(work, ignore_errors=True)
        delete_namespace_keys(REDIS_URL, f"{namespace}:")


if __name__ == "__main__":
    main()
