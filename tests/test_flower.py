"""Flower against a real worker: its HTTP API lists the worker with stats, reads the broker's
queues, and counts every failed or cancelled download as a failed task."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from downloader import (
    DownloadJobStatus,
    DownloadQueueService,
    MultiFileDownloadJob,
    RemoteModelFile,
)
from tests.children import popen, stop_process
from tests.conftest import WorkerProcess, cli_env
from tests.origin import Origin
from tests.test_queue import wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def flower(namespace: str, redis_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    """`downloader flower` on a free loopback port, its HTTP API open (for tests only)."""
    port = free_port()
    log = tmp_path / "flower.log"
    env = {**cli_env(namespace, redis_url), "FLOWER_UNAUTHENTICATED_API": "true"}
    process = popen(
        [sys.executable, "-m", "downloader", "flower", "--port", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return client.get("/healthcheck").status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answers, timeout=30)
    yield client
    client.close()
    stop_process(process)


def test_flower_sees_the_worker_its_queues_and_the_broker(
    flower: httpx.Client, spawn_worker: Callable[..., WorkerProcess], namespace: str
) -> None:
    spawn_worker("w1")
    workers: dict = {}

    def listed() -> bool:
        workers.update(flower.get("/api/workers", params={"refresh": "true"}).json())
        return any(name.startswith("w1@") and info.get("stats") for name, info in workers.items())

    wait_until(listed, timeout=30)
    (name,) = [name for name in workers if name.startswith("w1@")]
    stats = workers[name]["stats"]
    assert stats["broker"]["transport"] == "downloader-redis"  # `inspect stats` answers
    assert stats["pool"]["max-concurrency"] == 2
    queue = f"{namespace}.default"
    assert [q["name"] for q in workers[name]["active_queues"]] == [queue]

    lengths = flower.get("/api/queues/length")
    assert lengths.status_code == 200, lengths.text
    assert lengths.json() == {"active_queues": [{"name": queue, "messages": 0}]}
    broker = flower.get("/broker")
    assert broker.status_code == 200, broker.text
    assert "redis://" in broker.text
    assert queue in broker.text


def test_flower_counts_failed_and_cancelled_downloads_as_failed_tasks(
    flower: httpx.Client,
    spawn_worker: Callable[..., WorkerProcess],
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
) -> None:
    worker = spawn_worker("w1", concurrency=1)
    service = make_service(start_worker=False)
    origin.add("a.bin", b"a" * 1000)
    origin.add("b.bin", b"b" * 2000)
    done = service.download(origin.url("/files/a.bin"), tmp_path / "one")
    failed = service.download(origin.url("/status/404"), tmp_path / "two")
    service.wait_for_job(done, timeout=30)
    service.wait_for_job(failed, timeout=30)
    # A running job cancelled (held at the origin), and one cancelled while it waited behind it.
    held = service.download(origin.url("/files/b.bin?hold=h"), tmp_path / "three")
    waiting = service.download(origin.url("/files/a.bin"), tmp_path / "four")
    wait_until(lambda: service.id_to_job(held.id).status is DownloadJobStatus.RUNNING, 30)
    service.cancel_job(waiting)
    service.cancel_job(held)
    origin.release("h")
    multi = service.multifile_download(
        [
            RemoteModelFile(url=origin.url("/files/a.bin"), path="m/a.bin"),
            RemoteModelFile(url=origin.url("/status/404"), path="m/missing.bin"),
        ],
        tmp_path / "five",
    )
    for job in (held, waiting, multi):
        service.wait_for_job(job, timeout=30)

    # Flower runs tasks, not parents: each single job and each part is one task.
    tasks = [job for job in service.list_jobs() if not isinstance(job, MultiFileDownloadJob)]
    assert len(tasks) == 6
    ended_badly = sum(job.status is DownloadJobStatus.ERROR for job in tasks)
    completed = sum(job.status is DownloadJobStatus.COMPLETED for job in tasks)
    assert (ended_badly, completed) == (4, 2)
    states: dict[str, int] = {}

    def counted() -> bool:
        answer = flower.get("/api/tasks", params={"taskname": "downloader.download"}).json()
        states.clear()
        for task in answer.values():
            states[task["state"]] = states.get(task["state"], 0) + 1
        return states == {"FAILURE": ended_badly, "SUCCESS": completed}

    try:
        wait_until(counted, timeout=30)
    except TimeoutError:
        raise AssertionError(f"Flower counts {states}, the jobs {ended_badly} failed") from None
    answer = flower.get("/api/tasks", params={"taskname": "downloader.download"}).json()
    failures = {task["exception"] for task in answer.values() if task["state"] == "FAILURE"}
    assert f"DownloadFailed('job {failed.id} error: HTTPError(Not Found)')" in failures
    assert any(f"job {waiting.id} cancelled" in text for text in failures)
    log = worker.output()
    assert "Traceback" not in log and "raised unexpected" not in log
    assert "Retry in" not in log
