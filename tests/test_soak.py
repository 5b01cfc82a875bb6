"""Soak: hundreds of jobs while workers are killed and restarted and connections drop.

Jobs arrive in waves. While a wave runs, workers are SIGKILLed mid-download; between waves,
with nothing to do, workers are SIGKILLed at random instants while idle, and one more just
as the next wave arrives (it may die between the broker's pop of a message and the
bookkeeping that would bring the message back). Every job must still end, completed, with its
exact bytes: `lost` counts files missing or wrong, `stuck` jobs still waiting after the run.

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

from downloader import DownloadJob, DownloadJobStatus, DownloadQueueService
from tests.conftest import WorkerProcess
from tests.origin import Origin
from tests.test_queue import wait_until

JOBS = int(os.environ.get("DOWNLOADER_SOAK_JOBS", "150"))
SECONDS = float(os.environ.get("DOWNLOADER_SOAK_SECONDS", "30"))
"""How long workers are killed for; the waves left after it arrive without kills."""
WAVES = max(3, JOBS // 50)
"""A wave of about 50 jobs: more jobs, more idle spells to kill workers in."""
VISIBILITY_TIMEOUT = 10
WORKER_ENV = {
    "DOWNLOADER_LEASE_SECONDS": "2",
    "DOWNLOADER_RETRY_BACKOFF": "0.05",
    # A message taken by a worker killed before it claimed the job comes back this soon.
    "DOWNLOADER_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
}
FINISHED = {DownloadJobStatus.COMPLETED.value, DownloadJobStatus.ERROR.value}
SETTLE = 6 * VISIBILITY_TIMEOUT
"""After the kills, every job ends within this: a lost message is dispatched again a
visibility timeout after it was sent, a killed job's lease runs out within two seconds."""


class Crew:
    """Three worker processes, any of which may be killed and replaced by a fresh one."""

    def __init__(self, spawn: Callable[..., WorkerProcess], chance: random.Random) -> None:
        self.spawn, self.chance = spawn, chance
        self.generation = 0
        self.workers = [self.fresh() for _ in range(3)]

    def fresh(self) -> WorkerProcess:
        self.generation += 1
        return self.spawn(f"s{self.generation}", concurrency=3, env=WORKER_ENV)

    def kill_one(self) -> None:
        victim = self.chance.randrange(len(self.workers))
        self.workers[victim].process.send_signal(signal.SIGKILL)
        self.workers[victim].process.wait()
        self.workers[victim] = self.fresh()


def ended(client: DownloadQueueService, jobs: list[DownloadJob]) -> bool:
    """Whether every one of `jobs` has ended, as the store says (one pipelined read)."""
    records = client.app.store.records([job.id for job in jobs])
    return all(record.status in FINISHED for record in records)


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + SETTLE + 180)
def test_soak_kills_busy_and_idle_workers_and_drops_lose_nothing(
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
    crew = Crew(spawn_worker, chance)
    client = make_service(start_worker=False)
    names = list(urls)
    waves = [names[i::WAVES] for i in range(WAVES)]
    jobs: list[DownloadJob] = []
    busy_kills = idle_kills = arrival_kills = 0
    started = time.monotonic()
    deadline = started + SECONDS
    for wave in waves:
        killing = time.monotonic() < deadline
        if killing:  # every earlier job has ended: the workers are idle
            time.sleep(chance.uniform(0, 0.5))
            crew.kill_one()
            idle_kills += 1
        batch = [client.download(urls[name], out) for name in wave]
        jobs += batch
        if killing:  # the workers were idle when the wave arrived; one dies as it is taken
            time.sleep(chance.uniform(0, 0.2))
            crew.kill_one()
            arrival_kills += 1
        while not ended(client, batch) and time.monotonic() < deadline:
            time.sleep(chance.uniform(0.5, 1.5))
            crew.kill_one()
            busy_kills += 1
        try:
            wait_until(lambda batch=batch: ended(client, batch), timeout=SETTLE)
        except TimeoutError:
            break  # the summary below says which jobs are stuck

    final = [client.id_to_job(job.id) for job in jobs]
    stuck = [j.id for j in final if j.status == DownloadJobStatus.WAITING]
    running = [j.id for j in final if j.status == DownloadJobStatus.RUNNING]
    failed = [j.id for j in final if j.status == DownloadJobStatus.ERROR]
    wrong = [
        name
        for name, digest in digests.items()
        if not (out / name).exists()
        or hashlib.sha256((out / name).read_bytes()).hexdigest() != digest
    ]
    retries = sum(max(0, job.attempts - 1) for job in final)
    print(
        f"\nsoak: jobs={JOBS} kills={busy_kills} idle_kills={idle_kills} "
        f"arrival_kills={arrival_kills} drops={drops} retries={retries} "
        f"lost={len(wrong)} stuck={len(stuck)} running={len(running)} failed={len(failed)} "
        f"seconds={time.monotonic() - started:.0f}"
    )
    assert len(final) == JOBS
    assert not stuck and not running and not failed and not wrong
    assert sorted(p.name for p in out.iterdir()) == sorted(digests)  # once, nothing partial
    assert busy_kills + idle_kills + arrival_kills > 0
