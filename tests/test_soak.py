"""Soak: hundreds of jobs while workers are killed and restarted and connections drop.

The quick form runs in the suite. The long form is run by hand:
`DOWNLOADER_SOAK_JOBS=600 DOWNLOADER_SOAK_SECONDS=300 pytest tests/test_soak.py -s`.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from downloader import DownloadJobStatus, DownloadQueueService
from tests.conftest import WorkerProcess
from tests.origin import Origin

JOBS = int(os.environ.get("DOWNLOADER_SOAK_JOBS", "150"))
SECONDS = float(os.environ.get("DOWNLOADER_SOAK_SECONDS", "90"))
WORKER_ENV = {
    "DOWNLOADER_LEASE_SECONDS": "2",
    "DOWNLOADER_RETRY_BACKOFF": "0.05",
    # A message taken by a worker killed before it claimed the job comes back this soon.
    "DOWNLOADER_VISIBILITY_TIMEOUT": "10",
}


@pytest.mark.timeout(SECONDS + 120)
def test_soak_kills_and_drops_lose_nothing(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
) -> None:
    chance = random.Random(int(os.environ.get("DOWNLOADER_SOAK_SEED", "7")))
    digests: dict[str, str] = {}
    urls: dict[str, str] = {}
    drops = 0
    for i in range(JOBS):
        name = f"soak-{i:04}.bin"
        size = chance.choice([16 << 10, 256 << 10, 1 << 20, 3 << 20])
        digests[name] = origin.add(name, os.urandom(size))
        query = "?rate=4000000"
        if chance.random() < 0.3:
            query += f"&drop={chance.randrange(1, size)}"
            drops += 1
        urls[name] = origin.url(f"/files/{name}{query}")

    out = tmp_path / "downloads"
    out.mkdir()
    workers = [spawn_worker(f"s{n}", concurrency=3, env=WORKER_ENV) for n in range(3)]
    client = make_service(start_worker=False)
    jobs = {name: client.download(url, out) for name, url in urls.items()}

    kills = 0
    generation = len(workers)
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        if all(job.in_terminal_state for job in client.list_jobs()):
            break
        time.sleep(chance.uniform(0.5, 1.5))
        victim = chance.randrange(len(workers))
        workers[victim].process.send_signal(signal.SIGKILL)
        workers[victim].process.wait()
        kills += 1
        generation += 1
        workers[victim] = spawn_worker(f"s{generation}", concurrency=3, env=WORKER_ENV)

    for job in jobs.values():
        client.wait_for_job(job, timeout=max(10.0, deadline - time.monotonic()) + 90)
    final = {job.id: job for job in client.list_jobs()}
    left = [j.id for j in final.values() if not j.in_terminal_state]
    failed = [j.id for j in final.values() if j.status != DownloadJobStatus.COMPLETED]
    wrong = [
        name
        for name, digest in digests.items()
        if not (out / name).exists()
        or hashlib.sha256((out / name).read_bytes()).hexdigest() != digest
    ]
    retries = sum(max(0, job.attempts - 1) for job in final.values())
    print(
        f"\nsoak: jobs={JOBS} kills={kills} drops={drops} retries={retries} "
        f"lost={len(wrong)} failed={len(failed)} left running or waiting={len(left)}"
    )
    assert not left and not failed and not wrong
    assert sorted(p.name for p in out.iterdir()) == sorted(digests)  # once, nothing partial
    assert kills > 0
