"""Per-job control from the command line: `downloader pause|resume|retry ID...` and
`downloader priority ID N`, against a real Redis, the service's real in-process Celery worker
and the local origin; each job's line says its state after the change, a refusal is one
`error:` line and exit status 1."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from downloader import DownloadQueueService
from downloader.jobs.models import DownloadJobStatus
from tests.conftest import cli_env
from tests.origin import Origin
from tests.test_cli import run_cli
from tests.test_queue import MiB, sha256, wait_until


def test_cli_pause_resume_retry_and_priority(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
) -> None:
    env = cli_env(namespace, redis_url)
    service = make_service(max_parallel_dl=1)
    data = os.urandom(3 * MiB)
    origin.add("big.bin", data)
    # Ten seconds of transfer: time enough for a CLI process to start, pause it, and still
    # find it running on a loaded machine.
    job = service.download(origin.url("/files/big.bin?rate=300000"), tmp_path)
    wait_until(lambda: job.bytes > 0)

    paused = run_cli("pause", str(job.id), env=env)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == f"paused {job.id}: paused (priority 10)\n"
    wait_until(lambda: job.status is DownloadJobStatus.PAUSED)  # the live job heard it
    listed = run_cli("list", "--status", "paused", "--json", env=env)
    assert [line.count(f'"id": {job.id},') for line in listed.stdout.splitlines()] == [1]

    changed = run_cli("priority", str(job.id), "3", env=env)
    assert changed.returncode == 0 and changed.stdout.endswith("paused (priority 3)\n")
    resumed = run_cli("resume", str(job.id), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"resumed {job.id}: ")
    service.wait_for_job(job, timeout=60)
    assert job.complete and job.priority == 3
    assert sha256(job.download_path) == hashlib.sha256(data).hexdigest()
    assert origin.gets("/files/big.bin")[-1].headers.get("Range") is not None

    refused = run_cli("resume", str(job.id), "999999", env=env)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: cannot resume job {job.id}: it has ended",
        "error: no job 999999",
    ]
    assert "Traceback" not in refused.stderr

    origin.add("gone.bin", b"g" * 500)
    failed = service.wait_for_job(
        service.download(origin.url("/files/gone.bin?fail=1&code=404"), tmp_path), 10
    )
    assert failed.errored
    retried = run_cli("retry", str(failed.id), env=env)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"retried {failed.id}: ")
    # The service had done with the job when it failed: it sees the retry from elsewhere in
    # the store (README: a job retried by another client).
    wait_until(lambda: service.id_to_job(failed.id).complete)
    assert (tmp_path / "gone.bin").read_bytes() == b"g" * 500
    assert run_cli("retry", str(failed.id), env=env).returncode == 1  # it completed


def test_cli_pause_without_ids_still_pauses_the_queue(namespace: str, redis_url: str) -> None:
    env = cli_env(namespace, redis_url)
    paused = run_cli("pause", env=env)
    assert paused.returncode == 0 and paused.stdout.startswith("paused queue 'default'")
    assert run_cli("resume", env=env).stdout.startswith("resumed queue 'default'")
