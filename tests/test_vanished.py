"""A Redis that comes back empty: every job it lost ends, for its clients and its workers.

These tests run on a `redis-server` of their own that keeps nothing (see `tests.redis_server`):
killed and started again, it comes back empty, as a Redis without persistence does after a
crash (or after FLUSHALL, or a failover to an empty replica).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from downloader import DownloadJob, DownloadJobStatus, DownloadQueueService
from downloader.api import create_api
from downloader.store.keys import Keys
from tests.conftest import WorkerProcess, cli_env
from tests.origin import Origin
from tests.redis_server import RedisServer
from tests.test_cli import start_cli
from tests.test_queue import wait_until

MiB = 1 << 20
SLOW = "rate=200000"
"""Bytes per second the origin sends at: the download is still running when Redis dies."""


@pytest.fixture
def lossy() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(lossy: RedisServer) -> str:
    """Every fixture of these tests (namespace, services, workers) uses the lossy Redis."""
    return lossy.url


def saying_lost(job: DownloadJob) -> bool:
    return "Redis lost job" in (job.error or "") and "noeviction" in (job.error or "")


def test_a_running_job_whose_redis_comes_back_empty_ends_as_an_error_everywhere(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    lossy: RedisServer,
    origin: Origin,
    tmp_path: Path,
) -> None:
    origin.add("big.bin", os.urandom(4 * MiB))
    worker = spawn_worker("w1", concurrency=1)
    service = make_service(start_worker=False)
    ended: list[str] = []
    job = service.download(
        origin.url(f"/files/big.bin?{SLOW}"),
        tmp_path,
        on_error=lambda j: ended.append(f"error {j.status}"),
        on_complete=lambda j: ended.append("complete"),
    )
    partial = tmp_path / "big.bin.downloading"
    wait_until(lambda: job.bytes > 0 and partial.exists(), timeout=30)

    lossy.restart()
    lost_at = time.monotonic()
    service.wait_for_job(job, timeout=30)

    assert time.monotonic() - lost_at < 15
    assert job.status == DownloadJobStatus.ERROR and not job.cancelled
    assert job.error_type is not None and job.error_type.startswith("JobVanishedError")
    assert saying_lost(job), job.error
    assert ended == ["error error"]
    wait_until(lambda: f"job {job.id} vanished" in worker.output(), timeout=30)
    assert "Redis lost its data" in worker.output()
    assert "lease lost" not in worker.output()
    assert partial.exists() and partial.stat().st_size > 0  # kept, to resume some day
    assert not (tmp_path / "big.bin").exists()
    assert worker.process.poll() is None


@pytest.mark.parametrize("loss", ["restart", "flushall"])
def test_a_wait_for_a_waiting_job_ends_when_redis_comes_back_empty(
    make_service: Callable[..., DownloadQueueService],
    lossy: RedisServer,
    tmp_path: Path,
    loss: str,
) -> None:
    service = make_service(start_worker=False)  # no worker anywhere: the job waits
    errors: list[DownloadJob] = []
    job = service.download("http://127.0.0.1:9/never.bin", tmp_path, on_error=errors.append)
    other = service.download("http://127.0.0.1:9/other.bin", tmp_path)

    if loss == "restart":
        lossy.restart()
    else:  # no reconnection: nothing but the store itself tells
        lossy.client().flushall()
    lost_at = time.monotonic()
    service.wait_for_job(job, timeout=30)
    service.join()

    assert time.monotonic() - lost_at < 15
    assert job.status == other.status == DownloadJobStatus.ERROR
    assert saying_lost(job) and saying_lost(other)
    assert errors == [job]


def test_a_job_removed_from_redis_ends_for_its_client_saying_so(
    make_service: Callable[..., DownloadQueueService],
    lossy: RedisServer,
    namespace: str,
    tmp_path: Path,
) -> None:
    service = make_service(start_worker=False)
    errors: list[DownloadJob] = []
    job = service.download("http://127.0.0.1:9/never.bin", tmp_path, on_error=errors.append)
    kept = service.download("http://127.0.0.1:9/kept.bin", tmp_path)
    lossy.client().delete(Keys(namespace).job(job.id))  # as an evicting Redis would

    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.ERROR and errors == [job]
    assert job.error is not None and "no longer in Redis" in job.error and not saying_lost(job)
    assert kept.status == DownloadJobStatus.WAITING  # looked at in the same round trip


def test_get_against_a_redis_that_comes_back_empty_exits_with_one_clear_line(
    namespace: str, lossy: RedisServer, origin: Origin, tmp_path: Path
) -> None:
    origin.add("big.bin", os.urandom(4 * MiB))
    url = origin.url(f"/files/big.bin?{SLOW}")
    get = start_cli("get", url, "-d", str(tmp_path), "--worker", env=cli_env(namespace, lossy.url))
    try:
        wait_until(lambda: (tmp_path / "big.bin.downloading").exists(), timeout=60)
        lossy.restart()
        _, err = get.communicate(timeout=60)
    finally:
        get.kill()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert get.returncode == 1, err
    assert len(errors) == 1, err
    shown = origin.url("/files/big.bin")  # the URL as lines show it: without its query
    assert errors[0].startswith(f"error: {shown}: Redis lost job ")
    assert "maxmemory-policy noeviction" in errors[0]
    assert "Traceback" not in err


def test_health_says_when_redis_lost_its_data(
    namespace: str,
    spawn_worker: Callable[..., WorkerProcess],
    lossy: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOWNLOADER_API_KEY", raising=False)
    spawn_worker("w1", concurrency=1)
    with TestClient(create_api()) as api:
        wait_until(lambda: api.get("/health").status_code == 200, timeout=30)
        assert api.get("/health").json()["redis_data_lost"] is False

        lossy.restart()
        # The worker beats again within seconds: only the lost data can make it unhealthy.
        wait_until(lambda: api.get("/health").json()["workers"] >= 1, timeout=30)
        answer = api.get("/health")
    assert answer.status_code == 503
    body = answer.json()
    assert body["redis"] is True and body["redis_data_lost"] is True
    assert "noeviction" in body["detail"]
