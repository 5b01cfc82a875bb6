"""The lean path of small files (issue 22) at size and at its edge: hundreds of small jobs over
two worker processes, one killed in the middle, every file right and every job ended once with
its events in order; and a file without a Content-Length, which may be large, still reports
progress and can be cancelled."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from downloader import DownloadJob, DownloadJobStatus, DownloadQueueService
from downloader.store.bus import Subscription
from tests.conftest import WorkerProcess
from tests.origin import Origin

JOBS = 300
WORKER_ENV = {
    "DOWNLOADER_LEASE_SECONDS": "2",
    # A message a killed worker had taken comes back this soon.
    "DOWNLOADER_VISIBILITY_TIMEOUT": "10",
}
SLOW = "?rate=200000"
ENDS = ("download_complete", "download_error", "download_cancelled")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


class Heard:
    """Every event of a queue, in the order Redis delivered them, from before the jobs exist."""

    def __init__(self, service: DownloadQueueService, namespace: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.subscription = Subscription(service.app.redis, namespace, queue_id="default")
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.collect, daemon=True)
        self.thread.start()

    def collect(self) -> None:
        for payload in self.subscription:
            if self.stopped.is_set():
                return
            if payload is not None:
                self.events.append(payload)

    def ended(self) -> int:
        return sum(1 for e in list(self.events) if e["event"] in ENDS)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.subscription.close()


@pytest.mark.timeout(120)
def test_small_jobs_over_two_workers_one_killed_end_once_in_order(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    namespace: str,
    tmp_path: Path,
) -> None:
    digests = {
        f"s{i:03}.bin": origin.add(f"s{i:03}.bin", os.urandom(1024 + 211 * i)) for i in range(JOBS)
    }
    workers = [spawn_worker(f"w{n}", concurrency=4, env=WORKER_ENV) for n in range(2)]
    service = make_service(start_worker=False)
    heard = Heard(service, namespace)
    out = tmp_path / "out"
    try:
        # Every tenth file comes slowly, so the killed worker is likely to die mid-job.
        jobs = service.download_many(
            [
                {
                    "source": origin.url(f"/files/{name}{SLOW if i % 10 == 0 else ''}"),
                    "dest": out / name,
                }
                for i, name in enumerate(digests)
            ]
        )
        wait_until(lambda: heard.ended() >= JOBS // 3, 60, "a third of the jobs")
        workers[0].process.send_signal(signal.SIGKILL)
        workers[0].process.wait()
        for job in jobs:
            service.wait_for_job(job, timeout=60)
        wait_until(lambda: heard.ended() >= JOBS, 10, "every job's end heard")
    finally:
        heard.close()

    assert [job.status for job in jobs] == [DownloadJobStatus.COMPLETED] * JOBS
    for name, digest in digests.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    assert sorted(p.name for p in out.iterdir()) == sorted(digests)  # nothing partial left
    by_job: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in heard.events:
        by_job[event["job_id"]].append(event)
    assert set(by_job) == {job.id for job in jobs}
    for job in jobs:
        check_events(job, by_job[job.id])


def check_events(job: DownloadJob, events: list[dict[str, Any]]) -> None:
    """Started first, one end and last, its last progress just before it; a small file reports
    no progress of its own before the end (an attempt cut short by the kill may have started
    and stopped: its job starts again)."""
    names = [e["event"] for e in events]
    assert names[0] == "download_started", names
    assert [n for n in names if n in ENDS] == ["download_complete"], names
    assert names[-2:] == ["download_progress", "download_complete"], names
    last = events[-2]
    assert last["current_bytes"] == last["total_bytes"] == events[-1]["total_bytes"] == job.bytes
    assert set(names[:-2]) == {"download_started"}, names
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)


def test_a_file_without_length_reports_progress_and_can_be_cancelled(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
) -> None:
    origin.add("unsized.bin", os.urandom(3 << 20))
    service = make_service(max_parallel_dl=1)
    seen: list[int] = []
    job = service.download(
        origin.url("/files/unsized.bin?nolength=1&rate=600000"),
        tmp_path,
        on_progress=lambda j: seen.append(j.bytes),
    )
    wait_until(lambda: len(seen) >= 2, 30, "progress of a file of unknown size")
    assert all(0 < b < 3 << 20 for b in seen)
    service.cancel_job(job)
    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.ERROR and job.cancelled
    assert not (tmp_path / "unsized.bin").exists()
    assert not [p for p in tmp_path.iterdir() if p.is_file()]
