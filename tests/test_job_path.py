"""The lean job path (issue 12): a claim that answers the record and token, an end that
releases the lease and the paths and publishes its events in the same call, and one kombu
client per broker channel instead of one per message."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from downloader import DownloadJobStatus, DownloadQueueService
from downloader.celery_app import create_app
from downloader.config import Settings
from downloader.jobs.events import DOWNLOAD_COMPLETE, DOWNLOAD_PROGRESS
from downloader.jobs.record import JobRecord
from downloader.store.bus import EventPublisher
from downloader.store.jobs import JobStore
from downloader.store.lifecycle import Claim, ClaimResult
from downloader.store.reservations import Reservations
from tests.conftest import WorkerProcess
from tests.origin import Origin
from tests.test_queue import wait_until


@pytest.fixture
def store(namespace: str, redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), namespace)


def add_job(store: JobStore, token: str | None = None) -> int:
    (job_id,) = store.new_ids(1)
    record = JobRecord(id=job_id, source="http://x/f", dest=Path("/tmp/d"))
    store.create("q", [record], access_token=token)
    return job_id


def test_a_claim_answers_the_record_and_token_with_its_decision(store: JobStore) -> None:
    job_id = add_job(store, token="s3cret-token")
    claim = store.claim(job_id, "w1#a", 30)
    assert claim.result is ClaimResult.CLAIMED
    assert claim.token == "s3cret-token"
    assert claim.record is not None
    assert claim.record.status == "running" and claim.record.worker == "w1#a"
    assert "s3cret-token" not in json.dumps(claim.record.to_hash())

    again = store.claim(job_id, "w2#b", 30)
    assert again.result is ClaimResult.LEASED
    assert again.record is not None and again.record.worker == "w1#a"
    assert store.claim(10**9, "w1#a", 30) == Claim(ClaimResult.MISSING, None, None)


def test_the_end_releases_lease_and_paths_then_publishes_its_events_in_order(
    store: JobStore, tmp_path: Path
) -> None:
    job_id = add_job(store)
    other = add_job(store)
    reservations = Reservations(store)
    mine, theirs = tmp_path / "mine.bin", tmp_path / "theirs.bin"
    reservations.acquire([(job_id, mine), (other, theirs)])
    assert store.claim(job_id, "w1#a", 30).result is ClaimResult.CLAIMED
    listener = store.redis.pubsub()
    listener.subscribe(store.keys.job_events(job_id))
    wait_until(lambda: listener.get_message(timeout=0.1) is not None, 10)

    publisher = EventPublisher(store.redis, store.keys.namespace)
    events = [
        publisher.prepare(DOWNLOAD_PROGRESS, "q", job_id, current_bytes=5, total_bytes=5),
        publisher.prepare(DOWNLOAD_COMPLETE, "q", job_id, total_bytes=5),
    ]
    store.finish(
        job_id,
        DownloadJobStatus.COMPLETED,
        owner="w1#a",
        paths=[reservations.key(mine), reservations.key(theirs)],
        events=events,
        bytes=5,
        total_bytes=5,
    )

    heard: list[dict[str, object]] = []

    def two_events() -> bool:
        message = listener.get_message(timeout=0.1)
        if message and message["type"] == "message":
            heard.append(json.loads(message["data"]))
        return len(heard) == 2

    wait_until(two_events, 10)
    assert [e["event"] for e in heard] == [DOWNLOAD_PROGRESS, DOWNLOAD_COMPLETE]
    record = store.record(job_id)
    assert record is not None and record.status == "completed" and record.bytes == 5
    assert not store.redis.exists(store.keys.lease(job_id))
    assert reservations.holder(mine) is None
    assert reservations.holder(theirs) == other  # another job's path is left to it
    listener.close()


def test_the_end_leaves_a_lease_another_attempt_holds(store: JobStore) -> None:
    job_id = add_job(store)
    assert store.claim(job_id, "w1#a", 30).result is ClaimResult.CLAIMED
    store.finish(job_id, DownloadJobStatus.ERROR, owner="w2#b", error_type="X")
    assert store.redis.get(store.keys.lease(job_id)) == b"w1#a"


def test_a_broker_channel_keeps_one_client_until_its_pool_is_replaced(
    namespace: str, redis_url: str
) -> None:
    app = create_app(redis_url, Settings())
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.ping()
        channel._disconnect_pools()  # what kombu does after a fork or on close
        with channel.conn_or_acquire() as third:
            assert third is not first
            assert third.ping()


def test_batched_task_events_all_arrive_when_the_worker_stops_right_after(
    namespace: str,
    redis_url: str,
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
) -> None:
    """A worker holds task events back to send them together: what Flower reads of every task
    still arrives, also for the last tasks of a worker that is stopped at once."""
    listener = redis.Redis.from_url(redis_url).pubsub()
    listener.psubscribe(f"{namespace}:celery:*celeryev*")
    wait_until(lambda: listener.get_message(timeout=0.1) is not None, 10)
    worker = spawn_worker("batched", concurrency=4)
    origin.add("small.bin", os.urandom(4096))
    client = make_service(start_worker=False)
    jobs = [
        client.download(origin.url("/files/small.bin"), tmp_path / f"f{i}.bin") for i in range(12)
    ]
    for job in jobs:
        client.wait_for_job(job, timeout=60)
        assert job.status == DownloadJobStatus.COMPLETED
    worker.stop()

    succeeded: set[int] = set()

    def every_task_succeeded() -> bool:
        message = listener.get_message(timeout=0.1)
        if message and message["type"] == "pmessage":
            body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
            events = body if isinstance(body, list) else [body]
            succeeded.update(
                int(e["uuid"].split("-")[0]) for e in events if e["type"] == "task-succeeded"
            )
        return succeeded >= {job.id for job in jobs}

    wait_until(every_task_succeeded, 30)
    listener.close()
