"""A `download()` into a directory costs one command to Redis (issue 22): the create script
writes the record, the token, the dispatch note and Celery's own message together, and a
stock `celery worker` runs the jobs so queued; the dispatcher remembers the queues it
declared, a bounded number of them."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from downloader import DownloadJob, DownloadJobStatus, DownloadQueueService
from downloader.celery_app import create_app, dispatch
from downloader.config import Settings
from downloader.store.keys import Keys, celery_priority
from tests.children import stop_process
from tests.conftest import cli_env, stock_celery_worker
from tests.origin import Origin
from tests.redis_server import RedisServer

ROUND_TRIPS = ("evalsha", "eval", "multi", "exec", "script")
"""The commands whose calls say how a job was written: scripts and transactions."""


@pytest.fixture
def redis_url(private: RedisServer) -> str:
    """A Redis of these tests alone: its command counts are theirs."""
    return private.url


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ROUND_TRIPS}


def test_a_download_is_one_script_call_that_a_stock_worker_runs(
    make_service: Callable[..., DownloadQueueService],
    private: RedisServer,
    namespace: str,
    origin: Origin,
    redis_url: str,
    tmp_path: Path,
) -> None:
    digests = {f"s{i}.bin": origin.add(f"s{i}.bin", bytes([i]) * (3000 + i)) for i in range(6)}
    urls = {name: origin.url(f"/files/{name}") for name in digests}
    client, keys = private.client(), Keys(namespace)
    quiet = make_service(start_worker=False, follow=False)
    dest = tmp_path / "out"
    warm = quiet.download(urls["s0.bin"], dest)  # the queue declared, the script loaded

    before = _calls(client)
    written = [
        quiet.download(urls["s1.bin"], dest, access_token="t0k3n"),
        quiet.download(urls["s2.bin"], dest, priority=0),
        quiet.download(urls["s3.bin"], dest),
    ]
    after = _calls(client)
    assert {name: after[name] - before[name] for name in ROUND_TRIPS} == {
        "evalsha": len(written),
        "eval": 0,
        "multi": 0,
        "exec": 0,
        "script": 0,
    }
    assert client.get(keys.secret(written[0].id)) == b"t0k3n"
    assert client.get(keys.secret(written[1].id)) is None
    for job in written:
        level = celery_priority(job.priority)
        assert quiet.app.store.record(job.id) is not None
        assert client.zscore(keys.dispatched("default", level), job.id) is not None
    assert client.llen(keys.broker_list("default", celery_priority(0))) == 1
    assert client.llen(keys.broker_list("default", celery_priority(10))) == 3

    seen: list[tuple[str, int]] = []

    def note(name: str) -> Callable[[DownloadJob], None]:
        return lambda job: seen.append((name, job.id))

    followed = make_service(start_worker=False)
    mine = [
        followed.download(urls[name], dest, on_start=note("start"), on_complete=note("complete"))
        for name in ("s4.bin", "s5.bin")
    ]
    log = tmp_path / "celery.log"
    worker = stock_celery_worker(log, cli_env(namespace, redis_url))
    try:
        for job in mine:
            followed.wait_for_job(job, timeout=120)
        ids = [job.id for job in [warm, *written]]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(r.status.finished for r in quiet.app.store.records(ids)):
                break
            time.sleep(0.2)
    finally:
        stop_process(worker)
    tail = log.read_text(errors="replace")[-3000:]
    assert [job.status for job in mine] == [DownloadJobStatus.COMPLETED] * 2, tail
    statuses = [record.status for record in quiet.app.store.records(ids)]
    assert statuses == [DownloadJobStatus.COMPLETED] * 4, tail
    for job in mine:
        assert [name for name, job_id in seen if job_id == job.id] == ["start", "complete"]
    for name, digest in digests.items():
        assert hashlib.sha256((dest / name).read_bytes()).hexdigest() == digest


def test_the_dispatcher_remembers_the_queues_it_declared_up_to_a_bound(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "MAX_DECLARED", 3)
    broker = create_app(redis_url, Settings()).broker
    for i in range(6):
        broker.declare({f"q{i}"})
    broker.declare({"q4"})  # used again: now the most recent
    assert list(broker._declared) == ["q3", "q5", "q4"]
    broker.declare({"q0", "q5"})  # q0 was forgotten: declared again, the oldest goes
    assert list(broker._declared) == ["q4", "q5", "q0"]
