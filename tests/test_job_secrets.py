"""A job's token lives only as long as the job may still run: every way a job ends removes it.

The token is kept under `<ns>:job:<id>:secret` while the job waits or runs (a job handed back
by a stopping worker resumes with it), and the same store script that ends the job deletes
it: completed, failed, cancelled while waiting or running, and the parts of a multi-file job.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import redis

from downloader import DownloadJobStatus, DownloadQueueService, RemoteModelFile
from downloader.store.keys import Keys
from tests.origin import Origin
from tests.test_queue import wait_until

MiB = 1 << 20


def has_secret(redis_url: str, namespace: str, job_id: int) -> bool:
    return bool(redis.Redis.from_url(redis_url).exists(Keys(namespace).secret(job_id)))


def test_the_token_goes_when_the_job_completes_or_fails(
    service: DownloadQueueService, origin: Origin, tmp_path: Path, redis_url: str, namespace: str
) -> None:
    origin.add("model.bin", os.urandom(MiB))
    done = service.download(origin.url("/private/model.bin"), tmp_path, access_token=origin.token)
    failed = service.download(origin.url("/private/nothing.bin"), tmp_path, access_token="tok")
    service.join()
    assert done.status == DownloadJobStatus.COMPLETED
    assert failed.status == DownloadJobStatus.ERROR and not failed.cancelled
    assert not has_secret(redis_url, namespace, done.id)
    assert not has_secret(redis_url, namespace, failed.id)


def test_the_token_stays_while_a_job_waits_and_goes_when_it_is_cancelled(
    make_service: Callable[..., DownloadQueueService],
    tmp_path: Path,
    redis_url: str,
    namespace: str,
) -> None:
    client = make_service(start_worker=False)  # no worker: the jobs wait
    first = client.download("http://127.0.0.1:9/a.bin", tmp_path, access_token="tok-a")
    second = client.download("http://127.0.0.1:9/b.bin", tmp_path, access_token="tok-b")
    parts = client.multifile_download(
        [RemoteModelFile(url="http://127.0.0.1:9/c.bin", path="m/c.bin")],
        tmp_path,
        access_token="tok-c",
    )
    part = parts.download_parts[0]
    assert has_secret(redis_url, namespace, first.id)
    assert has_secret(redis_url, namespace, part.id)
    assert not has_secret(redis_url, namespace, parts.id)  # a parent downloads nothing
    client.cancel_job(first)
    client.cancel_all_jobs()
    client.join()
    assert first.cancelled and second.cancelled and part.cancelled
    for job_id in (first.id, second.id, part.id):
        assert not has_secret(redis_url, namespace, job_id), job_id


def test_the_token_stays_while_the_job_runs_or_is_handed_back_and_goes_at_a_cancel(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
    redis_url: str,
    namespace: str,
) -> None:
    origin.add("big.bin", os.urandom(4 * MiB))
    url = origin.url("/private/big.bin?rate=1000000")
    worker = make_service(max_parallel_dl=1)
    handed = worker.download(url, tmp_path / "handed.bin", access_token=origin.token)
    wait_until(lambda: handed.bytes > 0, timeout=30)
    worker.close()  # the running job goes back to waiting, to resume with its token
    client = make_service(start_worker=False)
    assert client.id_to_job(handed.id).status == DownloadJobStatus.WAITING
    assert has_secret(redis_url, namespace, handed.id)

    runner = make_service(max_parallel_dl=1)
    running = runner.download(url, tmp_path / "running.bin", access_token=origin.token)
    wait_until(lambda: running.bytes > 0, timeout=30)
    assert has_secret(redis_url, namespace, running.id)
    runner.cancel_job(running)
    runner.wait_for_job(running, timeout=30)
    assert running.cancelled
    assert not has_secret(redis_url, namespace, running.id)


def test_the_parts_tokens_go_with_the_parts_and_the_parent_never_holds_one(
    service: DownloadQueueService, origin: Origin, tmp_path: Path, redis_url: str, namespace: str
) -> None:
    origin.add("a.bin", os.urandom(MiB))
    origin.add("slow.bin", os.urandom(4 * MiB))
    good = service.multifile_download(
        [
            RemoteModelFile(url=origin.url("/private/a.bin"), path="m/a.bin"),
            RemoteModelFile(url=origin.url("/private/a.bin?again=1"), path="m/b.bin"),
        ],
        tmp_path / "good",
        access_token=origin.token,
    )
    bad = service.multifile_download(
        [
            RemoteModelFile(url=origin.url("/private/missing.bin"), path="m/gone.bin"),
            RemoteModelFile(url=origin.url("/private/slow.bin?rate=500000"), path="m/slow.bin"),
        ],
        tmp_path / "bad",
        access_token=origin.token,
    )
    service.join()
    assert good.status == DownloadJobStatus.COMPLETED
    assert bad.status == DownloadJobStatus.ERROR
    assert bad.download_parts[1].cancelled  # stopped by its sibling's failure
    for job in (good, bad):
        for job_id in (job.id, *(part.id for part in job.download_parts)):
            assert not has_secret(redis_url, namespace, job_id), job_id
