"""The service's admin interface and its hooks: what the CLI and the REST API use instead of
the store (`service.admin`), the retry notices a `get` prints, settings passed as an object."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from downloader import DownloadQueueService
from downloader.config import Settings
from downloader.store.admin import FAILED, StoreAdmin
from downloader.worker.notices import RetryNotice
from tests.origin import Origin


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_retries_reach_the_hook_naming_the_url_with_settings_given_as_an_object(
    namespace: str, redis_url: str, tmp_path: Path
) -> None:
    notices: list[RetryNotice] = []
    settings = Settings(max_retries=2, retry_backoff=0.05)
    url = f"http://127.0.0.1:{_closed_port()}/x.bin"
    with DownloadQueueService(
        redis_url=redis_url, own_jobs_only=True, settings=settings, on_retry=notices.append
    ) as queue:
        job = queue.wait_for_job(queue.download(url, tmp_path), timeout=60)
    assert job.errored and job.attempts == 3
    assert [(n.job_id, n.url, n.attempt, n.of) for n in notices] == [
        (job.id, url, 1, 2),
        (job.id, url, 2, 2),
    ]
    assert all(n.error_type.startswith("ConnectionError(") and n.delay > 0 for n in notices)
    assert "DOWNLOADER_MAX_RETRIES" not in os.environ  # nothing passed through the environment


def test_the_admin_pages_lists_prunes_and_clears_any_queue(
    namespace: str, redis_url: str, origin: Origin, tmp_path: Path
) -> None:
    origin.add("ok.bin", b"ok")
    settings = Settings(max_retries=0)
    with DownloadQueueService(
        redis_url=redis_url, queue_id="ran", own_jobs_only=True, settings=settings
    ) as runner:
        ok = runner.download(origin.url("/files/ok.bin"), tmp_path / "a")
        bad = runner.download(f"http://127.0.0.1:{_closed_port()}/bad", tmp_path / "b")
        runner.join()
    with DownloadQueueService(redis_url=redis_url, queue_id="ran", start_worker=False) as idle:
        admin = idle.admin
        # Queued on "ran" through the admin, sent to the broker, which no worker reads.
        waiting, cancelled = admin.download_many(
            "ran", [{"source": origin.url("/files/w"), "dest": tmp_path / d} for d in "cd"]
        )
        assert admin.cancel(cancelled.id) and not admin.cancel(10**9)

        assert admin.queue_names() == ["ran"]
        assert admin.counts("ran") == {
            "waiting": 1, "running": 0, "paused": 0, "completed": 1, "error": 2, "cancelled": 1,
            "total": 4
        }  # fmt: skip
        assert admin.page_ids("ran", FAILED) == [bad.id]  # a cancelled job is in `error` too
        assert admin.page_ids("ran", "cancelled") == [cancelled.id]
        assert admin.page_ids("ran", after=ok.id, count=2) == [bad.id, waiting.id]
        assert [j.id for j in admin.listing(["ran"], ["error"])] == [bad.id]
        assert [j.id for j in admin.listing(["ran"], newest_first=True)] == [
            cancelled.id,
            waiting.id,
            bad.id,
            ok.id,
        ]
        assert admin.find_job(ok.id, "other") is None and admin.find_job(ok.id, "ran") is not None

        assert sorted(admin.prune("ran", keep_unsettled_parts=True)) == sorted(
            [ok.id, bad.id, cancelled.id]
        )
        assert admin.clear("ran", unfinished_only=True) == 1
        assert admin.queue_names() == [] and admin.record(waiting.id) is None


def test_a_stopped_get_is_taken_over_once_however_many_gets_ask_at_once(
    namespace: str, redis_url: str
) -> None:
    def take(names: list[str], barrier: threading.Barrier, won: list[dict[str, int]]) -> None:
        barrier.wait()
        won.append(store.take_stopped(names))

    with DownloadQueueService(redis_url=redis_url, start_worker=False) as queue:
        store = StoreAdmin(queue.app.store)
        for job_id in range(20):
            name = f"/d\nhttp://h/{job_id}"
            store.remember_stopped({name: job_id})
            won: list[dict[str, int]] = []
            barrier = threading.Barrier(4)
            threads = [
                threading.Thread(target=take, args=([name, "/d\nnever"], barrier, won))
                for _ in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(won, key=len) == [{}, {}, {}, {name: job_id}]
