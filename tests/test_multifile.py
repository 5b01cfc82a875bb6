"""Multi-file jobs as Celery chords: real Redis, real workers, real origin."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from downloader import (
    DownloadJobStatus,
    DownloadQueueService,
    MultiFileDownloadJob,
    RemoteModelFile,
)
from downloader.store.bus import Subscription
from tests.conftest import WorkerProcess
from tests.origin import Origin
from tests.test_queue import sha256, wait_until

MiB = 1 << 20


def leftovers(root: Path) -> list[Path]:
    return sorted(root.rglob("*.downloading"))


def test_the_seed_example_two_parts_under_one_root(
    service: DownloadQueueService,
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
) -> None:
    encoder = origin.add("pytorch_model.safetensors", os.urandom(2 * MiB))
    vae = origin.add("vae.ckpt", os.urandom(MiB + 5))
    subscription = Subscription(redis.Redis.from_url(redis_url), namespace, "default")
    calls: list[str] = []
    job = service.multifile_download(
        parts=[
            RemoteModelFile(
                url=origin.url("/files/pytorch_model.safetensors"),
                path="my_model/textencoder/pytorch_model.safetensors",
            ),
            RemoteModelFile(
                url=origin.url("/files/vae.ckpt"), path="my_model/vae/diffusers_model.safetensors"
            ),
        ],
        dest=tmp_path,
        on_start=lambda j: calls.append("start"),
        on_progress=lambda j: calls.append("progress"),
        on_complete=lambda j: calls.append("complete"),
        on_error=lambda j: calls.append("error"),
    )
    service.wait_for_job(job, timeout=20)

    assert isinstance(job, MultiFileDownloadJob)
    assert job.status == DownloadJobStatus.COMPLETED
    assert job.download_path == tmp_path / "my_model"
    root = tmp_path / "my_model"
    assert sha256(root / "textencoder/pytorch_model.safetensors") == encoder
    assert sha256(root / "vae/diffusers_model.safetensors") == vae
    assert job.bytes == job.total_bytes == 3 * MiB + 5
    assert calls[0] == "start" and calls[-1] == "complete"
    assert calls.count("start") == calls.count("complete") == 1 and "error" not in calls
    part_ids = [part.id for part in job.download_parts]
    assert len(set([*part_ids, job.id])) == 3
    assert all(part.status == DownloadJobStatus.COMPLETED for part in job.download_parts)
    assert (
        service.id_to_job(part_ids[0]).download_path
        == root / "textencoder/pytorch_model.safetensors"
    )
    assert {job.id, *part_ids} <= {j.id for j in service.list_jobs()}
    assert service.id_to_job(job.id) is job

    events: list[dict] = []
    for payload in subscription:
        if payload is None:
            break
        events.append(payload)
    subscription.close()
    parent_events = [e for e in events if e["job_id"] == job.id]
    names = [e["event"] for e in parent_events]
    assert names[0] == "multifile_download_started"
    assert names[-1] == "multifile_download_complete"
    assert set(names[1:-1]) == {"multifile_download_progress"}
    # The part list goes out once; later events carry counts and summed bytes, whatever
    # the number of parts.
    assert parent_events[0]["part_ids"] == part_ids
    assert all("part_ids" not in e for e in parent_events[1:])
    progress = [e for e in parent_events if e["event"] == "multifile_download_progress"]
    assert all(e["parts_total"] == 2 for e in progress)
    assert progress[-1]["parts_done"] == 2 and progress[-1]["current_bytes"] == 3 * MiB + 5
    assert parent_events[-1]["total_bytes"] == 3 * MiB + 5
    assert parent_events[-1]["parts_done"] == parent_events[-1]["parts_total"] == 2
    for part_id in part_ids:
        assert [e["event"] for e in events if e["job_id"] == part_id][-1] == "download_complete"


def test_ten_parts_spread_over_two_worker_processes(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
) -> None:
    digests = {
        f"shard-{i}.bin": origin.add(f"shard-{i}.bin", os.urandom(300_000)) for i in range(10)
    }
    spawn_worker("alpha", concurrency=1)
    spawn_worker("beta", concurrency=1)
    client = make_service(start_worker=False)
    job = client.multifile_download(
        [
            RemoteModelFile(url=origin.url(f"/files/{name}?rate=1500000"), path=f"sharded/{name}")
            for name in digests
        ],
        tmp_path,
    )
    client.wait_for_job(job, timeout=60)
    assert job.status == DownloadJobStatus.COMPLETED
    for name, digest in digests.items():
        assert sha256(tmp_path / "sharded" / name) == digest
    workers = {client.app.store.record(part.id).worker.split("@")[0] for part in job.download_parts}
    assert workers == {"alpha", "beta"}
    assert len(origin.gets("/files/shard-")) == 10  # each part fetched exactly once


def test_a_failing_part_fails_the_parent_and_cancels_the_rest(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("slow-1.bin", os.urandom(4 * MiB))
    origin.add("slow-2.bin", os.urandom(4 * MiB))
    errors: list[int] = []
    job = service.multifile_download(
        [
            RemoteModelFile(url=origin.url("/files/slow-1.bin?rate=2000000"), path="m/a.bin"),
            RemoteModelFile(url=origin.url("/files/missing.bin"), path="m/b.bin"),
            RemoteModelFile(url=origin.url("/files/slow-2.bin?rate=2000000"), path="m/c.bin"),
        ],
        tmp_path,
        on_error=lambda j: errors.append(j.id),
    )
    service.wait_for_job(job, timeout=20)
    assert job.status == DownloadJobStatus.ERROR and not job.cancelled
    assert job.error_type == "HTTPError(Not Found)"
    failed = job.download_parts[1]
    assert f"part {failed.id}" in (job.error or "") and "missing.bin" in (job.error or "")
    service.join()
    assert errors == [job.id]
    statuses = {part.id: (part.status, part.cancelled) for part in job.download_parts}
    assert statuses[failed.id] == (DownloadJobStatus.ERROR, False)
    for part in (job.download_parts[0], job.download_parts[2]):
        assert part.cancelled or part.status == DownloadJobStatus.COMPLETED
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "m/b.bin").exists()
    assert all(f.stat().st_size == 4 * MiB for f in (tmp_path / "m").glob("*.bin"))


def test_cancel_the_parent_while_parts_run(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    for i in range(3):
        origin.add(f"c{i}.bin", os.urandom(4 * MiB))
    cancelled = threading.Event()
    job = service.multifile_download(
        [
            RemoteModelFile(url=origin.url(f"/files/c{i}.bin?rate=1000000"), path=f"m/c{i}.bin")
            for i in range(3)
        ],
        tmp_path,
        on_cancelled=lambda j: cancelled.set(),
    )
    wait_until(lambda: job.status == DownloadJobStatus.RUNNING and job.bytes > 0)
    service.cancel_job(job)
    service.wait_for_job(job, timeout=5)
    assert job.status == DownloadJobStatus.ERROR and job.cancelled
    assert job.error_type == "DownloadJobCancelledException"
    service.join()
    assert cancelled.is_set()
    assert all(part.cancelled for part in job.download_parts)
    assert leftovers(tmp_path) == [] and not list(tmp_path.rglob("c*.bin"))


def test_wait_for_job_on_a_parent_times_out(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    client = make_service(start_worker=False)
    job = client.multifile_download(
        [RemoteModelFile(url=origin.url("/files/x"), path="x")], tmp_path
    )
    with pytest.raises(TimeoutError):
        client.wait_for_job(job, timeout=0.3)
    assert job.download_path == tmp_path  # one top-level file: the root is dest itself


@pytest.mark.parametrize(
    "paths",
    [
        ["/etc/passwd"],
        ["../outside.bin"],
        ["m/../../outside.bin"],
        [""],
        ["."],
        ["m/a.bin", "m/a.bin"],
        ["m/a.bin", "m//a.bin"],
        [],
    ],
    ids=[
        "absolute",
        "dotdot",
        "nested-dotdot",
        "empty",
        "dot",
        "duplicate",
        "duplicate-after-normalising",
        "no-parts",
    ],
)
def test_invalid_part_paths_are_refused_before_anything_is_queued(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
    paths: list[str],
) -> None:
    client = make_service(start_worker=False)
    with pytest.raises(ValueError):
        parts = [RemoteModelFile(url=origin.url("/files/a"), path=path) for path in paths]
        client.multifile_download(parts, tmp_path / "dest")
    assert client.list_jobs() == []
    assert not (tmp_path / "dest").exists()


def test_a_part_whose_checksum_does_not_match_fails_clearly(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    good = origin.add("good.bin", os.urandom(MiB))
    origin.add("tampered.bin", os.urandom(MiB))
    job = service.multifile_download(
        [
            RemoteModelFile(url=origin.url("/files/good.bin"), path="m/good.bin", sha256=good),
            RemoteModelFile(
                url=origin.url("/files/tampered.bin"),
                path="m/bad.bin",
                sha256=hashlib.sha256(b"what the publisher signed").hexdigest(),
            ),
        ],
        tmp_path,
    )
    service.wait_for_job(job, timeout=20)
    service.join()
    bad = job.download_parts[1]
    assert bad.status == DownloadJobStatus.ERROR
    assert (bad.error_type or "").startswith("ChecksumMismatchError(")
    assert job.status == DownloadJobStatus.ERROR and job.error_type == bad.error_type
    assert not (tmp_path / "m/bad.bin").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("end", ["failed", "cancelled"])
def test_a_failed_or_cancelled_job_leaves_no_directory_it_made_empty(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
    end: str,
) -> None:
    """The parts' subdirectories the job made go when it fails or is cancelled (once empty);
    one that was there before stays, empty or not, and so does a completed part's."""
    service = make_service(max_parallel_dl=3)
    origin.add("a.bin", os.urandom(MiB))
    origin.add("c.bin", b"c" * 1000)
    (tmp_path / "keep").mkdir()  # there before the job, empty
    third = (
        origin.url("/status/404?hold=third")
        if end == "failed"
        else origin.url("/files/a.bin?rate=100000&x=3")
    )
    job = service.multifile_download(
        [
            RemoteModelFile(url=origin.url("/files/a.bin?rate=100000"), path="x/y/a.bin"),
            RemoteModelFile(url=origin.url("/files/c.bin"), path="z/c.bin"),
            RemoteModelFile(url=third, path="keep/deeper/b.bin"),
        ],
        dest=tmp_path,
    )
    first = job.download_parts[0]
    wait_until(lambda: service.id_to_job(first.id).bytes > 0, 30)  # its body is coming
    wait_until(lambda: (tmp_path / "keep/deeper").is_dir() and (tmp_path / "z/c.bin").is_file(), 30)
    if end == "failed":
        origin.release("third")  # its 404 fails the job, which cancels the held first part
    else:
        service.cancel_job(job)
    service.wait_for_job(job, timeout=30)
    origin.release("third")
    assert job.status is DownloadJobStatus.ERROR and job.cancelled == (end == "cancelled")
    parts = [service.id_to_job(part.id) for part in job.download_parts]
    assert all(part.in_terminal_state for part in parts)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["keep", "z", "z/c.bin"]
