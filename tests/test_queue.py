"""The download queue end to end: real Redis, in-process Celery worker, real HTTP origin."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from downloader import (
    DownloadJob,
    DownloadJobStatus,
    DownloadQueueService,
    UnknownJobIDException,
)
from downloader.store.bus import Subscription
from tests.conftest import keys_matching
from tests.origin import Origin

MiB = 1 << 20


def sha256(path: Path | None) -> str:
    assert path is not None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


def test_seed_example_two_files_a_404_and_a_server_chosen_name(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    fire = origin.add("a-painting-of-a-fire.png", os.urandom(666_734))
    bird = origin.add("birdhouse.png", os.urandom(774_949))
    model = origin.add("152309", os.urandom(3 * MiB + 17))
    urls = [
        origin.url("/files/a-painting-of-a-fire.png?raw=true"),
        origin.url("/files/birdhouse.png?raw=true"),
        origin.url("/files/missing.png"),
        origin.url("/cd/152309?filename=xl_more_art-full_v1.safetensors"),
    ]
    jobs = [service.download(source=url, dest=tmp_path) for url in urls]
    service.join()

    assert [job.id for job in jobs] == sorted(job.id for job in jobs)
    assert [job.status for job in jobs] == ["completed", "completed", "error", "completed"]
    assert jobs[0].download_path == tmp_path / "a-painting-of-a-fire.png"
    assert sha256(jobs[0].download_path) == fire
    assert sha256(jobs[1].download_path) == bird
    assert jobs[3].download_path == tmp_path / "xl_more_art-full_v1.safetensors"
    assert sha256(jobs[3].download_path) == model
    assert jobs[3].bytes == jobs[3].total_bytes == 3 * MiB + 17
    assert jobs[2].error_type == "HTTPError(Not Found)"
    assert "Traceback (most recent call last)" in (jobs[2].error or "")
    assert not (tmp_path / "missing.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a-painting-of-a-fire.png",
        "birdhouse.png",
        "xl_more_art-full_v1.safetensors",
    ]

    dumped = json.loads(jobs[0].model_dump_json(exclude_none=True))
    assert {
        "source",
        "dest",
        "id",
        "priority",
        "status",
        "download_path",
        "job_started",
        "job_ended",
        "bytes",
        "total_bytes",
    } <= dumped.keys()
    assert dumped["status"] == "completed" and dumped["priority"] == 10
    assert "error" not in dumped and "access_token" not in dumped
    listed = {job.id: job for job in service.list_jobs()}
    assert all(listed[job.id] is job for job in jobs)  # the live objects come back


def test_equal_priorities_in_submission_order_and_lower_priority_first(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    service = make_service(max_parallel_dl=1)
    origin.add("slow.bin", os.urandom(4096))
    for name in ("p30", "p20", "p10", "p0", "q10"):
        origin.add(name, name.encode() * 100)
    # A blocker that holds the only slot until it is cancelled (one byte a second): the others
    # queue up behind it however slowly this machine runs.
    blocker = service.download(origin.url("/files/slow.bin?rate=1"), tmp_path)
    wait_until(lambda: origin.served.get("/files/slow.bin", 0) > 0, timeout=30)
    jobs = {
        name: service.download(origin.url(f"/files/{name}"), tmp_path, priority=priority)
        for name, priority in (("p30", 30), ("p20", 20), ("p10", 10), ("p0", 0), ("q10", 10))
    }
    service.cancel_job(blocker)
    service.join()
    started = sorted(jobs, key=lambda name: jobs[name].job_sequence or 0)
    assert started == ["p0", "p10", "q10", "p20", "p30"]
    assert all(job.status == DownloadJobStatus.COMPLETED for job in jobs.values())


def test_cancel_a_waiting_job_it_never_starts(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    origin.add("never.bin", b"x" * 1000)
    client = make_service(start_worker=False)
    cancelled: list[DownloadJob] = []
    job = client.download(origin.url("/files/never.bin"), tmp_path, on_cancelled=cancelled.append)
    client.cancel_job(job)
    client.wait_for_job(job, timeout=5)
    assert job.status == DownloadJobStatus.ERROR
    assert job.cancelled is True
    assert job.error_type == "DownloadJobCancelledException"
    assert cancelled == [job]

    worker = make_service(start_worker=True)  # a worker comes up later and sees the message
    probe = worker.download(origin.url("/files/never.bin?probe=1"), tmp_path / "probe.bin")
    worker.wait_for_job(probe, timeout=10)
    assert probe.status == DownloadJobStatus.COMPLETED
    assert [r.path for r in origin.gets("/files/never.bin")] == ["/files/never.bin"]  # the probe
    assert client.id_to_job(job.id).status == DownloadJobStatus.ERROR
    assert not (tmp_path / "never.bin").exists()


def test_cancel_a_running_job_stops_it_and_removes_the_partial_file(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("big.bin", os.urandom(4 * MiB))
    events: list[str] = []
    job = service.download(
        origin.url("/files/big.bin?rate=1000000"),
        tmp_path,
        on_progress=lambda j: events.append("progress"),
        on_cancelled=lambda j: events.append("cancelled"),
        on_complete=lambda j: events.append("complete"),
    )
    wait_until(lambda: job.bytes > 0)
    asked = time.monotonic()
    service.cancel_job(job)
    service.wait_for_job(job, timeout=5)
    assert time.monotonic() - asked < 1.5
    assert job.status == DownloadJobStatus.ERROR and job.cancelled
    assert job.error_type == "DownloadJobCancelledException"
    assert events[-1] == "cancelled" and "complete" not in events
    assert not (tmp_path / "big.bin").exists()
    assert not (tmp_path / "big.bin.downloading").exists()


def test_cancel_all_jobs_cancels_waiting_and_running_alike(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    service = make_service(max_parallel_dl=1)
    origin.add("big.bin", os.urandom(4 * MiB))
    running = service.download(origin.url("/files/big.bin?rate=1000000"), tmp_path)
    waiting = service.download(origin.url("/files/big.bin"), tmp_path / "second.bin")
    wait_until(lambda: running.bytes > 0)
    service.cancel_all_jobs()
    service.join()
    assert running.cancelled and waiting.cancelled
    assert {running.error_type, waiting.error_type} == {"DownloadJobCancelledException"}
    assert not any(tmp_path.iterdir())


def test_callbacks_run_in_order_and_a_raising_callback_changes_nothing(
    service: DownloadQueueService,
    origin: Origin,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    digest = origin.add("cb.bin", os.urandom(2 * MiB))
    seen: list[tuple[str, str, int]] = []

    def record(name: str) -> Callable[[DownloadJob], None]:
        return lambda job: seen.append((name, job.status.value, job.bytes))

    def explode(job: DownloadJob) -> None:
        seen.append(("start", job.status.value, job.bytes))
        raise RuntimeError("callback bug")

    job = service.download(
        origin.url("/files/cb.bin?rate=8000000"),
        tmp_path,
        on_start=explode,
        on_progress=record("progress"),
        on_complete=record("complete"),
        on_error=record("error"),
    )
    service.wait_for_job(job, timeout=20)
    assert job.status == DownloadJobStatus.COMPLETED
    assert sha256(job.download_path) == digest
    names = [name for name, _, _ in seen]
    assert names[0] == "start" and names[-1] == "complete" and "error" not in names
    assert set(names[1:-1]) == {"progress"}
    progress = [count for name, _, count in seen if name == "progress"]
    assert progress == sorted(progress) and progress[-1] == 2 * MiB
    assert seen[-1] == ("complete", "completed", 2 * MiB)
    assert "callback bug" in caplog.text


def test_event_sequence_seen_by_an_independent_subscriber(
    service: DownloadQueueService,
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
) -> None:
    origin.add("ev.bin", os.urandom(3 * MiB))
    subscription = Subscription(redis.Redis.from_url(redis_url), namespace, "default")
    received: list[dict] = []

    def collect() -> None:
        for payload in subscription:
            if payload is not None:
                received.append(payload)
            if received and received[-1]["event"] in ("download_complete", "download_error"):
                return

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    job = service.download(origin.url("/files/ev.bin?rate=12000000"), tmp_path)
    service.wait_for_job(job, timeout=20)
    reader.join(10)
    subscription.close()

    names = [event["event"] for event in received]
    assert names[0] == "download_started"
    assert names[-1] == "download_complete"
    assert set(names[1:-1]) == {"download_progress"}
    assert 2 <= names.count("download_progress") <= 101
    assert all(event["job_id"] == job.id and event["queue_id"] == "default" for event in received)
    assert all("timestamp" in event for event in received)
    started, last_progress, complete = received[0], received[-2], received[-1]
    assert started["source"] == str(job.source)
    assert started["download_path"] == str(tmp_path / "ev.bin")
    assert last_progress["current_bytes"] == last_progress["total_bytes"] == 3 * MiB
    currents = [e["current_bytes"] for e in received if e["event"] == "download_progress"]
    assert currents == sorted(currents)
    assert complete["total_bytes"] == 3 * MiB
    assert complete["download_path"] == str(tmp_path / "ev.bin")


def test_a_job_created_by_one_service_is_seen_and_run_by_another(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    digest = origin.add("shared.bin", os.urandom(MiB))
    client = make_service(start_worker=False)
    completed: list[int] = []
    job = client.download(
        origin.url("/files/shared.bin"), tmp_path, on_complete=lambda j: completed.append(j.id)
    )
    other = make_service(start_worker=True)
    client.wait_for_job(job, timeout=15)
    assert job.status == DownloadJobStatus.COMPLETED and completed == [job.id]
    seen = other.id_to_job(job.id)
    assert seen is not job and seen.status == DownloadJobStatus.COMPLETED
    assert seen.download_path == job.download_path and sha256(seen.download_path) == digest
    assert job.id in [j.id for j in other.list_jobs()]
    with pytest.raises(UnknownJobIDException):
        other.id_to_job(10**9)


def test_the_token_is_sent_but_never_stored_listed_or_published(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
    redis_url: str,
    namespace: str,
) -> None:
    origin.add("private.bin", b"secret bytes")
    events: list[tuple[str, dict]] = []
    service = make_service(
        max_parallel_dl=2, event_bus=lambda name, payload: events.append((name, payload))
    )
    job = service.download(origin.url("/private/private.bin"), tmp_path, access_token=origin.token)
    refused = service.download(origin.url("/private/private.bin"), tmp_path / "no-token.bin")
    service.join()
    assert job.status == DownloadJobStatus.COMPLETED
    assert (tmp_path / "private.bin").read_bytes() == b"secret bytes"
    assert refused.error_type == "HTTPError(Unauthorized)"
    assert origin.token not in job.model_dump_json()
    assert origin.token not in repr(job)
    assert all(origin.token not in json.dumps(payload) for _, payload in events)
    client = redis.Redis.from_url(redis_url)
    record = client.hgetall(f"{namespace}:job:{job.id}")
    assert record and all(origin.token.encode() not in value for value in record.values())
    for key in keys_matching(client, f"{namespace}:celery:*"):
        if client.type(key) == b"string":
            assert origin.token.encode() not in client.get(key)


def test_prune_removes_finished_jobs_only(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    origin.add("p.bin", b"p" * 100)
    service = make_service(start_worker=True)
    done = service.download(origin.url("/files/p.bin"), tmp_path)
    service.wait_for_job(done, timeout=10)
    client = make_service(start_worker=False, queue_id="other")
    waiting = client.download(origin.url("/files/p.bin"), tmp_path / "w.bin")
    service.prune_jobs()
    client.prune_jobs()
    assert service.list_jobs() == []
    assert [j.id for j in client.list_jobs()] == [waiting.id]


def test_wait_for_job_times_out(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    client = make_service(start_worker=False)
    job = client.download(origin.url("/files/x"), tmp_path)
    with pytest.raises(TimeoutError):
        client.wait_for_job(job, timeout=0.3)
    assert job.status == DownloadJobStatus.WAITING


def test_a_complete_file_is_not_fetched_again_and_a_partial_one_resumes(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB)
    digest = origin.add("r.bin", data)
    url = origin.url(f"/files/r.bin?drop={MiB}")  # the first answer breaks after 1 MiB
    job = service.download(url, tmp_path / "r.bin")
    service.wait_for_job(job, timeout=10)
    assert job.status == DownloadJobStatus.COMPLETED and sha256(job.download_path) == digest
    resumed = origin.gets("/files/r.bin")[-1].headers
    assert resumed.get("Range") == f"bytes={MiB}-" and resumed.get("If-Range")

    again = service.download(url, tmp_path / "r.bin")
    service.wait_for_job(again, timeout=10)
    assert again.status == DownloadJobStatus.COMPLETED and again.bytes == 2 * MiB
    assert sha256(again.download_path) == digest
    assert origin.gets("/files/r.bin")[-1].headers.get("If-None-Match")  # answered 304
