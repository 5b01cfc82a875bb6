"""What a `downloader worker` logs per job at its default level: no Celery "received" or
"succeeded" line for every task (see `celery_app.logs`), but a line for a job that failed;
at DEBUG, Celery's lines are back."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from downloader import DownloadJobStatus, DownloadQueueService
from tests.conftest import WorkerProcess
from tests.origin import Origin
from tests.test_queue import wait_until


def test_a_worker_at_info_logs_failed_jobs_but_not_every_task(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
) -> None:
    origin.add("good.bin", os.urandom(4096))
    quiet = spawn_worker("quiet", concurrency=2)
    client = make_service(start_worker=False)
    good = client.download(origin.url("/files/good.bin"), tmp_path)
    bad = client.download(origin.url("/status/404"), tmp_path / "b")
    client.wait_for_job(good, timeout=60)
    client.wait_for_job(bad, timeout=60)
    assert (good.status, bad.status) == (DownloadJobStatus.COMPLETED, DownloadJobStatus.ERROR)
    wait_until(lambda: f"job {bad.id} error: HTTPError" in quiet.output(), timeout=30)
    quiet.stop()  # its log is complete
    log = quiet.output()
    assert " ready." in log
    assert "] received" not in log and "] succeeded in" not in log, log

    chatty = spawn_worker("chatty", concurrency=2, loglevel="DEBUG")
    again = client.download(origin.url("/files/good.bin?x=2"), tmp_path / "c")
    client.wait_for_job(again, timeout=60)
    wait_until(lambda: "succeeded in" in chatty.output(), timeout=30)
    assert "] received" in chatty.output()
