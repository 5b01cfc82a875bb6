"""A service of its own jobs only (`own_jobs_only`, what `downloader get` runs on the embedded
default): its jobs go to its own threads, never through the broker, in priority order, and
they stay ordinary jobs of the store that other clients see and cancel."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from downloader import DownloadJobStatus, DownloadQueueService
from tests.origin import Origin
from tests.test_queue import wait_until


def _broker_messages(service: DownloadQueueService) -> int:
    app = service.app
    return sum(app.redis.llen(app.keys.broker_list(service.queue_id, level)) for level in range(10))


def test_own_jobs_run_on_the_services_threads_by_priority_and_never_reach_the_broker(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    digests = {name: origin.add(name, os.urandom(10_000)) for name in ("a", "low", "high")}
    service = make_service(own_jobs_only=True, max_parallel_dl=1, queue_id="mine")
    busy = service.download(origin.url("/files/a?hold=gate"), tmp_path / "out" / "a.bin")
    wait_until(lambda: origin.gets("/files/a"))  # the one thread is taken
    low = service.download(origin.url("/files/low"), tmp_path / "out" / "low.bin", priority=50)
    high = service.download(origin.url("/files/high"), tmp_path / "out" / "high.bin", priority=0)
    assert _broker_messages(service) == 0
    assert service.app.store.record(low.id).status == "waiting"
    origin.release("gate")
    service.join()

    assert [j.status for j in (busy, low, high)] == [DownloadJobStatus.COMPLETED] * 3
    assert [r.path for r in origin.gets("/files/")] == ["/files/a", "/files/high", "/files/low"]
    for name, digest in digests.items():
        assert hashlib.sha256((tmp_path / "out" / f"{name}.bin").read_bytes()).hexdigest() == digest
    records = service.app.store.records([busy.id, low.id, high.id])
    assert {r.worker.split("@")[0] for r in records} == {f"local-{os.getpid()}"}
    assert _broker_messages(service) == 0


def test_another_client_cancels_an_own_job_that_waits_and_it_never_starts(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    origin.add("a", b"a" * 1000)
    origin.add("b", b"b" * 1000)
    service = make_service(own_jobs_only=True, max_parallel_dl=1, queue_id="mine")
    busy = service.download(origin.url("/files/a?hold=gate"), tmp_path / "a")
    wait_until(lambda: origin.gets("/files/a"))
    waiting = service.download(origin.url("/files/b"), tmp_path / "b")
    other = make_service(start_worker=False, queue_id="mine")
    other.cancel_job(other.id_to_job(waiting.id))
    service.wait_for_job(waiting, timeout=30)
    origin.release("gate")
    service.wait_for_job(busy, timeout=30)

    assert waiting.status == DownloadJobStatus.ERROR and waiting.cancelled
    assert busy.status == DownloadJobStatus.COMPLETED
    assert not origin.gets("/files/b")
    assert not (tmp_path / "b").exists()


def test_closing_hands_a_running_own_job_back_as_waiting_with_no_message(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    origin.add("big", os.urandom(4 << 20))
    service = make_service(own_jobs_only=True, max_parallel_dl=1, queue_id="mine")
    job = service.download(origin.url("/files/big?rate=262144"), tmp_path / "big.bin")
    wait_until(lambda: service.app.store.record(job.id).bytes > 0, timeout=30)
    watcher = make_service(start_worker=False, queue_id="mine")
    service.close()

    record = watcher.app.store.record(job.id)
    assert record.status == "waiting"
    assert _broker_messages(watcher) == 0  # left for the next identical run, not for others
    assert Path(str(tmp_path / "big.bin") + ".downloading").stat().st_size > 0


def test_the_embedded_default_runs_its_jobs_on_threads_and_takes_those_left_waiting(
    origin: Origin, tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no Redis configured, `DownloadQueueService()` runs its jobs as `get` does (no
    broker, no Celery); the jobs a closed one left waiting are run by the next one."""
    monkeypatch.delenv("DOWNLOADER_REDIS_URL")
    monkeypatch.setenv("DOWNLOADER_STATE_DIR", str(tmp_path / "state"))
    origin.add("slow", os.urandom(4 << 20))
    quick = origin.add("quick", os.urandom(10_000))
    with DownloadQueueService(max_parallel_dl=1) as first:
        running = first.download(origin.url("/files/slow?rate=262144"), tmp_path / "slow.bin")
        waiting = first.download(origin.url("/files/quick"), tmp_path / "quick.bin")
        wait_until(lambda: first.app.store.record(running.id).bytes > 0, timeout=30)
        assert first._celery is None and _broker_messages(first) == 0
    slow = origin.add("slow", os.urandom(10_000))  # a smaller version: the next run is quick
    with DownloadQueueService(max_parallel_dl=1) as second:
        wait_until(
            lambda: (
                [r.status for r in second.app.store.records([running.id, waiting.id])]
                == ["completed", "completed"]
            ),
            timeout=30,
        )
        assert _broker_messages(second) == 0
    assert hashlib.sha256((tmp_path / "quick.bin").read_bytes()).hexdigest() == quick
    assert hashlib.sha256((tmp_path / "slow.bin").read_bytes()).hexdigest() == slow


def test_a_paused_queue_holds_the_embedded_defaults_jobs_until_resumed(
    origin: Origin, tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue pause holds for threads that run their own jobs without a broker too (the
    embedded default, `downloader get`): no job of the queue starts until it is resumed."""
    monkeypatch.delenv("DOWNLOADER_REDIS_URL")
    monkeypatch.setenv("DOWNLOADER_STATE_DIR", str(tmp_path / "state"))
    digest = origin.add("held", os.urandom(10_000))
    with DownloadQueueService(max_parallel_dl=2) as queue:
        assert queue._celery is None  # runs its own jobs: nothing to broadcast to
        queue.admin.pause(queue.queue_id)
        assert queue.admin.is_paused(queue.queue_id)
        job = queue.download(origin.url("/files/held"), tmp_path / "held.bin")
        time.sleep(1.5)  # three reads of the flag: a thread that ignored it would have begun
        assert queue.app.store.record(job.id).status == "waiting"
        assert not origin.gets("/files/held")
        queue.admin.resume(queue.queue_id)
        assert not queue.admin.is_paused(queue.queue_id)
        queue.wait_for_job(job, timeout=60)
    assert job.status == "completed"
    assert hashlib.sha256((tmp_path / "held.bin").read_bytes()).hexdigest() == digest
    assert len(origin.gets("/files/held")) == 1
